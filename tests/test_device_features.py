"""Issue 11 on the device app (board's MicroPython, board's heap): one state endpoint, a page load of two
requests, the static settings page, one hostname rule, the LEDs after a power cut, the FLASH button."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
import urllib.request

import pytest

from device_support import ESPBLINK, VALID, run_app
from espblink import rules
from sim_support import deployed, running_sim

GZ = {"Accept-Encoding": "gzip"}


def test_one_state_endpoint_serves_the_page_and_the_old_paths(tmp_path):
    with run_app(tmp_path, VALID) as app:
        s = app.get_json("/api/state")
        assert [(d["name"], d["on"]) for d in s["leds"]] == [("blue", False), ("red", False), ("ext", False)]
        for key in ("firmware", "mpy", "uptime_s", "heap_free", "reset_cause", "wifi", "hostname", "requests",
                    "warning", "restore"):
            assert key in s, key
        # The old paths stay and answer at least what they answered before.
        assert app.get_json("/api/leds")["leds"] == s["leds"]
        assert app.get_json("/api/status")["wifi"] == s["wifi"]


def test_a_page_load_is_two_requests(tmp_path):
    # The page, then one state request (and the same one again every few seconds).
    with run_app(tmp_path, VALID) as app:
        status, _, body = app.request("GET", "/", headers=GZ)
        assert status == 200
        script = gzip.decompress(body).decode()
        fetched = set(re.findall(r"fetch\('([^']+)'", script))
        assert fetched == {"/api/state", "/api/leds/"}, fetched  # the second: a toggle's POST
        assert app.request("GET", "/api/state")[0] == 200


def test_settings_page_is_served_without_the_settings_code(tmp_path):
    # Static, at the board's heap, as often as asked: no 503.
    with run_app(tmp_path, VALID) as app:
        for _ in range(5):
            status, headers, body = app.request("GET", "/settings", headers=GZ)
            assert status == 200 and headers["content-encoding"] == "gzip"
            assert b"<form" in gzip.decompress(body)


@pytest.mark.parametrize("name,ok", [
    ("espblink", True), ("Kitchen-2", True), ("a", True), ("x" * 32, True), ("", True),
    ("my_board", False), ("-lead", False), ("trail-", False), ("x" * 33, False), ("dot.ted", False),
    ("caf\u00e9", False),
])
def test_one_hostname_rule_with_its_message(name, ok):
    errs = [e for e in rules.check({"ap_key": "12345678", "hostname": name}) if e.startswith("hostname:")]
    assert (errs == []) is ok, errs
    if not ok:
        assert errs == ["hostname: must be up to 32 letters, digits and hyphens, not starting or ending with a "
                        f"hyphen (got {name!r})"]


def test_a_name_made_from_the_ssid_passes_the_rule():
    for ssid in ("espblink-1A2B3C", "Kitchen lights", "--x--", "__", "caf\u00e9 \u00fcber", "a" * 40):
        h = rules.hostname_for(ssid)
        assert rules.hostname_ok(h), (ssid, h)
    assert rules.hostname_for("Kitchen  lights!") == "kitchen-lights"


def test_restore_must_be_off_on_or_last():
    assert rules.check({**VALID, "restore": "last"}) == []
    assert rules.check({**VALID, "restore": "sometimes"}) == ["restore: must be off, on or last (got 'sometimes')"]


def led_lines(app, start=0):
    return [ln for ln in app.lines[start:] if ln.startswith("GPIO")]


def test_restore_last_brings_back_each_led_and_its_blink(tmp_path):
    cfg = {**VALID, "restore": "last"}
    with run_app(tmp_path, cfg) as app:
        assert app.post_json("/api/leds/blue", {"on": True})[0] == 200
        assert app.post_json("/api/leds/red", {"blink_ms": 300})[0] == 200
        state = tmp_path / "fs" / "leds.txt"
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and b"red 0 300" not in (state.read_bytes() if state.exists() else b""):
            time.sleep(0.1)
        assert state.read_bytes() == b"blue 1 0\nred 0 300\next 0 0\n"
    # Power cut and back: as it was.
    with run_app(tmp_path, cfg) as app:
        leds = {d["name"]: (d["on"], d["blink_ms"]) for d in app.get_json("/api/state")["leds"]}
        assert leds["blue"] == (True, 0) and leds["red"][1] == 300 and leds["ext"] == (False, 0)
        assert "GPIO2 low: blue LED on" in led_lines(app)


def test_restore_writes_at_most_once_per_5_s_and_not_when_nothing_changed(tmp_path):
    cfg = {**VALID, "restore": "last"}
    with run_app(tmp_path, cfg) as app:
        state = tmp_path / "fs" / "leds.txt"
        versions = []

        def watch(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                v = state.stat().st_mtime_ns if state.exists() else None
                if v and (not versions or versions[-1] != v):
                    versions.append(v)
                time.sleep(0.02)

        # 20 toggles within about 2 s: one write at once, one more 5 s after it, none in between.
        for _ in range(20):
            assert app.post_json("/api/leds/blue", {"toggle": True})[0] == 200
            watch(0.1)
        watch(6)
        assert len(versions) <= 2, versions
        # Toggled twice (back as stored): nothing to write.
        n = len(versions)
        app.post_json("/api/leds/blue", {"toggle": True})
        app.post_json("/api/leds/blue", {"toggle": True})
        watch(6)
        assert len(versions) == n


def test_restore_on_lights_every_led_and_off_none(tmp_path):
    with run_app(tmp_path, {**VALID, "restore": "on"}) as app:
        assert all(d["on"] for d in app.get_json("/api/state")["leds"])
    with run_app(tmp_path, {**VALID, "restore": "off"}, files={"leds.txt": "blue 1 0\n"}) as app:
        assert not any(d["on"] for d in app.get_json("/api/state")["leds"])


def test_a_damaged_state_file_costs_only_the_leds_it_names(tmp_path):
    # What a torn write could leave: the app starts, valid lines apply, the rest is ignored.
    with run_app(tmp_path, {**VALID, "restore": "last"}, files={"leds.txt": "red 1 0\nblue x\nnope 1 0\next 1"}) as app:
        leds = {d["name"]: d["on"] for d in app.get_json("/api/state")["leds"]}
        assert leds == {"blue": False, "red": True, "ext": False}
        assert "Traceback" not in app.output()


def press(link, seconds: float) -> None:
    link.send(pins={"0": 0})
    time.sleep(seconds)
    link.send(pins={"0": 1})


def test_flash_button_toggles_the_first_led_and_a_long_press_shows_the_key(tmp_path):
    from espblink import runner
    from nodemcu import runtime

    fs = tmp_path / "fs"
    runner.install(fs)
    (fs / "config.json").write_text(json.dumps(VALID))
    gpio2: list[int] = []
    port = runtime.free_port()

    def on_message(m: dict) -> None:
        if m.get("gpio") == 2 and m.get("mode") == "out":
            gpio2.append(m["level"])

    proc, link = runner.power_on(fs, on_message, port, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
    try:
        assert runner.wait_listening(port, proc, time.monotonic() + 20)
        time.sleep(0.3)
        n = len(gpio2)
        press(link, 0.2)  # short: the first LED (blue, GPIO2, active-low) on
        time.sleep(0.3)
        assert gpio2[n:] == [0], gpio2
        link.send(pins={"0": 0})  # a bounce shorter than the debounce time does nothing
        time.sleep(0.01)
        link.send(pins={"0": 1})
        time.sleep(0.3)
        assert gpio2[n:] == [0], gpio2
        press(link, 0.2)  # and off again
        time.sleep(0.3)
        assert gpio2[n:] == [0, 1], gpio2
        press(link, 3.5)  # long: every LED blinks, the key is printed, the release toggles nothing
        time.sleep(0.5)
        assert len(gpio2[n + 2:]) >= 4, gpio2  # blinking
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
        link.close()
    assert "espblink: access point espblink-test, key correct horse battery" in out, out[-2000:]


def test_sim_ctl_pin_0_presses_the_flash_button_of_a_deployed_board(tmp_path_factory):
    # On the virtual NodeMCU as `make flash deploy` leaves it, through the command a user types.
    state, _ = deployed(tmp_path_factory.mktemp("button"), tmp_path_factory)
    with running_sim(state) as board:
        board.serving()

        def ctl(level: str) -> None:
            r = subprocess.run([*ESPBLINK, "sim", "ctl", "--state", str(state), "pin", "0", level],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr

        def blue() -> bool:
            with urllib.request.urlopen(board.http + "api/state", timeout=5) as r:
                return json.loads(r.read())["leds"][0]["on"]

        assert blue() is False
        ctl("0")
        time.sleep(0.3)
        ctl("1")
        deadline = time.monotonic() + 5
        while not blue() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert blue() is True  # what the page shows at its next refresh


BIG = {"ap_ssid": "A" * 32, "ap_key": "k" * 63, "wifi_ssid": "W" * 32, "wifi_key": "w" * 20, "hostname": "h" * 32,
       "mqtt_host": "m" * 64, "mqtt_prefix": "p" * 40, "restore": "last",
       "leds": [{"name": f"led{i}-".ljust(16, "x"), "gpio": g, "active_low": False}
                for i, g in enumerate((0, 2, 4, 5, 12, 13, 14, 15))]}


def test_the_state_of_the_largest_settings_is_answered_whole(tmp_path):
    # 8 LEDs with the longest names, blinking, the longest SSIDs and names, home Wi-Fi and MQTT set: over
    # the 1 KiB the board builds an answer in, still one valid answer.
    with run_app(tmp_path, BIG) as app:
        for led in BIG["leds"]:
            assert app.post_json(f"/api/leds/{led['name']}", {"blink_ms": 60000})[0] == 200
        status, headers, body = app.request("GET", "/api/state")
        assert status == 200 and int(headers["content-length"]) == len(body) > 1024
        s = json.loads(body)
        assert [d["blink_ms"] for d in s["leds"]] == [60000] * 8 and s["wifi"]["home"] == "W" * 32


def test_an_led_on_gpio0_is_not_taken_for_the_flash_button(tmp_path):
    # GPIO0 is the FLASH button's pin; an LED wired there drives it: its changes are no presses.
    cfg = {**VALID, "leds": [{"name": "first", "gpio": 2, "active_low": True},
                             {"name": "zero", "gpio": 0, "active_low": False}]}
    with run_app(tmp_path, cfg) as app:
        for _ in range(4):
            assert app.post_json("/api/leds/zero", {"toggle": True})[0] == 200
            time.sleep(0.2)
            assert app.get_json("/api/state")["leds"][0]["on"] is False
