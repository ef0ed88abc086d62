# A one-thread HTTP/1.1 server for the ESP8266: select.poll over the listening socket and a few clients.
# Every client has a deadline for its whole request, so a browser's speculative connections that never
# send anything cannot stall anyone. Buffers are allocated once; every response is Connection: close.
import gc
import select
import socket
import time

BODY_MAX = 256
LONG_BODY_MAX = 768  # for the one path that takes more: the settings page's JSON at its longest
REQUEST_MS = 4000
WRITE_S = 1  # the most one write may wait for a slow reader; the watchdog bites after 3.2 s
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
BAD = b"400 Bad Request"
FORBIDDEN = b"403 Forbidden"
KEEP = (b"host", b"content-type", b"content-length", b"accept-encoding", b"origin",
        b"x-espblink", b"transfer-encoding")

# Response heads and file pieces are put together here; the DNS responder builds its replies in it too
# (never at the same time: both run to the end from the loop).
scratch = bytearray(512)
watchdog = None  # the app's machine.WDT: fed between the writes of a long answer


class HttpError(Exception):
    # args: status line (b"400 Bad Request"), short text for the body (str: a message costs no heap
    # object then), optional extra header lines
    pass


class Request:
    # One per client slot, made once and refilled by parse(): a request allocates no object of its own.
    # headers holds every name in KEEP; b"" when the request did not send it. An answer is put together
    # in the slot's buffer (the request in it has been read by then) and sent with send_built().
    def __init__(self, buf):
        self.sock = self.method = self.path = self.query = None
        self.body = b""
        self.buf = buf
        self.n = 0
        self.headers = {}
        for k in KEEP:
            self.headers[k] = b""

    def put(self, part):
        if isinstance(part, str):
            part = part.encode()
        n = self.n + len(part)
        if n > len(self.buf):
            raise HttpError(b"500 Internal Server Error", "answer longer than 1 KiB")
        self.buf[self.n:n] = part
        self.n = n


def parse(req, sock, buf, end):
    # The request line and headers are read in place from the client's buffer into req: only the pieces
    # kept are copied. Returns req or raises HttpError.
    nl = buf.find(b"\r\n", 0, end)
    if nl < 0:
        nl = end
    parts = bytes(buf[:nl]).split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise HttpError(BAD, "malformed request line")
    path = parts[1]
    q = path.find(b"?")
    query = b""
    if q >= 0:
        path, query = path[:q], path[q + 1:]
    bad = path[:1] != b"/" or b"/." in path or b"\\" in path
    for c in path:
        bad = bad or c <= 32 or c >= 127
    if bad:
        raise HttpError(BAD, "the target must be a plain path")
    headers = req.headers  # all b"" here: close() emptied them
    pos = nl + 2
    while pos < end:
        nl = buf.find(b"\r\n", pos, end)
        if nl < 0:
            nl = end
        colon = buf.find(b":", pos, nl)
        if colon <= pos or buf[colon - 1] in b" \t" or buf[pos] in b" \t":
            raise HttpError(BAD, "malformed header line")
        if colon - pos <= 17:  # no header we keep has a longer name
            k = bytes(buf[pos:colon]).lower()
            if k in KEEP:
                v = bytes(buf[colon + 1:nl]).strip()
                if headers[k] and headers[k] != v:
                    raise HttpError(BAD, "conflicting repeated header")
                headers[k] = v
        pos = nl + 2
    req.sock, req.method, req.path, req.query, req.body, req.n = sock, parts[0], path, query, b"", 0
    return req


def body_length(req, long_path=None):
    if req.headers[b"transfer-encoding"]:
        raise HttpError(b"411 Length Required", "chunked bodies are not accepted; send Content-Length")
    n = req.headers[b"content-length"] or b"0"
    if not n.isdigit() or len(n) > 6:
        raise HttpError(BAD, "bad Content-Length")
    limit = LONG_BODY_MAX if req.path == long_path else BODY_MAX
    if int(n) > limit:
        raise HttpError(b"413 Content Too Large", "body over %d bytes" % limit)
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
    sock.write(memoryview(scratch)[:n])


def _put(n, part):
    scratch[n:n + len(part)] = part
    return n + len(part)


def send(sock, status, body=b"", ctype=TEXT, extra=b""):
    start(sock, status, ctype, len(body), extra)
    if body:
        sock.write(body)


def send_parts(sock, status, parts, ctype):
    # parts() gives the body in pieces of a few hundred bytes, the same each time it is called: once to
    # count them, once to send them, so the body never needs one large block of heap.
    n = 0
    for part in parts():
        n += len(part)
    start(sock, status, ctype, n)
    for part in parts():
        sock.write(part)


def send_built(req, status, ctype):
    # Sends what req.put() put together.
    start(req.sock, status, ctype, req.n)
    req.sock.write(memoryview(req.buf)[:req.n])


def send_file(sock, f, ctype, extra=b""):
    # Streams an open file through one 512-byte buffer, and closes it.
    with f:
        f.seek(0, 2)
        start(sock, b"200 OK", ctype, f.tell(), extra)
        f.seek(0)
        mv = memoryview(scratch)
        n = f.readinto(scratch)
        while n:
            if watchdog:
                watchdog.feed()
            sock.write(mv[:n])
            n = f.readinto(scratch)


class Server:
    def __init__(self, handle, buffers, port=80, long_path=None):
        # handle(req): answers a parsed request (or raises HttpError). long_path: the path whose body may
        # be up to LONG_BODY_MAX bytes.
        # buffers: one bytearray per client (its size caps request line plus headers), allocated by the
        # caller while the heap is still in one piece. A client's state is a list kept with its buffer
        # and reused, so a connection allocates little more than its socket.
        self.handle = handle
        self.long_path = long_path
        self.poll = select.poll()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])
        self.listener.listen(len(buffers))
        self.listener.setblocking(False)
        self.poll.register(self.listener, select.POLLIN)
        self.free = [[b, 0, 0, 0, None, Request(b)] for b in buffers]
        # socket -> [buffer, bytes in it, deadline, body length, parsed Request or None, the slot's Request]
        self.clients = {}
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
                    self.finish(s, HttpError(b"408 Request Timeout", "request not completed in time"))
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
        req = c[5]
        c[4] = req.sock = req.body = req.path = req.query = None
        for k in KEEP:  # what the request sent goes back to the heap now, not when the slot is next used
            req.headers[k] = b""
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
                        raise HttpError(b"431 Request Header Fields Too Large", "request head over 1 KiB")
                    return
                c[4] = parse(c[5], s, buf, end)
                c[3] = body_length(c[4], self.long_path)
                rest = c[1] - end - 4
                buf[:rest] = memoryview(buf)[end + 4:c[1]]  # moved in place, not copied
                c[1] = rest
            if c[1] < c[3]:
                return
            c[4].body = memoryview(buf)[:c[3]]  # a route that reads it copies it: most do not
            s.settimeout(WRITE_S)
            self.handle(c[4])
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
                msg = e.args[1].encode()  # its length in bytes: it may quote what the client sent
                start(s, e.args[0], TEXT, len(msg) + 1, e.args[2] if len(e.args) > 2 else b"")
                s.write(msg)
                s.write(b"\n")
            elif not isinstance(e, OSError):
                print("espblink: handler error:", repr(e))
                send(s, b"500 Internal Server Error", b"internal error\n")
        except Exception:
            pass
        self.close(s)
        gc.collect()
