# /api/ota in the app of a board whose code runs from files (1 MB): ota.py does not fit in the heap beside
# the app there. GET sends the last deploy's record (the host sees whether anything changed); POST restarts
# the board into update mode (boot.py runs otamode.py once), which takes the signed update or refuses it.
import gc
import sys
import time

import server

MODE = "ota.mode"  # a folder (no file buffer to find room for): boot.py removes it and runs update mode


def handle(app, req):
    if req.method == b"POST":
        import os

        try:
            os.mkdir(MODE)
        except OSError:
            pass
        app.restart_at = time.ticks_add(time.ticks_ms(), 300)
        server.send(req.sock, b"200 OK", b"restarting into update mode\n")
        return
    gc.collect()
    server.send_file(req, open(".deployed", "rb"), server.TEXT, b"X-Espblink-Mode: files %d\r\n" %
                     sys.implementation._mpy)
