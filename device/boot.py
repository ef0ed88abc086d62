# Runs at every power-on before main.py.
import esp

esp.osdebug(None)
import gc
import sys

gc.collect()
import os

try:
    os.rmdir("ota.mode")  # update mode asked for (otaask.py): this start only, so a crash in it cannot loop
    mode = True
except OSError:
    mode = False
try:
    with open("ota.state", "rb") as f:  # an update over Wi-Fi's journal (ota.py)
        journal = f.read().split(b"\n")
except OSError:
    journal = None
trial = None
try:
    os.rmdir("ota.up")  # the new app on trial served (app.py), in an earlier start
except OSError:
    pass
if journal:
    w = journal[0].split()
    if w[:1] == [b"trial"] and int(w[1]) < 3 and b"hung" not in journal:
        # One more start of the new app on trial, counted here: loading ota.py would leave a 1 MB board's
        # heap too broken up for its app.
        trial = int(w[1]) + 1
        with open("ota.state.tmp", "wb") as f:
            f.write(b"trial %d\n" % trial)
            for line in journal[1:]:
                if len(line.split()) >= 3:
                    f.write(line + b"\n")
        os.rename("ota.state.tmp", "ota.state")
        print("espblink: new app on trial (start %d of 3); it is kept once it has run 30 s" % trial)
        del f, line, w
    else:  # a swap to finish (a new ROMFS image written), or the old app to put back
        try:  # the update's code comes from the filesystem then, not from the partition it may rewrite
            import vfs

            vfs.umount("/rom")
        except (ImportError, AttributeError, OSError):
            pass
        import ota
        import machine

        if ota.boot():  # mounts /rom again
            machine.reset()  # the old app is back: it starts with the heap in one piece
        del ota, sys.modules["ota"]
        trial = 1
if trial and not mode:  # the new app must serve within 30 s of this start
    import machine

    def hung(t):
        # The app on trial has not served 30 s after this start (it loops or waits before serving): the
        # journal says so and the next start puts the old app back. Runs between two bytecodes of whatever
        # the app does, maybe with the heap full: then a plain reset, which counts a start too.
        try:
            os.stat("ota.up")
            return  # it serves
        except OSError:
            pass
        try:
            with open("ota.state", "ab") as f:
                f.write(b"hung\n")
        except Exception:
            pass
        machine.reset()

    trial = machine.Timer(-1)  # kept referenced while armed (the SDK's timer list points at it)
    trial.init(period=30000, mode=machine.Timer.ONE_SHOT, callback=hung)
del journal, esp, gc  # (the timer's callback keeps this module's names)
if mode:  # instead of the app (otamode.py): Wi-Fi and ota.py, for one update
    import otamode

    otamode.run()  # ends in a reset into the app, or returns after Ctrl-C
    del otamode, sys.modules["otamode"]
del mode
