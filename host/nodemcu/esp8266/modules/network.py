# network for the virtual NodeMCU, after the ESP8266 port's API (micropython-esp8266-stubs).
# Which networks are in range, with which keys, comes from the host (ESPBLINK_HW "sta").
import time

import hwlink

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = 2
STAT_NO_AP_FOUND = 3
STAT_CONNECT_FAIL = 4
STAT_GOT_IP = 5
AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
MODE_11B = 1
MODE_11G = 2
MODE_11N = 3

_hostname = ["espressif"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name
    hwlink.send(hostname=name)


def _mac(i):
    b = [int(x, 16) for x in hwlink.cfg.get("mac", "5c:cf:7f:1a:2b:3c").split(":")]
    if i == AP_IF:
        b[0] |= 2
    return bytes(b)


class WLAN:
    IF_STA = STA_IF
    IF_AP = AP_IF
    _ifs = [None, None]

    def __new__(cls, interface=STA_IF):
        w = cls._ifs[interface]
        if w is None:
            w = object.__new__(cls)
            w._if = interface
            w._active = interface == AP_IF
            mac = _mac(interface)
            w._cfg = {
                "ssid": "MicroPython-%02x%02x%02x" % (mac[3], mac[4], mac[5]) if interface else "",
                "key": "micropythoN" if interface else "",
                "security": AUTH_WPA_WPA2_PSK if interface else AUTH_OPEN,
                "channel": 11,
                "hidden": False,
            }
            w._ip = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "208.67.222.222") if interface else (
                "0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
            w._status = STAT_IDLE
            w._until = 0
            cls._ifs[interface] = w
        return w

    def __init__(self, interface=STA_IF):
        pass

    def _report(self):
        c = self._cfg
        hwlink.send(wlan="ap" if self._if else "sta", active=self._active, ssid=c["ssid"],
                    key=c["key"], security=c["security"], ip=self._ip[0] if self.isconnected() else None,
                    status=self.status())

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active and self._if == STA_IF:
            self._status = STAT_IDLE
        self._report()

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != STA_IF:
            raise OSError("STA required")
        if not self._active:
            raise OSError("STA must be active")
        if ssid is not None:
            self._cfg["ssid"] = ssid
            self._cfg["key"] = key or ""
        self._status = STAT_CONNECTING
        hwlink.cfg["sta_drop"] = False
        self._until = time.ticks_add(time.ticks_ms(), hwlink.cfg.get("sta_delay_ms", 1500))
        self._report()

    def disconnect(self):
        self._status = STAT_IDLE
        self._report()

    def status(self, param=None):
        if param == "rssi":
            return -60
        if self._if == AP_IF:
            return STAT_GOT_IP if self._active else STAT_IDLE
        if self._status == STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), self._until) >= 0:
            nets = hwlink.cfg.get("sta", {})
            ssid = self._cfg["ssid"]
            if ssid not in nets:
                self._status = STAT_NO_AP_FOUND
            elif nets[ssid] != self._cfg["key"]:
                self._status = STAT_WRONG_PASSWORD
            else:
                self._status = STAT_GOT_IP
                self._ip = (hwlink.cfg.get("sta_ip", "192.168.1.50"), "255.255.255.0", "192.168.1.1",
                            "192.168.1.1")
            self._report()
        elif self._status == STAT_GOT_IP:
            hwlink.poll()
            if hwlink.cfg.get("sta_drop"):
                self._status = STAT_CONNECT_FAIL
                self._report()
        return self._status

    def isconnected(self):
        if self._if == AP_IF:
            return self._active
        return self._active and self.status() == STAT_GOT_IP

    def scan(self):
        return [(s.encode(), b"\x00" * 6, 6, -60, AUTH_WPA2_PSK, False) for s in hwlink.cfg.get("sta", {})]

    def ifconfig(self, cfg=None):
        if cfg is None:
            return self._ip if (self._if == AP_IF or self.isconnected()) else ("0.0.0.0",) * 4
        self._ip = tuple(cfg)
        self._report()

    def config(self, *args, **kwargs):
        if args:
            k = args[0]
            if k == "mac":
                return _mac(self._if)
            k = {"essid": "ssid", "password": "key", "authmode": "security"}.get(k, k)
            if k not in self._cfg:
                raise ValueError("unknown config param")
            return self._cfg[k]
        for k in kwargs:
            n = {"essid": "ssid", "password": "key", "authmode": "security"}.get(k, k)
            if n not in self._cfg:
                raise ValueError("unknown config param")
            v = kwargs[k]
            self._cfg[n] = v.decode() if isinstance(v, bytes) else v  # the SDK keeps bytes; reads give str
        if self._if == AP_IF and self._cfg["security"] and len(self._cfg["key"]) < 8:
            raise ValueError("password too short")
        self._report()
