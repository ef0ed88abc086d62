"""The virtual NodeMCU, driven by stock esptool and mpremote as subprocesses (nothing of theirs mocked)."""

from __future__ import annotations

import os
import random
import select
import time

import pytest
import serial

from espblink.sim.rom import slip_encode
from sim_support import esptool, firmware_file, mpremote, running_sim


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    with running_sim(tmp_path_factory.mktemp("board")) as s:
        yield s


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    return firmware_file(tmp_path_factory.mktemp("fw"))


def read_pty(path: str, seconds: float) -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    out = b""
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                out += os.read(fd, 4096)
    finally:
        os.close(fd)
    return out


def test_an_erased_board_prints_rom_lines_then_stays_silent(sim):
    assert sim.state()["mode"] == "halted"
    sim.ctl("power-cycle")
    out = read_pty(sim.pty, 1.0)
    assert b"ets Jan  8 2013,rst cause:0, boot mode:(3,6)" in out
    assert b"MicroPython" not in out and b">>>" not in out


def test_esptool_identifies_an_esp8266_with_4mb_flash(sim):
    r = esptool(sim, "flash-id")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ESP8266EX" in r.stdout
    assert "MAC:                5c:cf:7f:1a:2b:3c" in r.stdout
    assert "Detected flash size: 4MB" in r.stdout


def test_write_verify_read_flash_round_trip(sim, fw, tmp_path):
    r = esptool(sim, "--baud", "460800", "write-flash", "--flash-size", "detect", "0", str(fw))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hash of data verified" in r.stdout
    r = esptool(sim, "verify-flash", "0", str(fw))
    assert r.returncode == 0 and "Verification successful" in r.stdout, r.stdout + r.stderr
    back = tmp_path / "back.bin"
    r = esptool(sim, "read-flash", "0", str(fw.stat().st_size), str(back))
    assert r.returncode == 0, r.stdout + r.stderr
    assert back.read_bytes() == fw.read_bytes()


def test_rom_without_stub_writes_uncompressed(sim, tmp_path):
    data = random.Random(3).randbytes(12 * 1024)
    f = tmp_path / "blob.bin"
    f.write_bytes(data)
    r = esptool(sim, "--no-stub", "write-flash", "--no-compress", "0x3f0000", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
    back = tmp_path / "back.bin"
    r = esptool(sim, "read-flash", "0x3f0000", str(len(data)), str(back))
    assert r.returncode == 0, r.stdout + r.stderr
    assert back.read_bytes() == data


def test_rom_answers_garbage_and_unknown_commands_without_dying(sim):
    s = serial.serial_for_url(sim.serial, timeout=0.5)
    try:
        s.dtr, s.rts = False, True  # into reset, then the bootloader, as esptool does
        time.sleep(0.1)
        s.dtr, s.rts = True, False
        time.sleep(0.1)
        s.dtr = False
        s.read(4096)
        s.write(random.Random(5).randbytes(3000).replace(b"\xc0", b""))
        s.write(slip_encode(bytes([0, 0x7E, 0, 0, 0, 0, 0, 0])))  # an opcode no ROM knows
        out = s.read(64)
        assert b"\xc0\x01\x7e\x02\x00\x00\x00\x00\x00\x01\x05\xc0" in out  # status 1, error 5: invalid
    finally:
        s.close()
    assert esptool(sim, "chip-id").returncode == 0


def test_boots_micropython_and_mpremote_works(sim, tmp_path):
    sim.ctl("power-cycle")
    r = mpremote(sim, "exec", "import sys; print(sys.implementation.name, 6*7)")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "micropython 42" in r.stdout
    r = mpremote(sim, "fs", "ls")
    assert "boot.py" in r.stdout  # the port's first boot formatted the filesystem and wrote boot.py
    f = tmp_path / "hello.py"
    f.write_text("print('hello from flash')\n")
    r = mpremote(sim, "fs", "cp", str(f), ":hello.py", "+", "exec", "import hello")
    assert r.returncode == 0 and "hello from flash" in r.stdout, r.stdout + r.stderr


def test_files_live_in_the_flash_image_and_survive_power_cycles(sim):
    sim.ctl("power-cycle")
    r = mpremote(sim, "fs", "cat", "hello.py")
    assert "hello from flash" in r.stdout
    flash = (sim.state_dir / "flash.bin").read_bytes()
    assert b"print('hello from flash')" in flash[0x100000:]


def test_soft_reset_runs_boot_py_again(sim, tmp_path):
    f = tmp_path / "boot.py"
    f.write_text("print('boot.py ran')\n")
    r = mpremote(sim, "fs", "cp", str(f), ":boot.py", "+", "soft-reset", "+", "exec", "print('after')")
    assert r.returncode == 0, r.stdout + r.stderr
    out = b""
    s = serial.serial_for_url(sim.serial, timeout=0.3)
    try:
        s.write(b"\r\x03\x04")  # Ctrl-C, Ctrl-D at the friendly REPL: soft reset
        for _ in range(10):
            out += s.read(1024)
    finally:
        s.close()
    assert b"MPY: soft reboot" in out and b"boot.py ran" in out


def test_gpio_levels_and_a_starved_watchdog_reset(sim):
    boots = sim.state()["boots"]
    r = mpremote(sim, "exec", "import machine; machine.Pin(2, machine.Pin.OUT).off()")
    assert r.returncode == 0, r.stdout + r.stderr
    s = sim.wait_state(lambda s: s["gpio"].get("2", {}).get("level") == 0)
    assert s["leds"]["blue"] is True
    # Start the watchdog and never feed it: the board resets itself after a few seconds.
    r = mpremote(sim, "exec", "--no-follow", "import machine, time\nw = machine.WDT()\nwhile True: time.sleep_ms(100)")
    assert r.returncode == 0, r.stdout + r.stderr
    sim.wait_state(lambda s: s["boots"] > boots and s["mode"] == "firmware", timeout=20)


def test_erase_flash_wipes_firmware_and_files(sim):
    r = esptool(sim, "erase-flash")
    assert r.returncode == 0, r.stdout + r.stderr
    s = sim.wait_state(lambda s: s["mode"] in ("halted", "firmware"))
    assert s["mode"] == "halted"
    assert set((sim.state_dir / "flash.bin").read_bytes()) == {0xFF}
    r = mpremote(sim, "exec", "print(1)", timeout=30)
    assert r.returncode != 0
