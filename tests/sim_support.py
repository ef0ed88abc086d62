"""A virtual NodeMCU for tests: `espblink sim` (the real CLI) in a subprocess, and ways to talk to it.

    with running_sim(tmp / "board") as sim:
        sim.serial, sim.pty, sim.http, sim.state_path   # rfc2217:// URL, terminal, page URL, state.json
        sim.power_cycle(); sim.reset(); sim.set_pin(0, 0)
        sim.wait_state(lambda s: s["leds"]["blue"]); sim.wait_console("GPIO2 low")
        esptool(sim, "flash-id"); mpremote(sim, "exec", "print(1)")
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from espblink import image
from nodemcu.control import control

ESPBLINK = [sys.executable, "-m", "espblink"]


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
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_sim(state: Path, heap: int | None = None, extra: list[str] | None = None) -> Iterator[Sim]:
    """`espblink sim --state STATE --json` until the block ends; STATE keeps the flash for the next one."""
    cmd = [*ESPBLINK, "sim", "--state", str(state), "--json", *(extra or [])]
    if heap:
        cmd += ["--heap", str(heap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
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
    """A valid ESP8266 image (esptool's format; no MicroPython image exists here): the sim runs any."""
    p = tmp / f"ESP8266_GENERIC-test-{size}.bin"
    p.write_bytes(image.make(size=size))
    return p
