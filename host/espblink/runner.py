"""`espblink run`: the device app in the foreground on the board's own MicroPython (nodemcu.runtime), with
the board's heap, a folder standing for its filesystem."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from espblink import build, rules, sync
from espblink.errors import UserError
from nodemcu import runtime
from nodemcu.board import NodeMCU


def leds_of(config: Path | None) -> list[dict[str, Any]]:
    if config:
        try:
            return rules.complete(json.loads(config.read_text()))["leds"]
        except (OSError, ValueError):
            pass
    return rules.default_leds()


def wait_listening(port: int, proc: Any, deadline: float) -> bool:
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def romfs_file(fs: Path) -> Path:
    """Where `espblink run` keeps the board's ROMFS partition for the folder fs: beside it."""
    return fs.with_name(fs.name + ".romfs")


def install(fs: Path, config: Path | None = None, romfs: bool = True) -> None:
    """Put the device build (and a config.json) on a folder that stands for the board's filesystem: laid out
    as deploy lays out a NodeMCU of 2 MB or more (romfs: modules and pages in a ROMFS partition, kept in
    romfs_file(fs), a copy of the modules in lib/) or of 1 MB (the modules as files)."""
    fs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="espblink-build-") as tmp:
        # A build of its own: other runs may be replacing build/device at this moment.
        local = {f.name: f.read_bytes() for f in build.build(out=Path(tmp) / "device").iterdir()}
    image = b""
    if romfs:
        local, image = sync.romfs_layout(local)
    for name, data in local.items():
        (fs / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / name).write_bytes(data)
    part = romfs_file(fs)
    if image:
        part.write_bytes(image.ljust(NodeMCU.ROMFS[1], b"\xff"))
    else:
        part.unlink(missing_ok=True)
    if config:
        shutil.copyfile(config, fs / "config.json")


def power_on(fs: Path, on_message: Callable[[dict[str, Any]], None], http_port: int, dns_port: int = 0,
             heap: int = NodeMCU.HEAP, pins: dict[int, int] | None = None, reset_cause: int = 0,
             **popen: Any) -> tuple[subprocess.Popen, runtime.HwLink]:
    """Start MicroPython on fs as the board would (boot.py, then main.py); pins are input levels held from
    power-on, reset_cause what machine.reset_cause() answers (1: the watchdog). The shims' messages (pins,
    Wi-Fi) go to on_message. The caller stops the process and closes the link."""
    link = runtime.HwLink(on_message)
    hw = {"mac": NodeMCU.MAC, "pins": {str(k): v for k, v in (pins or {}).items()}, "reset_cause": reset_cause}
    if romfs_file(fs).exists():
        hw.update(romfs=[0, NodeMCU.ROMFS[1]], romfs_file=str(romfs_file(fs)))
    try:
        proc = runtime.launch(fs, hw, link, {80: http_port, 53: dns_port}, heap, **popen)
    except runtime.BuildError as e:
        link.close()
        raise UserError(str(e)) from None
    return proc, link


def cmd_run(args: argparse.Namespace) -> int:
    pins = {}
    for p in args.pin:
        gpio, _, level = p.partition("=")
        if not (gpio.isdigit() and level in ("0", "1")):
            raise UserError(f"--pin {p}: expected GPIO=LEVEL with LEVEL 0 or 1, e.g. --pin 0=0")
        pins[int(gpio)] = int(level)
    with tempfile.TemporaryDirectory(prefix="espblink-run-") as tmp:
        fs = Path(args.dir) if args.dir else Path(tmp) / "fs"
        install(fs, args.config, romfs=not args.files)
        config = fs / "config.json" if (fs / "config.json").exists() else None
        leds = leds_of(config)
        ap_up = threading.Event()
        printing = threading.Lock()  # the board's lines and the pin lines, each whole

        def say(line: str) -> None:
            with printing:
                print(line, flush=True)

        def on_message(msg: dict[str, Any]) -> None:
            if "gpio" in msg and msg.get("mode") in ("out", "od"):
                say(runtime.gpio_line(msg["gpio"], msg["level"], leds))
            elif msg.get("wlan") == "ap" and msg.get("active"):
                ap_up.set()

        proc, link = power_on(fs, on_message, args.http_port, args.dns_port, args.heap, pins,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        def relay() -> None:
            assert proc.stdout
            for raw in proc.stdout:
                say(raw.decode(errors="replace").rstrip("\r\n"))

        relaying = threading.Thread(target=relay, daemon=True)
        relaying.start()
        try:
            if not wait_listening(args.http_port, proc, time.monotonic() + 20):
                proc.wait(timeout=5) if proc.poll() is not None else proc.kill()
                relaying.join(timeout=2)
                raise UserError(f"the device app did not start serving on port {args.http_port} "
                                f"(exit code {proc.returncode}); see its output above")
            # The board set its pins and started its access point before it listened; the link's thread
            # prints those lines, so the URL waits for it (a bounded wait: an app may run without the AP).
            ap_up.wait(timeout=2)
            say(f"http://127.0.0.1:{args.http_port}/")
            code = proc.wait()
            relaying.join(timeout=2)
            return code
        except KeyboardInterrupt:
            return 0
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except Exception:
                    proc.kill()
            link.close()
            sys.stdout.flush()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the device app (the .mpy build) on MicroPython here")
    p.add_argument("--http-port", type=int, required=True, help="host port the board's port 80 appears at")
    p.add_argument("--dns-port", type=int, default=0, help="host UDP port for the board's DNS (0: any free)")
    p.add_argument("--heap", type=int, default=NodeMCU.HEAP, help="MicroPython heap in bytes (the board's: 38912)")
    p.add_argument("--config", type=Path, help="config.json to put on the virtual board")
    p.add_argument("--dir", help="folder to use as the board's filesystem (default: a temporary one)")
    p.add_argument("--files", action="store_true",
                   help="the code as .mpy files, as on a 1 MB board (default: in a ROMFS partition, as deploy leaves "
                   "a NodeMCU of 2 MB or more)")
    p.add_argument("--pin", action="append", default=[], metavar="GPIO=LEVEL",
                   help="hold an input pin at a level from power-on, e.g. 0=0 (FLASH button held: safe mode)")
    p.set_defaults(func=cmd_run)
