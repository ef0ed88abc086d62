# A one-thread HTTP/1.1 server for the ESP8266: select.poll over the listening socket and up to CONNS
# clients. A phone's browser opens up to 6 connections at once and most send nothing: each costs a
# slot (a short list) and its socket, not a buffer. A buffer (with the Request that parses it) is lent
# to a connection while it reads, from a pool of BUFFERS; a request not complete yet keeps what came
# in a bytes object of its size (up to _STASHED bytes for all of them together) and gives the buffer
# back, so a client sending a byte a second holds no buffer. Every client has a deadline for its whole request. Every response is Connection: close.
import gc
import json
import select
import socket
import time


CONNS = const(8)  # a phone's 6 idle connections, the request that matters, and one more client
BUFFERS = const(1)  # 1 KiB each; a connection that finds none waits, unread, for one to come back
_STASHED = const(1024)  # unfinished requests held out of the buffers, all together; past it one keeps its buffer
BODY_MAX = const(256)
REQUEST_MS = const(4000)
WRITE_S = const(1)  # the most one write may wait for a slow reader; the watchdog bites after 3.2 s
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
HTML = b"text/html; charset=utf-8"
BAD = b"400 Bad Request"
FORBIDDEN = b"403 Forbidden"
KEEP = (b"host", b"content-type", b"content-length", b"accept-encoding", b"origin",
        b"x-espblink", b"transfer-encoding")

# A client slot: a list indexed by these.
_SOCK = const(0)  # the connection, None when the slot is free
_DEADLINE = const(1)  # ticks_ms by which the request must be complete
_N = const(2)  # bytes of it held (in the lent buffer, or in the stash)
_REQ = const(3)  # the Request (with its buffer) lent to it, or None
_STASH = const(4)  # the bytes received so far while no buffer is lent, or None
_STATE = const(5)  # what it has done so far: one of these
_IDLE = const(0)  # sent nothing: the only kind that may be pushed out for a newcomer
_SENT = const(1)  # something arrived
_WAITING = const(2)  # something arrived, and it waits, not polled, for a buffer
_HEAD = const(3)  # head and body together are over 1 KiB: it keeps its buffer while the body comes
_IDLE_MS = const(300)  # a connection that has sent nothing for this long may be pushed out

# Response heads are put together here; the DNS responder builds its replies in it too (never at the
# same time: both run to the end from the loop). Its longest reply: 271 + 16 bytes.
scratch = bytearray(288)


class HttpError(Exception):
    # args: status line (b"400 Bad Request"), short text for the body (str: a message costs no heap
    # object then), optional extra header lines
    pass


class Request:
    # One per buffer, made once and refilled by parse(): a request allocates no object of its own.
    # headers holds every name in KEEP; b"" when the request did not send it. An answer is put together
    # in the buffer (the request in it has been read by then) and sent with send_built().
    def __init__(self):
        self.sock = self.method = self.path = self.query = None
        self.body = b""
        self.buf = bytearray(1024)
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
    # The request line and headers are read in place from the buffer into req: only the pieces kept are
    # copied. Returns req or raises HttpError.
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
    headers = req.headers  # all b"" here: release() emptied them
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
            if k in req.headers:
                v = bytes(buf[colon + 1:nl]).strip()
                if headers[k] and headers[k] != v:
                    raise HttpError(BAD, "conflicting repeated header")
                headers[k] = v
        pos = nl + 2
    req.sock, req.method, req.path, req.query, req.body, req.n = sock, parts[0], path, query, b"", 0
    return req


def body_length(req, long_path, long_max):
    if req.headers[b"transfer-encoding"]:
        raise HttpError(b"411 Length Required", "chunked bodies are not accepted; send Content-Length")
    n = req.headers[b"content-length"] or b"0"
    if not n.isdigit() or len(n) > 6:
        raise HttpError(BAD, "bad Content-Length")
    limit = long_max if req.path == long_path else BODY_MAX
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


def send_built(req, status, ctype):
    # Sends what req.put() put together.
    start(req.sock, status, ctype, req.n)
    req.sock.write(memoryview(req.buf)[:req.n])


def send_file(req, f, ctype, extra=b"", feed=None):
    # Streams an open file through the request's buffer (read by now), and closes it. feed: the
    # watchdog's, between writes.
    with f:
        f.seek(0, 2)
        start(req.sock, b"200 OK", ctype, f.tell(), extra)
        f.seek(0)
        mv = memoryview(req.buf)
        n = f.readinto(req.buf)
        while n:
            if feed:
                feed()
            req.sock.write(mv[:n])
            n = f.readinto(req.buf)


def json_object(body):
    # A body that must be one JSON object: the object, or a 400 that says what is wrong.
    try:
        d = json.loads(bytes(body))
    except ValueError:
        raise HttpError(BAD, "body is not JSON")
    if not isinstance(d, dict):
        raise HttpError(BAD, "body must be a JSON object")
    return d


class Server:
    def __init__(self, handle, port=None, long_path=None, long_max=0):
        # handle(req): answers a parsed request (or raises HttpError). long_path: the path whose body may
        # be up to long_max bytes. Buffers are allocated first, while the heap is still in one piece; the
        # port is listened on now, or by listen() once the rest of the app is ready.
        self.pool = [Request() for _ in range(BUFFERS)]
        self.slots = [[None, 0, 0, None, None, _IDLE] for _ in range(CONNS)]
        self.handle = handle
        self.long_path = long_path
        self.long_max = long_max
        self.poll = select.poll()
        self.listener = None
        self.listening = False
        self.stashed = 0
        self.others = []  # (socket, handler) served from this loop too (DNS)
        self.served = 0
        if port:
            self.listen(port)

    def listen(self, port=80):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])
        # lwIP refuses a connection that finds its accept queue full: room for every slot's worth.
        self.listener.listen(CONNS)
        self.listener.setblocking(False)
        self.poll.register(self.listener, select.POLLIN)
        self.listening = True

    def add(self, sock, handler):
        self.others.append((sock, handler))
        self.poll.register(sock, select.POLLIN)

    def step(self, timeout_ms):
        now = time.ticks_ms()
        for c in self.slots:
            if c[_SOCK]:
                timeout_ms = max(0, min(timeout_ms, time.ticks_diff(c[_DEADLINE], now)))
        pending = False
        for ev in self.poll.ipoll(timeout_ms):
            s = ev[0]
            if s is self.listener:
                pending = True  # after the clients: one whose request came with this batch is not idle
                continue
            for c in self.slots:
                if c[_SOCK] is s:
                    self.read(c)
                    break
            else:
                for o in self.others:
                    if o[0] is s:
                        o[1]()
        if pending:
            self.accept()
        elif not self.listening:
            # Every slot was taken: polled again once an idle connection may give way (close() does it
            # when a slot frees).
            for c in self.slots:
                if c[_STATE] == _IDLE and time.ticks_diff(now, c[_DEADLINE]) >= _IDLE_MS - REQUEST_MS:
                    self.listening = True
                    self.poll.register(self.listener, select.POLLIN)
                    break
        now = time.ticks_ms()
        for c in self.slots:
            if c[_SOCK] and time.ticks_diff(now, c[_DEADLINE]) >= 0:
                if c[_STATE] == _IDLE:
                    self.close(c)
                else:
                    self.finish(c, HttpError(b"408 Request Timeout", "request not completed in time"))

    def accept(self):
        # Every connection waiting is taken while there is a slot for it. A slot is free, or held by a
        # connection that has sent nothing (most likely a browser's spare one): the oldest such gives way.
        # With neither, the listener is left unpolled and newcomers wait in the backlog for a slot.
        while True:
            free = old = None
            for c in self.slots:
                if c[_SOCK] is None:
                    free = c
                    break
                if c[_STATE] == _IDLE and (old is None or time.ticks_diff(c[_DEADLINE], old[_DEADLINE]) < 0):
                    old = c
            if old and time.ticks_diff(time.ticks_ms(), old[_DEADLINE]) < _IDLE_MS - REQUEST_MS:
                old = None  # it may be sending its request right now
            if free is None and old is None:
                self.poll.unregister(self.listener)
                self.listening = False
                return
            try:
                s, _ = self.listener.accept()
            except (OSError, MemoryError):  # none waiting, or no socket now: the client retries
                return
            if free is None:
                self.close(old)
                free = old
            s.setblocking(False)
            free[_SOCK] = s
            free[_N] = 0
            free[_STATE] = _IDLE
            free[_DEADLINE] = time.ticks_add(time.ticks_ms(), REQUEST_MS)
            self.poll.register(s, select.POLLIN)

    def lend(self, c):
        # A buffer for c, with what c received while it had none; False when none is free now.
        if not self.pool:
            return False
        req = c[_REQ] = self.pool.pop()
        if c[_STASH]:
            req.buf[:c[_N]] = c[_STASH]
            self.stashed -= c[_N]
            c[_STASH] = None
        return True

    def give_back(self, c):
        req = c[_REQ]
        c[_REQ] = None
        req.sock = req.body = req.path = req.query = None
        for k in req.headers:  # what the request sent goes back to the heap now, not when the buffer is next lent
            req.headers[k] = b""
        self.pool.append(req)
        # The connection that has waited longest for a buffer is polled again.
        first = None
        for w in self.slots:
            if w[_STATE] == _WAITING and (first is None or time.ticks_diff(w[_DEADLINE], first[_DEADLINE]) < 0):
                first = w
        if first:
            first[_STATE] = _SENT
            self.poll.register(first[_SOCK], select.POLLIN)

    def stash(self, c):
        # What c sent so far, kept out of the buffer, which goes back to the pool: a request coming a
        # few bytes a second holds no buffer. Past the budget, or with no heap for it, c keeps the buffer.
        if self.stashed + c[_N] <= _STASHED:
            try:
                c[_STASH] = bytes(memoryview(c[_REQ].buf)[:c[_N]])
            except MemoryError:
                return
            self.stashed += c[_N]
            self.give_back(c)

    def close(self, c):
        s = c[_SOCK]
        if c[_STASH]:
            self.stashed -= c[_N]
        c[_SOCK] = c[_STASH] = None
        self.poll.unregister(s)
        s.close()
        if c[_REQ]:
            self.give_back(c)
        c[_STATE] = _IDLE
        if not self.listening:
            self.listening = True
            self.poll.register(self.listener, select.POLLIN)

    def read(self, c):
        s = c[_SOCK]
        if c[_REQ] is None and not self.lend(c):
            # Its request has arrived: it is answered once a buffer comes back (and given the time).
            self.poll.unregister(s)
            c[_STATE] = _WAITING
            c[_DEADLINE] = time.ticks_add(time.ticks_ms(), REQUEST_MS)
            return
        if c[_STATE] == _IDLE:
            c[_STATE] = _SENT
        req = c[_REQ]
        buf = req.buf
        try:
            n = s.readinto(memoryview(buf)[c[_N]:])
        except OSError:
            n = 0
        if n is None:
            return
        if not n:
            self.close(c)
            return
        c[_N] += n
        try:
            if c[_STATE] != _HEAD:
                end = buf.find(b"\r\n\r\n", 0, c[_N])
                if end < 0:
                    if c[_N] == len(buf):
                        raise HttpError(b"431 Request Header Fields Too Large", "request head over 1 KiB")
                    self.stash(c)
                    return
                parse(req, s, buf, end)
                req.n = body_length(req, self.long_path, self.long_max)  # held here until the body is in
                if c[_N] < end + 4 + req.n <= len(buf):
                    self.stash(c)  # parsed again when the rest has come
                    return
                c[_STATE] = _HEAD
                rest = c[_N] - end - 4
                buf[:rest] = memoryview(buf)[end + 4:c[_N]]  # moved in place, not copied
                c[_N] = rest
            if c[_N] < req.n:
                return
            req.body = memoryview(buf)[:req.n]  # a route that reads it copies it: most do not
            req.n = 0
            s.settimeout(WRITE_S)
            self.handle(req)
        except Exception as e:
            self.finish(c, e)
            return
        self.served += 1
        self.close(c)
        gc.collect()

    def finish(self, c, e):
        # Answers an error (a handler bug, even a MemoryError, becomes a 500: the loop goes on) and closes.
        s = c[_SOCK]
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
        self.close(c)
        gc.collect()
