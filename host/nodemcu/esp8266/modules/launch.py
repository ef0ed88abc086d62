# What the firmware does at power-on, frozen into the virtual board's MicroPython: the port's _boot.py
# (littlefs on the flash chip, formatted by inisetup.py on first boot), the ROMFS partition at /rom where
# the variant has one, then boot.py and main.py (main.py not after a soft reset into the raw REPL).
# Without a flash image (`espblink run`) the current folder is the filesystem.
import gc
import os
import sys

import vfs

import esp  # noqa: F401  (the board's C modules are there before anything runs)
import hwlink
import machine  # noqa: F401
import network  # noqa: F401

cfg = hwlink.cfg
sys.path[:] = ["", ".frozen"]
if cfg.get("romfs"):
    # As mp_init does on the FLASH_2M_ROMFS build (mp_vfs_mount_romfs_protected): no valid image, not mounted.
    try:
        vfs.mount(vfs.VfsRom(vfs.rom_ioctl(2, 0)), "/rom")
        sys.path += ["/rom", "/rom/lib"]
    except Exception:
        pass
if cfg.get("flash"):
    vfs.umount("/")  # the unix port starts with the host's folders mounted at /
    import _boot  # noqa: F401

    os.chdir("/")
    del sys.modules["_boot"]
    sys.path += ["/lib", "/"]  # as the port's main.c appends them
else:
    gc.threshold((gc.mem_free() + gc.mem_alloc()) // 4)  # what _boot.py does first
    sys.path.append("lib")  # the folder's own lib/, not the host's /lib
hwlink.send(ready=1)  # the filesystem is up: the virtual UART delivers what was typed meanwhile


def _run(name):
    # As the port's pyexec_file: compiled straight from the file (imported, not read into a string first,
    # so its source is not held on the heap while it runs), errors printed, Ctrl-C too.
    try:
        os.stat(name + ".py")
    except OSError:
        return
    try:
        __import__(name)
    except BaseException as e:  # Ctrl-C too: the port prints the traceback, then its REPL starts
        if isinstance(e, SystemExit):
            raise
        sys.print_exception(e)
    finally:
        sys.modules.pop(name, None)


gc.collect()
_run("boot")
if not cfg.get("raw"):
    _run("main")
hwlink.send(wdt=0)  # at the REPL the ESP8266 port feeds the watchdog itself
hwlink.send(repl=1)  # boot.py and main.py are done: the host can tell the board is idle
del sys.modules["launch"]
gc.collect()
