"""The settings API and the captive portal's HTTP side, on the device app (real MicroPython, the board's heap):
admin password, the shared rules naming the field, the atomic write, the restart; connectivity checks.

Saving loads the settings code and the shared rules, which need the heap a NodeMCU of 2 MB or more has with
its code in ROMFS (the FLASH_2M_ROMFS build deploy writes there: code runs from flash). With the code as
.mpy files (1 MB boards) the same save answers 503 with a clear message, and the board goes on serving."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from device_support import VALID, run_app

ADMIN = "open sesame 42"
CONFIG = {**VALID, "admin_password": ADMIN, "wifi_ssid": "home", "wifi_key": "home key 123"}
BOARD = {"Host": "192.168.4.1"}
API = {**BOARD, "Content-Type": "application/json", "X-Espblink": "1"}


def post_settings(app, body: dict, headers: dict | None = None) -> tuple[int, str]:  # noqa: ANN001
    status, _, out = app.request("POST", "/api/settings", json.dumps(body), headers or API)
    return status, out.decode()

def files_app(tmp: Path, config: dict[str, Any]):  # noqa: ANN201
    """`espblink run --files`: the 1 MB layout, the modules as .mpy files (imported into the heap)."""
    return run_app(tmp, config, code_as_files=True)


@pytest.fixture
def app(tmp_path):
    with run_app(tmp_path, CONFIG) as a:  # code in ROMFS, as on a NodeMCU of 2 MB or more
        yield a


def test_settings_api_shows_the_settings_but_no_secret(app):
    s = app.get_json("/api/settings")
    assert s == {"admin": True, "ap_ssid": "espblink-test", "wifi_ssid": "home", "hostname": "espblink-test",
                 "mqtt_host": "", "mqtt_port": 1883, "mqtt_user": "", "mqtt_prefix": "",
                 "leds": [{"name": "blue", "gpio": 2}, {"name": "red", "gpio": 16}, {"name": "ext", "gpio": 5}]}
    status, _, body = app.request("GET", "/api/settings")
    for secret in (ADMIN, VALID["ap_key"], CONFIG["wifi_key"]):
        assert secret.encode() not in body


def test_wrong_admin_password_is_refused_then_guesses_are_slowed(app):
    before = (app.fs / "config.json").read_bytes()
    status, body = post_settings(app, {"admin": "guess guess", "ap_ssid": "pwned"})
    assert status == 403 and body.startswith("admin: wrong admin password")
    status, body = post_settings(app, {"admin": ADMIN, "ap_ssid": "pwned"})  # right, but too soon
    assert status == 429 and "wait" in body
    assert (app.fs / "config.json").read_bytes() == before
    time.sleep(3.1)
    assert post_settings(app, {"admin": ADMIN, "leds": ["blue", "red", "ext"]})[0] == 200


def test_a_change_from_another_site_is_refused(app):
    before = (app.fs / "config.json").read_bytes()
    no_header = {**BOARD, "Content-Type": "application/json"}
    assert post_settings(app, {"admin": ADMIN, "ap_ssid": "x"}, no_header)[0] == 403
    foreign = {**API, "Origin": "http://evil.example"}
    assert post_settings(app, {"admin": ADMIN, "ap_ssid": "x"}, foreign)[0] == 403
    assert (app.fs / "config.json").read_bytes() == before


def test_invalid_values_are_refused_with_the_field_named_and_nothing_written(app):
    before = (app.fs / "config.json").read_bytes()
    status, body = post_settings(app, {"admin": ADMIN, "ap_key": "short", "wifi_ssid": "x" * 40,
                                       "leds": ["blue", "blue", "Ext!"]})
    assert status == 400
    fields = {line.split(":")[0] for line in body.strip().splitlines()}
    assert fields == {"ap_key", "wifi_ssid", "leds[1].name", "leds[2].name"}, body
    assert "8 to 63" in body and "32 bytes" in body
    status, body = post_settings(app, {"admin": ADMIN, "leds": ["one"], "gpio": 4})
    assert status == 400 and "leds: send one name for each of the 3 LEDs" in body and body.startswith("gpio: ")
    assert (app.fs / "config.json").read_bytes() == before
    assert app.proc.poll() is None  # still serving
    assert app.get_json("/api/status")["wifi"]["ssid"] == "espblink-test"


def test_a_valid_change_is_written_whole_and_the_board_restarts(app):
    status, body = post_settings(app, {"admin": ADMIN, "ap_ssid": "Kitchen lights", "ap_key": "",
                                       "wifi_ssid": "", "leds": ["desk", "red", "porch"]})
    assert status == 200 and json.loads(body) == {"restart_ms": 1000}
    app.wait_for("settings saved from the settings page; restarting")
    app.proc.wait(timeout=10)  # machine.reset(): this MicroPython ends, the board would boot again
    cfg = json.loads((app.fs / "config.json").read_text())
    assert cfg["ap_ssid"] == "Kitchen lights" and cfg["ap_key"] == VALID["ap_key"]  # empty key: kept
    assert cfg["wifi_ssid"] == "" and cfg["wifi_key"] == ""  # home Wi-Fi cleared, its key with it
    assert [led["name"] for led in cfg["leds"]] == ["desk", "red", "porch"]
    assert cfg["admin_password"] == ADMIN and "hostname" not in cfg  # what the page does not change stays
    assert not (app.fs / "config.json.tmp").exists()


def test_settings_page_is_off_without_an_admin_password(tmp_path):
    with run_app(tmp_path, VALID) as app:
        assert app.get_json("/api/settings")["admin"] is False
        status, body = post_settings(app, {"admin": "", "ap_ssid": "x"})
        assert status == 403 and "settings page is off" in body and "admin_password" in body


def test_code_as_files_has_no_heap_to_save_says_so_and_goes_on(tmp_path):
    # A 1 MB board keeps its code as .mpy files, copied into the heap when imported: no room for the rules.
    with files_app(tmp_path, CONFIG) as app:
        before = (app.fs / "config.json").read_bytes()
        status, headers, body = app.request("POST", "/api/settings", json.dumps({"admin": ADMIN, "ap_ssid": "x"}),
                                            API)
        assert (status, headers["retry-after"]) == (503, "5"), body
        assert b"not enough free memory on the board for the settings page" in body
        assert (app.fs / "config.json").read_bytes() == before
        assert app.get_json("/api/state")["wifi"]["ssid"] == "espblink-test"
        assert app.post_json("/api/leds/blue", {"toggle": True})[0] == 200


def test_power_lost_while_the_settings_were_renamed_into_place(tmp_path):
    # The board keeps the new file under its temporary name when power went between the two steps.
    new = {**CONFIG, "ap_ssid": "renamed"}
    with run_app(tmp_path, None, files={"config.json.tmp": json.dumps(new)}) as app:
        assert app.get_json("/api/status")["warning"] is None
        assert app.get_json("/api/status")["wifi"]["ssid"] in ("renamed", "home")
        assert json.loads((app.fs / "config.json").read_text())["ap_ssid"] == "renamed"


@pytest.mark.parametrize("host,path", [
    ("connectivitycheck.gstatic.com", "/generate_204"),  # Android
    ("captive.apple.com", "/hotspot-detect.html"),  # iPhone, Mac
    ("www.msftconnecttest.com", "/connecttest.txt"),  # Windows
    ("www.msftncsi.com", "/ncsi.txt"),
    ("detectportal.firefox.com", "/canonical.html"),  # Firefox, by name
    ("192.168.4.1", "/generate_204"),
    ("example.com", "/any/page?x=1"),  # whatever the phone asks for by name
])
def test_connectivity_checks_and_unknown_names_are_sent_to_the_page(tmp_path, host, path):
    with run_app(tmp_path, VALID) as app:
        status, headers, body = app.request("GET", path, headers={"Host": host})
        assert (status, headers["location"]) == (302, "http://192.168.4.1/"), (status, headers, body)
        assert int(headers["content-length"]) == len(body)
        # The page itself, at the board's address or name, is served.
        for board in ("192.168.4.1", "espblink-test", "espblink-test.local", "espblink-test.lan"):
            status, _, _ = app.request("GET", "/", headers={"Host": board, "Accept-Encoding": "gzip"})
            assert status == 200, board
        # A change sent under another name is refused, not redirected.
        status, _, _ = app.request("POST", "/api/leds/blue", '{"toggle": true}',
                                   {"Host": host, "Content-Type": "application/json", "X-Espblink": "1"})
        assert status == (200 if host == "192.168.4.1" else 403)


def test_mqtt_settings_are_shown_without_the_password_and_saved_checked(app):
    s = app.get_json("/api/settings")
    assert (s["mqtt_host"], s["mqtt_port"], s["mqtt_user"]) == ("", 1883, "") and "mqtt_password" not in s
    status, body = post_settings(app, {"admin": ADMIN, "mqtt_host": "192.168.1.10", "mqtt_port": 0})
    assert status == 400 and "mqtt_port" in body  # named, nothing written
    assert "mqtt_host" not in json.loads((app.fs / "config.json").read_text())
    time.sleep(3.1)  # one admin password guess per 3 s: that was not a wrong password, but be safe
    status, body = post_settings(app, {"admin": ADMIN, "mqtt_host": "192.168.1.10", "mqtt_port": 1884,
                                       "mqtt_user": "ha", "mqtt_password": "broker secret"})
    assert status == 200, body
    app.proc.wait(timeout=10)
    cfg = json.loads((app.fs / "config.json").read_text())
    assert (cfg["mqtt_host"], cfg["mqtt_port"], cfg["mqtt_user"], cfg["mqtt_password"]) == (
        "192.168.1.10", 1884, "ha", "broker secret")
