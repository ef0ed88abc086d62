"""The device app on real MicroPython (unix port, .mpy build, ESP8266 shims), over real TCP on loopback."""

from __future__ import annotations

import gzip
import json
import re
import socket
import time

import pytest

from device_support import VALID, run_app


@pytest.fixture
def app(tmp_path):
    """A board of the test's own: none depends on what another did to its LEDs, slots or heap."""
    with run_app(tmp_path, VALID) as a:
        yield a


def gpio_lines(app, start=0):
    return [ln for ln in app.lines[start:] if ln.startswith("GPIO")]




def test_all_leds_dark_at_power_on_and_gpio2_never_pulled_low(app):
    boot = gpio_lines(app)
    assert "GPIO2 high: blue LED off" in boot
    assert "GPIO16 high: red LED off" in boot
    assert "GPIO5 low: ext LED off" in boot
    assert not any(ln.startswith("GPIO2 low") for ln in app.lines[: app.lines.index(app.url)])
    leds = app.get_json("/api/leds")["leds"]
    assert [(d["name"], d["gpio"], d["on"]) for d in leds] == [
        ("blue", 2, False), ("red", 16, False), ("ext", 5, False)]


def test_toggle_drives_active_low_and_active_high_pins(app):
    n = len(app.lines)
    status, body = app.post_json("/api/leds/blue", {"on": True})
    assert status == 200 and json.loads(body)["on"] is True
    app.wait_line("GPIO2 low: blue LED on", n)
    status, body = app.post_json("/api/leds/ext", {"toggle": True})
    assert json.loads(body)["on"] is True
    app.wait_line("GPIO5 high: ext LED on", n)
    app.post_json("/api/leds/ext", {"toggle": True})
    app.wait_line("GPIO5 low: ext LED off", n)
    app.post_json("/api/leds/blue", {"on": False})
    app.wait_line("GPIO2 high: blue LED off", n)


def test_form_post_without_javascript_redirects_back(app):
    status, headers, body = app.request("GET", "/leds")
    assert status == 200 and b"action='/api/leds/red'" in body
    n = len(app.lines)
    status, headers, _ = app.post_form("/api/leds/red", "action=toggle")
    assert status == 303 and headers["location"] == "/"
    app.wait_line("GPIO16 low: red LED on", n)
    app.post_form("/api/leds/red", "action=off")
    app.wait_line("GPIO16 high: red LED off", n)


def test_get_never_changes_state(app):
    n = len(app.lines)
    for path in ("/api/leds/blue", "/api/leds/blue?toggle=1", "/api/leds", "/", "/leds", "/api/status"):
        status, _, _ = app.request("GET", path)
        assert status in (200, 303, 405)
    status, headers, _ = app.request("GET", "/api/leds/blue")
    assert status == 405 and headers["allow"] == "POST"
    time.sleep(0.3)
    assert gpio_lines(app, n) == []


def test_blink_runs_from_the_loop_while_requests_are_served(app):
    n = len(app.lines)
    status, body = app.post_json("/api/leds/red", {"blink_ms": 200})
    assert status == 200 and json.loads(body)["blink_ms"] == 200
    t0 = time.monotonic()
    for _ in range(10):
        assert app.get_json("/api/leds")["leds"][1]["blink_ms"] == 200
    assert time.monotonic() - t0 < 3
    time.sleep(1.0)
    edges = [ln for ln in gpio_lines(app, n) if ln.startswith("GPIO16")]
    assert len(edges) >= 6, edges
    app.post_json("/api/leds/red", {"on": False})
    time.sleep(0.1)
    m = len(app.lines)
    time.sleep(0.5)
    assert [ln for ln in gpio_lines(app, m) if ln.startswith("GPIO16")] == []


def post(path: str, ctype: str, body: bytes) -> bytes:
    """A raw POST from the board's own page (its Host and header)."""
    return (f"POST {path} HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("data,status,needle", [
    (b"GET /nope HTTP/1.1\r\nHost: 192.168.4.1\r\n\r\n", 404, b"not found"),
    (b"POST /api/leds/green HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", 404, b"LED"),
    (b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 3\r\n\r\n{x}", 400, b"JSON"),
    (b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\nContent-Type: application/json\r\n"
     b"Content-Length: 15\r\n\r\n{\"blink_ms\": 5}", 400, b"blink_ms"),
    (b"POST /api/leds/blue HTTP/1.1\r\nContent-Length: 999\r\n\r\n", 413, b"256"),
    (b"POST /api/leds/blue HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, b"Content-Length"),
    (b"POST /api/leds/blue HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411, b"Content-Length"),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1100 + b"\r\n\r\n", 431, b"1 KiB"),
    (b"GARBAGE\r\n\r\n", 400, b"request line"),
    (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400, b"path"),
    (b"GET /../config.json HTTP/1.1\r\n\r\n", 400, b"path"),
    (b"GET / HTTP/2.0\r\n\r\n", 400, b"request line"),
    (b"DELETE /api/leds HTTP/1.1\r\n\r\n", 405, b"GET"),
    (b"GET /api/leds/bl\xffue HTTP/1.1\r\n\r\n", 400, b"path"),
    (post("/api/leds/blue", "application/json", b'{"blink_ms": 1e400}'), 400, b"blink_ms"),
    (post("/api/leds/blue", "application/json", b'{"blink_ms": 150.5}'), 400, b"whole number"),
    (post("/api/leds/blue", "application/json", b"[" * 200), 400, b"flat JSON object"),
    (post("/api/leds/blue", "application/json", b'["on"]'), 400, b"JSON object"),
    (post("/api/leds/blue", "application/json", b'{"on": "yes"}'), 400, b'{"on": true|false}'),
    (post("/api/leds/blue", "application/json", b"{}"), 400, b"toggle"),
    (post("/api/leds/blue", "text/plain", b"on"), 400, b"send JSON"),
    (post("/api/leds/blue", "application/x-www-form-urlencoded", b"action=\xff\xfe"), 400, b"action must be"),
])
def test_bad_requests_get_a_clear_4xx(app, data, status, needle):
    out = app.raw(data)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), out
    assert b"Content-Length: %d" % len(body) in head
    assert needle in body
    assert app.get_json("/api/leds")  # and the board goes on serving


def test_form_with_unknown_action_is_refused_by_name(app):
    token = app.form_token()
    for action in ("explode", "%ff", "\xff"):
        status, _, body = app.post_form("/api/leds/blue", f"action={action}", token)
        assert status == 400 and b"action must be on, off, toggle or blink" in body
    status, _, body = app.post_form("/api/leds/blue", "action=blink&blink_ms=1e9", token)
    assert status == 400 and b"blink_ms must be a whole number" in body


def test_a_request_without_host_is_answered(app):
    # Only a browser matters for cross-site safety, and every browser sends Host; a bare HTTP/1.0 tool may not.
    out = app.raw(b"GET /api/leds HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b'"leds"' in out


def test_missing_page_file_says_what_to_do_and_the_board_goes_on(app):
    page = app.fs / "page.html.gz"
    kept = page.read_bytes()
    page.unlink()
    try:
        status, _, body = app.request("GET", "/", headers={"Accept-Encoding": "gzip"})
        assert status == 500 and b"make deploy" in body and b"/leds" in body
        assert app.request("GET", "/leds")[0] == 200
    finally:
        page.write_bytes(kept)
    assert app.request("GET", "/", headers={"Accept-Encoding": "gzip"})[0] == 200


def test_page_is_one_small_gzip_request_with_nothing_external(app):
    status, headers, body = app.request("GET", "/", headers={"Accept-Encoding": "gzip, deflate"})
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(body) <= 6 * 1024
    html = gzip.decompress(body).decode()
    assert "<script>" in html and "<style>" in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert 'rel="icon" href="data:' in html
    # A client that does not take gzip is sent to the plain page the board renders itself.
    status, headers, _ = app.request("GET", "/")
    assert status == 303 and headers["location"] == "/leds"


def test_status_reports_firmware_heap_wifi(app):
    s = app.get_json("/api/status")
    assert s["firmware"].startswith("1.")
    assert s["mpy"] == 6
    assert s["heap_free"] > 2000
    assert s["reset_cause"] == "power-on"
    assert s["wifi"] == {"mode": "ap", "ssid": "espblink-test", "ip": "192.168.4.1", "home": None,
                         "home_problem": None}
    assert s["warning"] is None
    assert s["uptime_s"] >= 0


def test_idle_preconnections_do_not_stall_a_toggle(app):
    idle = [socket.create_connection(("127.0.0.1", app.port)) for _ in range(4)]
    try:
        t0 = time.monotonic()
        status, body = app.post_json("/api/leds/blue", {"toggle": True})
        assert status == 200
        assert time.monotonic() - t0 < 4.0  # the idle deadline
        # More idle sockets than client slots: the oldest idle one gives way.
        idle += [socket.create_connection(("127.0.0.1", app.port)) for _ in range(4)]
        status, _ = app.post_json("/api/leds/blue", {"toggle": True})
        assert status == 200
    finally:
        for s in idle:
            s.close()


def test_slow_client_is_cut_at_the_deadline(app):
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as s:
        s.sendall(b"GET / HT")
        t0 = time.monotonic()
        out = s.recv(1024)
        assert out.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 6


def test_cross_site_posts_are_refused_and_change_nothing(app):
    n = len(app.lines)
    json_headers = {"Content-Type": "application/json"}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    # A form on another website, a script without the page's header, a rebinding name, a foreign Origin.
    assert app.request("POST", "/api/leds/blue", "action=toggle", form)[0] == 403
    assert app.request("POST", "/api/leds/blue", "action=toggle&t=guess", form)[0] == 403
    assert app.request("POST", "/api/leds/blue", '{"toggle": true}', json_headers)[0] == 403
    assert app.request("POST", "/api/leds/blue", '{"toggle": true}',
                       {**json_headers, "X-Espblink": "1", "Origin": "http://evil.example"})[0] == 403
    assert app.request("POST", "/api/leds/blue", '{"toggle": true}',
                       {**json_headers, "X-Espblink": "1", "Host": "attacker.example"})[0] == 403
    # A read through a rebinding name gets no data, only a redirect to the board's own address.
    status, headers, body = app.request("GET", "/api/status", headers={"Host": "attacker.example"})
    assert (status, headers["location"], body.strip()) == (302, "http://192.168.4.1/", b"")
    time.sleep(0.3)
    assert gpio_lines(app, n) == []
    # The board's own page: its header, or its form token, an IP or the board's name as Host.
    ok = {**json_headers, "X-Espblink": "1", "Host": "espblink-test.local", "Origin": "http://espblink-test.local"}
    assert app.request("POST", "/api/leds/blue", '{"toggle": true}', ok)[0] == 200
    assert app.post_form("/api/leds/blue", "action=toggle")[0] == 303
