# The virtual board's firmware start-up, as the ESP8266 port's _boot.py, flashbdev.py and inisetup.py
# do it: the filesystem on the flash chip, boot.py, then main.py, then the REPL (micropython -i).
import gc
import os
import sys

import esp
import hwlink
import machine  # noqa: F401  (machine, network and esp load first: on the board they are built in)
import network  # noqa: F401


class FlashBdev:
    SEC_SIZE = 4096
    START_SEC = esp.flash_user_start() // SEC_SIZE

    def __init__(self, blocks):
        self.blocks = blocks

    def readblocks(self, n, buf, off=0):
        esp.flash_read((n + self.START_SEC) * self.SEC_SIZE + off, buf)

    def writeblocks(self, n, buf, off=None):
        if off is None:
            esp.flash_erase(n + self.START_SEC)
            off = 0
        esp.flash_write((n + self.START_SEC) * self.SEC_SIZE + off, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return self.SEC_SIZE
        if op == 6:  # erase
            esp.flash_erase(arg + self.START_SEC)
            return 0


# 20 KB at the end of the flash hold the SDK's parameters.
bdev = FlashBdev((esp.flash_size() - 20480) // FlashBdev.SEC_SIZE - FlashBdev.START_SEC)
os.umount("/")


def _setup():
    # inisetup: an erased region is formatted FAT and given the default boot.py.
    buf = bytearray(bdev.SEC_SIZE)
    bdev.readblocks(0, buf)
    for b in buf:
        if b != 0xFF:
            print("FAT filesystem appears to be corrupted. If you had important data there, you")
            print("may want to make a flash snapshot to try to recover it. Otherwise, perform")
            print("factory reprogramming of MicroPython firmware (completely erase flash, followed")
            print("by firmware programming).")
            return False
    print("Performing initial setup")
    os.VfsFat.mkfs(bdev)
    os.mount(os.VfsFat(bdev), "/")
    with open("boot.py", "w") as f:
        f.write("""\
# This file is executed on every boot (including wake-boot from deepsleep)
#import esp
#esp.osdebug(None)
import os, machine
#os.dupterm(None, 1) # disable REPL on UART(0)
import gc
#import webrepl
#webrepl.start()
gc.collect()
""")
    return True


try:
    os.mount(os.VfsFat(bdev), "/")
    mounted = True
except OSError:
    mounted = _setup()
if mounted:
    os.chdir("/")
sys.path[:] = ["", ".frozen", "/lib"]
del _setup, FlashBdev
gc.collect()


def _run(name):
    try:
        with open(name) as f:
            code = f.read()
    except OSError:
        return
    try:
        exec(code, {"__name__": "__main__"})
    except KeyboardInterrupt:
        pass
    except Exception as e:
        sys.print_exception(e)


if mounted:
    _run("boot.py")
    if not hwlink.cfg.get("raw"):
        _run("main.py")
hwlink.send(wdt=0)  # at the REPL the ESP8266 port feeds the watchdog itself
del _run, mounted
gc.collect()
