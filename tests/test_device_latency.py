"""A phone's idle connections, slow clients and busy clients never stall a toggle (issue 11): the device
app on the board's MicroPython at the board's heap, over real TCP on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from device_support import VALID, run_app, slowloris

TOGGLE = (b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\n"
          b"Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"toggle\": true}")
STATE = b"GET /api/state HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n"
BOUND = 0.100  # the bound for one toggle, seconds
pytestmark = pytest.mark.serial  # timing bounds: run alone, not beside other xdist workers


@pytest.fixture
def app(tmp_path):
    """A board of the test's own: none depends on what another did to its LEDs, slots or heap."""
    with run_app(tmp_path, VALID) as a:
        yield a


def exchange(port: int, data: bytes, timeout: float = 6) -> tuple[bytes, float]:
    """One request on a new connection: the whole answer and how long it took, connect included."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
    return out, time.monotonic() - t


def toggles(app, n: int = 50) -> list[float]:
    times = []
    for _ in range(n):
        out, took = exchange(app.port, TOGGLE)
        assert out.startswith(b"HTTP/1.1 200 "), out[:200]
        times.append(took)
    return times


def test_six_idle_connections_then_every_toggle_within_100_ms(app):
    # A phone's browser opens up to 6 connections to one host and sends nothing on most of them.
    idle = [socket.create_connection(("127.0.0.1", app.port)) for _ in range(6)]
    try:
        time.sleep(0.2)
        times = toggles(app)
        assert max(times) < BOUND, sorted(times)[-5:]
    finally:
        for s in idle:
            s.close()


def test_six_slowloris_clients_then_every_toggle_within_100_ms(app):
    # Six clients sending a request one byte a second (each is cut at the deadline and comes back).
    with slowloris(app.port, 6):
        time.sleep(1.5)
        times = []
        for _ in range(50):
            times += toggles(app, 1)
            time.sleep(0.05)  # over the slow clients' deadlines: some of them reconnect meanwhile
        assert max(times) < BOUND, sorted(times)[-5:]


def eight_clients(port: int, seconds: float = 10) -> list[tuple[bytes, float] | Exception]:
    """8 clients for `seconds`, each sending its next request as soon as the last is answered: 6 read the
    state, 2 toggle (each toggle is also a console line the host prints). Every answer's first bytes and
    time, or the error."""
    results: list[tuple[bytes, float] | Exception] = []
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(request: bytes) -> None:
        while time.monotonic() < end:
            try:
                answer, took = exchange(port, request)
                r: tuple[bytes, float] | Exception = (answer[:13], took)
            except OSError as e:
                r = e
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(TOGGLE if i >= 6 else STATE,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 20)
    return results


def test_eight_clients_back_to_back_for_10_s_none_reset_none_waits_100_ms(app):
    # Two phones and Home Assistant polling, and more. Every run: no connection reset or refused, every
    # answer a 200, none near the 1 s a dropped connection costs (what a full backlog did). The 100 ms
    # bound must hold for a whole run; on a shared 2-core machine another program can stall the board's
    # process for longer now and then (seen: a few of ~30,000 answers at 0.2-0.7 s, all at once, while the
    # load average was 10), so a run spoilt that way is run again, up to three times.
    maxima = []
    for _ in range(3):
        results = eight_clients(app.port)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors == [], errors[:5]
        bad = [r[0] for r in results if r[0] != b"HTTP/1.1 200 "]
        assert bad == [], bad[:5]
        slow = sorted(r[1] for r in results)[-5:]
        assert len(results) > 200 and slow[-1] < 1.0, (len(results), slow)
        maxima.append(slow[-1])
        if slow[-1] < BOUND:
            return
    raise AssertionError(f"an answer took 100 ms or more in each of 3 runs of 10 s: the slowest {maxima}")


def test_requests_that_arrived_are_answered_never_pushed_out(app):
    # More complete requests than client slots, each sent as its connection opens, all before any answer
    # is read: each gets its answer. (Opened all first and sent later, the first ones would rightly give
    # way: a burst over the backlog waits for a SYN retry, and by then they had sent nothing for 1 s.)
    socks = []
    try:
        for _ in range(12):
            socks.append(socket.create_connection(("127.0.0.1", app.port), timeout=6))
            socks[-1].sendall(STATE)
        for s in socks:
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            assert out.startswith(b"HTTP/1.1 200 "), out[:100]
    finally:
        for s in socks:
            s.close()


def test_with_every_slot_held_by_a_started_request_a_newcomer_waits_then_is_answered(app):
    # Eight connections that each sent part of a request may not be pushed out: a ninth waits in the
    # backlog, unrefused, until the first of them reaches its deadline (a 408), then gets its answer.
    held = [socket.create_connection(("127.0.0.1", app.port), timeout=10) for _ in range(8)]
    try:
        for s in held:
            s.sendall(b"GET /api/state HTTP/1.1\r\n")
        time.sleep(0.2)
        out, took = exchange(app.port, TOGGLE, timeout=10)
        assert out.startswith(b"HTTP/1.1 200 "), out[:100]
        assert took < 4.0 + 1.0  # the request deadline, and nothing like a dropped SYN's retry after it
        for s in held:
            assert s.recv(100).startswith(b"HTTP/1.1 408")
    finally:
        for s in held:
            s.close()
