"""The host tools on a virtual NodeMCU: `flash` with the pinned release downloaded, `status`, deploy through
a terminal that has no reset line, and a board whose main.py is gone. Each test has a board of its own."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.request

import pytest
from host_support import serving

from espblink import firmware, flash, image, paths
from sim_support import BUILD, flashed, mpremote, running_sim


def espblink(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "espblink", *args], capture_output=True, text=True, timeout=timeout)


def led_names(board) -> list[str]:  # noqa: ANN001
    with urllib.request.urlopen(board.http + "api/leds", timeout=5) as r:
        return [d["name"] for d in json.loads(r.read())["leds"]]


@pytest.fixture
def board(deployed_board):
    return deployed_board


def test_flash_downloads_the_build_for_the_chips_flash_size(tmp_path, capsys):
    www = tmp_path / "www"
    www.mkdir()
    root = tmp_path / "firmware"
    root.mkdir()
    (root / "manifest.json").write_bytes((paths.FIRMWARE / "manifest.json").read_bytes())
    made = image.make(variant=BUILD)
    fw = firmware.Firmware(root)
    (www / fw.variant("4MB").file).write_bytes(made)  # the virtual board's chip is 4 MB
    (www / fw.variant("1MB").file).write_bytes(image.make(seed=1))
    with running_sim(tmp_path / "board") as board, serving(www) as url:  # a board never flashed
        flash.flash(board.serial, fw=firmware.Firmware(root, base_url=url))
    out = capsys.readouterr()
    assert f"flash chip: 4MB; MicroPython v1.27.0 build: {fw.variant('4MB').file}" in out.out
    assert "downloading" in out.err
    assert (board.state_dir / "flash.bin").read_bytes()[: len(made)] == made
    assert json.loads((root / "lock.json").read_text()) == {fw.variant("4MB").file: hashlib.sha256(made).hexdigest()}


def test_deploy_then_status_reports_firmware_files_and_the_app(tmp_path):
    settings = tmp_path / "settings.toml"
    with running_sim(flashed(tmp_path / "board")) as board:  # as `make flash` leaves it
        r = espblink("deploy", "--port", board.serial, "--settings", str(settings))
        assert r.returncode == 0, r.stdout + r.stderr
        r = espblink("status", "--port", board.serial)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "firmware: MicroPython 1." in r.stdout and ".mpy 6.3" in r.stdout
        assert "free heap:" in r.stdout
        files = next(line for line in r.stdout.splitlines() if line.startswith("files:")).split()
        assert {"boot.py", "main.py", "config.json", "lib"} <= set(files)  # the app's modules: in ROMFS
        assert "app: serving http://192.168.4.1/" in r.stdout
        assert led_names(board) == ["blue", "red"]


def test_deploy_through_a_terminal_without_reset_lines(board, tmp_path):
    # A bare pty carries no RTS: the board is restarted with a soft reset from its REPL instead.
    new = tmp_path / "settings.toml"
    new.write_text(board.settings.read_text().replace('name = "red"', 'name = "green"'))
    r = espblink("deploy", "--port", board.pty, "--settings", str(new))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "] config.json" in r.stdout and "the app is running" in r.stdout
    assert led_names(board) == ["blue", "green"]


def test_reset_restarts_a_running_app_through_either_port(board):
    for port in (board.serial, board.pty):  # RTS reset; Ctrl-C then a soft reset
        r = espblink("reset", "--port", port)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "app: serving http://192.168.4.1/" in r.stdout
        assert led_names(board) == ["blue", "red"]


def test_a_board_without_main_py_is_reported_and_deploy_mends_it(board):
    r = mpremote(board, "fs", "rm", ":main.py")
    assert r.returncode == 0, r.stderr
    r = espblink("status", "--port", board.serial)
    assert r.returncode == 2
    assert "without starting the app (is main.py missing?)" in r.stderr and "make deploy" in r.stderr
    r = espblink("deploy", "--port", board.serial, "--settings", str(board.settings))
    assert r.returncode == 0, r.stdout + r.stderr
    written = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("  [")]
    assert written[-1] == "main.py" and "config.json" not in written  # the board's settings were the file's
    assert led_names(board) == ["blue", "red"]
