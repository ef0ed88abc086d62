# The page and its forms for browsers without JavaScript, loaded by the app while they answer. Handed
# the app; it imports nothing of it.
import guard
import server


def page(app, req):
    # One form per LED, each POST answered 303 back to /.
    def parts():
        # Constant pieces and the names as they are: nothing is put together on the heap.
        yield (b"<!doctype html><meta name=viewport content='width=device-width'><title>espblink</title>"
               b"<style>button{font-size:1.3em;min-height:48px;width:100%;margin:6px 0}</style>")
        if app.warning:
            yield b"<p><b>Warning:</b> "
            yield app.warning_html
            yield b"</p>"
        for led in app.lights:
            on = led.is_on()
            yield b"<form method=post action='/api/leds/"
            yield led.name
            yield b"'><input type=hidden name=t value="
            yield app.token
            yield b"><button name=action value=toggle aria-pressed="
            yield b"true>" if on else b"false>"
            yield led.name
            yield b": on</button></form>" if on else b": off</button></form>"

    # Counted once, then sent: the body never needs one large block of heap.
    n = 0
    for part in parts():
        n += len(part)
    server.start(req.sock, b"200 OK", server.HTML, n)
    for part in parts():
        req.sock.write(part)


def post(app, req, led):
    # A form's POST: action=on|off|toggle|blink, blink_ms, and the page's token t.
    f = {}
    for pair in bytes(req.body).split(b"&"):
        i = pair.find(b"=")
        if i < 0:
            f[pair] = b""
        else:
            f[pair[:i]] = pair[i + 1:]
    guard.same_site(req, app.token, f)
    app.apply(led, f.get(b"action", b""), f.get(b"blink_ms", b"500"))
    server.send(req.sock, b"303 See Other", b"", server.TEXT, b"Location: /\r\n")
