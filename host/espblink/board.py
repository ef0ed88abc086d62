"""`espblink repl`, `reset` and `status`: everyday commands on a deployed board."""

from __future__ import annotations

import argparse
import os
import sys

from espblink import device, ports, sync

STATUS = f"""\
crashes = {device.CRASHES!r}
import gc, os, sys
gc.collect()
v = sys.implementation
print('firmware: MicroPython %d.%d.%d, .mpy %d.%d' % (v.version[0], v.version[1], v.version[2], v._mpy & 0xff,
      v._mpy >> 8 & 3))
print('free heap: %d bytes' % gc.mem_free())
s = os.statvfs('/')
print('filesystem: %d KB free of %d KB' % (s[0] * s[3] // 1024, s[0] * s[2] // 1024))
print('files:', ' '.join(sorted(os.listdir())))
try:
    print('crashes in a row:', open(crashes).read())
except OSError:
    pass
"""


def repl(port: str | None) -> None:
    port = ports.detect(port)
    ports.check_free(port)
    os.execv(sys.executable, [sys.executable, "-m", "mpremote", "connect", port, "resume", "repl"])


def reset(port: str | None) -> None:
    """Restart the board (RTS, as esptool does; a soft reset where RTS resets nothing) and wait for the app."""
    port = ports.detect(port)
    ports.check_free(port)
    url, ssid = sync.restart_and_watch(port)
    print(f"reset {port}; app: serving {url} on Wi-Fi {ssid!r}")


def status(port: str | None) -> None:
    port = ports.detect(port)
    t = sync.open_board(port)
    try:
        print(t.exec(STATUS).decode().strip())
        sync.leave_raw_repl(t)
    finally:
        t.close()
    url, ssid = sync.restart_and_watch(port)
    print(f"app: serving {url} on Wi-Fi {ssid!r}")


def register(sub: argparse._SubParsersAction) -> None:
    for name, fn, text in (("repl", repl, "the board's REPL (mpremote); Ctrl-] leaves"),
                           ("reset", reset, "restart the board and wait until the app serves"),
                           ("status", status, "firmware, heap, files, then restart and check the app serves")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--port", help="serial port or URL (default: the one NodeMCU found)")
        p.set_defaults(func=lambda a, fn=fn: fn(a.port) or 0)


