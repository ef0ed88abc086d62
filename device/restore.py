# The LEDs' state after a power cut (the "restore" setting: off, on or last), loaded by the app at start
# and for each write, then unloaded. Handed the LEDs; it imports nothing of the app.
#
# Flash wears, so the app writes at most once per 5 s and only what changed. A 4 KB sector takes about
# 100,000 erases. This file is a few bytes a LED: littlefs keeps it inline in a metadata block, appends
# each new version there (about 100 bytes with its tags, so ~30 writes per erase) and moves the block
# elsewhere every 100 erases. Were every erase to fall on one sector, toggling non-stop at the 5 s cap
# would wear it out in 100,000 * 30 * 5 s = 174 days; at 50 toggles a day, in 160 years. littlefs
# replaces a file only when it is closed, so a power cut while it is written loses that change, never an
# older one, and the settings (config.json) are never written here. (FAT, left by older firmware, makes no
# such promise: a torn file costs only the LEDs it no longer names, load() skips what it cannot read.)
import leds

STATE = "leds.txt"  # one line per LED: "name on blink_ms"


def load(lights, how):
    # At power-on: every LED off ("off", the default), all on ("on"), or as they were ("last"). Returns
    # the state as stored (None when there is none).
    if how == "on":
        for led in lights:
            led.set(True)
        return None
    if how != "last":
        return None
    try:
        with open(STATE, "rb") as f:
            saved = f.read()
    except OSError:
        return None
    for line in saved.split(b"\n"):
        w = line.split(b" ")
        led = leds.find(lights, w[0].decode()) if len(w) == 3 else None
        if led and w[2].isdigit() and int(w[2]):
            led.blink(int(w[2]))
        elif led:
            led.set(w[1] == b"1")
    return saved


def save(lights, saved):
    # Writes the state when it differs from what is stored (saved); returns what is stored now.
    s = b""
    for led in lights:
        s += b"%s %d %d\n" % (led.name, 1 if led.is_on() and not led.blink_ms else 0, led.blink_ms)
    if s != saved:
        with open(STATE, "wb") as f:
            f.write(s)
    return s
