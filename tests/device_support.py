"""Run the device app on real MicroPython (`espblink run`) for tests, and talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nodemcu import runtime
from nodemcu.board import NodeMCU

ESPBLINK = [sys.executable, "-m", "espblink"]


class App:
    """A running `espblink run`: its port, every line it printed, and small HTTP helpers."""

    def __init__(self, proc: subprocess.Popen, port: int, fs: Path) -> None:
        self.proc = proc
        self.fs = fs  # the board's filesystem
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not printed within {timeout}s; output:\n{self.output()}")

    def wait_line(self, text: str, start: int, timeout: float = 5.0) -> None:
        """Wait until a line containing text is printed after line number start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in ln for ln in self.lines[start:]):
                return
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not printed; got {self.lines[start:]}")

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, (status, body, self.lines[-5:])
        return json.loads(body)

    def post_json(self, path: str, data: Any) -> tuple[int, bytes]:
        status, _, body = self.request("POST", path, json.dumps(data),
                                       {"Content-Type": "application/json", "X-Espblink": "1"})
        return status, body

    def form_token(self) -> str:
        """The per-boot token the board's plain page puts in its forms."""
        import re

        status, _, body = self.request("GET", "/leds")
        assert status == 200, (status, body)
        return re.search(rb"name=t value=(\w+)", body).group(1).decode()

    def post_form(self, path: str, fields: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
        t = self.form_token() if token is None else token
        return self.request("POST", path, f"{fields}&t={t}", {"Content-Type": "application/x-www-form-urlencoded"})

    def raw(self, data: bytes, timeout: float = 6) -> bytes:
        """Send raw bytes, return everything the board answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
            return out


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Ask a process to end (SIGTERM), and kill it if it has not within timeout seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def run_app(tmp: Path, config: dict[str, Any] | str | None = None, heap: int = NodeMCU.HEAP,
            pins: dict[int, int] | None = None, files: dict[str, str] | None = None,
            wait: bool = True, code_as_files: bool = False) -> Iterator[App]:
    """`espblink run` with the board's filesystem in tmp; config as a dict (JSON) or raw text. The code in a
    ROMFS partition as on a NodeMCU (2 MB and up), or with code_as_files as .mpy files (1 MB boards)."""
    fs = tmp / "fs"
    fs.mkdir(exist_ok=True)
    if config is not None:
        (fs / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    for name, text in (files or {}).items():
        (fs / name).write_text(text)
    port = runtime.free_port()
    cmd = [*ESPBLINK, "run", "--http-port", str(port), "--heap", str(heap), "--dir", str(fs),
           *(["--files"] if code_as_files else [])]
    for gpio, level in (pins or {}).items():
        cmd += ["--pin", f"{gpio}={level}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    app = App(proc, port, fs)
    try:
        if wait:
            app.wait_for(app.url, timeout=30)
        yield app
    finally:
        stop(proc, 5)


VALID = {"ap_ssid": "espblink-test", "ap_key": "correct horse battery", "leds": [
    {"name": "blue", "gpio": 2, "active_low": True},
    {"name": "red", "gpio": 16, "active_low": True},
    {"name": "ext", "gpio": 5, "active_low": False},
]}


@contextmanager
def slowloris(port: int, clients: int) -> Iterator[None]:
    """`clients` threads sending a request one byte a second, again each time the board cuts them at its
    deadline, until the block ends."""
    stop = threading.Event()

    def slow() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    for b in b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n":
                        s.sendall(bytes([b]))
                        if stop.wait(1.0):
                            return
            except OSError:
                pass

    threads = [threading.Thread(target=slow, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
