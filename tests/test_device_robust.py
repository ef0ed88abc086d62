"""The board never dies: memory under the board's heap, bad settings, safe mode, the boot-loop guard."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time

from test_device_settings import files_app

from device_support import VALID, run_app


def test_1000_mixed_requests_at_the_boards_heap_with_code_as_files(tmp_path):
    # The 1 MB layout (modules imported into the heap) leaves the least room: it must still serve.
    rnd = random.Random(2)
    with files_app(tmp_path, VALID) as app:
        base = app.get_json("/api/status")["heap_free"]
        gz = {"Accept-Encoding": "gzip"}
        token = app.form_token()
        handled = 0
        for _ in range(1000):
            k = rnd.randrange(6)
            handled += k < 5
            if k == 0:
                assert app.request("GET", "/", headers=gz)[0] == 200
            elif k == 1:
                assert app.request("GET", "/api/leds")[0] == 200
            elif k == 2:
                assert app.post_json(f"/api/leds/{rnd.choice(['blue', 'red', 'ext'])}", {"toggle": True})[0] == 200
            elif k == 3:
                assert app.post_form("/api/leds/red", "action=toggle", token)[0] == 303
            elif k == 4:
                assert app.request("GET", "/api/status")[0] == 200
            else:
                junk = rnd.choice([b"\x00\xff" * 40 + b"\r\n\r\n", b"GET /x HTTP/1.1\r\nA" + b"b" * 1200,
                                   b"POST /api/leds/blue HTTP/1.1\r\nContent-Length: 4\r\n\r\n{{{{"])
                assert app.raw(junk)[:10] in (b"HTTP/1.1 4", b"")
        after = app.get_json("/api/status")
        assert "MemoryError" not in app.output()
        assert after["requests"] >= handled + 1
        assert abs(after["heap_free"] - base) <= 256, (base, after["heap_free"])


def test_missing_config_gives_safe_defaults_and_a_private_key(tmp_path):
    with run_app(tmp_path) as app:
        s = app.get_json("/api/status")
        assert "no config.json" in s["warning"]
        assert s["wifi"]["ssid"] == "espblink-1A2B3C"
        line = app.wait_for("access point espblink-1A2B3C, key ")
        key = line.rsplit(" ", 1)[1]
        assert len(key) >= 8 and key != "micropythoN"
        assert [d["name"] for d in app.get_json("/api/leds")["leds"]] == ["blue", "red"]
    # The key is kept: the same board comes back with the same network.
    with run_app(tmp_path) as app:
        assert app.wait_for("access point espblink-1A2B3C, key ").endswith(key)


def test_corrupt_config_is_kept_and_reported(tmp_path):
    with run_app(tmp_path, '{"ap_key": "abcdefgh", "leds": [') as app:
        s = app.get_json("/api/status")
        assert "corrupt" in s["warning"]
        assert "corrupt" in app.wait_for("espblink: warning:")
        status, _, body = app.request("GET", "/leds")
        assert b"corrupt" in body
    assert (tmp_path / "fs" / "config.json").read_text() == '{"ap_key": "abcdefgh", "leds": ['


def test_invalid_config_names_the_key(tmp_path):
    bad = dict(VALID, leds=[{"name": "blue", "gpio": 7, "active_low": True}], colour="red")
    with run_app(tmp_path, bad) as app:
        w = app.get_json("/api/status")["warning"]
        assert "leds[0].gpio" in w and "flash" in w and "colour: unknown key" in w
        assert app.get_json("/api/leds")["leds"][0]["gpio"] == 2


def test_safe_mode_when_flash_button_held_at_power_on(tmp_path):
    with run_app(tmp_path, VALID, pins={0: 0}, wait=False) as app:
        app.wait_for("safe mode")
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", app.port)) != 0
        assert not [ln for ln in app.lines if ln.startswith("GPIO")]


def test_boot_loop_guard_stops_after_three_crashes(tmp_path):
    # A crash: the app cannot take its port (another board holds it). Each crash reboots and is counted.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    fs = tmp_path / "fs"
    fs.mkdir()
    (fs / "config.json").write_text(json.dumps(VALID))
    try:
        for n in (1, 2, 3):
            out = run_once(fs, port)
            assert f"crashed ({n} in a row); rebooting" in out, out
        out = run_once(fs, port)
        assert "crashed 3 times in a row, so it no longer starts by itself" in out
        assert "Traceback" not in out
    finally:
        blocker.close()
    (fs / "crashes.txt").unlink()


def run_once(fs, port):
    r = subprocess.run([sys.executable, "-m", "espblink", "run", "--http-port", str(port), "--dir", str(fs)],
                       capture_output=True, text=True, timeout=60)
    return r.stdout + r.stderr


def access_point(tmp_path, config=None):
    """Power the board on with the given config.json; the access point as its Wi-Fi hardware last set it,
    and what it printed."""
    from espblink import runner
    from nodemcu import runtime

    fs = tmp_path / "fs"
    runner.install(fs)
    if config is not None:
        (fs / "config.json").write_text(json.dumps(config))
    ap: dict = {}
    reports = []
    port = runtime.free_port()

    def on_message(m):
        if m.get("wlan") == "ap":
            ap.update(m)
            reports.append(m)

    proc, link = runner.power_on(fs, on_message, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert runner.wait_listening(port, proc, time.monotonic() + 20), proc.communicate(timeout=5)[0]
        deadline = time.monotonic() + 5
        while len(reports) < 2 and time.monotonic() < deadline:  # turned on, then configured
            time.sleep(0.02)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=5)[0]
        link.close()
    return ap, out


def test_access_point_is_wpa2_with_the_configured_key(tmp_path):
    ap, _ = access_point(tmp_path, VALID)
    assert ap["active"] and ap["ssid"] == "espblink-test" and ap["key"] == "correct horse battery"
    assert ap["security"] == 3  # network.AUTH_WPA2_PSK


def test_board_without_settings_is_never_open_nor_on_the_public_key(tmp_path):
    ap, out = access_point(tmp_path)
    assert ap["security"] == 3 and ap["ssid"] == "espblink-1A2B3C"
    assert ap["key"] != "micropythoN" and 8 <= len(ap["key"]) <= 63
    assert f"access point espblink-1A2B3C, key {ap['key']}" in out  # the REPL tells the owner the key


def test_a_bad_pin_option_says_what_to_write(tmp_path):
    r = subprocess.run([sys.executable, "-m", "espblink", "run", "--http-port", "1", "--pin", "0=low"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--pin 0=low: expected GPIO=LEVEL with LEVEL 0 or 1, e.g. --pin 0=0" in r.stderr


def test_watchdog_is_fed_while_clients_stall_and_leds_blink(tmp_path):
    # The ESP8266's watchdog bites 3.2 s after the last feed: a loop stuck on a client would reboot the board.
    import socket as sk
    import urllib.request

    from espblink import runner
    from nodemcu import runtime

    fs = tmp_path / "fs"
    runner.install(fs)
    (fs / "config.json").write_text(json.dumps(VALID))
    feeds: list[float] = []
    watchdog = []
    port = runtime.free_port()

    def on_message(m):
        if "feed" in m:
            feeds.append(time.monotonic())
        elif "wdt" in m:
            watchdog.append(m["wdt"])

    proc, link = runner.power_on(fs, on_message, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stalled = []
    try:
        assert runner.wait_listening(port, proc, time.monotonic() + 20)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/leds/red", b'{"blink_ms": 200}',
                                     {"Content-Type": "application/json", "X-Espblink": "1"})
        urllib.request.urlopen(req, timeout=5).read()
        start = time.monotonic()
        stalled = [sk.create_connection(("127.0.0.1", port)) for _ in range(3)]
        while time.monotonic() - start < 7:
            try:
                stalled[0].send(b"G")  # a slow client: one byte now and then, never a whole request
            except OSError:  # cut at its deadline: another one takes its place
                stalled[0].close()
                stalled[0] = sk.create_connection(("127.0.0.1", port))
            time.sleep(0.5)
        end = time.monotonic()
        assert proc.poll() is None
    finally:
        for s in stalled:
            s.close()
        proc.terminate()
        proc.wait(timeout=5)
        link.close()
    assert watchdog == [3200]
    times = [start, *[t for t in feeds if start < t < end], end]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 3.2, gaps


def test_watchdog_resets_count_as_crashes(tmp_path):
    # A hang the watchdog ended is a crash too: three such boots in a row and the app stays off.
    from espblink import runner
    from nodemcu import runtime

    fs = tmp_path / "fs"
    runner.install(fs)
    (fs / "config.json").write_text(json.dumps(VALID))
    outputs = []
    for _ in range(3):
        port = runtime.free_port()
        proc, link = runner.power_on(fs, lambda m: None, port, reset_cause=1, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        try:
            if runner.wait_listening(port, proc, time.monotonic() + 20):
                proc.terminate()
            outputs.append(proc.communicate(timeout=10)[0])
        finally:
            link.close()
    assert "serving http://" in outputs[0] and "serving http://" in outputs[1]
    assert "crashed 3 times in a row, so it no longer starts by itself" in outputs[2]
    assert "startup.clear()" in outputs[2]


def test_half_sent_requests_held_open_cost_no_answers_with_code_as_files(tmp_path):
    # More clients than slots stop mid-request (the most a connection keeps on the heap: a parsed
    # head waiting for its body, a buffer nearly full): every other request still gets its answer.
    held = [b"", b"GET /api/leds HTTP/1.1\r\nHost: 192.168.4.1\r\n",
            b"POST /api/leds/blue HTTP/1.1\r\nHost: 192.168.4.1\r\nX-Espblink: 1\r\nContent-Type: application/json"
            b"\r\nContent-Length: 16\r\n\r\n{\"tog",
            b"GET /api/leds HTTP/1.1\r\nX-Big: " + b"a" * 900, b"GET /\r\n", b"GET /api/leds HTTP/1.1"]
    with files_app(tmp_path, VALID) as app:
        base = app.get_json("/api/status")["heap_free"]
        for _round in range(3):
            socks = [socket.create_connection(("127.0.0.1", app.port)) for _ in held]
            try:
                for s, data in zip(socks, held, strict=True):
                    s.sendall(data)
                    time.sleep(0.05)  # one at a time: the oldest give way to the newest
                for _ in range(10):
                    assert app.get_json("/api/status")["wifi"]["mode"] == "ap"
                    assert app.post_json("/api/leds/red", {"toggle": True})[0] == 200
                    assert app.request("GET", "/", headers={"Accept-Encoding": "gzip"})[0] == 200
            finally:
                for s in socks:
                    s.close()
        assert "handler error" not in app.output(), app.output()
        time.sleep(0.2)
        assert abs(app.get_json("/api/status")["heap_free"] - base) <= 256


def test_an_app_that_cannot_even_load_is_counted_as_a_crash(tmp_path):
    # An app.py that fails at import (here one put beside the deployed code, first on sys.path).
    with run_app(tmp_path, VALID, files={"app.py": "raise ValueError('broken on purpose')\n"}, wait=False) as app:
        app.wait_for("the app crashed as it loaded (1 in a row); rebooting")
        assert "broken on purpose" in app.output()
        app.proc.wait(timeout=10)  # machine.reset(): this MicroPython ends, the board would boot again
    assert (tmp_path / "fs" / "crashes.txt").read_text() == "1"
