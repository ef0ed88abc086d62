# The same LED switch written as Microdot's own documentation would: the peer espblink is measured against.
import gc

import machine
from microdot import Microdot, Response

LEDS = {"blue": machine.Signal(machine.Pin(2, machine.Pin.OUT, value=1), invert=True),
        "red": machine.Signal(machine.Pin(16, machine.Pin.OUT, value=1), invert=True)}
app = Microdot()


@app.route("/")
async def index(request):
    return Response.send_file("page.html.gz", content_type="text/html; charset=utf-8", compressed=True)


@app.route("/api/leds")
async def leds(request):
    return {"leds": [{"name": n, "on": bool(s.value())} for n, s in LEDS.items()]}


@app.route("/api/status")
async def status(request):  # the bench reads free heap here, as from espblink's /api/status
    gc.collect()
    return {"heap_free": gc.mem_free()}


@app.post("/api/leds/<name>")
async def toggle(request, name):
    s = LEDS.get(name)
    if s is None:
        return {"error": "no such LED"}, 404
    s.value(not s.value())
    return {"name": name, "on": bool(s.value())}


app.run(port=80)
