# A captive-portal DNS responder for the access point: every A query, whatever the name, is answered
# with the board's address, so a phone that joins finds its connectivity check (and the page) at the
# board. Other types get an answer with no records, and the phone asks for A. Anything that is not a
# standard one-question query is dropped. Served from the app's poll loop; never blocks.
import socket

# Header, the longest name DNS allows (255 bytes) and the question's type and class: everything a
# query needs. Longer datagrams are cut to this by recvfrom (the rest would be additional records).
QUERY_MAX = 271
BURST = 4  # datagrams per handle(): the socket stays readable, so a flood cannot starve the web server
# The answer: a pointer to the question's name at offset 12, type A, class IN, TTL 60 s, 4 bytes.
ANSWER = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"


class DNS:
    def __init__(self, ip, port=53, buf=None):
        parts = ip.split(".")
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
            raise ValueError("DNS needs the board's IPv4 address, like 192.168.4.1, not %r" % ip)
        self.ip = bytes(int(p) for p in parts)
        # The reply is built in one buffer (the caller's, when it has one to share): the question copied
        # back, then the answer.
        self.buf = buf or bytearray(QUERY_MAX + len(ANSWER) + 4)
        self.mv = memoryview(self.buf)
        self.answered = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind(socket.getaddrinfo("0.0.0.0", port)[0][-1])

    def handle(self):
        for _ in range(BURST):
            try:
                query, peer = self.sock.recvfrom(QUERY_MAX)
            except OSError:  # EAGAIN: nothing more waiting
                return
            n = self.reply(query)
            if n:
                try:
                    self.sock.sendto(self.mv[:n], peer)
                    self.answered += 1
                except OSError:  # lwIP out of buffers, or a peer that cannot be reached: drop it
                    pass

    def reply(self, q):
        # Builds the reply to q in self.buf and returns its length, or 0 when q is to be ignored.
        n = len(q)
        # Byte 2 holds QR (set in responses) and the opcode (0: standard query); one question only.
        if n < 17 or q[2] & 0xF8 or q[4] or q[5] != 1:
            return 0
        i = 12
        while True:
            if i >= n:
                return 0
            if not q[i]:
                break
            if q[i] > 63:  # a compression pointer (0xC0) or a reserved label type: not in a question
                return 0
            i += q[i] + 1
        end = i + 5  # the name's final zero, type, class
        if end > n:
            return 0
        buf = self.buf
        self.mv[:end] = memoryview(q)[:end]
        buf[2] = 0x84 | (q[2] & 1)  # response, authoritative, recursion desired copied from the query
        buf[3] = 0x80  # recursion available, no error
        for k in range(6, 12):  # answer, authority and additional counts
            buf[k] = 0
        if q[i + 1] or q[i + 2] != 1 or q[i + 3] or q[i + 4] != 1:  # not A in class IN: no records
            return end
        buf[7] = 1
        buf[end:end + 12] = ANSWER
        buf[end + 12:end + 16] = self.ip
        return end + 16
