"""A virtual NodeMCU for tests: `espblink sim` (the real CLI) in a subprocess, and ways to talk to it.

    with running_sim(tmp / "board") as sim:
        sim.serial, sim.pty, sim.http, sim.state_path   # rfc2217:// URL, terminal, page URL, state.json
        sim.power_cycle(); sim.reset(); sim.set_pin(0, 0)
        sim.wait_state(lambda s: s["leds"]["blue"]); sim.wait_console("GPIO2 low")
        esptool(sim, "flash-id"); mpremote(sim, "exec", "print(1)")

Each test makes its own board. Flashing with esptool takes seconds, so a board that only needs firmware is
made by writing the image into its flash file (`flashed`), and one that also has the app by copying a board
deployed once per session (`deployed`): tests about flashing or deploying run esptool and deploy for real.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from device_support import stop
from espblink import image, settings
from nodemcu.control import control
from nodemcu.flash import SIZE

ESPBLINK = [sys.executable, "-m", "espblink"]
BUILD = "FLASH_2M_ROMFS"  # the MicroPython build `make flash` writes on a NodeMCU (4 MB): deploy uses its ROMFS


class Sim:
    def __init__(self, proc: subprocess.Popen, state: Path, info: dict[str, str]) -> None:
        self.proc = proc
        self.state_dir = state
        self.serial = info["serial"]
        self.pty = info["pty"]
        self.http = info["http"]
        self.dns = info["dns"]
        self.state_path = Path(info["state"])
        self.console: list[str] = []  # what `espblink sim` printed after its JSON line (GPIO changes, resets)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        # Read the board's console continuously: a full pipe would stall the board.
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.console.append(line.rstrip("\n"))

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def ctl(self, *words: str) -> dict[str, Any]:
        return control(self.state_dir, *words)

    def power_cycle(self, hold_flash: bool = False) -> dict[str, Any]:
        return self.ctl("power-cycle", *(["hold-flash"] if hold_flash else []))

    def reset(self, hold_flash: bool = False) -> dict[str, Any]:
        return self.ctl("reset", *(["hold-flash"] if hold_flash else []))

    def set_pin(self, gpio: int, level: int) -> dict[str, Any]:
        return self.ctl("pin", str(gpio), str(level))

    def wait_state(self, pred: Callable[[dict[str, Any]], Any], timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                s = self.state()
                if pred(s):
                    return s
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"board state never matched; last: {self.state()}")

    def booted(self, timeout: float = 20) -> dict[str, Any]:
        """Wait until the firmware has run boot.py and main.py and sits at its REPL."""
        return self.wait_state(lambda s: s["repl"], timeout)

    def serving(self, timeout: float = 30) -> bytes:
        """Wait until the board's app answers GET /api/status; its answer."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.http + "api/status", timeout=5) as r:
                    return r.read()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def wait_console(self, text: str, timeout: float = 20, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.console[start:]:
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"the console never showed {text!r}; it showed: {self.console[start:]}")

    def uart(self, seconds: float, send: bytes = b"", action: Callable[[], Any] | None = None,
             until: bytes | None = None, drain: bool = True) -> bytes:
        """What the board prints on its UART (through the pty) during `seconds` after `action()` (say a
        reset) and sending `send`, or until it printed `until`; what it printed before, while nobody
        listened, is dropped (unless drain=False)."""
        fd = os.open(self.pty, os.O_RDWR | os.O_NOCTTY)
        out = b""
        try:
            while drain and select.select([fd], [], [], 0.05)[0]:
                os.read(fd, 4096)
            if action:
                action()
            if send:
                os.write(fd, send)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not (until and until in out):
                r, _, _ = select.select([fd], [], [], 0.05)
                if r:
                    out += os.read(fd, 4096)
        finally:
            os.close(fd)
        return out

    def stop(self) -> None:
        stop(self.proc)


@contextmanager
def running_sim(state: Path, heap: int | None = None, extra: list[str] | None = None,
                cwd: Path | None = None) -> Iterator[Sim]:
    """`espblink sim --state STATE --json` until the block ends; STATE keeps the flash for the next one.
    STATE may be relative to cwd, as a user types it."""
    cmd = [*ESPBLINK, "sim", "--state", str(state), "--json", *(extra or [])]
    if heap:
        cmd += ["--heap", str(heap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=cwd)
    state = Path(cwd or Path.cwd(), state)
    sim = None
    try:
        assert proc.stdout
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        try:
            info = json.loads(line)
        except ValueError:
            proc.kill()
            raise AssertionError(f"espblink sim did not start: {line}{proc.stdout.read()}") from None
        sim = Sim(proc, state, info)
        yield sim
    finally:
        if sim:
            sim.stop()
        else:
            proc.kill()
            proc.wait()


def esptool(sim: Sim, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esptool", "--port", sim.serial, *args],
                          capture_output=True, text=True, timeout=timeout)


def mpremote(sim: Sim, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", sim.serial, *args],
                          capture_output=True, text=True, timeout=timeout)


def firmware_file(tmp: Path, size: int = 600 * 1024) -> Path:
    """A valid ESP8266 image (esptool's format; no MicroPython image exists here) naming the build make flash
    picks for a NodeMCU: the sim runs any, and gives this one the ROMFS partition."""
    p = tmp / f"ESP8266_GENERIC-{BUILD}-test-{size}.bin"
    p.write_bytes(image.make(size=size, variant=BUILD))
    return p


def flashed(state: Path, fw: bytes | None = None) -> Path:
    """STATE as `make flash` leaves a NodeMCU, without esptool: fw (unless given, an image of the build
    make flash picks, with its ROMFS partition) at offset 0 of an erased 4 MB flash.bin. Its first boot
    formats the filesystem, as a freshly flashed board's does."""
    state.mkdir(parents=True, exist_ok=True)
    fw = image.make(variant=BUILD) if fw is None else fw
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    return state


def deploy(sim: Sim, settings_path: Path, *extra: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`espblink deploy` over the board's USB port, as `make deploy` runs it."""
    return subprocess.run([*ESPBLINK, "deploy", "--port", sim.serial, "--settings", str(settings_path), *extra],
                          capture_output=True, text=True, timeout=timeout)


_TEMPLATE: dict[str, Path] = {}  # one deployed board per test process, copied by `deployed`


def deployed(folder: Path, factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(state, settings): in folder, a NodeMCU as `make flash deploy` leaves it (the app deployed, its code in
    ROMFS, with fresh settings from settings.create, its deploy key in deploy-keys.json beside them), not yet
    powered on.
    The first call deploys one for real; later calls copy its files (a file copy, not minutes of deploys)."""
    if "dir" not in _TEMPLATE:
        tmp = factory.mktemp("deployed-template")
        path = tmp / "settings.toml"
        settings.create(path)
        with running_sim(flashed(tmp / "board")) as sim:
            r = deploy(sim, path)
            assert r.returncode == 0, "the template board's deploy failed: " + r.stdout + r.stderr
        _TEMPLATE["dir"] = tmp
    tmp = _TEMPLATE["dir"]
    folder.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        if f.is_file():
            shutil.copyfile(f, folder / f.name)
    state = folder / "board"
    state.mkdir(exist_ok=True)
    shutil.copyfile(tmp / "board" / "flash.bin", state / "flash.bin")
    return state, folder / "settings.toml"
