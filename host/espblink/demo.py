"""`make sim`: a fresh virtual NodeMCU, flashed and deployed the way a real one is, left running."""

from __future__ import annotations

import threading
from pathlib import Path

from espblink import flash, image, paths, settings, sync
from espblink.sim import new_board
from nodemcu import control
from nodemcu.board import NodeMCU


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
