# Wi-Fi at power-on: the board's own WPA2 access point at 192.168.4.1.
import network


def start_ap(cfg):
    sta = network.WLAN(network.STA_IF)
    sta.active(False)
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    ap.config(ssid=cfg["ap_ssid"], key=cfg["ap_key"], security=network.AUTH_WPA2_PSK)
    try:
        network.hostname(cfg["hostname"])
    except (AttributeError, ValueError, OSError):
        pass
    return ap


def status():
    ap = network.WLAN(network.AP_IF)
    sta = network.WLAN(network.STA_IF)
    if sta.active() and sta.isconnected():
        return "sta", sta.config("ssid"), sta.ifconfig()[0]
    return "ap", ap.config("ssid"), ap.ifconfig()[0]
