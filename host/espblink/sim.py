"""`espblink sim`: a virtual NodeMCU (the nodemcu package) that stock esptool and mpremote talk to as if it
were on a USB port; its console names the LEDs as the board's settings do. `espblink sim demo` (`make sim`):
a fresh one, flashed and deployed the way a real one is, left running."""

from __future__ import annotations

import argparse
import faulthandler
import json
import re
import signal
import threading
from pathlib import Path
from typing import Any

from espblink import flash, image, paths, rules, settings, sync
from espblink.errors import UserError
from nodemcu import control, runtime
from nodemcu.board import Board, NodeMCU

CONFIG = "config.json"  # the board's settings, as deploy writes them


def wiring(board: Board) -> list[dict[str, Any]] | None:
    """The LEDs the board's settings name (its config.json), for the console and state.json."""
    data = board.read_file(CONFIG)
    if data is None:
        return None
    try:
        return rules.complete(json.loads(data))["leds"]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def new_board(state: Path, heap: int, **kw: Any) -> Board:
    try:
        return Board(state, heap=heap, wiring=wiring, **kw)
    except runtime.BuildError as e:
        raise UserError(str(e)) from None


def parse_sta(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        ssid, sep, key = v.partition("=")
        if not sep:
            raise UserError(f"--sta wants SSID=KEY, got {v!r}")
        out[ssid] = key
    return out


def parse_mac(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise UserError(f"--mac wants six hex bytes split by colons, e.g. 5c:cf:7f:00:00:01; got {text!r}")
    return text.lower()


def demo(state: Path, heap: int = NodeMCU.HEAP, settings_path: Path = settings.DEFAULT) -> int:
    for name in NodeMCU.FILES:  # a fresh board: erased flash (only the board's own files go)
        (state / name).unlink(missing_ok=True)
    board = new_board(state, heap, log=lambda line: print(f"  [board] {line}", flush=True))
    ctl = control.serve(board)
    try:
        board.power_on()
        port = board.rfc2217.url
        print(f"virtual NodeMCU on {port} (terminal: {board.pty.path})")
        # No MicroPython image can be downloaded for the virtual board: it runs the board's MicroPython built
        # for this host, and takes any valid ESP8266 image as its firmware; one that names the FLASH_2M_ROMFS
        # build, as `make flash` picks for a 4 MB NodeMCU, gives it the ROMFS partition deploy puts the code in.
        fw = paths.BUILD / "sim-firmware.bin"
        fw.parent.mkdir(parents=True, exist_ok=True)
        fw.write_bytes(image.make(variant="FLASH_2M_ROMFS"))
        flash.flash(port, str(fw))
        sync.deploy(port, settings_path)
        print(f"\nOn this machine the board's page is at {board.info()['http']} (the board's 192.168.4.1).")
        print(f"Control it: espblink sim ctl --state {state} power-cycle | reset [hold-flash] | pin GPIO 0|1 | state")
        print("Ctrl-C stops the board.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        control.stop(board, ctl)
        print("board stopped", flush=True)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack: for hangs
    board = new_board(Path(args.state), args.heap, sta=parse_sta(args.sta), sta_delay_ms=args.sta_delay_ms,
                      mac=parse_mac(args.mac), address=args.ip)
    ctl = control.serve(board)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    board.power_on()
    info = board.info()
    if args.json:
        print(json.dumps(info), flush=True)
    else:
        print(f"virtual NodeMCU on {info['serial']} (terminal: {info['pty']}); its web server at {info['http']}",
              flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        control.stop(board, ctl)
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    try:
        out = control.control(Path(args.state), args.action, *args.args)
    except control.ControlError as e:
        raise UserError(str(e)) from None
    print(json.dumps(out, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return demo(Path(args.state), args.heap, Path(args.settings))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run a virtual NodeMCU (esptool and mpremote talk to it over rfc2217://)")
    p.add_argument("--state", default=".sim/board", help="folder that keeps the board's flash across runs")
    p.add_argument("--json", action="store_true", help="print one JSON line with the board's addresses")
    p.add_argument("--heap", type=int, default=NodeMCU.HEAP, help="the board's MicroPython heap (bytes)")
    p.add_argument("--sta", action="append", default=[], metavar="SSID=KEY",
                   help="a Wi-Fi network in range the board can join as a station")
    p.add_argument("--sta-delay-ms", type=int, default=1500, help="how long joining a network takes")
    p.add_argument("--mac", default=NodeMCU.MAC, help=f"the board's MAC address, its id (default {NodeMCU.MAC})")
    p.add_argument("--ip", metavar="127.0.0.N", help="an address of its own, as on a LAN: its web server on port 80 "
                   "there, its IP on home Wi-Fi (binding port 80 needs root or net.ipv4.ip_unprivileged_port_start)")
    p.set_defaults(func=cmd_sim)
    s = p.add_subparsers(dest="sim_command", metavar="ACTION")
    c = s.add_parser("ctl", help="control a running board: power-cycle, reset, pin GPIO 0|1, sta-drop, state",
                     epilog="power-cycle hold-flash / reset hold-flash: FLASH (GPIO0) pressed just after the chip "
                     "started (safe mode); pin 0 1 releases it. pin 0 0 before a reset: the ROM bootloader.")
    c.add_argument("--state", default=".sim/board")
    c.add_argument("action", choices=sorted(control.ACTIONS))
    c.add_argument("args", nargs="*")
    c.set_defaults(func=cmd_ctl)
    d = s.add_parser("demo", help="a fresh board, flashed and deployed, left running (what `make sim` does)")
    d.add_argument("--state", default=".sim/demo")
    d.add_argument("--heap", type=int, default=NodeMCU.HEAP)
    d.add_argument("--settings", default=str(settings.DEFAULT), help="the settings deployed (created if missing)")
    d.set_defaults(func=cmd_demo)
