# What the firmware does at power-on, for `espblink run`: boot.py, then main.py, from the current folder.
import sys

sys.path.insert(0, "")
sys.path.append("/lib")
import esp  # noqa: E402  (the shims load first, as built-ins do on the board)
import machine  # noqa: E402,F401
import network  # noqa: E402,F401
import hwlink  # noqa: E402

hwlink.qstr_room()


def _run(name):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        code = f.read()
    exec(code, {"__name__": "__main__"})


_run("boot.py")
_run("main.py")
