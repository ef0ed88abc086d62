"""Finding the board's serial port and saying plainly why it cannot be opened."""

from __future__ import annotations

import errno
import time

import serial
import serial.tools.list_ports

from espblink.errors import UserError

# The USB-serial chips NodeMCU boards carry.
CHIPS = {(0x10C4, 0xEA60): "CP210x", (0x1A86, 0x7523): "CH340", (0x0403, 0x6001): "FTDI"}


def detect(port: str | None) -> str:
    """The port to use: the one given (any pyserial URL works), else the one NodeMCU-like USB device."""
    if port:
        return port
    seen = list(serial.tools.list_ports.comports())
    boards = [p for p in seen if (p.vid, p.pid) in CHIPS]
    if len(boards) == 1:
        return boards[0].device
    listing = "\n".join(f"  {p.device}: {p.description}" + (f" ({CHIPS[(p.vid, p.pid)]})" if (p.vid, p.pid) in CHIPS
                        else "") for p in seen) or "  (no serial ports at all)"
    if not boards:
        raise UserError("no NodeMCU found: no CP210x, CH340 or FTDI USB-serial port is connected. Ports seen:\n"
                        f"{listing}\nPlug the board in with a data cable (some are charge-only), install the "
                        "chip's driver if needed, or pass PORT=/dev/ttyUSB0 (or rfc2217://host:port).")
    raise UserError(f"several boards are connected:\n{listing}\nchoose one with PORT=...")


def check_free(port: str, attempts: int = 4) -> None:
    """Open the port once, exclusively, to turn the usual failures into a plain message. A port that the
    previous program is still letting go of (busy for a moment) is tried again."""
    for attempt in range(attempts):
        try:
            s = serial.serial_for_url(port, do_not_open=True)
            if hasattr(s, "exclusive") and not port.startswith(("rfc2217://", "socket://", "loop://")):
                s.exclusive = True
            s.open()
            s.close()
            return
        except (serial.SerialException, OSError) as e:
            message = explain(port, e)
            missing = getattr(e, "errno", None) in (errno.ENOENT, errno.EACCES) or "No such file" in str(e)
            if missing or attempt == attempts - 1:
                raise UserError(message) from None
            time.sleep(1)


def explain(port: str, e: BaseException) -> str:
    code = getattr(e, "errno", None)
    text = str(e)
    if code == errno.EACCES or "Permission denied" in text:
        return (f"permission denied on {port}: add yourself to the dialout group "
                "(sudo usermod -aG dialout $USER), then log out and in again")
    if code in (errno.EBUSY, errno.EAGAIN) or "busy" in text.lower() or "lock" in text.lower():
        return (f"{port} is busy: another program has it open (a serial terminal, `make repl`, mpremote, "
                "Thonny, the Arduino IDE). Close it and try again")
    if code == errno.ENOENT or "No such file" in text or "could not open port" in text:
        return f"no serial port {port}: is the board plugged in? Check PORT= (see `ls /dev/ttyUSB* /dev/ttyACM*`)"
    if port.startswith("rfc2217://"):
        return f"cannot open {port} ({text}): is the virtual board running, and is no other program using it?"
    return f"cannot open {port}: {text}"
