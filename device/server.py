# A one-thread HTTP/1.1 server for the ESP8266: select.poll over the listening socket and a few clients.
# Every client has a deadline for its whole request, so a browser's speculative connections that never
# send anything cannot stall anyone. Buffers are allocated once; every response is Connection: close.
import gc
import select
import socket
import time

BODY_MAX = 256
REQUEST_MS = 4000
WRITE_S = 1  # the most one write may wait for a slow reader; the watchdog bites after 3.2 s
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
BAD = b"400 Bad Request"
FORBIDDEN = b"403 Forbidden"
KEEP = (b"host", b"content-type", b"content-length", b"accept-encoding", b"origin",
        b"x-espblink", b"transfer-encoding")

_chunk = bytearray(512)
watchdog = None  # the app's machine.WDT: fed between the writes of a long answer


class HttpError(Exception):
    # args: status line (b"400 Bad Request"), short text for the body, optional extra header lines
    pass


class Request:
    def __init__(self, sock, method, path, query, headers):
        self.sock = sock
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = b""


def _visible(s):
    for c in s:
        if c <= 32 or c >= 127:
            return False
    return True


def parse(sock, buf, end):
    # The request line and headers are read in place from the client's buffer: only the pieces kept
    # are copied. Returns a Request or raises HttpError.
    nl = buf.find(b"\r\n", 0, end)
    if nl < 0:
        nl = end
    parts = bytes(buf[:nl]).split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(BAD, b"malformed request line")
    path, _, query = parts[1].partition(b"?")
    if path[:1] != b"/" or b"/." in path or b"\\" in path or not _visible(path):
        raise HttpError(BAD, b"the target must be a plain path")
    headers = {}
    pos = nl + 2
    while pos < end:
        nl = buf.find(b"\r\n", pos, end)
        if nl < 0:
            nl = end
        colon = buf.find(b":", pos, nl)
        if colon <= pos or buf[colon - 1] in b" \t" or buf[pos] in b" \t":
            raise HttpError(BAD, b"malformed header line")
        if colon - pos <= 17:  # no header we keep has a longer name
            k = bytes(buf[pos:colon]).lower()
            if k in KEEP:
                v = bytes(buf[colon + 1:nl]).strip()
                if headers.get(k, v) != v:
                    raise HttpError(BAD, b"conflicting repeated header")
                headers[k] = v
        pos = nl + 2
    return Request(sock, parts[0], path, query, headers)


def body_length(req):
    if b"transfer-encoding" in req.headers:
        raise HttpError(b"411 Length Required", b"chunked bodies are not accepted; send Content-Length")
    n = req.headers.get(b"content-length", b"0")
    if not n.isdigit() or len(n) > 6:
        raise HttpError(BAD, b"bad Content-Length")
    if int(n) > BODY_MAX:
        raise HttpError(b"413 Content Too Large", b"body over 256 bytes")
    return int(n)


def start(sock, status, ctype, length, extra=b""):
    # The head is put together in the shared buffer: it needs no free block, however broken up the heap.
    n = _put(0, b"HTTP/1.1 ")
    n = _put(n, status)
    n = _put(n, b"\r\nContent-Type: ")
    n = _put(n, ctype)
    n = _put(n, b"\r\nContent-Length: ")
    n = _put(n, b"%d" % length)
    n = _put(n, b"\r\nConnection: close\r\nCache-Control: no-store\r\n")
    n = _put(n, extra)
    n = _put(n, b"\r\n")
    sock.write(memoryview(_chunk)[:n])


def _put(n, part):
    _chunk[n:n + len(part)] = part
    return n + len(part)


def send(sock, status, body=b"", ctype=TEXT, extra=b""):
    start(sock, status, ctype, len(body), extra)
    if body:
        sock.write(body)


def send_parts(sock, status, parts, ctype):
    # A body made of pieces of a few hundred bytes at most: it never needs one large free block.
    n = 0
    for part in parts:
        n += len(part)
    start(sock, status, ctype, n)
    for part in parts:
        sock.write(part)


def send_file(sock, f, ctype, extra=b""):
    # Streams an open file through one 512-byte buffer, and closes it.
    with f:
        f.seek(0, 2)
        start(sock, b"200 OK", ctype, f.tell(), extra)
        f.seek(0)
        mv = memoryview(_chunk)
        n = f.readinto(_chunk)
        while n:
            if watchdog:
                watchdog.feed()
            sock.write(mv[:n])
            n = f.readinto(_chunk)


class Server:
    def __init__(self, routes, buffers, port=80):
        # routes: (method, path, handler); a path ending in "*" matches that prefix plus at least one byte.
        # buffers: one bytearray per client (its size caps request line plus headers), allocated by the
        # caller while the heap is still in one piece. A client's state is a list kept with its buffer
        # and reused, so a connection allocates little more than its socket.
        self.routes = routes
        self.poll = select.poll()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])
        self.listener.listen(len(buffers))
        self.listener.setblocking(False)
        self.poll.register(self.listener, select.POLLIN)
        self.free = [[b, 0, 0, 0, None] for b in buffers]
        self.clients = {}  # socket -> [buffer, bytes in it, deadline, body length, Request or None]
        self.others = {}  # socket -> handler, for other sockets served from this loop (DNS)
        self.served = 0

    def add(self, sock, handler):
        self.others[sock] = handler
        self.poll.register(sock, select.POLLIN)

    def step(self, timeout_ms):
        now = time.ticks_ms()
        for c in self.clients.values():
            timeout_ms = max(0, min(timeout_ms, time.ticks_diff(c[2], now)))
        for ev in self.poll.ipoll(timeout_ms):
            s = ev[0]
            if s is self.listener:
                self.accept()
            elif s in self.clients:
                self.read(s)
            elif s in self.others:
                self.others[s]()
        now = time.ticks_ms()
        for s in self.clients:
            if time.ticks_diff(now, self.clients[s][2]) >= 0:
                if self.clients[s][1]:
                    self.finish(s, HttpError(b"408 Request Timeout", b"request not completed in time"))
                else:
                    self.close(s)
                break

    def accept(self):
        try:
            s, _ = self.listener.accept()
        except (OSError, MemoryError):  # no socket now; the client retries, the loop goes on
            return
        if not self.free:
            # Full: the oldest connection gives way (most likely a speculative one that sent nothing).
            old = None
            for c in self.clients:
                if old is None or time.ticks_diff(self.clients[c][2], self.clients[old][2]) < 0:
                    old = c
            self.close(old)
        s.setblocking(False)
        c = self.clients[s] = self.free.pop()
        c[1] = c[3] = 0
        c[2] = time.ticks_add(time.ticks_ms(), REQUEST_MS)
        self.poll.register(s, select.POLLIN)

    def close(self, s):
        c = self.clients.pop(s)
        c[4] = None
        self.free.append(c)
        self.poll.unregister(s)
        s.close()

    def read(self, s):
        c = self.clients[s]
        buf = c[0]
        try:
            n = s.readinto(memoryview(buf)[c[1]:])
        except OSError:
            n = 0
        if n is None:
            return
        if not n:
            self.close(s)
            return
        c[1] += n
        try:
            if c[4] is None:
                end = buf.find(b"\r\n\r\n", 0, c[1])
                if end < 0:
                    if c[1] == len(buf):
                        raise HttpError(b"431 Request Header Fields Too Large", b"request head over 1 KiB")
                    return
                c[4] = parse(s, buf, end)
                c[3] = body_length(c[4])
                rest = c[1] - end - 4
                buf[:rest] = buf[end + 4:c[1]]
                c[1] = rest
            if c[1] < c[3]:
                return
            c[4].body = bytes(buf[:c[3]])
            self.dispatch(c[4])
        except Exception as e:
            self.finish(s, e)
            return
        self.served += 1
        self.close(s)
        gc.collect()

    def finish(self, s, e):
        # Answers an error (a handler bug, even a MemoryError, becomes a 500: the loop goes on) and closes.
        try:
            s.settimeout(WRITE_S)
            if isinstance(e, HttpError):
                send(s, e.args[0], e.args[1] + b"\n", TEXT, e.args[2] if len(e.args) > 2 else b"")
            elif not isinstance(e, OSError):
                print("espblink: handler error:", repr(e))
                send(s, b"500 Internal Server Error", b"internal error\n")
        except Exception:
            pass
        self.close(s)
        gc.collect()

    def dispatch(self, req):
        allowed = b""
        p = req.path
        for method, path, fn in self.routes:
            if path == p or (path[-1:] == b"*" and p.startswith(path[:-1]) and len(p) >= len(path)):
                if method == req.method:
                    req.sock.settimeout(WRITE_S)
                    fn(req)
                    return
                allowed += (b", " if allowed else b"") + method
        if allowed:
            raise HttpError(b"405 Method Not Allowed", b"allowed: " + allowed, b"Allow: %s\r\n" % allowed)
        raise HttpError(b"404 Not Found", b"not found")
