# First boot of the virtual board, as the ESP8266 port's frozen inisetup.py: an erased filesystem region
# is formatted FAT and given the port's default boot.py; anything else that does not mount is reported.
import os

from flashbdev import bdev


def setup():
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
