# The LED switch: one App, made at start, holds the state; the routes are a table; one loop serves
# the web, the captive portal's DNS, the blinking, the FLASH button and Wi-Fi.
import gc
import json
import sys
import time

import machine

import guard
import leds
import server

_STABLE_MS = const(30000)  # the boot-loop guard's count goes back to 0 after this long running
_BUTTON_MS = const(40)  # the FLASH button is read this often; a level must hold this long to count
_LONG_MS = const(3000)  # a press this long shows the access point's name and key
_SAVE_MS = const(5000)  # restore "last": at most one write of the LEDs' state per this long (restore.py)
_SETTINGS_BODY = const(768)  # the settings page's JSON at its longest
# Free heap MQTT needs before it loads: about 4 KB for itself with the code in ROMFS, the rest for the
# requests. As .mpy files it takes 9 KB, more than a board has (a failed import would leave the heap in
# pieces).
_MQTT_HEAP = const(8000)
VERSION = "0.1.0"  # the app's (pyproject.toml's): Home Assistant shows it
CAUSES = "power-on,watchdog,exception,soft watchdog,soft reset,deep sleep,hard reset"  # by machine.reset_cause()


def page(app, req, name="page.html.gz"):
    # The pages are stored gzip-compressed; a client that cannot inflate them gets the plain page at /leds.
    if b"gzip" not in req.headers[b"accept-encoding"]:
        server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /leds\r\nVary: Accept-Encoding\r\n")
        return
    try:
        f = open(name, "rb")
    except OSError:
        raise server.HttpError(b"500 Internal Server Error", "%s missing: run make deploy; page: /leds" % name)
    server.send_file(req, f, server.HTML, b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n", app.wdt.feed)


def settings_page(app, req):
    # Static: served without the settings code, which only the API loads.
    page(app, req, "settings.html.gz")


def page_nojs(app, req):
    # The page for browsers without JavaScript: loaded while it answers (few browsers need it).
    _load("nojs").page(app, req)


def _load(name):
    # A module for one use (the page without JavaScript, its forms, restore.py's power-on state and its
    # writes, a few times a minute at most): it goes when that is done.
    m = __import__(name)
    del sys.modules[name]
    return m


def state(app, req):
    # Everything the page shows, in one answer: the board and the LEDs. /api/leds and /api/status too.
    # Each part fits the request's 1 KiB buffer, both together may not: the board's part is sent from it,
    # then the LEDs' (its length counted first, for the head).
    guard.same_site(req)
    gc.collect()
    w = req.put
    v = sys.implementation.version
    causes = CAUSES.split(",")
    cause = machine.reset_cause()
    mode, ssid, ip, why = app.wifi.status()
    w(b'{"firmware":"%d.%d.%d","mpy":%d,"uptime_s":%d,"heap_free":%d,"reset_cause":"%s","wifi":{"mode":"%s",'
      b'"ip":"%s","ssid":' % (v[0], v[1], v[2], sys.implementation._mpy & 0xFF,
                              time.ticks_diff(time.ticks_ms(), app.t0) // 1000, gc.mem_free(),
                              causes[cause] if cause < len(causes) else "other", mode, ip))
    w(json.dumps(ssid))
    w(b',"home":')
    w(json.dumps(app.cfg["wifi_ssid"] or None))
    w(b',"home_problem":')
    w(json.dumps(why or None))
    w(b'},"hostname":"%s","restore":"%s","requests":%d,"warning":' % (
        app.cfg["hostname"], app.cfg["restore"], app.srv.served))
    w(app.warning_json)
    w(b',"mqtt":')
    if app.mqtt:
        app.mqtt.write_json(w)
    else:
        w(b'{"state":"off","problem":"not enough free heap"}' if app.cfg["mqtt_host"] else b"null")
    w(b',"update_rolled_back":')  # why the last update over Wi-Fi was undone, until the next deploy
    w(app.rolled_back)
    w(b',"leds":')
    board = req.n
    n = 1  # the closing brace

    def count(part):
        nonlocal n
        n += len(part)

    leds.write_list(count, app.lights)
    server.start(req.sock, b"200 OK", server.JSON, board + n)
    req.sock.write(memoryview(req.buf)[:board])
    req.n = 0
    leds.write_list(w, app.lights)
    w(b"}")
    req.sock.write(memoryview(req.buf)[:req.n])


def _action(req):
    # What a JSON POST to /api/leds/NAME asks: (action, blink_ms).
    if not req.headers[b"content-type"].startswith(b"application/json"):
        raise server.HttpError(server.BAD, "send JSON (application/json) or a form")
    # One flat object is all it takes; deep nesting would only make json build lists on the heap.
    # Counted where the body lies: such a body is refused before it is copied.
    nested = 0
    for c in req.body:
        if c == 91 or c == 123:  # [ {
            nested += 1
    if nested > 4:
        raise server.HttpError(server.BAD, "body must be one flat JSON object")
    d = server.json_object(req.body)
    blink = d.get("blink_ms")
    if blink is not None and type(blink) is not int:
        raise server.HttpError(server.BAD, "blink_ms must be a whole number")
    if d.get("toggle") is True:
        return b"toggle", blink
    on = d.get("on")
    if on is True or on is False:
        return b"on" if on else b"off", blink
    if blink is not None:
        return b"blink", blink
    raise server.HttpError(server.BAD, 'send {"on": true|false}, {"toggle": true} or {"blink_ms": N}')


def post_led(app, req):
    led = leds.find(app.lights, req.path[10:].decode())
    if led is None:
        raise server.HttpError(b"404 Not Found", "no LED of that name")
    if req.headers[b"content-type"].startswith(b"application/x-www-form-urlencoded"):
        _load("form").post(app, req, led)
        return
    guard.same_site(req, app.token)
    action, blink = _action(req)
    app.apply(led, action, blink)
    leds.write_led(req.put, led)
    server.send_built(req, b"200 OK", server.JSON)


def apply(app, led, action, blink):
    if action == b"on" or action == b"off":
        led.set(action == b"on")
    elif action == b"toggle":
        led.set(not led.is_on() and not led.blink_ms)
    elif action == b"blink":
        try:
            ms = int(blink)
        except (TypeError, ValueError):
            raise server.HttpError(server.BAD, "blink_ms must be a whole number")
        if ms == 0:
            led.set(False)
        elif 100 <= ms <= 60000:
            led.blink(ms)
        else:
            raise server.HttpError(server.BAD, "blink_ms must be 0 (stop) or 100 to 60000")
    else:
        raise server.HttpError(server.BAD, "action must be on, off, toggle or blink")
    app.changed()


def settings_api(app, req):
    # The settings API is loaded for the request and unloaded after it (with the rules it loads to save).
    gc.collect()
    try:
        import settings

        settings.handle(app, req)
    except MemoryError:
        raise server.HttpError(b"503 Service Unavailable", "not enough free memory on the board for the settings "
                               "page now: try again in a moment, or change settings.toml and run make deploy",
                               b"Retry-After: 5\r\n")
    finally:
        sys.modules.pop("settings", None)
        sys.modules.pop("rules", None)


def update(app, req):
    # Updates over Wi-Fi (`espblink deploy --ota`): the update code is loaded for the request only. Where
    # the code runs from files, ota.py does not fit beside the app: otaask.py restarts it into update mode.
    guard.same_site(req, None if req.method == b"GET" else app.token)
    gc.collect()
    name = "ota" if "/rom" in sys.path else "otaask"
    try:
        __import__(name).handle(app, req)
    except MemoryError:
        raise server.HttpError(b"503 Service Unavailable", "no heap for an update now", b"Retry-After: 5\r\n")
    finally:
        sys.modules.pop(name, None)


# (path, GET handler, POST handler): a path ending in "/" takes any name after it. GET never changes
# anything. Optional parts add their own entries to app.routes.
ROUTES = [
    (b"/", page, None),
    (b"/leds", page_nojs, None),
    (b"/api/state", state, None),
    (b"/api/leds", state, None),
    (b"/api/status", state, None),
    (b"/settings", settings_page, None),
    (b"/api/settings", settings_api, settings_api),
    (b"/api/leds/", None, post_led),
    (b"/api/ota", update, update),
]


class App:
    def __init__(self, cfg, warning, crashes):
        self.cfg = cfg
        self.crashes = crashes  # boot-loop guard: crashes in a row before this start
        self.hostname = cfg["hostname"].encode()  # as the Host header spells it: compared on every request
        self.warning = warning
        # Made once: a busy heap may have no room for them when a page asks.
        self.warning_json = json.dumps(warning).encode()
        self.warning_html = warning.replace("<", "&lt;").encode() if warning else b""
        self.routes = ROUTES
        self.t0 = time.ticks_ms()
        self.admin_wait = 0  # the settings API takes no admin password before this time (ticks_ms)
        self.restart_at = None  # set by the settings API: the board restarts then
        self.on_change = None  # optional: called after any LED changed, whatever changed it
        self.saved = None  # restore "last": the LEDs' state as last written, and when (the first change
        self.saved_at = time.ticks_add(self.t0, -_SAVE_MS)  # is written at once)
        self.save_at = None  # restore "last": a change waits to be written then
        self.button = None  # GPIO0, the FLASH button, unless an LED is wired there
        self.level = 1  # the FLASH button as last read (pressed: 0), and since when
        self.level_at = self.pressed_at = 0
        self.press = 0  # 0: up, 1: pressed (since pressed_at), 2: held long (its release does nothing)
        self.srv = self.wifi = self.wdt = self.token = self.mqtt = None
        self.lights = []

    def handle(self, req):
        guard.portal(req, self.hostname, self.wifi)
        p = req.path
        for r in self.routes:
            if p == r[0] or (len(r[0]) > 1 and r[0][-1] == 47 and p.startswith(r[0]) and len(p) > len(r[0])):
                break
        else:
            raise server.HttpError(b"404 Not Found", "not found")
        fn = r[1] if req.method == b"GET" else r[2] if req.method == b"POST" else None
        if fn is None:
            allowed = b"GET, POST" if r[1] and r[2] else b"GET" if r[1] else b"POST"
            raise server.HttpError(b"405 Method Not Allowed", "allowed: %s" % allowed.decode(),
                                   b"Allow: %s\r\n" % allowed)
        fn(self, req)

    apply = apply

    def changed(self):
        # After any LED changed: the state is written later (restore "last"), others are told now.
        if self.cfg["restore"] == "last" and self.save_at is None:
            now = time.ticks_ms()
            d = time.ticks_diff(now, self.saved_at)
            self.save_at = time.ticks_add(now, _SAVE_MS - d if 0 <= d < _SAVE_MS else 0)
        if self.on_change:
            self.on_change()

    def unserve(self, sock):
        # What srv.add() did, undone (the MQTT socket of a lost connection).
        for o in self.srv.others:
            if o[0] is sock:
                self.srv.others.remove(o)
                self.srv.poll.unregister(sock)
                return

    def poll_button(self, now):
        # GPIO0, the FLASH button (pressed: low), read from the loop and debounced: a level counts once it
        # held _BUTTON_MS. A press toggles the first LED when released; held _LONG_MS, it blinks every LED
        # and prints the access point's name and key instead (for a user who lost the key).
        try:
            level = self.button.value()
        except MemoryError:  # the virtual board's pin reads its wiring's messages into a buffer; the chip's do not
            return
        if level != self.level:
            self.level = level
            self.level_at = now
        elif time.ticks_diff(now, self.level_at) < _BUTTON_MS:
            pass
        elif level == 0 and not self.press:
            self.press = 1
            self.pressed_at = now
        elif level == 0 and self.press == 1 and time.ticks_diff(now, self.pressed_at) >= _LONG_MS:
            self.press = 2
            for led in self.lights:
                led.blink(400)
            self.changed()
            print("espblink: access point %s, key %s" % (self.cfg["ap_ssid"], self.cfg["ap_key"]))
        elif level and self.press:
            if self.press == 1 and self.lights:
                self.apply(self.lights[0], b"toggle", None)
            self.press = 0

    def run(self, port=80):
        import binascii
        import os

        self.token = binascii.hexlify(os.urandom(8))
        try:  # a new app on trial after an update over Wi-Fi: kept once it has run _STABLE_MS
            self.trial = bool(os.stat("ota.state"))
        except OSError:
            self.trial = False
        try:
            with open("ota.last") as f:
                self.rolled_back = json.dumps(f.read()).encode()
        except OSError:
            self.rolled_back = b"null"
        # The server's buffers first, while the heap is in one piece.
        self.srv = server.Server(self.handle, None, b"/api/settings", _SETTINGS_BODY)
        self.lights = leds.make(self.cfg["leds"])
        if not [led for led in self.lights if led.gpio == 0]:
            self.button = machine.Pin(0, machine.Pin.IN)
        self.saved = _load("restore").load(self.lights, self.cfg["restore"])
        import wifi
        import dns

        self.wifi = wifi.Wifi(self.cfg)
        self.wifi.start()
        _, ssid, ip, _ = self.wifi.status()
        # The captive portal's DNS answers with the access point's address, the one phones join.
        names = dns.DNS(self.wifi.ap.ifconfig()[0], buf=server.scratch)
        self.srv.add(names.sock, names.handle)
        if self.cfg["mqtt_host"]:
            gc.collect()
            try:
                if gc.mem_free() < _MQTT_HEAP:
                    raise MemoryError
                import mqtt  # only when set: it costs heap

                self.mqtt = mqtt.MQTT(self.cfg, self.lights, self.srv.add, self.unserve, VERSION, self.changed)
            except MemoryError:
                for m in ("mqtt", "umqtt.simple", "umqtt"):
                    sys.modules.pop(m, None)
                print("espblink: MQTT off: not enough free heap (it needs the code in ROMFS: 2 MB flash and up)")
        self.srv.listen(port)  # last: a client that finds the port open finds the app ready
        if self.trial:  # it serves: boot.py's timer does not roll it back (a folder: no file buffer needed)
            os.mkdir("ota.up")
        print("espblink: serving http://%s/ on Wi-Fi %s" % (ip, ssid))
        gc.collect()
        wdt = self.wdt = machine.WDT()
        while True:
            wdt.feed()
            wait = leds.tick(self.lights)
            self.srv.step(_BUTTON_MS if wait < 0 else min(wait, _BUTTON_MS))
            self.wifi.tick()
            if self.mqtt:
                self.mqtt.tick()
            now = time.ticks_ms()
            if self.button:
                self.poll_button(now)
            if self.save_at is not None and time.ticks_diff(now, self.save_at) >= 0:
                self.save_at = None
                self.saved_at = now
                self.saved = _load("restore").save(self.lights, self.saved)
            if self.restart_at is not None and time.ticks_diff(now, self.restart_at) >= 0:
                machine.reset()
            if self.crashes and time.ticks_diff(now, self.t0) > _STABLE_MS:
                self.crashes = 0
                _count(0)
            if self.trial and time.ticks_diff(now, self.t0) > _STABLE_MS:
                self.trial = False
                os.remove("ota.state")  # kept (its old copy goes with the next update: ota.py has no room here)


def _count(n):
    # The boot-loop guard's count, kept by startup.py (loaded for this only).
    try:
        import startup

        startup.set_crashes(n)
    finally:
        sys.modules.pop("startup", None)


def start(config, warn, n):
    try:
        App(config, warn, n).run()
    except KeyboardInterrupt:
        print("espblink: stopped by Ctrl-C; REPL free")
    except Exception as e:
        try:
            _count(n + 1)
        except Exception:
            pass
        sys.print_exception(e)
        print("espblink: the app crashed (%d in a row); rebooting" % (n + 1))
        time.sleep(1)
        machine.reset()
