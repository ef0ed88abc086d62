"""From a fresh virtual board to LEDs switched from a phone: `make flash deploy` as a user types it.

Each test has its own board: a fresh one where the test is about flashing, else one as `make flash deploy`
leaves it (a copy of a board deployed once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from espblink import paths
from sim_support import firmware_file, mpremote, running_sim


def make(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture
def fresh(tmp_path):
    """A board never flashed, and no settings file yet."""
    with running_sim(tmp_path / "fresh") as sim:
        sim.settings = tmp_path / "settings.toml"
        sim.fw = firmware_file(tmp_path)
        yield sim


@pytest.fixture
def board(deployed_board):
    return deployed_board


def deploy(board, settings=None) -> subprocess.CompletedProcess:
    return make("deploy", f"PORT={board.serial}", f"SETTINGS={settings or board.settings}")


def test_deploy_before_flash_says_to_flash_first(fresh):
    r = deploy(fresh)
    assert r.returncode != 0
    assert "no MicroPython answers" in r.stderr and "make flash" in r.stderr


def test_make_flash_deploy_on_a_fresh_board(fresh):
    r = make("flash", "deploy", f"PORT={fresh.serial}", f"FIRMWARE={fresh.fw}", f"SETTINGS={fresh.settings}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hash of data verified" in r.stdout
    assert "the app is running" in r.stdout
    assert fresh.settings.exists() and "ap_key" in fresh.settings.read_text()
    s = fresh.wait_state(lambda s: s["wlan"].get("ap", {}).get("active"))
    assert s["wlan"]["ap"]["security"] == 3  # WPA2-PSK
    assert s["wlan"]["ap"]["key"] != "micropythoN" and len(s["wlan"]["ap"]["key"]) >= 8


def test_a_phone_switches_every_led(board, phone_page):
    phone_page.goto(board.http)
    switches = phone_page.locator("button[role=switch]")
    switches.first.wait_for()
    names = [phone_page.locator(".led .n").nth(i).inner_text() for i in range(switches.count())]
    assert names == ["blue", "red"]
    for name in names:
        phone_page.locator(f"#led-{name} button[role=switch]").tap()
        board.wait_state(lambda s, n=name: s["leds"][n] is True, timeout=10)
    for name in names:
        phone_page.locator(f"#led-{name} button[role=switch]").tap()
        board.wait_state(lambda s, n=name: s["leds"][n] is False, timeout=10)


def test_power_cycle_brings_the_access_point_and_page_back(board, phone_page):
    boots = board.state()["boots"]
    board.ctl("power-cycle")
    board.wait_state(lambda s: s["boots"] > boots and s["wlan"].get("ap", {}).get("active"), timeout=20)
    phone_page.goto(board.http)
    phone_page.locator("button[role=switch]").first.wait_for(timeout=10000)


def test_second_deploy_writes_nothing(board):
    r = deploy(board)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 to write (0 bytes), 0 to remove" in r.stdout


def test_stale_py_that_would_shadow_the_mpy_is_removed(board, tmp_path):
    stale = tmp_path / "server.py"
    stale.write_text("raise ImportError('old server.py')\n")
    r = mpremote(board, "fs", "cp", str(stale), ":server.py")
    assert r.returncode == 0, r.stderr
    r = deploy(board)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 to remove" in r.stdout
    assert "server.py" not in mpremote(board, "fs", "ls").stdout.replace("server.mpy", "")


def test_invalid_settings_stop_before_the_board_is_touched(board, tmp_path):
    bad = tmp_path / "settings.toml"
    bad.write_text(board.settings.read_text().replace("gpio = 16", "gpio = 7").replace("ap_key = ", "ap_key = 'x' #"))
    before = (board.state_dir / "flash.bin").stat().st_mtime_ns, board.state()["boots"]
    r = deploy(board, bad)
    assert r.returncode != 0
    assert "leds[1].gpio: GPIO7 drives the flash chip" in r.stderr
    assert "ap_key: must be 8 to 63" in r.stderr
    time.sleep(0.5)
    assert ((board.state_dir / "flash.bin").stat().st_mtime_ns, board.state()["boots"]) == before


def test_deploy_killed_midway_never_leaves_a_broken_board(board, tmp_path):
    import sys
    import urllib.request

    new = tmp_path / "settings.toml"
    new.write_text(board.settings.read_text().replace('name = "red"', 'name = "rot"'))
    old_names, new_names = ["blue", "red"], ["blue", "rot"]
    for delay in (0.4, 0.9, 1.4, 2.0):
        p = subprocess.Popen([sys.executable, "-m", "espblink", "deploy", "--port", board.serial, "--settings",
                              str(new)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.kill()
        p.wait()
        time.sleep(0.3)  # the port is free again
        boots = board.state()["boots"]
        board.ctl("power-cycle")
        board.wait_state(lambda s, b=boots: s["boots"] > b and s["wlan"].get("ap", {}).get("active"), timeout=20)
        with urllib.request.urlopen(board.http + "api/leds", timeout=5) as r:
            names = [d["name"] for d in json.loads(r.read())["leds"]]
        assert names in (old_names, new_names), names
    r = deploy(board, new)
    assert r.returncode == 0, r.stdout + r.stderr
    with urllib.request.urlopen(board.http + "api/leds", timeout=5) as r:
        assert [d["name"] for d in json.loads(r.read())["leds"]] == new_names
    assert deploy(board).returncode == 0  # and back


def test_erase_then_deploy_says_flash_first(board):
    r = make("erase", f"PORT={board.serial}")
    assert r.returncode == 0, r.stdout + r.stderr
    r = deploy(board)
    assert r.returncode != 0 and "flash it first" in r.stderr
    assert json.loads(board.state_path.read_text())["mode"] == "halted"
