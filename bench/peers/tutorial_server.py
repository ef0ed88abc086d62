# BASELINE, not espblink: the blocking accept() loop found in the common ESP8266 web-server guides,
# kept as they write it (one request at a time, no deadlines, the whole page in one string).
import gc
import socket

import machine

led = machine.Pin(2, machine.Pin.OUT)
led.value(1)

html = """<!DOCTYPE html>
<html><head><meta name="viewport" content="width=device-width, initial-scale=1"><title>ESP Web Server</title>
<style>html{font-family:Helvetica;text-align:center}.button{background:#195B6A;border:none;color:white;
padding:16px 40px;font-size:30px;margin:2px;cursor:pointer}.button2{background:#77878A}</style></head>
<body><h1>ESP Web Server</h1><p>GPIO state: <strong>%s</strong></p>
<p><a href="/?led=on"><button class="button">ON</button></a></p>
<p><a href="/?led=off"><button class="button button2">OFF</button></a></p></body></html>"""

addr = socket.getaddrinfo("0.0.0.0", 80)[0][-1]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(addr)
s.listen(5)

while True:
    conn, addr = s.accept()
    request = conn.recv(1024)
    request = str(request)
    if "/api/status" in request:  # added for the bench: free heap, as espblink's /api/status reports it
        gc.collect()
        conn.send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        conn.sendall('{"heap_free": %d}' % gc.mem_free())
    elif "/api/leds/blue" in request or "/?led=toggle" in request:
        led.value(not led.value())
        conn.send("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        conn.sendall('{"on": %s}' % ("true" if not led.value() else "false"))
    else:
        if "/?led=on" in request:
            led.value(0)
        if "/?led=off" in request:
            led.value(1)
        response = html % ("ON" if not led.value() else "OFF")
        conn.send("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
        conn.sendall(response)
    conn.close()
