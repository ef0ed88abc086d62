# The LEDs: each a machine.Signal, so on() always means lit whatever the wiring.
import time
from machine import Pin, Signal


class Led:
    def __init__(self, name, gpio, active_low):
        self.name = name
        self.gpio = gpio
        # value= sets the level before the pin turns output: an active-low LED starts dark, and GPIO2
        # (a boot-strap pin) is never pulled low.
        self.signal = Signal(Pin(gpio, Pin.OUT, value=1 if active_low else 0), invert=active_low)
        self.blink_ms = 0
        self._next = 0

    def is_on(self):
        return self.signal.value() == 1

    def set(self, on):
        self.blink_ms = 0
        self.signal.value(1 if on else 0)

    def blink(self, period_ms):
        self.blink_ms = period_ms
        self._next = time.ticks_add(time.ticks_ms(), period_ms // 2)
        self.signal.value(1)

    def tick(self, now):
        # Returns ms until this LED's next edge, or -1 when it is not blinking.
        if not self.blink_ms:
            return -1
        left = time.ticks_diff(self._next, now)
        if left <= 0:
            self.signal.value(0 if self.signal.value() else 1)
            self._next = time.ticks_add(self._next, self.blink_ms // 2)
            left = time.ticks_diff(self._next, now)
            if left < 0:
                self._next = time.ticks_add(now, self.blink_ms // 2)
                left = self.blink_ms // 2
        return left


def make(cfg_leds):
    return [Led(d["name"], d["gpio"], d.get("active_low", False)) for d in cfg_leds]


def find(leds, name):
    for led in leds:
        if led.name == name:
            return led
    return None


def tick(leds):
    # Advance every blinking LED; returns ms until the next edge (-1: none blinking).
    now = time.ticks_ms()
    wait = -1
    for led in leds:
        left = led.tick(now)
        if left >= 0 and (wait < 0 or left < wait):
            wait = left
    return wait


def write_list(w, leds):
    w(b"[")
    for i, led in enumerate(leds):
        if i:
            w(b",")
        write_led(w, led)
    w(b"]")


def write_led(w, led):
    # w(bytes): names are a-z, 0-9, - and _ (the rules), one byte a character.
    w(b'{"name":"%s","gpio":%d,"on":%s,"blink_ms":%d}' % (
        led.name, led.gpio, b"true" if led.is_on() else b"false", led.blink_ms))
