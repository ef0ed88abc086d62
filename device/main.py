import gc
import sys

import startup

boot = startup.run()  # None: safe mode, or too many crashes in a row; the REPL is free
del startup, sys.modules["startup"]
gc.collect()  # what the start-up left is freed before the app loads into it
if boot:
    try:
        import app
    except Exception as e:  # an app that cannot even load is a crash too
        sys.print_exception(e)
        import startup

        startup.set_crashes(boot[2] + 1)
        print("espblink: the app crashed as it loaded (%d in a row); rebooting" % (boot[2] + 1))
        import machine

        machine.reset()
    app.start(*boot)
