"""The virtual board's MicroPython is the board's: the release, 32-bit, its heap, what its build leaves out,
what its frozen modules and lwIP sockets offer (fast: one MicroPython process a test, no board)."""

from __future__ import annotations

import subprocess

from nodemcu import runtime

CHECK = """\
import sys, gc, socket, vfs, builtins
print(sys.implementation.version[:3] == (1, 27, 0), sys.maxsize == 2**31 - 1, gc.mem_free() + gc.mem_alloc())
left_out = ((b"", "partition"), ("", "center"), ("", "splitlines"), (object, "__setattr__"), (builtins, "compile"))
print([hasattr(x, n) for x, n in left_out])
print(1.0 + 2**-30 == 1.0)  # single-precision floats, as the ESP8266 build's
import umqtt.simple, umqtt.robust, requests, ntptime, asyncio, flashbdev, inisetup  # frozen, as on the board
print(hasattr(socket.socket(), "sendall"), hasattr(vfs, "VfsLfs2"), hasattr(vfs, "VfsFat"), hasattr(vfs, "VfsRom"))
"""


def run(tmp_path, script: str) -> list[str]:
    (tmp_path / "check.py").write_text(script)
    p = runtime.run(["check.py"], tmp_path, hw={"flash_size": 4 << 20, "flash_user_start": 0x100000},
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    return out.splitlines()


def test_the_board_s_micropython_release_word_size_heap_and_features(tmp_path):
    release, missing, single, extras = run(tmp_path, CHECK)
    assert release == "True True 38016"
    assert missing == "[False, False, False, False, False]"  # compiled out of the ESP8266 build: code must not use them
    assert single == "True"
    assert extras == "True True True True"  # lwIP's sendall; littlefs, FAT and ROMFS filesystems


def test_a_bigger_program_than_the_heap_fails_as_on_the_board(tmp_path):
    out = run(tmp_path, "try:\n    b = bytearray(40000)\nexcept MemoryError:\n    print('MemoryError')\n")
    assert out == ["MemoryError"]


TIMERS = """\
import machine, socket, time
hits = []
once = machine.Timer(-1)
once.init(period=150, mode=machine.Timer.ONE_SHOT, callback=lambda t: hits.append(t is once))
every = machine.Timer(-1)
every.init(period=100, callback=lambda t: hits.append("tick"))
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 550:  # a loop that never waits: callbacks run between bytecodes
    pass
every.deinit()
print(hits.count(True), 4 <= hits.count("tick") <= 6)
hits.clear()
time.sleep(0.7)
print(hits)  # deinit() stopped it
once.init(period=100, mode=machine.Timer.ONE_SHOT, callback=lambda t: hits.append("in sleep"))
time.sleep(1)
s = socket.socket()
s.bind(socket.getaddrinfo("127.0.0.1", 0)[0][-1])
s.listen(1)
s.settimeout(1)
once.init(period=100, mode=machine.Timer.ONE_SHOT, callback=lambda t: hits.append("in accept"))
try:
    s.accept()  # nobody connects: the callback runs while it waits
except OSError:
    pass
def boom(t):
    raise ValueError("printed, not raised in the main code")
once.init(period=50, mode=machine.Timer.ONE_SHOT, callback=boom)
time.sleep_ms(200)
print(hits)
"""


def test_a_timer_callback_runs_while_the_main_code_loops_sleeps_or_waits_on_a_socket(tmp_path):
    # machine.Timer(-1) as on the ESP8266: a software timer whose callback is scheduled, so it runs whatever
    # the main code is doing; an exception in it is printed and the main code goes on.
    out = run(tmp_path, TIMERS)
    assert out[:2] == ["1 True", "[]"], out
    assert "ValueError: printed, not raised in the main code" in out, out
    assert out[-1] == "['in sleep', 'in accept']", out
