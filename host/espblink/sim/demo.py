"""`make sim`: a fresh virtual NodeMCU, flashed and deployed the way a real one is, left running."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from espblink import flash, image, paths, runtime, settings, sync
from espblink.sim import serve_control
from espblink.sim.board import Board


def demo(state: Path, heap: int = runtime.SIM_HEAP) -> int:
    if state.exists():
        shutil.rmtree(state)  # a fresh board: erased flash
    board = Board(state, heap=heap, log=lambda line: print(f"  [board] {line}", flush=True))
    ctl = serve_control(board, state)
    try:
        board.power_on()
        port = board.rfc2217.url
        print(f"virtual NodeMCU on {port} (terminal: {board.pty.path})")
        # No MicroPython image can be downloaded for the virtual board: it runs the unix port, and takes any
        # valid ESP8266 image as its firmware.
        fw = paths.BUILD / "sim-firmware.bin"
        fw.parent.mkdir(parents=True, exist_ok=True)
        fw.write_bytes(image.make())
        flash.flash(port, str(fw))
        sync.deploy(port, settings.DEFAULT)
        print(f"\nOn this machine the board's page is at {board.info()['http']} (the board's 192.168.4.1).")
        print(f"Control it: espblink sim ctl --state {state} power-cycle | reset | pin 0 0 | state")
        print("Ctrl-C stops the board.")
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        ctl.close()
        board.close()
    return 0


