# Wi-Fi: the home network when one is set, joined with a timeout; else, or when joining fails or the
# link drops, the board's own WPA2 access point at 192.168.4.1, while the home network is tried again
# from the app's loop.
import time

import network
from micropython import const

_JOIN_MS = const(15000)
_RETRY_MS = const(60000)

sta = ap = cfg = None
joining = False
until = 0  # joining: give up then; on the access point: try the home network again then
why = ""  # why the home network is not in use


def start(c):
    # Blocks until the home network is joined or _JOIN_MS passed; the board then serves on the one in use.
    global sta, ap, cfg
    cfg = c
    sta = network.WLAN(network.STA_IF)
    ap = network.WLAN(network.AP_IF)
    try:
        network.hostname(cfg["hostname"])  # before joining: the router learns it from DHCP
    except (AttributeError, ValueError, OSError):
        pass
    sta.active(False)
    if not cfg["wifi_ssid"]:
        _ap_on()
        return
    ap.active(False)
    _join()
    while joining:
        time.sleep_ms(100)
        tick()


def _join():
    global joining, until
    sta.active(True)
    sta.connect(cfg["wifi_ssid"], cfg["wifi_key"])
    joining = True
    until = time.ticks_add(time.ticks_ms(), _JOIN_MS)


def _fall_back(reason):
    global joining, until, why
    joining = False
    why = reason
    until = time.ticks_add(time.ticks_ms(), _RETRY_MS)
    # The ESP8266 keeps retrying a failed join by itself, scanning channel after channel, and its own
    # access point is unusable meanwhile: stop it, and try again later from tick().
    sta.disconnect()
    if not ap.active():
        _ap_on()
        print("espblink: home Wi-Fi %s: %s; access point %s up, joining again every %d s" % (
            cfg["wifi_ssid"], reason, cfg["ap_ssid"], _RETRY_MS // 1000))


def _ap_on():
    ap.active(True)
    ap.config(ssid=cfg["ap_ssid"], key=cfg["ap_key"], security=network.AUTH_WPA2_PSK)


def tick():
    # Called from the app's loop: follows the home network's link, falls back and retries.
    global joining, why
    if not cfg["wifi_ssid"]:
        return
    if joining:
        st = sta.status()
        if st == network.STAT_GOT_IP:
            joining = False
            why = ""
            ap.active(False)
            print("espblink: joined home Wi-Fi %s: http://%s/ (name %s)" % (
                cfg["wifi_ssid"], sta.ifconfig()[0], cfg["hostname"]))
        elif st == network.STAT_WRONG_PASSWORD:
            _fall_back("wrong key")
        elif st == network.STAT_NO_AP_FOUND:
            _fall_back("network not found")
        elif st == network.STAT_CONNECT_FAIL or time.ticks_diff(time.ticks_ms(), until) >= 0:
            _fall_back("could not connect")
    elif ap.active():
        if time.ticks_diff(time.ticks_ms(), until) >= 0:
            _join()
    elif not sta.isconnected():
        _fall_back("link lost")


def status():
    # (mode, ssid, ip) of the network the board serves on, and why the home network is not in use.
    if ap.active():
        return "ap", cfg["ap_ssid"], ap.ifconfig()[0], why
    return "sta", cfg["wifi_ssid"], sta.ifconfig()[0], why
