# The settings rules, one copy for the board and the host (the host imports this file).
# check() returns a list of "key: what is wrong" messages; empty means valid.

GPIOS = (0, 2, 4, 5, 12, 13, 14, 15, 16)
KEYS = ("ap_ssid", "ap_key", "wifi_ssid", "wifi_key", "hostname", "admin_password", "leds", "restore",
        "mqtt_host", "mqtt_port", "mqtt_user", "mqtt_password", "mqtt_prefix")
RESTORE = ("off", "on", "last")  # the LEDs at power-on: all off, all on, or as they were
LED_KEYS = ("name", "gpio", "active_low")


def default_leds():
    # The ESP-12 module's blue LED and the NodeMCU board's red LED are wired to 3.3 V: pin low = lit.
    return [
        {"name": "blue", "gpio": 2, "active_low": True},
        {"name": "red", "gpio": 16, "active_low": True},
    ]


def defaults():
    return {"ap_ssid": "", "ap_key": "", "wifi_ssid": "", "wifi_key": "", "hostname": "",
            "admin_password": "", "leds": default_leds(), "restore": "off",
            "mqtt_host": "", "mqtt_port": 1883, "mqtt_user": "", "mqtt_password": "", "mqtt_prefix": ""}


def _ascii(s):
    for c in s:
        if not " " <= c <= "~":
            return False
    return True


def _word(s):
    for c in s:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c in "-_"):
            return False
    return True


def hostname_ok(h):
    # The one hostname rule (a DNS label): 1 to 32 letters, digits and hyphens, no hyphen first or last.
    if not 1 <= len(h) <= 32 or h[0] == "-" or h[-1] == "-":
        return False
    for c in h.lower():
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            return False
    return True


def hostname_for(ssid):
    # The name a board without one takes, from its access point's SSID.
    h = ""
    for c in ssid.lower():
        h += c if "a" <= c <= "z" or "0" <= c <= "9" else "-"
    while "--" in h:
        h = h.replace("--", "-")
    h = h.strip("-")[:32].strip("-")
    return h if hostname_ok(h) else "espblink"


def _text(errs, cfg, key, lo, hi, what):
    v = cfg.get(key, "")
    if not isinstance(v, str):
        errs.append("%s: must be text" % key)
    elif v and not (lo <= len(v) <= hi and _ascii(v)):
        errs.append("%s: must be %s, %d to %d printable ASCII characters (got %d)" % (key, what, lo, hi, len(v)))


def _ssid(errs, cfg, key):
    v = cfg.get(key, "")
    if not isinstance(v, str):
        errs.append("%s: must be text" % key)
    elif len(v.encode()) > 32:
        errs.append("%s: must be at most 32 bytes (got %d)" % (key, len(v.encode())))


def check_led(led, where="leds"):
    errs = []
    if not isinstance(led, dict):
        return ["%s: each LED must be a table with name, gpio and active_low" % where]
    for k in led:
        if k not in LED_KEYS:
            errs.append("%s.%s: unknown key (known: name, gpio, active_low)" % (where, k))
    name = led.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 16 or not _word(name):
        errs.append("%s.name: must be 1 to 16 characters of a-z, 0-9, - and _ (got %r)" % (where, name))
    gpio = led.get("gpio")
    if isinstance(gpio, bool) or not isinstance(gpio, int):
        errs.append("%s.gpio: must be a GPIO number (got %r)" % (where, gpio))
    elif 6 <= gpio <= 11:
        errs.append("%s.gpio: GPIO%d drives the flash chip; use one of %s" % (where, gpio, GPIOS))
    elif gpio in (1, 3):
        errs.append("%s.gpio: GPIO%d is the USB serial link; use one of %s" % (where, gpio, GPIOS))
    elif gpio not in GPIOS:
        errs.append("%s.gpio: the ESP8266 has no GPIO%d; use one of %s" % (where, gpio, GPIOS))
    if not isinstance(led.get("active_low", False), bool):
        errs.append("%s.active_low: must be true or false" % where)
    return errs


def check(cfg):
    if not isinstance(cfg, dict):
        return ["settings: must be a table of keys"]
    errs = []
    for k in cfg:
        if k not in KEYS:
            errs.append("%s: unknown key (known: %s)" % (k, ", ".join(KEYS)))
    _ssid(errs, cfg, "ap_ssid")
    _ssid(errs, cfg, "wifi_ssid")
    key = cfg.get("ap_key", "")
    if not isinstance(key, str) or not (8 <= len(key) <= 63 and _ascii(key)):
        n = len(key) if isinstance(key, str) else 0
        errs.append("ap_key: must be 8 to 63 printable ASCII characters for WPA2 (got %d)" % n)
    _text(errs, cfg, "wifi_key", 8, 63, "empty or a WPA2 key")
    if cfg.get("wifi_key") and not cfg.get("wifi_ssid"):
        errs.append("wifi_key: set without wifi_ssid")
    _text(errs, cfg, "admin_password", 8, 64, "empty or a password")
    h = cfg.get("hostname", "")
    if not isinstance(h, str) or h and not hostname_ok(h):
        errs.append("hostname: must be up to 32 letters, digits and hyphens, not starting or ending with a "
                    "hyphen (got %r)" % (h,))
    if cfg.get("restore", "off") not in RESTORE:
        errs.append("restore: must be off, on or last (got %r)" % (cfg.get("restore"),))
    _mqtt(errs, cfg)
    leds = cfg.get("leds", [])
    if not isinstance(leds, list) or not 1 <= len(leds) <= 8:
        errs.append("leds: must be a list of 1 to 8 LEDs")
        return errs
    seen = []
    for i, led in enumerate(leds):
        where = "leds[%d]" % i
        errs.extend(check_led(led, where))
        if isinstance(led, dict):
            for k, what in (("name", "name"), ("gpio", "GPIO")):
                if led.get(k) in [s.get(k) for s in seen]:
                    errs.append("%s.%s: %s %r is used by another LED" % (where, k, what, led.get(k)))
            seen.append(led)
    return errs


def _mqtt(errs, cfg):
    # MQTT (Home Assistant): off while mqtt_host is empty.
    h = cfg.get("mqtt_host", "")
    ok = isinstance(h, str) and len(h) <= 64 and h[:1] != "-"
    for c in h if ok else "":
        ok = ok and ("a" <= c.lower() <= "z" or "0" <= c <= "9" or c in ".-")
    if not ok:
        errs.append("mqtt_host: must be empty (MQTT off) or the broker's IP address or name, up to 64 letters, "
                    "digits, dots and hyphens (got %r)" % (h,))
    p = cfg.get("mqtt_port", 1883)
    if isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536:
        errs.append("mqtt_port: must be a port number, 1 to 65535 (got %r)" % (p,))
    _text(errs, cfg, "mqtt_user", 1, 64, "empty or a user name")
    _text(errs, cfg, "mqtt_password", 1, 64, "empty or a password")
    if cfg.get("mqtt_password") and not cfg.get("mqtt_user"):
        errs.append("mqtt_password: set without mqtt_user")
    t = cfg.get("mqtt_prefix", "")
    ok = isinstance(t, str) and len(t) <= 48 and _ascii(t) and t[:1] != "/" and t[-1:] != "/" and "//" not in t
    for c in t if ok else "":
        ok = ok and c not in '+#"\\ '
    if not ok:
        errs.append("mqtt_prefix: must be empty (espblink/<board id>) or a topic such as home/kitchen: up to 48 "
                    "printable characters, no spaces, + # \" \\, no / first, last or twice (got %r)" % (t,))


def complete(cfg):
    # A valid config with every key present: missing keys take their defaults.
    out = defaults()
    for k in cfg:
        out[k] = cfg[k]
    return out
