# A form's POST from the page without JavaScript (nojs.py), loaded by the app while it answers: on its
# own, as that page is, so that neither costs the heap of both. Handed the app; it imports nothing of it.
import guard
import server


def post(app, req, led):
    # action=on|off|toggle|blink, blink_ms, and the page's token t; answered 303 back to the page.
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
