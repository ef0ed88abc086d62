# Update mode, for boards whose code runs from files (1 MB): the app and ota.py do not fit in the heap
# together, so when the app is asked (POST /api/ota) it restarts and boot.py runs this once instead of it:
# Wi-Fi as the app brings it up, then GET and POST /api/ota only, one connection at a time, with the app's
# cross-site rules. The first update that ends (taken, or refused: a wrong key or a replay is refused here
# with nothing written), or _WAIT_MS without one, restarts the board into its app (the new one on trial).
# The app's server and guard do not fit beside ota.py either: this is their few lines that apply here.
import select
import socket
import sys
import time

import machine

import wifi

_WAIT_MS = const(60000)
_BODY = const(256)  # the signed request's line is about 170 bytes


class Mode:
    # ota.handle() takes this for the app (restart_at, wdt) and for the request (sock, method, body, buf).
    def __init__(self, cfg):
        self.hostname = cfg["hostname"].encode()
        self.wifi = wifi.Wifi(cfg)
        self.restart_at = None  # ota.handle() sets it once an update is in place
        self.wdt = self.sock = self.method = None
        self.body = b""
        self.buf = bytearray(1024)

    def request(self):
        # The head and body into buf; the head's fields or None (the client went away or sent too much).
        buf = self.buf
        n = 0
        end = -1
        p = select.poll()
        p.register(self.sock, select.POLLIN)
        while end < 0:
            if not p.poll(2000):
                return None
            k = self.sock.readinto(memoryview(buf)[n:])
            if not k or n + k == len(buf):
                return None
            n += k
            end = buf.find(b"\r\n\r\n", 0, n)
        lines = bytes(buf[:end]).split(b"\r\n")
        h = {}
        for line in lines[1:]:
            i = line.find(b":")
            h[line[:i].strip().lower()] = line[i + 1:].strip()
        length = int(h.get(b"content-length", b"0"))
        if length > _BODY:
            return None
        while n < end + 4 + length:
            if not p.poll(2000):
                return None
            k = self.sock.readinto(memoryview(buf)[n:end + 4 + length])
            if not k:
                return None
            n += k
        self.body = memoryview(buf)[end + 4:end + 4 + length]
        return lines[0].split(), h

    def serve(self, s):
        self.sock = s
        s.setblocking(False)  # read as the app's server reads: polled, with a deadline
        got = self.request()
        if not got:
            return
        s.settimeout(1)  # then written, and the update read, as the app's server lets ota.py do
        ota = sys.modules["ota"]  # loaded by run(), first
        first, h = got
        self.method = first[0]
        host = h.get(b"host", b"")
        name = host.split(b":")[0]
        origin = h.get(b"origin")
        if len(first) != 3 or first[1] != b"/api/ota" or self.method not in (b"GET", b"POST"):
            ota.answer(s, b"503 Service Unavailable", b"the board is in update mode: its app is back within a minute")
        elif not (name.replace(b".", b"").isdigit() or name.startswith(self.hostname)) or (
                origin and origin.split(b"//")[-1] != host) or (
                self.method == b"POST" and h.get(b"x-espblink") != b"1"):
            ota.answer(s, b"403 Forbidden", b"cross-site request refused")
        else:
            ota.handle(self, self, b"update")
            if self.method == b"POST" and self.restart_at is None:  # refused or cut: back to the app
                self.restart_at = time.ticks_ms()

    def run(self):
        self.wifi.start()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(socket.getaddrinfo("0.0.0.0", 80)[0][-1])
        ls.listen(2)
        ls.settimeout(0.1)
        import gc

        gc.collect()
        print("espblink: update mode (%d bytes of heap free): waiting %d s for an update at http://%s/" % (
            gc.mem_free(), _WAIT_MS // 1000, self.wifi.status()[2]))
        end = time.ticks_add(time.ticks_ms(), _WAIT_MS)
        wdt = self.wdt = machine.WDT()
        while time.ticks_diff(end if self.restart_at is None else self.restart_at, time.ticks_ms()) > 0:
            wdt.feed()
            self.wifi.tick()
            try:
                s, _ = ls.accept()
            except OSError:
                continue
            try:
                self.serve(s)
            except OSError:
                pass
            s.close()
        if self.restart_at is None:
            print("espblink: no update came: restarting into the app")


def run():
    # Ends in a reset into the app (boot.py removed the mark), or returns after Ctrl-C.
    try:
        import ota  # first, while the heap is in one piece: the biggest module here
        import config

        cfg = config.load()[0]
        del sys.modules["config"], sys.modules["rules"]
        Mode(cfg).run()
    except KeyboardInterrupt:
        print("espblink: update mode stopped by Ctrl-C; REPL free")
        return
    except Exception as e:
        sys.print_exception(e)
    machine.reset()
