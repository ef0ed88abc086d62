"""The phone just works, on the virtual NodeMCU: the board's DNS answers every name with itself, each OS's
connectivity check leads a phone's browser to the page, the settings page changes the board from the
phone, and home Wi-Fi is joined, or given up for the board's own access point."""

from __future__ import annotations

import json
import os
import socket
import time
import tomllib
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, PHONE
from sim_support import deployed, running_sim

BOARD_IP = "192.168.4.1"
HOME, HOME_KEY = "home", "home key 123"
CHECKS = [
    "http://connectivitycheck.gstatic.com/generate_204",  # Android
    "http://captive.apple.com/hotspot-detect.html",  # iPhone
    "http://www.msftconnecttest.com/connecttest.txt",  # Windows
    "http://www.msftncsi.com/ncsi.txt",
    "http://neverssl.com/",  # any page a user types
]


@pytest.fixture
def board(tmp_path, tmp_path_factory):
    """A board of this test's own, as `make flash deploy` leaves it, with a home network in range."""
    state, path = deployed(tmp_path / "deployed", tmp_path_factory)
    with running_sim(state, extra=["--sta", f"{HOME}={HOME_KEY}", "--sta-delay-ms", "300"]) as sim:
        sim.cfg = tomllib.loads(path.read_text())
        sim.dns_port = urlsplit(sim.dns).port
        answering(sim)
        sim.wait_state(lambda s: s["wlan"].get("ap", {}).get("ssid"))  # the access point up and configured
        yield sim


def ask(board, name: str, rdtype: str = "A") -> dns.message.Message:  # noqa: ANN001
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=board.dns_port, timeout=3)


def address_of(board, name: str) -> str:  # noqa: ANN001
    answer = ask(board, name).answer
    assert len(answer) == 1 and len(answer[0]) == 1, answer
    return answer[0][0].address


def status(board) -> dict:  # noqa: ANN001
    with urllib.request.urlopen(board.http + "api/status", timeout=5) as r:
        return json.loads(r.read())


def save_settings(board, **changes: object) -> tuple[int, str]:  # noqa: ANN001
    body = json.dumps({"admin": board.cfg["admin_password"], **changes}).encode()
    req = urllib.request.Request(board.http + "api/settings", body, method="POST",
                                 headers={"Content-Type": "application/json", "X-Espblink": "1"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def answering(board, timeout: float = 20) -> dict:  # noqa: ANN001
    """/api/status once the board's app answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return status(board)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def restarted(board, boots: int, until, timeout: float = 40) -> dict:  # noqa: ANN001
    """The board's state once it booted again and `until` holds, and its app answers."""
    s = board.wait_state(lambda s: s["boots"] > boots and s["mode"] == "firmware" and until(s), timeout=timeout)
    answering(board)
    return s


def joined_home(board, **changes: object) -> dict:  # noqa: ANN001
    """Home Wi-Fi set from the settings API (with changes), the board restarted and joined to it."""
    boots = board.state()["boots"]
    assert save_settings(board, wifi_ssid=HOME, wifi_key=HOME_KEY, **changes)[0] == 200
    return restarted(board, boots, lambda s: s["wlan"].get("sta", {}).get("status") == 5)


@pytest.fixture
def phone(board, pw):  # noqa: ANN001
    """A phone's browser whose DNS is the board's: every name the board answers for leads to it."""
    port = urlsplit(board.http).port
    names = [urlsplit(u).hostname for u in CHECKS]
    # Chromium cannot be pointed at a DNS server on another port: each name the board's DNS answers with
    # the board's address, and that address, go to where the virtual board listens.
    assert {address_of(board, n) for n in names} == {BOARD_IP}
    rules = [f"MAP {n} 127.0.0.1:{port}" for n in [*names, BOARD_IP]]
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                           args=[*CHROMIUM_ARGS, "--host-resolver-rules=" + ", ".join(rules)])
    yield b.new_context(**PHONE).new_page()
    b.close()


def test_the_boards_dns_answers_every_name_with_the_board(board):
    for name in ("captive.apple.com", "connectivitycheck.gstatic.com", "a.very.long.name.example.org", "x"):
        r = ask(board, name)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert [rr.address for rr in r.answer[0]] == [BOARD_IP]
        assert r.answer[0].ttl == 60
    r = ask(board, "captive.apple.com", "AAAA")  # no IPv6: an empty answer, so the phone asks for A
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []


def test_garbage_gets_no_answer_and_the_board_keeps_serving(board):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        good = dns.message.make_query("example.com", "A").to_wire()
        for junk in (b"", b"\x00", os.urandom(11), os.urandom(300), good[:15], good[:2] + b"\x84" + good[3:],
                     b"\xff" * 512):
            s.sendto(junk, ("127.0.0.1", board.dns_port))
            with pytest.raises(TimeoutError):
                s.recvfrom(600)
    assert address_of(board, "example.com") == BOARD_IP
    assert status(board)["wifi"]["mode"] == "ap"


@pytest.mark.parametrize("url", CHECKS)
def test_each_connectivity_check_leads_the_phone_to_the_page(board, phone, url):
    phone.goto(url)
    phone.locator("button[role=switch]").first.wait_for(timeout=15000)
    assert phone.url == f"http://{BOARD_IP}/"
    assert phone.locator(".led .n").all_inner_texts() == ["blue", "red"]
    phone.locator("#led-blue button[role=switch]").tap()
    board.wait_state(lambda s: s["leds"]["blue"] is True, timeout=10)
    phone.locator("#led-blue button[role=switch]").tap()
    board.wait_state(lambda s: s["leds"]["blue"] is False, timeout=10)


def test_settings_page_names_invalid_fields_and_refuses_a_wrong_password(board, phone):
    before = board.state()
    phone.goto(f"http://{BOARD_IP}/settings")
    phone.locator("#ap_ssid").wait_for(timeout=15000)
    assert phone.locator("#ap_ssid").input_value() == before["wlan"]["ap"]["ssid"]
    phone.fill("#wifi_ssid", HOME)
    phone.fill("#wifi_key", "short")  # a WPA2 key has 8 to 63 characters
    phone.fill("#led1", "blue")  # the other LED's name
    phone.fill("#admin", board.cfg["admin_password"])
    phone.tap("#save")
    phone.locator("#e-wifi_key").filter(has_text="wifi_key:").wait_for(timeout=10000)
    assert "8 to 63" in phone.locator("#e-wifi_key").inner_text()
    assert "used by another LED" in phone.locator("#e-led1").inner_text()
    phone.fill("#wifi_key", HOME_KEY)
    phone.fill("#led1", "red")
    phone.fill("#admin", "not the password")
    phone.tap("#save")
    phone.locator("#e-admin").filter(has_text="wrong admin password").wait_for(timeout=10000)
    time.sleep(1.5)
    after = board.state()
    assert after["boots"] == before["boots"] and after["wlan"] == before["wlan"]


def test_settings_page_renames_the_access_point_after_a_restart(board, phone):
    boots = board.state()["boots"]
    phone.goto(f"http://{BOARD_IP}/settings")
    phone.locator("#ap_ssid").wait_for(timeout=15000)
    phone.fill("#ap_ssid", "Kitchen lights")
    phone.fill("#led0", "desk")
    phone.fill("#admin", board.cfg["admin_password"])
    phone.tap("#save")
    done = phone.locator("#done")
    done.filter(has_text="restarting").wait_for(timeout=10000)
    assert "Kitchen lights" in done.inner_text()
    # (The access point is switched on, then configured: two reports, so the wait is for both.)
    s = restarted(board, boots, lambda s: s["wlan"].get("ap", {}).get("active")
                  and s["wlan"]["ap"]["ssid"] == "Kitchen lights")
    assert s["wlan"]["ap"]["key"] == board.cfg["ap_key"] and s["wlan"]["ap"]["security"] == 3
    with urllib.request.urlopen(board.http + "api/leds", timeout=5) as r:
        assert [led["name"] for led in json.loads(r.read())["leds"]] == ["desk", "red"]


def test_home_wifi_with_a_wrong_key_falls_back_to_the_access_point(board):
    before = board.state()
    t0 = time.monotonic()
    assert save_settings(board, wifi_ssid=HOME, wifi_key="wrong key 99")[0] == 200
    s = restarted(board, before["boots"], lambda s: s["wlan"].get("ap", {}).get("active")
                  and s["wlan"]["ap"]["ssid"] == before["wlan"]["ap"]["ssid"]
                  and s["wlan"].get("sta", {}).get("status") is not None)
    assert time.monotonic() - t0 < 15 + 10  # the join timeout, plus the restart
    st = status(board)
    assert st["wifi"]["mode"] == "ap" and st["wifi"]["home"] == HOME and st["wifi"]["home_problem"] == "wrong key"
    assert s["wlan"]["ap"]["ssid"] == before["wlan"]["ap"]["ssid"] and s["wlan"]["ap"]["security"] == 3


def test_home_wifi_joined_serves_there_under_the_boards_name(board, phone):
    s = joined_home(board, ap_ssid="Kitchen lights")
    assert s["wlan"]["sta"]["ip"] == "192.168.1.50" and not s["wlan"]["ap"]["active"]
    st = status(board)
    assert st["wifi"] == {"mode": "sta", "ip": "192.168.1.50", "ssid": HOME, "home": HOME, "home_problem": None}
    assert s["hostname"] == st["hostname"] == "kitchen-lights"  # from the SSID, as a DHCP name must be
    phone.goto(f"http://{BOARD_IP}/")
    phone.locator("#info").filter(has_text="Home Wi-Fi home").wait_for(timeout=20000)
    assert "192.168.1.50" in phone.locator("#info").inner_text()


def test_a_lost_home_link_brings_the_access_point_back(board):
    ssid = board.state()["wlan"]["ap"]["ssid"]
    joined_home(board)
    board.ctl("sta-drop")
    board.wait_state(lambda s: s["wlan"].get("ap", {}).get("active") and s["wlan"]["ap"]["ssid"] == ssid, timeout=10)
    st = status(board)
    assert st["wifi"]["mode"] == "ap" and st["wifi"]["home_problem"] == "link lost"


def test_after_a_fallback_the_home_network_is_joined_again_in_the_background(board):
    joined_home(board)
    board.ctl("sta-drop")
    board.wait_state(lambda s: s["wlan"].get("ap", {}).get("active"), timeout=10)
    # The network is back in range (the sim drops the link once): the next try, 60 s after the fallback,
    # joins it, and the board's access point goes off again.
    s = board.wait_state(lambda s: s["wlan"].get("sta", {}).get("status") == 5
                         and not s["wlan"]["ap"]["active"], timeout=90)
    assert s["wlan"]["sta"]["ip"] == "192.168.1.50"
    st = status(board)
    assert st["wifi"]["mode"] == "sta" and st["wifi"]["home_problem"] is None
