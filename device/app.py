# The LED switch: settings, LEDs, access point and the HTTP routes, served from one loop.
import gc
import json
import sys
import time

import machine

# leds, server and wifi are imported by main(), after the settings code has run and been unloaded, so
# the two never need the heap at the same time.
leds = server = wifi = None

PAGE = "page.html.gz"
CRASHES = "crashes.txt"
STABLE_MS = 30000
CAUSES = ("power-on", "watchdog", "exception", "soft watchdog", "soft reset", "deep sleep", "hard reset")

cfg = None
warning = None
token = b""
lights = []
t0 = 0


def page(req):
    # The page is stored gzip-compressed; a client that cannot inflate it gets the plain page at /leds.
    if b"gzip" in req.headers.get(b"accept-encoding", b""):
        try:
            f = open(PAGE, "rb")
        except OSError:
            raise server.HttpError(b"500 Internal Server Error", b"page.html.gz missing: run make deploy; page: /leds")
        server.send_file(req.sock, f, server.HTML, b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n")
    else:
        server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /leds\r\nVary: Accept-Encoding\r\n")


def page_nojs(req):
    # The page for browsers without JavaScript: one form per LED, each POST answered 303 back to /.
    # Sent in pieces of a few hundred bytes, never as one block of heap.
    parts = [b"<!doctype html><meta name=viewport content='width=device-width'><title>espblink</title>"
             b"<style>button{font-size:1.3em;min-height:48px;width:100%;margin:6px 0}</style>"]
    if warning:
        parts.append(b"<p><b>Warning:</b> %s</p>" % warning.replace("<", "&lt;").encode())
    for led in lights:
        on = led.is_on()
        parts.append(b"<form method=post action='/api/leds/%s'><input type=hidden name=t value=%s><button "
                     b"name=action value=toggle aria-pressed=%s>%s: %s</button></form>" % (
                         led.name, token, b"true" if on else b"false", led.name, b"on" if on else b"off"))
    server.send_parts(req.sock, b"200 OK", parts, server.HTML)


def get_leds(req):
    same_site(req)
    out = bytearray()
    leds.write_json(out.extend, lights)
    server.send(req.sock, b"200 OK", out, server.JSON)


def _form(body):
    fields = {}
    for pair in body.split(b"&"):
        k, _, v = pair.partition(b"=")
        fields[k] = v
    return fields


def _int(v, what):
    try:
        return int(v)
    except (TypeError, ValueError):
        raise server.HttpError(server.BAD, b"%s must be a whole number" % what)


def same_site(req, form=None):
    # Refuses what another website could make a phone's browser send (403, nothing changes). The Host
    # must be an IP address or the board's name: a DNS-rebinding name is refused. An Origin, when sent,
    # must be this Host. A change needs proof it comes from the board's own page: the X-Espblink header
    # (another site's script cannot send it without the board's consent) or the form's per-boot token.
    # No browser leaves out Host, so a request without one cannot be a rebinding attack.
    host = req.headers.get(b"host", b"")
    name = host.split(b":")[0]
    if host and not (name.replace(b".", b"").isdigit() or name in (cfg["hostname"].encode(), cfg["hostname"].encode()
                                                          + b".local")):
        raise server.HttpError(server.FORBIDDEN, b"unknown Host: use the board's address")
    origin = req.headers.get(b"origin")
    if origin is not None and origin.split(b"//")[-1] != host:
        raise server.HttpError(server.FORBIDDEN, b"cross-site request refused")
    if form is None:
        return
    if req.headers.get(b"x-espblink") != b"1" and form.get(b"t") != token:
        raise server.HttpError(server.FORBIDDEN, b"cross-site request refused")


def post_led(req):
    led = leds.find(lights, req.path[10:].decode())
    if led is None:
        raise server.HttpError(b"404 Not Found", b"no LED of that name")
    ctype = req.headers.get(b"content-type", b"")
    form = ctype.startswith(b"application/x-www-form-urlencoded")
    f = _form(req.body) if form else {}
    same_site(req, f)
    if form:
        action = f.get(b"action", b"")
        blink = f.get(b"blink_ms", b"500")
    elif ctype.startswith(b"application/json"):
        # One flat object is all it takes; deep nesting would only make json build lists on the heap.
        if req.body.count(b"[") + req.body.count(b"{") > 4:
            raise server.HttpError(server.BAD, b"body must be one flat JSON object")
        try:
            d = json.loads(req.body)
        except ValueError:
            raise server.HttpError(server.BAD, b"body is not JSON")
        if not isinstance(d, dict):
            raise server.HttpError(server.BAD, b"body must be a JSON object")
        blink = d.get("blink_ms")
        if blink is not None and type(blink) is not int:
            raise server.HttpError(server.BAD, b"blink_ms must be a whole number")
        if d.get("toggle") is True:
            action = b"toggle"
        elif d.get("on") is True or d.get("on") is False:
            action = b"on" if d["on"] else b"off"
        elif blink is not None:
            action = b"blink"
        else:
            raise server.HttpError(server.BAD, b'send {"on": true|false}, {"toggle": true} or {"blink_ms": N}')
    else:
        raise server.HttpError(server.BAD, b"send JSON (application/json) or a form")
    if action == b"on":
        led.set(True)
    elif action == b"off":
        led.set(False)
    elif action == b"toggle":
        led.set(not led.is_on() and not led.blink_ms)
    elif action == b"blink":
        ms = _int(blink, b"blink_ms")
        if ms == 0:
            led.set(False)
        elif 100 <= ms <= 60000:
            led.blink(ms)
        else:
            raise server.HttpError(server.BAD, b"blink_ms must be 0 (stop) or 100 to 60000")
    else:
        raise server.HttpError(server.BAD, b"action must be on, off, toggle or blink")
    if form:
        server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /\r\n")
    else:
        out = bytearray()
        leds.write_led(out.extend, led)
        server.send(req.sock, b"200 OK", out, server.JSON)


def status(req):
    same_site(req)
    mode, ssid, ip = wifi.status()
    cause = machine.reset_cause()
    gc.collect()
    v = sys.implementation.version
    server.send_parts(req.sock, b"200 OK", (
        b'{"firmware":"%d.%d.%d","mpy":%d,"uptime_s":%d,"heap_free":%d,' % (
            v[0], v[1], v[2], sys.implementation._mpy & 0xFF, time.ticks_diff(time.ticks_ms(), t0) // 1000,
            gc.mem_free()),
        b'"reset_cause":"%s","wifi":{"mode":"%s","ssid":%s,"ip":"%s"},"hostname":"%s","requests":%d,' % (
            CAUSES[cause] if cause < len(CAUSES) else "other", mode, json.dumps(ssid), ip, cfg["hostname"],
            srv.served),
        b'"warning":', json.dumps(warning).encode(), b"}"), server.JSON)


ROUTES = [
    (b"GET", b"/", page),
    (b"GET", b"/leds", page_nojs),
    (b"GET", b"/api/leds", get_leds),
    (b"POST", b"/api/leds/*", post_led),
    (b"GET", b"/api/status", status),
]
srv = None


def _load_config():
    import config

    try:
        return config.load()
    finally:
        # The settings code is needed once: unloading it gives its heap back to the requests.
        del sys.modules["config"], sys.modules["rules"]


def main(port=80):
    global cfg, warning, lights, t0, srv, leds, server, wifi, token
    t0 = time.ticks_ms()
    import binascii
    import os

    token = binascii.hexlify(os.urandom(8))
    cfg, warning = _load_config()
    gc.collect()
    # Three clients at a time, each with a 1 KiB request buffer, allocated first while the heap is in
    # one piece; a fourth connection pushes out the oldest.
    buffers = [bytearray(1024) for _ in range(3)]
    import leds
    import server
    import wifi
    if warning:
        print("espblink: warning:", warning)
        print("espblink: access point %s, key %s" % (cfg["ap_ssid"], cfg["ap_key"]))
    lights = leds.make(cfg["leds"])
    ap = wifi.start_ap(cfg)
    gc.collect()
    srv = server.Server(ROUTES, buffers, port)
    print("espblink: serving http://%s/ on Wi-Fi %s" % (ap.ifconfig()[0], cfg["ap_ssid"]))
    gc.collect()
    wdt = server.watchdog = machine.WDT()
    stable = False
    while True:
        wdt.feed()
        wait = leds.tick(lights)
        srv.step(1000 if wait < 0 else min(wait, 1000))
        if not stable and time.ticks_diff(time.ticks_ms(), t0) > STABLE_MS:
            stable = True
            _set_crashes(0)


def _crashes():
    try:
        with open(CRASHES) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _set_crashes(n):
    if n == _crashes():
        return
    if n:
        with open(CRASHES, "w") as f:
            f.write(str(n))
    else:
        import os

        os.remove(CRASHES)


def clear():
    # After fixing a crash: import app; app.clear(); then reset.
    _set_crashes(0)


def start():
    # GPIO0 is the FLASH button (pressed = low): held at power-on, the app stays off and the REPL free.
    if machine.Pin(0, machine.Pin.IN).value() == 0:
        print("espblink: safe mode (FLASH button held at power-on): app not started, REPL free")
        return
    n = _crashes()
    if machine.reset_cause() == machine.WDT_RESET:
        n += 1
        _set_crashes(n)
    if n >= 3:
        print("espblink: the app crashed %d times in a row, so it no longer starts by itself." % n)
        print("espblink: fix the cause and deploy again, or run: import app; app.clear(); app.start()")
        return
    try:
        main()
    except KeyboardInterrupt:
        print("espblink: stopped by Ctrl-C; REPL free")
    except Exception as e:
        _set_crashes(n + 1)
        sys.print_exception(e)
        print("espblink: the app crashed (%d in a row); rebooting" % (n + 1))
        time.sleep(1)
        machine.reset()
