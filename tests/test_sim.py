"""The virtual NodeMCU, driven by stock esptool and mpremote as subprocesses (nothing of theirs mocked).

Each test has a board of its own: an erased one for the ROM and esptool, or one whose flash already holds
the firmware (written into its flash file: flashing is what the esptool tests here check) for MicroPython,
its filesystem, resets and Wi-Fi. Every esptool run costs seconds (pyserial's RFC 2217 client renegotiates
the port on each of esptool's timeout changes), so the flash tests use small files, and one 600 KB image.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
import serial

from espblink import image
from nodemcu import runtime
from nodemcu.board import NodeMCU
from nodemcu.flash import SIZE
from nodemcu.rom import slip_encode
from sim_support import ESPBLINK, esptool, firmware_file, flashed, mpremote, running_sim

# boot.py and main.py that leave a trace in a file, so a test sees which of them ran after a reset.
BOOT_PY = "with open('log.txt', 'a') as f:\n    f.write('b')\n"
MAIN_PY = """import machine
with open('log.txt', 'a') as f:
    f.write('m%d' % machine.Pin(0, machine.Pin.IN).value())
"""


@pytest.fixture
def sim(tmp_path):
    """A board that was never flashed: its ROM, and esptool."""
    with running_sim(tmp_path / "board") as s:
        yield s


@pytest.fixture
def board(tmp_path):
    """A board with MicroPython in its flash, booted once (its filesystem formatted), at its REPL."""
    with running_sim(flashed(tmp_path / "board"), extra=["--sta", "home=secret123", "--sta-delay-ms", "300"]) as s:
        s.booted()
        yield s


def test_an_erased_board_prints_rom_lines_then_stays_silent(sim):
    assert sim.state()["mode"] == "halted"
    out = sim.uart(1.0, action=sim.power_cycle)
    assert b"ets Jan  8 2013,rst cause:0, boot mode:(3,6)" in out
    assert b"MicroPython" not in out and b">>>" not in out


def test_flash_button_held_at_reset_starts_the_rom_bootloader(sim):
    sim.set_pin(0, 0)
    try:
        out = sim.uart(0.5, action=sim.reset)
        assert b"boot mode:(1,7)" in out and b"waiting for host" in out
        assert sim.state()["mode"] == "rom"
    finally:
        sim.set_pin(0, 1)
    sim.reset()
    assert sim.state()["mode"] == "halted"


def test_esptool_identifies_an_esp8266_with_4mb_flash(sim):
    r = esptool(sim, "flash-id")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Chip type:          ESP8266EX" in r.stdout
    assert "MAC:                5c:cf:7f:1a:2b:3c" in r.stdout
    assert "Manufacturer: ef" in r.stdout and "Detected flash size: 4MB" in r.stdout
    r = esptool(sim, "--no-stub", "read-mac")
    assert r.returncode == 0 and "MAC:                5c:cf:7f:1a:2b:3c" in r.stdout, r.stdout + r.stderr


def test_rom_answers_garbage_and_unknown_commands_without_dying(sim):
    s = serial.serial_for_url(sim.serial, timeout=0.5)
    try:
        s.dtr, s.rts = False, True  # into reset, then the bootloader, as esptool does
        s.dtr, s.rts = True, False
        s.dtr = False
        s.read(4096)
        s.write(random.Random(5).randbytes(3000).replace(b"\xc0", b""))
        s.write(slip_encode(bytes([0, 0x7E, 0, 0, 0, 0, 0, 0])))  # an opcode no ROM knows
        s.write(slip_encode(bytes([0, 0xD0, 0, 0, 0, 0, 0, 0])))  # the stub's ERASE_FLASH: not in the ROM
        out = s.read(64)
        assert b"\xc0\x01\x7e\x02\x00\x00\x00\x00\x00\x01\x05\xc0" in out  # status 1, error 5: invalid
        assert b"\xc0\x01\xd0\x02\x00\x00\x00\x00\x00\x01\x05\xc0" in out
    finally:
        s.close()
    r = esptool(sim, "--no-stub", "chip-id")
    assert r.returncode == 0 and "Chip ID: 0x001a2b3c" in r.stdout, r.stdout + r.stderr


def test_an_invalid_image_leaves_the_board_silent_after_the_rom_lines(sim, tmp_path):
    broken = bytearray(image.make(size=16 * 1024))
    broken[0x20] ^= 0xFF  # a byte of the first segment: the checksum no longer matches
    f = tmp_path / "broken.bin"
    f.write_bytes(broken)
    r = esptool(sim, "write-flash", "--no-compress", "0", str(f))  # with the stub, uncompressed
    assert r.returncode == 0 and "Hash of data verified" in r.stdout, r.stdout + r.stderr
    out = sim.uart(1.5, action=sim.power_cycle)
    assert b"boot mode:(3,6)" in out and sim.state()["mode"] == "halted"
    assert b"MicroPython" not in out and b">>>" not in out
    assert (sim.state_dir / "flash.bin").read_bytes()[:len(broken)] == bytes(broken)


def test_rom_without_stub_writes_uncompressed(sim, tmp_path):
    data = random.Random(3).randbytes(8 * 1024)
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    r = esptool(sim, "--no-stub", "write-flash", "0x3fb000", str(f))  # the SDK's parameter sectors
    assert r.returncode == 0, r.stdout + r.stderr
    # Read from the chip itself (reading it back with esptool's stub costs a stub upload: 20 s here).
    assert (sim.state_dir / "flash.bin").read_bytes()[0x3FB000:0x3FB000 + len(data)] == data


def test_write_verify_read_flash_round_trip_of_a_realistic_image(sim, tmp_path):
    fw = firmware_file(tmp_path)
    # One stub for the write and the verify (each upload costs seconds over RFC 2217): the chip is left in
    # it after the write, and the verify finds it running, as esptool's chained commands do.
    r = esptool(sim, "--baud", "460800", "--after", "no-reset-stub", "write-flash", "--flash-size", "detect", "0",
                str(fw))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hash of data verified" in r.stdout
    r = esptool(sim, "--before", "no-reset", "--after", "no-reset-stub", "verify-flash", "0", str(fw))
    assert r.returncode == 0 and "Verification successful" in r.stdout, r.stdout + r.stderr
    assert "already running" in r.stdout, r.stdout
    # The stub's reads are paced at the UART's speed: the last 64 KB (the whole image reads in 40 s more).
    size, tail = fw.stat().st_size, 64 * 1024
    back = tmp_path / "back.bin"
    r = esptool(sim, "read-flash", str(size - tail), str(tail), str(back))
    assert r.returncode == 0, r.stdout + r.stderr
    assert back.read_bytes() == fw.read_bytes()[-tail:]
    # esptool's hard reset (RTS) left the board running the firmware it wrote
    sim.wait_state(lambda s: s["mode"] == "firmware")


def test_boots_micropython_and_mpremote_works(board, tmp_path):
    # Freshly flashed, its ROMFS partition still erased: the firmware says nothing of it (the port's
    # mp_vfs_mount_romfs_protected leaves /rom unmounted silently).
    out = board.uart(10, action=board.power_cycle, until=b">>> ")
    assert b"MicroPython v1.27.0" in out and out.endswith(b">>> ")
    assert b"Traceback" not in out and b"Error" not in out, out
    r = mpremote(board, "exec", "import sys; print(sys.implementation.name, 6*7)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "micropython 42" in r.stdout
    r = mpremote(board, "fs", "ls")
    assert "boot.py" in r.stdout  # the port's first boot formatted the filesystem and wrote boot.py
    f = tmp_path / "hello.py"
    f.write_text("print('hello from flash')\n")
    r = mpremote(board, "fs", "cp", str(f), ":hello.py", "+", "exec", "import hello")
    assert r.returncode == 0 and "hello from flash" in r.stdout, r.stdout + r.stderr


def test_files_live_in_the_flash_image_and_survive_power_cycles(board, tmp_path):
    f = tmp_path / "hello.py"
    f.write_text("print('hello from flash')\n")
    assert mpremote(board, "fs", "cp", str(f), ":hello.py").returncode == 0
    board.power_cycle()
    board.booted()
    r = mpremote(board, "fs", "cat", "hello.py")
    assert "hello from flash" in r.stdout, r.stdout + r.stderr
    flash = (board.state_dir / "flash.bin").read_bytes()
    assert b"print('hello from flash')" in flash[0x100000:]


def boot_log(sim) -> str:
    # `resume`: without it mpremote soft-resets the board first, which runs boot.py again
    r = mpremote(sim, "resume", "exec", "print(open('log.txt').read()); import os; os.remove('log.txt')")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def test_which_resets_run_boot_py_and_main_py(board, tmp_path):
    (tmp_path / "boot.py").write_text(BOOT_PY)
    (tmp_path / "main.py").write_text(MAIN_PY)
    r = mpremote(board, "fs", "cp", str(tmp_path / "boot.py"), str(tmp_path / "main.py"), ":", "+",
                 "exec", "open('log.txt', 'w').close()")
    assert r.returncode == 0, r.stdout + r.stderr
    # mpremote's soft-reset comes from the raw REPL: boot.py only
    assert mpremote(board, "resume", "soft-reset").returncode == 0
    assert boot_log(board) == "b"
    # Ctrl-D at the friendly REPL: "MPY: soft reboot", boot.py and main.py
    out = board.uart(2.0, send=b"\r\x03\x04")
    assert b"MPY: soft reboot" in out
    board.booted()
    assert boot_log(board) == "bm1"
    # machine.reset() is a hard reset: boot.py and main.py
    boots = board.state()["boots"]
    mpremote(board, "resume", "exec", "--no-follow", "import machine; machine.reset()")
    board.wait_state(lambda s: s["boots"] > boots and s["repl"])
    assert boot_log(board) == "bm1"
    # the FLASH button pressed just after a reset: main.py sees GPIO0 low (an app's safe mode)
    board.reset(hold_flash=True)
    board.booted()
    assert boot_log(board) == "bm0"
    board.set_pin(0, 1)
    board.power_cycle()
    board.booted()
    assert boot_log(board) == "bm1"


def power_on_running(board, tmp_path, rest: str) -> None:
    """main.py (it says "main.py running", then runs `rest`) copied to the board, which is powered on into it."""
    (tmp_path / "main.py").write_text("import time\nprint('main.py running')\n" + rest)
    assert mpremote(board, "fs", "cp", str(tmp_path / "main.py"), ":main.py").returncode == 0
    out = board.uart(20, action=board.power_cycle, until=b"main.py running")
    assert b"main.py running" in out


def test_ctrl_c_interrupts_main_py(board, tmp_path):
    power_on_running(board, tmp_path, "while True:\n    time.sleep_ms(50)\n")
    out = board.uart(5, send=b"\x03", until=b">>> ", drain=False)
    assert b"KeyboardInterrupt" in out and b">>> " in out
    board.booted()  # the start-up carried on to the REPL
    out = board.uart(1.0, send=b"print(7*6)\r")
    assert b"42" in out
    # Typing into a busy board fills its input; what does not fit is lost, and the board stays responsive.
    board.power_cycle()
    board.uart(0.5, send=b"x" * 65536)
    assert board.power_cycle()["mode"] == "firmware"
    assert mpremote(board, "rm", ":main.py").returncode == 0


def test_what_is_typed_while_main_py_runs_reaches_the_repl_after_it(board, tmp_path):
    # The UART keeps what arrives while main.py runs; the REPL reads it once main.py has ended.
    power_on_running(board, tmp_path, "time.sleep_ms(1500)\n")
    out = board.uart(10, send=b"print(6*7)\r", until=b"42\r\n", drain=False)
    assert b"42\r\n" in out, out


def test_gpio_levels_and_a_starved_watchdog_reset(board):
    start = len(board.console)
    boots = board.state()["boots"]
    r = mpremote(board, "exec", "import machine; machine.Pin(2, machine.Pin.OUT).off()")
    assert r.returncode == 0, r.stdout + r.stderr
    s = board.wait_state(lambda s: s["gpio"].get("2", {}).get("level") == 0)
    assert s["leds"]["blue"] is True
    board.wait_console("GPIO2 low: blue LED on", start=start)
    # An input pin set from outside, as a button would.
    board.set_pin(4, 0)
    r = mpremote(board, "exec", "import machine; print('level', machine.Pin(4, machine.Pin.IN).value())")
    assert "level 0" in r.stdout, r.stdout + r.stderr
    # Start the watchdog and never feed it: the board resets itself after a few seconds.
    r = mpremote(board, "exec", "--no-follow",
                 "import machine, time\nw = machine.WDT()\nwhile True: time.sleep_ms(100)")
    assert r.returncode == 0, r.stdout + r.stderr
    board.wait_state(lambda s: s["boots"] > boots and s["mode"] == "firmware", timeout=20)
    board.wait_console("watchdog", start=start)


STA_JOIN = """import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect('home', %r)
for _ in range(100):
    if w.status() != network.STAT_CONNECTING:
        break
    time.sleep_ms(50)
print('status', w.status(), w.isconnected())
"""


def test_station_joins_only_a_network_in_range_with_its_key(board):
    r = mpremote(board, "exec", STA_JOIN % "wrong-key")
    assert "status 2 False" in r.stdout, r.stdout + r.stderr  # STAT_WRONG_PASSWORD
    r = mpremote(board, "exec", STA_JOIN % "secret123")
    assert "status 5 True" in r.stdout, r.stdout + r.stderr  # STAT_GOT_IP
    s = board.wait_state(lambda s: s["wlan"].get("sta", {}).get("status") == 5)
    assert s["wlan"]["sta"]["ssid"] == "home"
    board.ctl("sta-drop")  # the home network goes away
    r = mpremote(board, "resume", "exec", "import network; print('up', network.WLAN(network.STA_IF).isconnected())")
    assert "up False" in r.stdout, r.stdout + r.stderr


def test_ctl_command_line(sim):
    def ctl(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ESPBLINK, "sim", "ctl", "--state", str(sim.state_dir), *words],
                              capture_output=True, text=True, timeout=30)

    r = ctl("pin", "5", "0")
    assert r.returncode == 0 and '"5": 0' in r.stdout, r.stdout + r.stderr
    r = ctl("pin", "5", "7")
    assert r.returncode == 2 and "level 0 or 1" in r.stderr
    r = subprocess.run([*ESPBLINK, "sim", "ctl", "--state", str(sim.state_dir / "nothing"), "state"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no virtual board is running" in r.stderr


def test_erase_flash_wipes_firmware_and_files(board):
    r = esptool(board, "erase-flash")
    assert r.returncode == 0, r.stdout + r.stderr
    s = board.wait_state(lambda s: s["mode"] in ("halted", "firmware"))
    assert s["mode"] == "halted"
    assert set((board.state_dir / "flash.bin").read_bytes()) == {0xFF}


def processes_in(folder) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and os.readlink(f"/proc/{pid}/cwd") == str(folder):
                found.append(pid)
        except OSError:
            pass
    return found


def test_the_state_folder_keeps_the_flash_between_runs_and_ctrl_c_stops_cleanly(tmp_path):
    flashed(tmp_path, image.make(size=64 * 1024))  # a board flashed earlier (esptool's part is tested above)
    with running_sim(tmp_path) as sim:
        r = mpremote(sim, "exec", "with open('kept.txt', 'w') as f: f.write('still here')")
        assert r.returncode == 0, r.stdout + r.stderr
        assert processes_in(tmp_path)  # the board's MicroPython runs in its state folder
        sim.proc.send_signal(signal.SIGINT)
        assert sim.proc.wait(timeout=20) == 0
        assert not (tmp_path / "ctl.sock").exists()
        assert not processes_in(tmp_path)  # its MicroPython went with it
    with running_sim(tmp_path) as sim:
        r = mpremote(sim, "fs", "cat", "kept.txt")
        assert "still here" in r.stdout, r.stdout + r.stderr


def test_a_relative_state_folder_works(tmp_path):
    # As a user types it: `espblink sim --state rel/dir` from their own folder.
    flashed(tmp_path / "rel" / "dir")
    with running_sim(Path("rel", "dir"), cwd=tmp_path) as sim:
        assert sim.state_path == tmp_path / "rel" / "dir" / "state.json"
        sim.booted()
        r = mpremote(sim, "exec", "print(6*7)")
        assert r.returncode == 0 and "42" in r.stdout, r.stdout + r.stderr
        r = subprocess.run([*ESPBLINK, "sim", "ctl", "--state", "rel/dir", "state"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and '"mode": "firmware"' in r.stdout, r.stdout + r.stderr
        assert processes_in(tmp_path / "rel" / "dir")  # its MicroPython runs in the folder it was given


MKFS_FAT = """import esp, vfs
vfs.umount('/')
from flashbdev import bdev
vfs.VfsFat.mkfs(bdev)
vfs.mount(vfs.VfsFat(bdev), '/')
with open('/old.txt', 'w') as f:
    f.write('from an older board')
vfs.umount('/')
print('formatted FAT')
"""


def test_a_fat_filesystem_from_an_older_board_still_mounts(tmp_path):
    # Firmware before littlefs formatted FAT: the board's own MicroPython makes one, as an older board has.
    state = flashed(tmp_path / "board")
    (tmp_path / "mkfs.py").write_text(MKFS_FAT)
    hw = {"flash": str(state / "flash.bin"), "flash_size": SIZE, "flash_user_start": NodeMCU.FLASH_USER_START}
    p = runtime.run([str(tmp_path / "mkfs.py")], state, hw=hw, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and b"formatted FAT" in out, out
    with running_sim(state) as sim:
        sim.booted()
        r = mpremote(sim, "fs", "ls")
        assert r.returncode == 0 and "old.txt" in r.stdout, r.stdout + r.stderr
        assert "boot.py" not in r.stdout  # mounted as it was, not formatted again
        r = mpremote(sim, "resume", "fs", "cat", ":old.txt")
        assert "from an older board" in r.stdout, r.stdout + r.stderr
