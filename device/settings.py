# The settings API, loaded only while it answers; handed the app, it imports nothing of it. A change is
# applied to config.json as stored, checked with the same rules as the host's, written under a temporary
# name and renamed over it; the board then restarts to use it.
import gc
import json
import os
import time

import guard
import server

PATH = "config.json"
FIELDS = ("ap_ssid", "ap_key", "wifi_ssid", "wifi_key", "leds", "mqtt_host", "mqtt_port", "mqtt_user",
          "mqtt_password", "mqtt_prefix")
SHOWN = ("ap_ssid", "wifi_ssid", "mqtt_host", "mqtt_user", "mqtt_prefix")  # never a key or password
WRONG_ADMIN_MS = 3000  # one admin password guess per 3 s
RESTART_MS = 1000  # time for the answer to reach the phone before the board restarts


def handle(app, req):
    if req.method == b"GET":
        guard.same_site(req)
        send_settings(req, app.cfg, app.lights)
    else:
        guard.same_site(req, app.token)
        save(app, req)


def send_settings(req, cfg, lights):
    w = req.put
    w(b'{"admin":true,' if cfg["admin_password"] else b'{"admin":false,')
    for k in SHOWN:
        w(b'"%s":' % k)
        w(json.dumps(cfg[k]))
        w(b",")
    w(b'"mqtt_port":%d,"hostname":"%s","leds":[' % (cfg["mqtt_port"], cfg["hostname"]))
    for i, led in enumerate(lights):
        w(b'%s{"name":"%s","gpio":%d}' % (b"," if i else b"", led.name, led.gpio))
    w(b"]}")
    server.send_built(req, b"200 OK", server.JSON)


def check_admin(app, d, cfg):
    if not cfg["admin_password"]:
        raise server.HttpError(server.FORBIDDEN, "admin: the settings page is off: set admin_password in "
                                                 "settings.toml and run make deploy")
    now = time.ticks_ms()
    if time.ticks_diff(app.admin_wait, now) > 0:
        raise server.HttpError(b"429 Too Many Requests", "admin: wait a few seconds before the next try",
                               b"Retry-After: 3\r\n")
    if d.pop("admin", None) != cfg["admin_password"]:
        app.admin_wait = time.ticks_add(now, WRONG_ADMIN_MS)
        raise server.HttpError(server.FORBIDDEN, "admin: wrong admin password (it is in settings.toml)")


def save(app, req):
    # A key field left empty keeps its key; a field equal to the running value leaves the stored one
    # (which may be empty: "automatic") alone.
    d = server.json_object(req.body)
    running = app.cfg
    check_admin(app, d, running)
    import rules  # only now: the page and a refused password do not need it
    errs = []
    for k in d:
        if k not in FIELDS:
            errs.append("%s: not a setting the settings page changes" % k)
    try:
        with open(PATH) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        raise server.HttpError(b"409 Conflict", "config.json is missing or corrupt on the board: run make deploy")
    for k in SHOWN + ("mqtt_port",):
        if k in d and d[k] != running[k]:
            cfg[k] = d[k]
    if cfg.get("wifi_ssid", "") != running["wifi_ssid"] or not cfg.get("wifi_ssid"):
        cfg["wifi_key"] = ""  # another home network, or none: the old network's key is not for it
    for k in ("ap_key", "wifi_key", "mqtt_password"):
        if d.get(k):
            cfg[k] = d[k]
    if not cfg.get("mqtt_user"):
        cfg["mqtt_password"] = ""  # no login, no password
    names = d.get("leds")
    if names is not None:
        leds = cfg.get("leds", rules.default_leds())
        if not isinstance(names, list) or len(names) != len(leds):
            errs.append("leds: send one name for each of the %d LEDs" % len(leds))
        else:
            for i in range(len(leds)):
                leds[i]["name"] = names[i]
            cfg["leds"] = leds
    errs.extend(rules.check(cfg))
    if errs:
        raise server.HttpError(server.BAD, "\n".join(errs))
    with open(PATH + ".tmp", "w") as f:
        json.dump(cfg, f)
    os.rename(PATH + ".tmp", PATH)
    gc.collect()
    server.send(req.sock, b"200 OK", b'{"restart_ms":%d}' % RESTART_MS, server.JSON)
    print("espblink: settings saved from the settings page; restarting")
    app.restart_at = time.ticks_add(time.ticks_ms(), RESTART_MS)
