# Wi-Fi: the home network when one is set, joined with a timeout; else, or when joining fails or the
# link drops, the board's own WPA2 access point at 192.168.4.1, while the home network is tried again
# from the app's loop.
import time

import network

_JOIN_MS = const(15000)
_RETRY_MS = const(60000)


class Wifi:
    def __init__(self, cfg):
        self.cfg = cfg
        self.sta = network.WLAN(network.STA_IF)
        self.ap = network.WLAN(network.AP_IF)
        self.joining = False
        self.until = 0  # joining: give up then; on the access point: try the home network again then
        self.why = ""  # why the home network is not in use

    def start(self):
        # Blocks until the home network is joined or _JOIN_MS passed; the board then serves on the one in use.
        try:
            network.hostname(self.cfg["hostname"])  # before joining: the router learns it from DHCP
        except (AttributeError, ValueError, OSError):
            pass
        self.sta.active(False)
        if not self.cfg["wifi_ssid"]:
            self._ap_on()
            return
        self.ap.active(False)
        self._join()
        while self.joining:
            time.sleep_ms(100)
            self.tick()

    def _join(self):
        self.sta.active(True)
        self.sta.connect(self.cfg["wifi_ssid"], self.cfg["wifi_key"])
        self.joining = True
        self.until = time.ticks_add(time.ticks_ms(), _JOIN_MS)

    def _fall_back(self, reason):
        self.joining = False
        self.why = reason
        self.until = time.ticks_add(time.ticks_ms(), _RETRY_MS)
        # The ESP8266 keeps retrying a failed join by itself, scanning channel after channel, and its own
        # access point is unusable meanwhile: stop it, and try again later from tick().
        self.sta.disconnect()
        if not self.ap.active():
            self._ap_on()
            print("espblink: home Wi-Fi %s: %s; access point %s up, joining again every %d s" % (
                self.cfg["wifi_ssid"], reason, self.cfg["ap_ssid"], _RETRY_MS // 1000))

    def _ap_on(self):
        self.ap.active(True)
        self.ap.config(ssid=self.cfg["ap_ssid"], key=self.cfg["ap_key"], security=network.AUTH_WPA2_PSK)

    def tick(self):
        # Called from the app's loop: follows the home network's link, falls back and retries.
        if not self.cfg["wifi_ssid"]:
            return
        if self.joining:
            st = self.sta.status()
            if st == network.STAT_GOT_IP:
                self.joining = False
                self.why = ""
                self.ap.active(False)
                print("espblink: joined home Wi-Fi %s: http://%s/ (name %s)" % (
                    self.cfg["wifi_ssid"], self.sta.ifconfig()[0], self.cfg["hostname"]))
            elif st == network.STAT_WRONG_PASSWORD:
                self._fall_back("wrong key")
            elif st == network.STAT_NO_AP_FOUND:
                self._fall_back("network not found")
            elif st == network.STAT_CONNECT_FAIL or time.ticks_diff(time.ticks_ms(), self.until) >= 0:
                self._fall_back("could not connect")
        elif self.ap.active():
            if time.ticks_diff(time.ticks_ms(), self.until) >= 0:
                self._join()
        elif not self.sta.isconnected():
            self._fall_back("link lost")

    def status(self):
        # (mode, ssid, ip) of the network the board serves on, and why the home network is not in use.
        if self.ap.active():
            return "ap", self.cfg["ap_ssid"], self.ap.ifconfig()[0], self.why
        return "sta", self.cfg["wifi_ssid"], self.sta.ifconfig()[0], self.why
