# The virtual board's firmware start-up (`espblink sim`), as the ESP8266 port's frozen _boot.py: the
# filesystem on the flash chip, boot.py, then main.py (not after a soft reset from the raw REPL), then
# the REPL (micropython -i -c "import board_boot; board_boot.boot()").
import gc
import os
import sys

import esp  # noqa: F401  (machine, network and esp load first: on the board they are built in)
import hwlink
import machine  # noqa: F401
import network  # noqa: F401

hwlink.qstr_room()


def run(name):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return
    try:
        exec(code, {"__name__": "__main__"})
    except BaseException as e:  # Ctrl-C included: the port prints its traceback, then the REPL starts
        if isinstance(e, SystemExit):
            raise
        sys.print_exception(e)


def boot():
    import inisetup  # imported while the host's folders are still mounted: frozen modules on the board
    from flashbdev import bdev

    os.umount("/")
    try:
        os.mount(os.VfsFat(bdev), "/")
        mounted = True
    except OSError:
        mounted = inisetup.setup()
    if mounted:
        os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]
    hwlink.send(ready=1)  # the filesystem is up: the virtual UART delivers what was typed meanwhile
    if mounted:
        gc.collect()
        run("boot.py")
        if not hwlink.cfg.get("raw"):
            run("main.py")
    hwlink.send(wdt=0)  # at the REPL the ESP8266 port feeds the watchdog itself
    hwlink.send(repl=1)  # boot.py and main.py are done: the host can tell the board is idle
    gc.collect()
