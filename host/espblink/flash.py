"""`espblink flash` and `espblink erase`: esptool, used as the library it is."""

from __future__ import annotations

import argparse
import contextlib

from esptool.cmds import attach_flash, detect_chip, detect_flash_size, erase_flash, reset_chip, run_stub, write_flash
from esptool.util import FatalError

from espblink import firmware, ports
from espblink.errors import UserError

FAST_BAUD = 460800
SAFE_BAUD = 115200


@contextlib.contextmanager
def connect(port: str):  # noqa: ANN201
    """esptool connected to the board's ROM (reset into the bootloader) with its flasher stub running."""
    ports.check_free(port)
    try:
        esp = detect_chip(port, connect_attempts=3)
    except FatalError as e:
        raise UserError(f"no ESP8266 answered on {port} ({e}). Check the cable; if auto-reset does not work, hold "
                        "the FLASH button while pressing RST, then try again") from None
    except OSError as e:
        raise UserError(ports.explain(port, e)) from None
    try:
        if esp.CHIP_NAME != "ESP8266":
            raise UserError(f"the chip on {port} is an {esp.CHIP_NAME}: espblink is for the ESP8266 (NodeMCU)")
        yield run_stub(esp)
    finally:
        esp._port.close()


def flash(port: str | None, firmware_path: str | None = None, fw: firmware.Firmware | None = None) -> None:
    """Erase the chip and write MicroPython, verified, then start it: the file firmware_path, else the build
    of fw's release (default: firmware/manifest.json) for the flash size the chip reports."""
    port = ports.detect(port)
    fw = fw or firmware.Firmware()
    with connect(port) as esp:
        attach_flash(esp)
        size = detect_flash_size(esp) or "4MB"
        if firmware_path:
            path = firmware.local(firmware_path)
        else:
            variant = fw.variant(size)
            print(f"flash chip: {size}; MicroPython {fw.release} build: {variant.file}")
            path = fw.fetch(variant)
        data = path.read_bytes()
        print(f"erasing the flash on {port}…")
        erase_flash(esp)
        for baud in (FAST_BAUD, SAFE_BAUD):
            try:
                if baud != SAFE_BAUD:
                    esp.change_baud(baud)
                print(f"writing {path.name} ({len(data) // 1024} KB) at {baud} baud…")
                write_flash(esp, [(0, data)], flash_size=size)
                break
            except FatalError as e:
                if baud == SAFE_BAUD:
                    raise UserError(f"writing the firmware failed ({e}); try a shorter or better USB cable") from None
                print(f"writing at {baud} baud failed ({e}); retrying at {SAFE_BAUD}")
                esp.change_baud(SAFE_BAUD)
        reset_chip(esp, "hard-reset")
    print(f"MicroPython is on the board; next: make deploy PORT={port}")


def erase(port: str | None) -> None:
    port = ports.detect(port)
    with connect(port) as esp:
        erase_flash(esp)
        reset_chip(esp, "hard-reset")
    print(f"flash erased on {port} (firmware and files are gone: `make flash` puts MicroPython back)")


def cmd_flash(args: argparse.Namespace) -> int:
    flash(args.port, args.firmware)
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    erase(args.port)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="erase the board and write the pinned MicroPython firmware (verified)")
    p.add_argument("--port", help="serial port or URL (default: the one NodeMCU found)")
    p.add_argument("--firmware", help="a local firmware .bin instead of the pinned download")
    p.set_defaults(func=cmd_flash)
    e = sub.add_parser("erase", help="erase the whole flash (firmware and files)")
    e.add_argument("--port")
    e.set_defaults(func=cmd_erase)


