# Runs at every power-on before main.py.
import esp

esp.osdebug(None)
import gc
import sys

gc.collect()
import os

try:
    os.stat("ota.state")  # an update over Wi-Fi: its swap finished (a new ROMFS image written), its new app's starts
    update = True  # counted, the old app put back after 3 crashes in a row
except OSError:
    update = False
if update:
    try:  # the update's code comes from the filesystem then, not from the partition it may rewrite
        import vfs

        vfs.umount("/rom")
    except (ImportError, AttributeError, OSError):
        pass
    import ota

    ota.boot()  # mounts /rom again
    del ota, sys.modules["ota"]
del update
