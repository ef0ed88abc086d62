# The board's settings: /config.json, written by the host (`make deploy`) or the settings page.
# Missing, corrupt or invalid: safe defaults, and a warning the page, /api/status and the REPL show.
import binascii
import json
import os

import network
import rules

PATH = "config.json"
FALLBACK_KEY = "ap_key.txt"


def _mac_suffix():
    mac = network.WLAN(network.AP_IF).config("mac")
    return binascii.hexlify(mac[3:]).decode().upper()


def fallback_key():
    # Never the port's public default key and never an open network: a random key made once, kept on
    # flash, printed on the REPL.
    try:
        with open(FALLBACK_KEY) as f:
            key = f.read().strip()
        if 8 <= len(key) <= 63:
            return key
    except OSError:
        pass
    key = binascii.hexlify(os.urandom(6)).decode()
    with open(FALLBACK_KEY, "w") as f:
        f.write(key)
    return key


def load():
    # Returns (config, warning or None).
    warning = None
    cfg = None
    try:
        os.stat(PATH)
    except OSError:
        try:  # power lost as the settings page replaced config.json: the new one was complete
            os.rename(PATH + ".tmp", PATH)
        except OSError:
            pass
    try:
        with open(PATH) as f:
            cfg = json.load(f)
    except OSError:
        warning = "no config.json on the board: running on safe defaults; run `make deploy` to write one"
    except ValueError:
        warning = "config.json is corrupt (not JSON): running on safe defaults; run `make deploy` to rewrite it"
    if cfg is not None:
        errs = rules.check(cfg)
        if errs:
            warning = "config.json rejected (%s): running on safe defaults; fix settings and deploy" % "; ".join(errs)
            cfg = None
    if cfg is None:
        cfg = rules.defaults()
        cfg["ap_key"] = fallback_key()
    cfg = rules.complete(cfg)
    if not cfg["ap_ssid"]:
        cfg["ap_ssid"] = "espblink-" + _mac_suffix()
    if not cfg["hostname"]:
        cfg["hostname"] = rules.hostname_for(cfg["ap_ssid"])
    return cfg, warning
