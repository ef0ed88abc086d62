"""Start a virtual NodeMCU (`espblink sim`, the real CLI) for a test, and talk to it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from espblink import image
from espblink.sim import control

ESPBLINK = [sys.executable, "-m", "espblink"]


class Sim:
    def __init__(self, proc: subprocess.Popen, state: Path, info: dict[str, str]) -> None:
        self.proc = proc
        self.state_dir = state
        self.serial = info["serial"]
        self.pty = info["pty"]
        self.http = info["http"]
        self.state_path = Path(info["state"])

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())

    def ctl(self, *words: str) -> dict[str, Any]:
        return control(self.state_dir, *words)

    def wait_state(self, pred, timeout: float = 20) -> dict[str, Any]:  # noqa: ANN001
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


@contextmanager
def running_sim(state: Path, heap: int | None = None, extra: list[str] | None = None) -> Iterator[Sim]:
    cmd = [*ESPBLINK, "sim", "--state", str(state), "--json", *(extra or [])]
    if heap:
        cmd += ["--heap", str(heap)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        assert proc.stdout
        line = proc.stdout.readline()
        info = json.loads(line)
        yield Sim(proc, state, info)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def esptool(sim: Sim, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esptool", "--port", sim.serial, *args],
                          capture_output=True, text=True, timeout=timeout)


def mpremote(sim: Sim, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mpremote", "connect", sim.serial, *args],
                          capture_output=True, text=True, timeout=timeout)


def firmware_file(tmp: Path, size: int = 600 * 1024) -> Path:
    p = tmp / f"ESP8266_GENERIC-test-{size}.bin"
    p.write_bytes(image.make(size=size))
    return p
