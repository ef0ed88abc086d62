# machine for the virtual NodeMCU, after the ESP8266 port's API (micropython-esp8266-stubs).
import sys
import time

import hwlink

PWRON_RESET = 0
WDT_RESET = 1
SOFT_RESET = 4
DEEPSLEEP_RESET = 5
HARD_RESET = 6

_mode = bytearray(b"\xff" * 17)
_level = bytearray(17)


def _input_level(n):
    hwlink.poll()
    v = hwlink.pins.get(n)
    if v is None:
        # Undriven: GPIO0, 2 and 15 have board pull-ups/downs; the rest read high with PULL_UP.
        return 0 if n == 15 else 1
    return 1 if v else 0


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None):
        if id not in (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16):
            raise ValueError("invalid pin")
        self.id = id
        self.init(mode, pull, value=value)

    def init(self, mode=-1, pull=-1, *, value=None):
        if value is not None:
            self._set(value)
        if mode != -1 and mode != _mode[self.id]:
            _mode[self.id] = mode
            self._report()

    def _report(self):
        m = _mode[self.id]
        hwlink.send(gpio=self.id, mode="out" if m == 1 else "od" if m == 2 else "in", level=_level[self.id])

    def _set(self, v):
        v = 1 if v else 0
        if _level[self.id] != v:
            _level[self.id] = v
            if _mode[self.id] in (1, 2):
                self._report()
        elif _mode[self.id] == 0xFF:
            _level[self.id] = v

    def value(self, v=None):
        if v is None:
            if _mode[self.id] in (1, 2):
                return _level[self.id]
            return _input_level(self.id)
        self._set(v)

    __call__ = value

    def on(self):
        self._set(1)

    def off(self):
        self._set(0)

    def irq(self, handler=None, trigger=3, *, hard=False):
        return None

    def __repr__(self):
        return "Pin(%d)" % self.id


class Signal:
    def __init__(self, pin, *args, invert=False):
        if not isinstance(pin, Pin):
            pin = Pin(pin, *args)
        self._pin = pin
        self._inv = 1 if invert else 0

    def value(self, v=None):
        if v is None:
            return self._pin.value() ^ self._inv
        self._pin.value((1 if v else 0) ^ self._inv)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class Timer:
    # The ESP8266's Timer(-1): an SDK software timer whose expiry schedules the callback (it runs between
    # two bytecodes or inside a blocking call). Here SIGALRM drives it (vtimer.c): the nearest armed timer
    # sets the one alarm. The chip's C object must stay referenced while armed, or the SDK's list points at
    # freed memory; this one is held in _armed meanwhile, so that mistake goes unnoticed here.
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id):
        self._ms = self._due = 0
        self._cb = None
        self._mode = 1

    def init(self, *, mode=1, callback=None, period=-1, tick_hz=1000, freq=None, hard=False):
        self.deinit()
        ms = int(1000 / freq) if freq else period * 1000 // tick_hz
        self._ms = ms if ms > 0 else 1
        self._mode = mode
        self._cb = callback
        self._due = time.ticks_add(time.ticks_ms(), self._ms)
        _armed.append(self)
        _arm()

    def deinit(self):
        if self in _armed:
            _armed.remove(self)
            _arm()

    def __repr__(self):
        return "Timer(%d)" % id(self)


_armed = []


def _arm():
    import _vtimer

    now = time.ticks_ms()
    wait = -1
    for t in _armed:
        d = time.ticks_diff(t._due, now)
        if wait < 0 or d < wait:
            wait = d if d > 0 else 1
    _vtimer.arm(wait, _expired)


def _expired(_):
    now = time.ticks_ms()
    due = [t for t in _armed if time.ticks_diff(t._due, now) <= 0]
    for t in due:
        if t._mode == Timer.PERIODIC:
            t._due = time.ticks_add(t._due, t._ms)
        else:
            _armed.remove(t)
    _arm()
    for t in due:
        if t._cb:
            try:
                t._cb(t)
            except SystemExit:
                # machine.reset() in a callback: the chip is gone at once; here the host ends the process
                # on the shim's reset message, and the scheduler would print SystemExit and carry on.
                t0 = time.ticks_ms()
                while time.ticks_diff(time.ticks_ms(), t0) < 3000:
                    time.sleep_ms(10)
                raise


class WDT:
    def __init__(self, id=0, timeout=5000):
        # The ESP8266's watchdog bites after about 3.2 s whatever timeout asks for.
        self._t = 0
        hwlink.send(wdt=3200)

    def feed(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._t) > 500:
            self._t = now
            hwlink.send(feed=1)


def reset():
    hwlink.send(reset="hard")
    sys.exit(0)


def soft_reset():
    hwlink.send(reset="soft")
    sys.exit(0)


def reset_cause():
    return hwlink.cfg.get("reset_cause", PWRON_RESET)


def unique_id():
    mac = hwlink.cfg.get("mac", "5c:cf:7f:1a:2b:3c")
    return bytes(int(x, 16) for x in mac.split(":")[3:]) + b"\x00"


def freq(f=None):
    if f is None:
        return 80000000


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def lightsleep(ms=0):
    time.sleep_ms(ms)


def deepsleep(ms=0):
    hwlink.send(reset="deepsleep", ms=ms)
    sys.exit(0)
