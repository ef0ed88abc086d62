# Power-on, before the app: safe mode, the boot-loop guard and the settings. main.py unloads this
# module before the app starts, so none of it stays on the heap.
import sys

import machine

CRASHES = "crashes.txt"


def crashes():
    try:
        with open(CRASHES) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def set_crashes(n):
    if n == crashes():
        return
    if n:
        with open(CRASHES, "w") as f:
            f.write(str(n))
    else:
        import os

        os.remove(CRASHES)


def failed(e, n):
    # The app could not even be imported (main.py): a crash like any other, counted, then a reset.
    sys.print_exception(e)
    set_crashes(n + 1)
    print("espblink: the app crashed as it loaded (%d in a row); rebooting" % (n + 1))
    machine.reset()


def clear():
    # After fixing a crash: import startup; startup.clear(); then reset.
    set_crashes(0)


def romfs():
    # Code deployed to the ROMFS partition has a copy in lib/ (after /rom on sys.path); code.id in both
    # names it. No valid image there (a deploy was interrupted), or another one: said, and the copy runs.
    try:
        with open("lib/code.id") as f:
            code = f.read()
    except OSError:
        return  # the code is stored as files
    try:
        with open("/rom/code.id") as f:
            if f.read() == code:
                return
    except OSError:
        pass
    for p in ("/rom", "/rom/lib"):
        if p in sys.path:
            sys.path.remove(p)
    print("espblink: the ROMFS partition does not hold this code: running its copy in lib/; run make deploy")


def run():
    # Returns (config, warning, crashes so far) for the app, or None when it must not start.
    # GPIO0 is the FLASH button (pressed = low): held at power-on, the app stays off and the REPL free.
    romfs()
    if machine.Pin(0, machine.Pin.IN).value() == 0:
        print("espblink: safe mode (FLASH button held at power-on): app not started, REPL free")
        return None
    n = crashes()
    if machine.reset_cause() == machine.WDT_RESET:
        n += 1
        set_crashes(n)
    if n >= 3:
        print("espblink: the app crashed %d times in a row, so it no longer starts by itself." % n)
        print("espblink: fix the cause and deploy again, or run: import startup; startup.clear(); then reset")
        return None
    import config

    try:
        cfg, warning = config.load()
    finally:
        # The settings code is needed once: unloading it gives its heap back to the requests.
        del sys.modules["config"], sys.modules["rules"]
    if warning:
        print("espblink: warning:", warning)
        print("espblink: access point %s, key %s" % (cfg["ap_ssid"], cfg["ap_key"]))
    # The page and /api/status show the warning's start (it lists every wrong key: it can be long).
    return cfg, warning and warning[:300], n
