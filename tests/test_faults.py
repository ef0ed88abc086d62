"""Trying to break the board: a byte-level fuzzer, slow clients and a soak, on real MicroPython."""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_support import VALID, run_app, slowloris

DEADLINE = 4.0  # the board's per-request deadline (server.REQUEST_MS)
# A complete toggle of the blue LED, as the page's script sends it.
TOGGLE_BLUE = (b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"toggle\": true}")


@pytest.fixture
def app(tmp_path):
    """A board of the test's own: none depends on what another did to its LEDs, slots or heap."""
    with run_app(tmp_path, VALID) as a:
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
    assert sum(seen.values()) >= 1500, seen  # thousands of malformed requests were really sent
    assert len(seen) >= 4, seen  # the faults reach several different checks
    time.sleep(0.2)
    after = app.get_json("/api/status")["heap_free"]
    assert abs(after - base) <= 256, (base, after)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
LED_BODY = st.fixed_dictionaries({}, optional={
    "on": JSON_VALUES, "toggle": JSON_VALUES, "blink_ms": JSON_VALUES | st.integers(-10, 70000)})


@st.composite
def odd_but_wellformed(draw) -> tuple[bytes, bool]:
    """A complete request on a real route, with odd contents: (bytes, whether it is a POST that may
    change an LED)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS"]))
    path = draw(st.sampled_from([b"/", b"/leds", b"/api/leds", b"/api/status", b"/api/leds/blue",
                                 b"/api/leds/red", b"/api/leds/", b"/api/leds/nope", b"/api/leds/blue/x",
                                 b"/API/LEDS", b"/favicon.ico"]))
    query = draw(st.binary(max_size=40).map(lambda b: bytes(c for c in b if 32 < c < 127)))
    kind = draw(st.sampled_from(["json", "json_text", "form", "binary", "none"]))
    headers = [b"Host: " + draw(st.sampled_from([b"192.168.4.1", b"192.168.4.1:80", b"espblink.local",
                                                 b"evil.example", b""]))]
    if draw(st.booleans()):
        headers.append(b"X-Espblink: " + draw(st.sampled_from([b"1", b"0", b""])))
    if draw(st.booleans()):
        headers.append(b"Origin: " + draw(st.sampled_from([b"http://192.168.4.1", b"http://evil.example",
                                                           b"null"])))
    if draw(st.booleans()):
        headers.append(b"Accept-Encoding: " + draw(st.sampled_from([b"gzip", b"identity", b"br, gzip"])))
    if kind == "json":
        body = json.dumps(draw(LED_BODY)).encode()
    elif kind == "json_text":
        body = json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "form":
        body = b"&".join(draw(st.lists(st.sampled_from([
            b"action=toggle", b"action=on", b"action=off", b"action=blink", b"action=", b"action=x",
            b"blink_ms=500", b"blink_ms=-1", b"blink_ms=abc", b"blink_ms=99999999999999999999", b"t=0",
            b"t=", b"=", b"&", b"%zz"]), max_size=5)))
    elif kind == "binary":
        body = draw(st.binary(max_size=256))
    else:
        body = b""
    ctype = {"json": b"application/json", "json_text": b"application/json",
             "form": b"application/x-www-form-urlencoded"}.get(kind, draw(st.sampled_from(
                 [b"application/json", b"text/plain", b"application/x-www-form-urlencoded; charset=utf-8"])))
    if kind != "none":
        headers += [b"Content-Type: " + ctype, b"Content-Length: %d" % len(body)]
    target = path + (b"?" + query if query else b"")
    return b"\r\n".join([method + b" " + target + b" HTTP/1.1", *headers]) + b"\r\n\r\n" + body, method == b"POST"


def test_odd_requests_on_real_routes_never_get_a_server_error(app):
    # Complete requests to the board's own routes with odd methods, hosts, origins, queries and bodies
    # (JSON of every shape, forms, bytes): each gets its answer or a 4xx naming the problem, never a 500.
    base = app.get_json("/api/status")["heap_free"]
    seen: dict[bytes, int] = {}

    @settings(max_examples=1500, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(odd_but_wellformed())
    def check(case: tuple[bytes, bool]) -> None:
        data, _ = case
        out, took = send(app, data)
        assert took < DEADLINE + 2, f"hung {took:.1f}s on {data[:80]!r}"
        status = out[9:12]
        # 302: a Host that is not the board's is sent to the board's address (the captive portal).
        assert status in (b"200", b"302", b"303") or status[:1] == b"4", (data[:300], out[:300], app.lines[-3:])
        assert b"Content-Length: " in out, out[:200]
        seen[status] = seen.get(status, 0) + 1

    check()
    assert app.proc.poll() is None and "handler error" not in app.output(), app.output()[-2000:]
    assert {b"200", b"303", b"400", b"403", b"404", b"405"} <= set(seen), seen
    for name in ("blue", "red"):
        assert app.post_json(f"/api/leds/{name}", {"blink_ms": 0})[0] == 200
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


@pytest.mark.serial
def test_slowloris_does_not_delay_a_toggle(app):
    with slowloris(app.port, 4):
        time.sleep(1.5)
        for _ in range(8):
            t = time.monotonic()
            status, _ = app.post_json("/api/leds/red", {"toggle": True})
            assert status == 200
            assert time.monotonic() - t < 1.0
            time.sleep(0.5)


UNFINISHED = [
    b"",  # a browser's speculative connection
    b"GET /api/leds HTTP/1.1",  # no CRLF at all
    b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n",  # the blank line never comes
    b"GET /\r\n",  # HTTP/0.9
    b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 16\r\n\r\n{\"tog",  # the body stops short
    b"GET /api/leds HTTP/1.1\r\nX-Big: " + b"a" * 900,  # most of the buffer, then nothing
]


def test_unfinished_requests_are_closed_at_the_deadline_and_others_are_served(app):
    # Clients that start a request and never finish it (nor close): each is closed, with a 408 or
    # nothing, within the deadline; meanwhile toggles are answered at once.
    socks = []
    t0 = time.monotonic()
    for data in UNFINISHED:
        s = socket.create_connection(("127.0.0.1", app.port), timeout=DEADLINE + 3)
        if data:
            s.sendall(data)
        socks.append(s)
        time.sleep(0.05)
    before = app.get_json("/api/leds")["leds"]
    status, _ = app.post_json("/api/leds/red", {"toggle": True})
    assert status == 200
    assert app.get_json("/api/leds")["leds"] != before
    for data, s in zip(UNFINISHED, socks, strict=True):
        out = b""
        try:
            while chunk := s.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"never closed: {data[:60]!r}") from None
        finally:
            s.close()
        assert out == b"" or out.startswith(b"HTTP/1.1 408"), (data[:60], out[:100])
    assert time.monotonic() - t0 < DEADLINE + 3
    assert app.proc.poll() is None and app.get_json("/api/leds")["leds"]


def test_pipelined_requests_get_the_first_answer_and_a_close(app):
    one = b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
    for data in (one * 3, TOGGLE_BLUE + one, TOGGLE_BLUE + TOGGLE_BLUE):
        before = app.get_json("/api/leds")["leds"]
        out, took = send(app, data)
        assert took < DEADLINE
        assert out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1") == 1, out[:300]
        # a toggle in the pipeline is done once, never twice
        assert (app.get_json("/api/leds")["leds"] != before) == data.startswith(b"POST"), data[:40]


def test_soak_10000_requests_with_flat_heap(app):
    base = app.get_json("/api/status")["heap_free"]
    samples = []
    req = b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
    for i in range(10_000):
        if i % 5 == 4:
            out = app.raw(TOGGLE_BLUE)
        else:
            out = app.raw(req)
        assert out.startswith(b"HTTP/1.1 200"), out[:100]
        if i % 2000 == 1999:
            samples.append(app.get_json("/api/status")["heap_free"])
    assert max(samples) - min(samples) <= 256 and abs(samples[-1] - base) <= 256, (base, samples)
