# The LED switch: settings, LEDs, access point and the HTTP routes, served from one loop.
import gc
import json
import sys
import time

import machine

# leds, server and wifi are imported by main(), after the settings code has run and been unloaded, so
# the two never need the heap at the same time.
leds = server = wifi = None

CRASHES = "crashes.txt"
STABLE_MS = 30000
# Where phones check that they are online (Android, Apple, Windows, Firefox): answered with the page.
# Word lists in one bytes object each: a tuple of short bytes would cost a heap object per entry.
# (A phone asks by name, and any name that is not the board's is redirected anyway: this list is for
# the paths asked at the board's own address.)
CHECKS = b" /generate_204 /hotspot-detect.html /connecttest.txt /ncsi.txt "
CROSS_SITE = "cross-site request refused"
LOCAL = b" .local .lan .home .localdomain .fritz.box "  # the board's name as a router's DNS may add to it
CAUSES = "power-on,watchdog,exception,soft watchdog,soft reset,deep sleep,hard reset"  # by machine.reset_cause()

cfg = None
hostname = b""  # cfg["hostname"] as the Host header spells it: compared on every request
warning = None
warning_json = b"null"
warning_html = b""
token = b""
lights = []
t0 = 0
crashes = 0  # boot-loop guard: crashes in a row before this start, set to 0 once it ran STABLE_MS
admin_wait = 0  # the settings page takes no admin password before this time (ticks_ms)
restart_at = None  # set by the settings page: the board restarts then


def page(req, name="page.html.gz"):
    # The pages are stored gzip-compressed; a client that cannot inflate them gets the plain page at /leds.
    if b"gzip" not in req.headers[b"accept-encoding"]:
        server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /leds\r\nVary: Accept-Encoding\r\n")
        return
    try:
        f = open(name, "rb")
    except OSError:
        raise server.HttpError(b"500 Internal Server Error", "%s missing: run make deploy; page: /leds" % name)
    server.send_file(req.sock, f, server.HTML, b"Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n")


def _nojs_parts():
    # Constant pieces and the names as they are: nothing is put together on the heap.
    yield (b"<!doctype html><meta name=viewport content='width=device-width'><title>espblink</title>"
           b"<style>button{font-size:1.3em;min-height:48px;width:100%;margin:6px 0}</style>")
    if warning:
        yield b"<p><b>Warning:</b> "
        yield warning_html
        yield b"</p>"
    for led in lights:
        on = led.is_on()
        yield b"<form method=post action='/api/leds/"
        yield led.name
        yield b"'><input type=hidden name=t value="
        yield token
        yield b"><button name=action value=toggle aria-pressed="
        yield b"true>" if on else b"false>"
        yield led.name
        yield b": on</button></form>" if on else b": off</button></form>"


def page_nojs(req):
    # The page for browsers without JavaScript: one form per LED, each POST answered 303 back to /.
    server.send_parts(req.sock, b"200 OK", _nojs_parts, server.HTML)


def get_leds(req):
    same_site(req)
    leds.write_json(req.put, lights)
    server.send_built(req, b"200 OK", server.JSON)


def _form(body):
    fields = {}
    for pair in body.split(b"&"):
        i = pair.find(b"=")
        if i < 0:
            fields[pair] = b""
        else:
            fields[pair[:i]] = pair[i + 1:]
    return fields


def _int(v, what):
    try:
        return int(v)
    except (TypeError, ValueError):
        raise server.HttpError(server.BAD, "%s must be a whole number" % what)


def _listed(words, w):
    # Whether w is one of the space-separated words.
    i = words.find(w)
    return i > 0 and words[i - 1] == 32 and words[i + len(w)] == 32


def known_host(req):
    # The Host must be an IP address or the board's name: a DNS-rebinding name is not the board. No
    # browser leaves out Host, so a request without one cannot be a rebinding attack.
    name = req.headers[b"host"].split(b":")[0]
    if not name or name.replace(b".", b"").isdigit():
        return True
    h = hostname
    return name.startswith(h) and (len(name) == len(h) or _listed(LOCAL, name[len(h):]))


def portal(req):
    # Runs before every route. A phone that joins the access point asks a well-known address whether it
    # is online, by a name the board's DNS answered with its own address: a redirect to the page (not
    # the answer it expects) makes the phone open the page in its sign-in sheet. A change sent to a name
    # that is not the board's is refused.
    if _listed(CHECKS, req.path) or not known_host(req):
        if req.method != b"GET":
            raise server.HttpError(server.FORBIDDEN, "unknown Host: use the board's address")
        raise server.HttpError(b"302 Found", "", b"Location: http://%s/\r\n" % wifi.status()[2])


def same_site(req, form=None):
    # Refuses what another website could make a phone's browser send (403, nothing changes). An Origin,
    # when sent, must be this Host. A change needs proof it comes from the board's own page: the
    # X-Espblink header (another site's script cannot send it without the board's consent) or the
    # form's per-boot token.
    origin = req.headers[b"origin"]
    if origin and origin.split(b"//")[-1] != req.headers[b"host"]:
        raise server.HttpError(server.FORBIDDEN, CROSS_SITE)
    if form is None:
        return
    if req.headers[b"x-espblink"] != b"1" and form.get(b"t") != token:
        raise server.HttpError(server.FORBIDDEN, CROSS_SITE)


def post_led(req):
    led = leds.find(lights, req.path[10:].decode())
    if led is None:
        raise server.HttpError(b"404 Not Found", "no LED of that name")
    ctype = req.headers[b"content-type"]
    form = ctype.startswith(b"application/x-www-form-urlencoded")
    if ctype.startswith(b"application/json"):
        # One flat object is all it takes; deep nesting would only make json build lists on the heap.
        # Counted where the body lies: such a body is refused before it is copied.
        nested = 0
        for c in req.body:
            if c == 91 or c == 123:  # [ {
                nested += 1
        if nested > 4:
            raise server.HttpError(server.BAD, "body must be one flat JSON object")
    body = bytes(req.body)
    f = _form(body) if form else {}
    same_site(req, f)
    if form:
        action = f.get(b"action", b"")
        blink = f.get(b"blink_ms", b"500")
    elif ctype.startswith(b"application/json"):
        try:
            d = json.loads(body)
        except ValueError:
            raise server.HttpError(server.BAD, "body is not JSON")
        if not isinstance(d, dict):
            raise server.HttpError(server.BAD, "body must be a JSON object")
        blink = d.get("blink_ms")
        if blink is not None and type(blink) is not int:
            raise server.HttpError(server.BAD, "blink_ms must be a whole number")
        if d.get("toggle") is True:
            action = b"toggle"
        elif d.get("on") is True or d.get("on") is False:
            action = b"on" if d["on"] else b"off"
        elif blink is not None:
            action = b"blink"
        else:
            raise server.HttpError(server.BAD, 'send {"on": true|false}, {"toggle": true} or {"blink_ms": N}')
    else:
        raise server.HttpError(server.BAD, "send JSON (application/json) or a form")
    if action == b"on":
        led.set(True)
    elif action == b"off":
        led.set(False)
    elif action == b"toggle":
        led.set(not led.is_on() and not led.blink_ms)
    elif action == b"blink":
        ms = _int(blink, "blink_ms")
        if ms == 0:
            led.set(False)
        elif 100 <= ms <= 60000:
            led.blink(ms)
        else:
            raise server.HttpError(server.BAD, "blink_ms must be 0 (stop) or 100 to 60000")
    else:
        raise server.HttpError(server.BAD, "action must be on, off, toggle or blink")
    if form:
        server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /\r\n")
    else:
        leds.write_led(req.put, led)
        server.send_built(req, b"200 OK", server.JSON)


def status(req):
    same_site(req)
    gc.collect()
    w = req.put
    v = sys.implementation.version
    w(b'{"firmware":"%d.%d.%d",' % (v[0], v[1], v[2]))
    w(b'"mpy":%d,' % (sys.implementation._mpy & 0xFF))
    w(b'"uptime_s":%d,' % (time.ticks_diff(time.ticks_ms(), t0) // 1000))
    w(b'"heap_free":%d,"reset_cause":"' % gc.mem_free())
    causes = CAUSES.split(",")
    cause = machine.reset_cause()
    w(causes[cause] if cause < len(causes) else "other")
    mode, ssid, ip, why = wifi.status()
    w(b'","wifi":{"mode":"%s",' % mode)
    w(b'"ip":"%s","ssid":' % ip)
    w(json.dumps(ssid))
    w(b',"home":')
    w(json.dumps(cfg["wifi_ssid"] or None))
    w(b',"home_problem":')
    w(json.dumps(why or None))
    w(b'},"hostname":"%s",' % cfg["hostname"])
    w(b'"requests":%d,"warning":' % srv.served)
    w(warning_json)
    w(b"}")
    server.send_built(req, b"200 OK", server.JSON)


def settings(req):
    # The settings page and its API are loaded for the request and unloaded after it (with the rules).
    gc.collect()
    try:
        import settings

        settings.handle(req)
    except MemoryError:
        raise server.HttpError(b"503 Service Unavailable", "not enough free memory on the board for the settings "
                               "page now; try again in a moment", b"Retry-After: 5\r\n")
    finally:
        sys.modules.pop("settings", None)
        sys.modules.pop("rules", None)


def handle(req):
    # The routes. GET never changes anything.
    portal(req)
    p = req.path
    get = post = None
    if p == b"/":
        get = page
    elif p == b"/leds":
        get = page_nojs
    elif p == b"/api/leds":
        get = get_leds
    elif p == b"/api/status":
        get = status
    elif p == b"/settings":
        get = settings
    elif p == b"/api/settings":
        get = post = settings
    elif p.startswith(b"/api/leds/") and len(p) > 10:
        post = post_led
    else:
        raise server.HttpError(b"404 Not Found", "not found")
    fn = get if req.method == b"GET" else post if req.method == b"POST" else None
    if fn is None:
        allowed = b"GET, POST" if get and post else b"GET" if get else b"POST"
        raise server.HttpError(b"405 Method Not Allowed", "allowed: %s" % allowed.decode(),
                               b"Allow: %s\r\n" % allowed)
    fn(req)


srv = None


def main(port=80):
    global crashes, lights, t0, srv, leds, server, wifi, token
    t0 = time.ticks_ms()
    import binascii
    import os

    token = binascii.hexlify(os.urandom(8))
    # Three clients at a time, each with a 1 KiB request buffer, allocated first while the heap is in
    # one piece; a fourth connection pushes out the oldest.
    buffers = [bytearray(1024) for _ in range(3)]
    import leds
    import server
    import wifi
    import dns

    lights = leds.make(cfg["leds"])
    wifi.start(cfg)
    _, ssid, ip, _ = wifi.status()
    srv = server.Server(handle, buffers, port, b"/api/settings")
    # The captive portal's DNS answers with the access point's address, the one phones join.
    names = dns.DNS(wifi.ap.ifconfig()[0], buf=server.scratch)
    srv.add(names.sock, names.handle)
    print("espblink: serving http://%s/ on Wi-Fi %s" % (ip, ssid))
    gc.collect()
    wdt = server.watchdog = machine.WDT()
    while True:
        wdt.feed()
        wait = leds.tick(lights)
        srv.step(1000 if wait < 0 else min(wait, 1000))
        wifi.tick()
        now = time.ticks_ms()
        if restart_at is not None and time.ticks_diff(now, restart_at) >= 0:
            machine.reset()
        if crashes and time.ticks_diff(now, t0) > STABLE_MS:
            crashes = 0
            _count(0)


def _count(n):
    # The boot-loop guard's count (startup.py reads it at power-on).
    if n:
        with open(CRASHES, "w") as f:
            f.write(str(n))
    else:
        import os

        try:
            os.remove(CRASHES)
        except OSError:
            pass


def start(config, warn, n):
    global cfg, hostname, warning, warning_json, warning_html, crashes
    cfg, warning, crashes = config, warn, n
    hostname = cfg["hostname"].encode()
    # Made once: a busy heap may have no room for them when a page asks.
    warning_json = json.dumps(warning).encode()
    if warning:
        warning_html = warning.replace("<", "&lt;").encode()
    try:
        main()
    except KeyboardInterrupt:
        print("espblink: stopped by Ctrl-C; REPL free")
    except Exception as e:
        _count(n + 1)
        sys.print_exception(e)
        print("espblink: the app crashed (%d in a row); rebooting" % (n + 1))
        time.sleep(1)
        machine.reset()
