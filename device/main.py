import gc
import sys

import machine
import startup

boot = startup.run()  # None: safe mode, or too many crashes in a row; the REPL is free
del startup, sys.modules["startup"]
gc.collect()  # what the start-up left is freed before the app loads into it


def hung(t):
    # A new app on trial that has not served 30 s after its start (it loops or waits): the journal says so
    # and the next start puts the old app back. This runs between two bytecodes of whatever the app does,
    # maybe with the heap full: whatever happens, the board resets (a plain reset counts a start too).
    try:
        gc.collect()
        with open("ota.state", "a") as f:
            f.write("hung\n")
    finally:
        machine.reset()


if boot:
    import os

    try:
        os.stat("ota.state")  # a new app on trial (boot.py counted this start): it must serve within 30 s
        trial = machine.Timer(-1)  # referenced while armed: the SDK's timer list points at it
        trial.init(period=30000, mode=machine.Timer.ONE_SHOT, callback=hung)
    except OSError:
        trial = None
    try:
        import app
    except Exception as e:  # an app that cannot even load is a crash too
        import startup

        startup.failed(e, boot[2])
    app.start(*boot, trial)
