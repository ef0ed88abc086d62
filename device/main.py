import sys

import startup

boot = startup.run()  # None: safe mode, or too many crashes in a row; the REPL is free
del startup, sys.modules["startup"]
if boot:
    import app

    app.start(*boot)
