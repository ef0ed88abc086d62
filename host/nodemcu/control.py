"""A running virtual board's control socket (ctl.sock in its state folder): power, reset, buttons, Wi-Fi.

One word a request, looked up by name in Board's actions; the answer is the board's state (JSON)."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from nodemcu.board import Board

CTL = "ctl.sock"


class ControlError(Exception):
    """The board is not running, or refused the request; the message says which."""


def hold_flash(args: list[str]) -> bool:
    if args not in ([], ["hold-flash"]):
        raise ValueError(f"the only option here is hold-flash, not {' '.join(args)}")
    return bool(args)


def pin_args(args: list[str]) -> tuple[int, int]:
    if len(args) != 2 or not args[0].isdigit() or args[1] not in ("0", "1"):
        raise ValueError(f"pin wants a GPIO number and a level 0 or 1 (e.g. `pin 0 0`), not {' '.join(args)!r}")
    return int(args[0]), int(args[1])


ACTIONS = {
    "power-cycle": lambda board, a: board.power_cycle(hold_flash=hold_flash(a)),
    "power-off": lambda board, a: board.power_off(),
    "power-on": lambda board, a: board.power_on(),
    "reset": lambda board, a: board.reset(hold_flash=hold_flash(a)),
    "pin": lambda board, a: board.set_pin(*pin_args(a)),
    "sta-drop": lambda board, a: board.drop_sta(),
    "state": lambda board, a: None,
}


def serve(board: Board) -> socket.socket:
    """Answer control requests for board until the returned socket is closed (stop())."""
    path = board.dir / CTL
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                words = conn.recv(1024).decode().split()
                try:
                    ACTIONS[words[0]](board, words[1:])
                    conn.sendall(json.dumps(board.state()).encode())
                except (KeyError, IndexError, ValueError) as e:
                    msg = str(e) if isinstance(e, ValueError) else f"unknown control command {' '.join(words)!r}"
                    conn.sendall(json.dumps({"error": msg}).encode())

    threading.Thread(target=loop, daemon=True, name="ctl").start()
    return srv


def stop(board: Board, ctl: socket.socket) -> None:
    """Shut down what serve() started and the board itself; the control socket goes with them."""
    ctl.close()
    board.close()
    (board.dir / CTL).unlink(missing_ok=True)


def control(state: Path, *words: str, timeout: float = 30) -> dict:
    """Send one control request to the board running on `state`; returns its state afterwards."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(state / CTL))
    except OSError:
        raise ControlError(f"no virtual board is running on {state}: start one with `espblink sim --state {state}`")\
            from None
    with s:
        s.sendall(" ".join(words).encode())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out = json.loads(data)
    if "error" in out:
        raise ControlError(out["error"])
    return out
