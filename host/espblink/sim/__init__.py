"""`espblink sim`: a virtual NodeMCU that stock esptool and mpremote talk to as if it were on a USB port."""

from __future__ import annotations

import argparse
import faulthandler
import json
import signal
import socket
import threading
from pathlib import Path

from espblink import runtime, settings
from espblink.errors import UserError

CTL = "ctl.sock"


def hold_flash(args: list[str]) -> bool:
    if args not in ([], ["hold-flash"]):
        raise ValueError(f"the only option here is hold-flash, not {' '.join(args)}")
    return bool(args)


def pin_args(args: list[str]) -> tuple[int, int]:
    if len(args) != 2 or not args[0].isdigit() or args[1] not in ("0", "1"):
        raise ValueError(f"pin wants a GPIO number and a level 0 or 1 (e.g. `pin 0 0`), not {' '.join(args)!r}")
    return int(args[0]), int(args[1])


def serve_control(board, state: Path) -> socket.socket:  # noqa: ANN001
    """`espblink sim ctl` talks to the running board through a unix socket in its state folder."""
    path = state / CTL
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)
    actions = {
        "power-cycle": lambda a: board.power_cycle(hold_flash=hold_flash(a)),
        "power-off": lambda a: board.power_off(),
        "power-on": lambda a: board.power_on(),
        "reset": lambda a: board.reset(hold_flash=hold_flash(a)),
        "pin": lambda a: board.set_pin(*pin_args(a)),
        "sta-drop": lambda a: board.drop_sta(),
        "state": lambda a: None,
    }

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                words = conn.recv(1024).decode().split()
                try:
                    actions[words[0]](words[1:])
                    conn.sendall(json.dumps(board.state()).encode())
                except (KeyError, IndexError, ValueError) as e:
                    msg = str(e) if isinstance(e, ValueError) else f"unknown control command {' '.join(words)!r}"
                    conn.sendall(json.dumps({"error": msg}).encode())

    threading.Thread(target=serve, daemon=True, name="ctl").start()
    return srv


def stop_board(board, ctl: socket.socket, state: Path) -> None:  # noqa: ANN001
    """Shut down what serve_control() started and the board itself; the control socket goes with them."""
    ctl.close()
    board.close()
    (state / CTL).unlink(missing_ok=True)


def control(state: Path, *words: str, timeout: float = 30) -> dict:
    """Send one control command to the board running on `state`; returns its state afterwards."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(state / CTL))
    except OSError:
        raise UserError(f"no virtual board is running on {state}: start one with `espblink sim --state {state}`")\
            from None
    with s:
        s.sendall(" ".join(words).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out = json.loads(data)
    if "error" in out:
        raise UserError(out["error"])
    return out


def parse_sta(values: list[str]) -> dict[str, str]:
    out = {}
    for v in values:
        ssid, sep, key = v.partition("=")
        if not sep:
            raise UserError(f"--sta wants SSID=KEY, got {v!r}")
        out[ssid] = key
    return out


def cmd_sim(args: argparse.Namespace) -> int:
    from espblink.sim.board import Board

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack: for hangs
    state = Path(args.state)
    board = Board(state, heap=args.heap, sta=parse_sta(args.sta), sta_delay_ms=args.sta_delay_ms)
    ctl = serve_control(board, state)
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
        stop_board(board, ctl, state)
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    words = [args.action, *args.args]
    out = control(Path(args.state), *words)
    print(json.dumps(out, indent=1))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from espblink.sim.demo import demo

    return demo(Path(args.state), args.heap, Path(args.settings))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run a virtual NodeMCU (esptool and mpremote talk to it over rfc2217://)")
    p.add_argument("--state", default=".sim/board", help="folder that keeps the board's flash across runs")
    p.add_argument("--json", action="store_true", help="print one JSON line with the board's addresses")
    p.add_argument("--heap", type=int, default=runtime.SIM_HEAP, help="the board's MicroPython heap (bytes)")
    p.add_argument("--sta", action="append", default=[], metavar="SSID=KEY",
                   help="a Wi-Fi network in range the board can join as a station")
    p.add_argument("--sta-delay-ms", type=int, default=1500, help="how long joining a network takes")
    p.set_defaults(func=cmd_sim)
    s = p.add_subparsers(dest="sim_command", metavar="ACTION")
    c = s.add_parser("ctl", help="control a running board: power-cycle, reset, pin GPIO 0|1, sta-drop, state",
                     epilog="power-cycle hold-flash / reset hold-flash: FLASH (GPIO0) pressed just after the chip "
                     "started (safe mode); pin 0 1 releases it. pin 0 0 before a reset: the ROM bootloader.")
    c.add_argument("--state", default=".sim/board")
    c.add_argument("action", choices=["power-cycle", "power-off", "power-on", "reset", "pin", "sta-drop", "state"])
    c.add_argument("args", nargs="*")
    c.set_defaults(func=cmd_ctl)
    d = s.add_parser("demo", help="a fresh board, flashed and deployed, left running (what `make sim` does)")
    d.add_argument("--state", default=".sim/demo")
    d.add_argument("--heap", type=int, default=runtime.SIM_HEAP)
    d.add_argument("--settings", default=str(settings.DEFAULT), help="the settings deployed (created if missing)")
    d.set_defaults(func=cmd_demo)
