"""Trying to break the board: a byte-level fuzzer, slow clients and a soak, on real MicroPython."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_support import VALID, run_app

DEADLINE = 4.0  # the board's per-request deadline (server.REQUEST_MS)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with run_app(tmp_path_factory.mktemp("board"), VALID) as a:
        yield a


def send(app, data: bytes) -> tuple[bytes, float]:
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", app.port), timeout=DEADLINE + 3) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the board may answer and close before everything is sent
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
    return out, time.monotonic() - t


GOOD_HEAD = [b"GET /api/leds HTTP/1.1", b"Host: 192.168.4.1"]
FAULTS = st.sampled_from([
    "binary", "lf_only", "no_version", "http09", "bad_version", "absolute", "dotdot", "no_colon", "space_name",
    "huge_header", "many_headers", "neg_length", "bad_length", "big_length", "two_lengths", "chunked",
    "pipelined_bad", "empty_line_first", "nul_in_path",
])


@st.composite
def malformed(draw) -> bytes:
    fault = draw(FAULTS)
    junk = draw(st.binary(min_size=1, max_size=64))
    word = draw(st.text(alphabet="abcxyz-_", min_size=1, max_size=12)).encode()
    head = list(GOOD_HEAD)
    body = b""
    if fault == "binary":
        return b"\x00\xff" + junk + b"\r\n\r\n"
    if fault == "lf_only":
        return b"\n".join(head) + b"\n\n"
    if fault == "no_version":
        head[0] = b"GET /api/leds"
    elif fault == "http09":
        return b"GET /\r\n"
    elif fault == "bad_version":
        head[0] = b"GET / " + draw(st.sampled_from([b"HTTP/2.0", b"http/1.1", b"HTTP/1.1x", b"HTTP/0.9"]))
    elif fault == "absolute":
        head[0] = b"GET http://" + word + b"/api/leds HTTP/1.1"
    elif fault == "dotdot":
        head[0] = b"GET /" + word + b"/../config.json HTTP/1.1"
    elif fault == "no_colon":
        head.append(word + b" " + word)
    elif fault == "space_name":
        head.append(b"X-" + word + b" : 1")
    elif fault == "huge_header":
        head.append(b"X-Big: " + b"a" * draw(st.integers(1100, 3000)))
    elif fault == "many_headers":
        head += [b"X-" + word + b": 1"] * draw(st.integers(140, 250))  # repeated past the 1 KiB cap
    elif fault == "neg_length":
        head[0] = b"POST /api/leds/blue HTTP/1.1"
        head.append(b"Content-Length: -" + str(draw(st.integers(1, 99))).encode())
    elif fault == "bad_length":
        head[0] = b"POST /api/leds/blue HTTP/1.1"
        head.append(b"Content-Length: " + word)
    elif fault == "big_length":
        head[0] = b"POST /api/leds/blue HTTP/1.1"
        head.append(b"Content-Length: " + str(draw(st.integers(257, 10**9))).encode())
        body = junk
    elif fault == "two_lengths":
        head[0] = b"POST /api/leds/blue HTTP/1.1"
        head += [b"Content-Length: 2", b"Content-Length: 3"]
        body = b"{}x"
    elif fault == "chunked":
        head[0] = b"POST /api/leds/blue HTTP/1.1"
        head.append(b"Transfer-Encoding: chunked")
        body = b"2\r\n{}\r\n0\r\n\r\n"
    elif fault == "pipelined_bad":
        return b"GET /x HTTP/9.9\r\n\r\n" + b"\r\n".join(GOOD_HEAD) + b"\r\n\r\n"
    elif fault == "empty_line_first":
        head.insert(0, b"")
    elif fault == "nul_in_path":
        head[0] = b"GET /api/\x00" + word + b" HTTP/1.1"
        head.append(b"X: " + junk.replace(b"\r", b"").replace(b"\n", b""))
        return b"\r\n".join(head) + b"\r\n\r\n"
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_fuzzed_requests_get_a_4xx_or_a_close_and_nothing_leaks(app):
    base = app.get_json("/api/status")["heap_free"]
    seen: dict[bytes, int] = {}

    @settings(max_examples=2000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(malformed())
    def check(data: bytes) -> None:
        out, took = send(app, data)
        assert took < DEADLINE + 2, f"hung {took:.1f}s on {data[:80]!r}"
        status = out[:12]
        assert out == b"" or (out.startswith(b"HTTP/1.1 4") and b"Content-Length: " in out), (data[:120], out[:200])
        seen[status] = seen.get(status, 0) + 1

    check()
    assert app.proc.poll() is None and "Traceback" not in app.output()
    assert len(seen) >= 4, seen  # the faults reach several different checks
    time.sleep(0.2)
    after = app.get_json("/api/status")["heap_free"]
    assert abs(after - base) <= 256, (base, after)


def test_random_bytes_never_crash_the_board(app):
    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=1500))
    def check(data: bytes) -> None:
        out, took = send(app, data)
        assert took < DEADLINE + 2
        assert out == b"" or out.startswith(b"HTTP/1.1 4"), (data[:80], out[:120])

    check()
    assert app.get_json("/api/leds")["leds"]


def test_slowloris_does_not_delay_a_toggle(app):
    stop = threading.Event()

    def slow_client() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
                    for b in b"GET /api/leds HTTP/1.1\r\nHost: x\r\n":
                        if stop.wait(1.0):
                            return
                        s.sendall(bytes([b]))
            except OSError:
                pass

    clients = [threading.Thread(target=slow_client, daemon=True) for _ in range(4)]
    for c in clients:
        c.start()
    try:
        time.sleep(1.5)
        for _ in range(8):
            t = time.monotonic()
            status, _ = app.post_json("/api/leds/red", {"toggle": True})
            assert status == 200
            assert time.monotonic() - t < 1.0
            time.sleep(0.5)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=5)


def test_soak_10000_requests_with_flat_heap(app):
    base = app.get_json("/api/status")["heap_free"]
    samples = []
    req = b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
    for i in range(10_000):
        if i % 5 == 4:
            out = app.raw(b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\n"
                          b"Content-Type: application/json\r\n"
                          b"Content-Length: 16\r\n\r\n{\"toggle\": true}")
        else:
            out = app.raw(req)
        assert out.startswith(b"HTTP/1.1 200"), out[:100]
        if i % 2000 == 1999:
            samples.append(app.get_json("/api/status")["heap_free"])
    assert max(samples) - min(samples) <= 256 and abs(samples[-1] - base) <= 256, (base, samples)
