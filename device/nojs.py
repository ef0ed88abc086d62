# The page for browsers without JavaScript, loaded by the app while it answers; its forms' POSTs are
# form.py's. Handed the app; it imports nothing of it.
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

