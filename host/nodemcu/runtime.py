"""The NodeMCU's own MicroPython, built for this host, and the one way to start device code on it.

The engine is MicroPython v1.27.0 (the release the board's firmware is), its unix port built 32-bit with
the ESP8266 port's settings (esp8266/mpconfigvariant.h) and the firmware's frozen modules: _boot.py,
flashbdev.py and inisetup.py as they are, asyncio, umqtt, requests, ntptime, and the board's C modules
(machine, network, esp) as Python shims (esp8266/modules). It is built once from the release's source and
kept in build/micropython/<key>/, the key a hash of the source and the variant.

launch() starts it as the board powers on, with the board's heap, a UDP link to the shims (HwLink) and
a port map (portmap.c) that moves the board's binds of port 80 and 53 to free loopback ports, or to ports
80 and 53 of a loopback address of the board's own (127.0.0.N, as a board has its own address on a LAN).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import termios
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VARIANT = HERE / "esp8266"
ROOT = HERE.parents[1]  # the checkout: build/ and ../shared/ are found from here
CACHE = Path(os.environ.get("ESPBLINK_MICROPYTHON_CACHE") or ROOT / "build" / "micropython")  # builds, by key
RELEASE = "1.27.0"
TARBALL = f"micropython-{RELEASE}-src.tar.xz"
# Where the release's source is looked for, first found wins.
SOURCES = [Path(p) for p in os.environ.get("ESPBLINK_MICROPYTHON_SRC", "").split(os.pathsep) if p] + [
    ROOT.parent / "shared" / "micropython" / TARBALL, ROOT / "firmware" / "downloads" / TARBALL]
PORTMAP = HERE / "portmap.c"
HEAP = 38912  # ports/esp8266/main.c: static char heap[38 * 1024]
# Where the unix port's C differs from the board's in a way device code meets, the build mends it: the
# board's sockets are lwIP's (extmod/modlwip.c), which have sendall(); the unix port's have not.
PATCHES = [("ports/unix/modsocket.c", "    { MP_ROM_QSTR(MP_QSTR_send), MP_ROM_PTR(&socket_send_obj) },\n",
            "    { MP_ROM_QSTR(MP_QSTR_send), MP_ROM_PTR(&socket_send_obj) },\n"
            "    { MP_ROM_QSTR(MP_QSTR_sendall), MP_ROM_PTR(&mp_stream_write_obj) },\n")]


class BuildError(Exception):
    """The board's MicroPython cannot be built or started here; the message says what to do."""


def _say(text: str) -> None:
    print(f"nodemcu: {text}", file=sys.stderr, flush=True)


def source() -> Path:
    for p in SOURCES:
        if p.is_file():
            return p
    raise BuildError(
        f"MicroPython {RELEASE}'s source ({TARBALL}) is needed once to build the virtual board's MicroPython "
        f"and was not found in: {', '.join(str(p) for p in SOURCES)}. Download the release's source tarball "
        f"from https://micropython.org/download/ (micropython-{RELEASE}.tar.xz works too) and put it at "
        f"{SOURCES[-1]}, or set ESPBLINK_MICROPYTHON_SRC to its path")


def can_build_32bit() -> bool:
    """Whether the C compiler can link 32-bit programs here (Debian: the gcc-multilib package)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return False
    probe = CACHE / "probe32"
    CACHE.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([cc, "-m32", "-x", "c", "-", "-o", str(probe)], input=b"int main(void){return 0;}",
                       capture_output=True)
    probe.unlink(missing_ok=True)
    return r.returncode == 0


def _key(src: Path, bits: int) -> str:
    h = hashlib.sha256()
    h.update(f"{src.stat().st_size}:{bits}:{PATCHES!r}".encode())
    with open(src, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    for f in sorted(p for p in VARIANT.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(VARIANT)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


class Build:
    """The board's MicroPython and its port-map library, built for this host once (the library by a key of
    its own: a change to portmap.c does not rebuild MicroPython)."""

    def __init__(self) -> None:
        self.bits = 32 if _cached_bits() == 32 else 64
        self.dir = CACHE / _key(source(), self.bits)
        self.exe = self.dir / "micropython"
        self.portmap = self.dir / f"portmap-{hashlib.sha256(PORTMAP.read_bytes()).hexdigest()[:12]}.so"

    def ready(self) -> bool:
        return self.exe.is_file() and self.portmap.is_file()

    def make(self) -> None:
        src = source()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(CACHE / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others wait and find it made
            if self.exe.is_file():
                self._make_portmap()
            if self.ready():
                return
            note = "32-bit, as the ESP8266" if self.bits == 32 else \
                "64-bit: this host cannot build 32-bit programs (install gcc-multilib), so objects take more heap"
            _say(f"building the board's MicroPython {RELEASE} ({note}) once, from {src}: about a minute")
            t0 = time.monotonic()
            tree = self.dir / "src"
            if not (tree / "py").is_dir():
                shutil.rmtree(tree, ignore_errors=True)
                with tarfile.open(src) as tar:
                    top = tar.getnames()[0].split("/")[0]
                    tar.extractall(self.dir, filter="data")
                (self.dir / top).rename(tree)
                for name, old, new in PATCHES:
                    f = tree / name
                    text = f.read_text()
                    if old not in text:
                        raise BuildError(f"{name} of this MicroPython source is not the one {RELEASE} has")
                    f.write_text(text.replace(old, new, 1))
            jobs = f"-j{os.cpu_count() or 2}"
            m32 = ["MICROPY_FORCE_32BIT=1"] if self.bits == 32 else []
            self._run(["make", "-C", str(tree / "mpy-cross"), jobs])  # first, on its own (see its README)
            self._run(["make", "-C", str(tree / "ports" / "unix"), jobs, f"VARIANT_DIR={VARIANT}",
                       f"BUILD={self.dir / 'obj'}", *m32])
            shutil.copyfile(self.dir / "obj" / "micropython", self.exe.with_suffix(".tmp"))
            self.exe.with_suffix(".tmp").chmod(0o755)
            self._make_portmap()
            self.exe.with_suffix(".tmp").replace(self.exe)
            shutil.rmtree(self.dir / "obj", ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
            _say(f"built {self.exe} in {time.monotonic() - t0:.0f} s")

    def _make_portmap(self) -> None:
        cc = shutil.which("cc") or shutil.which("gcc") or "cc"
        tmp = self.portmap.with_suffix(".tmp")
        self._run([cc, "-shared", "-fPIC", "-O2", *(["-m32"] if self.bits == 32 else []), "-o", str(tmp),
                   str(PORTMAP), "-ldl"])
        tmp.replace(self.portmap)

    def _run(self, cmd: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
        env["GIT_DIR"] = str(self.dir / "no-git")  # the version comes from the release, not this checkout's git
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-25:])
            raise BuildError(f"building the board's MicroPython failed ({' '.join(cmd[:3])} ...):\n{tail}\n"
                                "It needs make and a C compiler (Debian: build-essential, and gcc-multilib for "
                                "the 32-bit build)")


@functools.cache
def _cached_bits() -> int:
    return 32 if can_build_32bit() else 64


@functools.cache
def build() -> Build:
    """The board's MicroPython, built on first use."""
    b = Build()
    if not b.ready():
        b.make()
    if b.bits != 32:
        _say("this host cannot build 32-bit programs: the virtual board runs a 64-bit build of the same "
             "variant, where objects take about twice the heap they take on the board")
    return b


def _env(hw: dict[str, Any], ports: dict[int, int] | None, path: str, address: str | None = None
         ) -> dict[str, str]:
    """The environment the board's MicroPython starts in: hw for the shims, binds moved by ports (to
    `address`, default 127.0.0.1), the ROMFS partition where hw names one, module path `path`; nothing of
    this host's MicroPython settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MICROPY", "ESPBLINK_"))}
    env["MICROPYPATH"] = path
    env["ESPBLINK_HW"] = json.dumps(hw)
    if ports:
        env["ESPBLINK_PORTMAP"] = ",".join(f"{a}={p}" for a, p in ports.items())
        env["LD_PRELOAD"] = str(build().portmap)
        if address:
            env["ESPBLINK_ADDRESS"] = address
    if hw.get("romfs") and (hw.get("romfs_file") or hw.get("flash")):
        env["ESPBLINK_ROMFS"] = "%s:%d:%d" % (hw.get("romfs_file") or hw["flash"], *hw["romfs"])
    return env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free now, for a board to bind at each boot. Taken below Linux's ephemeral range
    (32768 and up), where every socket bound to port 0 and every outgoing connection gets its port: one of
    those could take it while the board restarts."""
    for _ in range(200):
        port = random.randrange(20000, 32768)
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise BuildError("no free loopback port between 20000 and 32767")


OWN_PORTS = {80: 80, 53: 53}  # a board with an address of its own binds its ports there unchanged


def check_address(address: str) -> None:
    """That a board can have `address` as its own here: ports 80 (TCP) and 53 (UDP) free on it and this user
    allowed to bind them. Raises BuildError saying what to do."""
    try:
        socket.inet_aton(address)
        ok = address.count(".") == 3
    except OSError:
        ok = False
    if not ok:
        raise BuildError(f"{address!r} is not an IPv4 address: give a loopback address such as 127.0.0.2")
    for kind, port in ((socket.SOCK_STREAM, 80), (socket.SOCK_DGRAM, 53)):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((address, port))
            except PermissionError:
                raise BuildError(
                    f"a board at {address} binds ports 80 and 53 there, as a board does, and this user may not bind "
                    "ports below 1024: run as root, or allow it with `sudo sysctl "
                    "net.ipv4.ip_unprivileged_port_start=53`; or give the board no address of its own (its ports "
                    "then go to free ports on 127.0.0.1)") from None
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    raise BuildError(f"{address} is not an address of this machine: give a loopback address, "
                                     "127.0.0.2 to 127.255.255.254 (Linux answers on all of them)") from None
                raise BuildError(f"port {port} on {address} is taken ({e.strerror}): another board or server has "
                                 "it; give another address") from None


def free_address() -> str:
    """A loopback address (127.x.y.z) whose ports 80 and 53 are free now, for a board of its own address."""
    for i in range(20):
        address = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        try:
            check_address(address)
            return address
        except BuildError:
            if i == 19:
                raise
    raise AssertionError("unreachable")


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


def launch(cwd: Path, hw: dict[str, Any], link: HwLink, ports: dict[int, int] | None, heap: int = HEAP,
           repl: bool = False, address: str | None = None, **popen: Any) -> subprocess.Popen:
    """Power on: the board's MicroPython runs the frozen launch.py (the firmware's start-up, then boot.py
    and main.py; then its REPL when repl). hw describes the board to the shims (esp8266/modules/hwlink.py
    reads it): "flash" (the image's path: littlefs on it, else cwd is the filesystem), "flash_size",
    "flash_user_start", "romfs" ([offset, size] of a ROMFS partition in "flash", or in "romfs_file" when the
    board has no flash image), "mac", "pins" (input levels held),
    "sta" (networks in range), "reset_cause", "raw" (soft reset back into the raw REPL).
    ports: where the board's binds of 80 and 53 go (free loopback ports); with `address` (a loopback address
    of its own, see check_address) None keeps them 80 and 53 there, and the board's station has that address
    as its IP on home Wi-Fi."""
    if address:
        hw = {**hw, "sta_ip": address}
        ports = ports or OWN_PORTS
    cmd = [str(build().exe), "-X", f"heapsize={heap}", *(["-i"] if repl else []), "-c", "import launch"]
    env = _env({**hw, "hw": link.port}, ports, ".frozen", address)
    # Started from one long-lived thread: the kernel's parent-death signal follows the creating thread.
    pre = _on_its_terminal if repl else _die_with_parent
    return _SPAWNER.submit(subprocess.Popen, cmd, cwd=cwd, env=env, preexec_fn=pre, **popen).result()


def run(args: Iterable[str], cwd: Path, heap: int = HEAP, hw: dict[str, Any] | None = None,
        ports: dict[int, int] | None = None, **popen: Any) -> subprocess.Popen:
    """A plain script on the board's MicroPython, the shims told about the board by hw (no link to a host
    board), binds moved by ports: for reading its flash, tests and the bench."""
    env = _env(hw or {}, ports, ".frozen:")
    return subprocess.Popen([str(build().exe), "-X", f"heapsize={heap}", *args], cwd=cwd, env=env,
                            preexec_fn=_die_with_parent, **popen)


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
    """`GPIO2 low: blue LED on`: the console line for a GPIO change, the LED named as the board's
    settings name it."""
    text = f"GPIO{gpio} {'high' if level else 'low'}"
    for led in leds:
        if led.get("gpio") == gpio:
            lit = (not level) if led.get("active_low") else bool(level)
            return f"{text}: {led.get('name')} LED {'on' if lit else 'off'}"
    return text


if __name__ == "__main__":  # `python -m nodemcu.runtime`: build it now (make does, before the tests)
    try:
        print(build().exe)
    except BuildError as e:
        print(f"nodemcu: {e}", file=sys.stderr)
        sys.exit(2)
