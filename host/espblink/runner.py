"""`espblink run`: the device app on real MicroPython in the foreground, as the board would run it."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from espblink import build, rules, runtime
from espblink.errors import UserError


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


def cmd_run(args: argparse.Namespace) -> int:
    src = build.build()
    shims = build.compile_shims()
    with tempfile.TemporaryDirectory(prefix="espblink-run-") as tmp:
        fs = Path(args.dir) if args.dir else Path(tmp)
        fs.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            shutil.copyfile(f, fs / f.name)
        if args.config:
            shutil.copyfile(args.config, fs / "config.json")
        config = fs / "config.json" if (fs / "config.json").exists() else None
        leds = leds_of(config)

        ap_up = threading.Event()

        def on_message(msg: dict[str, Any]) -> None:
            if "gpio" in msg and msg.get("mode") in ("out", "od"):
                print(runtime.gpio_line(msg["gpio"], msg["level"], leds), flush=True)
            elif msg.get("wlan") == "ap" and msg.get("active"):
                ap_up.set()

        link = runtime.HwLink(on_message)
        pins = dict(p.split("=", 1) for p in args.pin)
        hw = {"hw": link.port, "mac": runtime.MAC, "pins": {k: int(v) for k, v in pins.items()}}
        proc = runtime.spawn([str(shims / "launch.py")], fs, args.heap, hw,
                             {80: args.http_port, 53: args.dns_port})
        try:
            if not wait_listening(args.http_port, proc, time.monotonic() + 20):
                proc.wait(timeout=5) if proc.poll() is not None else proc.kill()
                raise UserError(f"the device app did not start serving on port {args.http_port} "
                                f"(exit code {proc.returncode}); see its output above")
            # The board set its pins and started its access point before it listened; the link's thread
            # prints those lines, so the URL waits for it (a bounded wait: an app may run without the AP).
            ap_up.wait(timeout=2)
            print(f"http://127.0.0.1:{args.http_port}/", flush=True)
            return proc.wait()
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
    p.add_argument("--heap", type=int, default=runtime.DEFAULT_HEAP, help="MicroPython heap in bytes")
    p.add_argument("--config", type=Path, help="config.json to put on the virtual board")
    p.add_argument("--dir", help="folder to use as the board's filesystem (default: a temporary one)")
    p.add_argument("--pin", action="append", default=[], metavar="GPIO=LEVEL",
                   help="hold an input pin at a level from power-on, e.g. 0=0 (FLASH button held: safe mode)")
    p.set_defaults(func=cmd_run)
