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
        import startup

        startup.failed(e, boot[2])
    app.start(*boot)
