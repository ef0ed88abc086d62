"""The captive-portal DNS responder (device/dns.py) as .mpy on real MicroPython, asked by a real DNS client."""

from __future__ import annotations

import select
import socket
import struct
import subprocess
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from espblink import build, paths
from nodemcu import runtime

BOARD = "192.168.4.1"
HEAP = 8000

# Runs on MicroPython: the responder in a poll loop, as the app serves it. A line on stdin asks for
# the free heap after a collection; the end of stdin stops it.
HARNESS = """import gc
import select
import sys

gc.collect()
before = gc.mem_free()
from dns import DNS

d = DNS(sys.argv[1])
gc.collect()
print("ready", before - gc.mem_free())
p = select.poll()
p.register(d.sock, select.POLLIN)
p.register(sys.stdin, select.POLLIN)
while True:
    for ev in p.ipoll():
        if ev[0] is d.sock:
            d.handle()
        elif not sys.stdin.readline():
            d.sock.close()
            sys.exit(0)
        else:
            gc.collect()
            print("heap", gc.mem_free(), d.answered)
"""


class Responder:
    def __init__(self, proc: subprocess.Popen, port: int, footprint: int) -> None:
        self.proc = proc
        self.port = port
        self.footprint = footprint
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.settimeout(3)
        self.next_id = 1

    def alive(self) -> None:
        if self.proc.poll() is not None:
            assert self.proc.stdout
            pytest.fail(f"the responder died (exit {self.proc.returncode}):\n{self.proc.stdout.read()}")

    def ask(self, name: str, rdtype: str = "A", **kw: object) -> dns.message.Message:
        self.alive()
        q = dns.message.make_query(name, rdtype, **kw)
        try:
            return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=3)
        except dns.exception.Timeout:
            self.alive()
            raise

    def heap(self) -> tuple[int, int]:
        """Free heap after a collection, and how many queries were answered."""
        assert self.proc.stdin and self.proc.stdout
        self.alive()
        self.proc.stdin.write("heap\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], 5)
        assert ready, "the responder did not answer on stdin within 5 s"
        word, free, answered = self.proc.stdout.readline().split()
        assert word == "heap"
        return int(free), int(answered)

    def replies_to(self, packet: bytes) -> list[bytes]:
        """Send packet, then a real query; return every datagram that came back before the real
        query's answer (the responder serves in order, so those answer the packet)."""
        self.alive()
        self.next_id = self.next_id % 60000 + 1
        sentinel = dns.message.make_query("sentinel.example", "A", id=self.next_id)
        self.client.sendto(packet, ("127.0.0.1", self.port))
        self.client.sendto(sentinel.to_wire(), ("127.0.0.1", self.port))
        before = []
        while True:
            try:
                data = self.client.recv(4096)
            except TimeoutError:
                self.alive()
                raise AssertionError(f"the responder stopped answering after {packet[:40]!r}") from None
            if data[:2] == struct.pack(">H", self.next_id):
                reply = dns.message.from_wire(data)
                if reply.question == sentinel.question:
                    assert [r.address for r in reply.answer[0]] == [BOARD]
                    return before
            before.append(data)


@pytest.fixture(scope="module")
def responder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Responder]:
    fs = tmp_path_factory.mktemp("dns")
    build.compile_module(paths.DEVICE / "dns.py", fs / "dns.mpy")
    (fs / "harness.py").write_text(HARNESS)
    port = runtime.free_port(socket.SOCK_DGRAM)
    proc = runtime.run(["harness.py", BOARD], fs, HEAP, ports={53: port}, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        assert proc.stdout
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("ready "), f"the responder did not start: {line}{proc.stdout.read() if line else ''}"
        yield Responder(proc, port, int(line.split()[1]))
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def query(qid: int = 0x1234, flags: int = 0x0100, qdcount: int = 1, name: bytes = b"\x07example\x03org\x00",
          tail: bytes = b"\x00\x01\x00\x01") -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qdcount, 0, 0, 0) + name + tail


@pytest.mark.parametrize("name", ["connectivitycheck.gstatic.com", "captive.apple.com",
                                  "www.msftconnecttest.com", "example.org", "a.b.c.d.e.f.g.h.espblink.local"])
def test_a_query_for_any_name_is_answered_with_the_board_address(responder: Responder, name: str) -> None:
    reply = responder.ask(name)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.AA
    [rrset] = reply.answer
    assert rrset.name.to_text() == name + "."
    assert rrset.rdtype == dns.rdatatype.A
    assert [r.address for r in rrset] == [BOARD]
    assert 0 < rrset.ttl <= 300, "a phone that moves on must not keep the board's address for long"


def test_query_with_edns_as_phones_send_it_is_answered(responder: Responder) -> None:
    reply = responder.ask("clients3.google.com", use_edns=0, payload=1232)
    assert [r.address for r in reply.answer[0]] == [BOARD]


@pytest.mark.parametrize("rdtype", ["AAAA", "HTTPS", "MX", "TXT", "ANY"])
def test_other_types_get_an_empty_answer_so_the_phone_asks_for_a(responder: Responder, rdtype: str) -> None:
    reply = responder.ask("captive.apple.com", rdtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


def test_longest_allowed_name_is_answered(responder: Responder) -> None:
    name = ".".join(["a" * 63] * 3 + ["b" * 61])  # 255 bytes on the wire
    reply = responder.ask(name)
    assert [r.address for r in reply.answer[0]] == [BOARD]


MALFORMED = {
    "empty": b"",
    "shorter than a header": b"\x12\x34\x01\x00\x00\x01",
    "header only": query(name=b"", tail=b""),
    "a response (QR set)": query(flags=0x8180),
    "inverse query opcode": query(flags=dns.opcode.to_flags(dns.opcode.IQUERY)),
    "status opcode": query(flags=dns.opcode.to_flags(dns.opcode.STATUS)),
    "update opcode": query(flags=dns.opcode.to_flags(dns.opcode.UPDATE)),
    "no question": query(qdcount=0),
    "two questions": query(qdcount=2) + b"\x07example\x03com\x00\x00\x01\x00\x01",
    "256 questions": query(qdcount=256),
    "compression pointer in the question": query(name=b"\xc0\x0c"),
    "pointer loop after a label": query(name=b"\x01a\xc0\x0c"),
    "reserved label type": query(name=b"\x41" + b"a" * 65 + b"\x00"),
    "label running past the end": query(name=b"\x3fabc", tail=b""),
    "name without its final zero": query(name=b"\x07example\x03org", tail=b""),
    "type and class cut short": query(tail=b"\x00\x01\x00"),
    "name longer than 255 bytes": query(name=(b"\x3f" + b"a" * 63) * 5 + b"\x00"),
    "9000 bytes of zeros": bytes(9000),
    "9000 bytes of 0xff": b"\xff" * 9000,
}


@pytest.mark.parametrize("packet", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_packet_gets_no_answer_and_the_responder_keeps_serving(responder: Responder,
                                                                         packet: bytes) -> None:
    assert responder.replies_to(packet) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_random_bytes_never_break_the_responder(responder: Responder, packet: bytes) -> None:
    # Random bytes are almost never a query; if they happen to be one, the reply must be a proper one.
    for data in responder.replies_to(packet):
        reply = dns.message.from_wire(data)
        assert data[:2] == packet[:2] and reply.flags & dns.flags.QR


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_queries_never_break_the_responder(responder: Responder, data: st.DataObject) -> None:
    packet = bytearray(dns.message.make_query("connectivitycheck.gstatic.com", "A").to_wire())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(packet) - 1))
        packet[at] = data.draw(st.integers(0, 255))
    packet = packet[:data.draw(st.integers(0, len(packet)))]
    for reply in responder.replies_to(bytes(packet)):
        msg = dns.message.from_wire(reply)
        assert msg.id == int.from_bytes(packet[:2], "big")
        for rrset in msg.answer:
            assert [r.address for r in rrset] == [BOARD]


def test_heap_stays_flat_over_many_queries(responder: Responder) -> None:
    assert responder.footprint < 4000, f"the responder takes {responder.footprint} B of heap"
    responder.ask("warm.up")
    free, answered = responder.heap()
    for i in range(300):
        responder.ask(f"host{i}.example.org", "AAAA" if i % 3 else "A")
        responder.replies_to(b"\xff" * (i % 500))
    after, answered_after = responder.heap()
    assert answered_after >= answered + 600
    assert abs(after - free) <= 64, (free, after)


def test_a_burst_of_queries_is_all_answered(responder: Responder) -> None:
    # A phone that joins asks for A and AAAA of several names at once; handle() serves a few per call
    # and the poll loop comes back for the rest.
    names = [f"burst{i}.example" for i in range(40)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        for i, name in enumerate(names):
            s.sendto(dns.message.make_query(name, "A", id=i).to_wire(), ("127.0.0.1", responder.port))
        got = {}
        for _ in names:
            reply = dns.message.from_wire(s.recv(4096))
            got[reply.question[0].name.to_text()] = [r.address for r in reply.answer[0]]
    assert got == {name + ".": [BOARD] for name in names}
