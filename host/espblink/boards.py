"""`espblink boards --mqtt HOST[:PORT]`: every espblink board an MQTT broker knows, from what each board
publishes retained: `<prefix>/info` once a minute (who it is, how it is) and `<prefix>/status` (online, or
its last will: offline)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from espblink import settings
from espblink.errors import UserError

QUIET_S = 0.7  # retained messages come at once after subscribing: this long without one, all are in
MOST_S = 5.0
INFO_KEYS = ("id", "name", "prefix", "firmware", "version", "address", "heap_free", "uptime_s", "leds")


def broker_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "1883"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--mqtt {text}: expected HOST or HOST:PORT, e.g. 192.168.1.10:1883")
    return host, int(port)


def retained(host: str, port: int, user: str | None, password: str | None) -> dict[str, bytes]:
    """Every retained message on the broker (topic -> payload), read by subscribing to everything."""
    import paho.mqtt.client as paho

    got: dict[str, bytes] = {}
    last = [time.monotonic()]
    result: list[Any] = []
    connected = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:  # noqa: ANN401
        result.append(reason)
        connected.set()
        if not reason.is_failure:
            c.subscribe("#")

    def on_message(c: Any, userdata: Any, msg: Any) -> None:  # noqa: ANN401
        last[0] = time.monotonic()
        if msg.retain:
            got[msg.topic] = msg.payload

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"espblink-boards-{time.time_ns() % 10**9}")
    if user:
        c.username_pw_set(user, password)
    c.on_connect, c.on_message = on_connect, on_message
    try:
        c.connect(host, port, keepalive=30)
    except OSError as e:
        raise UserError(f"cannot reach the MQTT broker at {host}:{port} ({e}); check --mqtt") from None
    c.loop_start()
    try:
        if not connected.wait(5):
            raise UserError(f"the MQTT broker at {host}:{port} did not answer the login within 5 s")
        if result[0].is_failure:
            raise UserError(f"the MQTT broker at {host}:{port} refused the login ({result[0]}); "
                            "give --user and --password (or set mqtt_user and mqtt_password in settings.toml)")
        start = last[0] = time.monotonic()
        while time.monotonic() - last[0] < QUIET_S and time.monotonic() - start < MOST_S:
            time.sleep(0.05)
    finally:
        c.loop_stop()
        c.disconnect()
    return got


def boards(messages: dict[str, bytes]) -> list[dict[str, Any]]:
    """The boards in a broker's retained messages: each `<prefix>/info` that is an espblink board's,
    with "online" from `<prefix>/status` and each LED's state from `<prefix>/<led>/state`."""
    out = []
    for topic, payload in messages.items():
        if not topic.endswith("/info"):
            continue
        try:
            info = json.loads(payload)
        except ValueError:
            continue
        if not isinstance(info, dict) or not {"id", "leds", "prefix"} <= info.keys():
            continue
        board = {k: info.get(k) for k in INFO_KEYS}
        board["online"] = messages.get(f"{info['prefix']}/status") == b"online"
        if isinstance(board["leds"], dict):  # the state topics are newer than the last info
            board["leds"] = {k: messages.get(f"{info['prefix']}/{k}/state", str(v).encode()).decode(errors="replace")
                             for k, v in board["leds"].items()}
        out.append(board)
    return sorted(out, key=lambda b: (str(b["name"]), str(b["id"])))


def find(target: str, user: str | None = None, password: str | None = None) -> list[dict[str, Any]]:
    """The boards on the broker at HOST[:PORT], each a dict of INFO_KEYS plus "online"."""
    host, port = broker_address(target)
    return boards(retained(host, port, user, password))


def uptime(s: Any) -> str:  # noqa: ANN401
    if not isinstance(s, int):
        return "?"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    return f"{d}d{h:02d}h" if d else f"{h}h{s // 60:02d}m" if h else f"{s // 60}m{s % 60:02d}s"


def table(found: list[dict[str, Any]]) -> str:
    head = ("ID", "NAME", "STATE", "FIRMWARE", "APP", "ADDRESS", "FREE HEAP", "UPTIME", "LEDS")
    rows = [head]
    for b in found:
        leds = b["leds"] if isinstance(b["leds"], dict) else {}
        rows.append((str(b["id"]), str(b["name"]), "online" if b["online"] else "offline", str(b["firmware"]),
                     str(b["version"]), str(b["address"]), str(b["heap_free"]), uptime(b["uptime_s"]),
                     " ".join(f"{k}={v}" for k, v in leds.items())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def broker(target: str | None, user: str | None, password: str | None, settings_path: Path
           ) -> tuple[str, str | None, str | None]:
    """(HOST:PORT, user, password) of the broker the boards are on: what was given (--mqtt, --user, --password),
    else the settings file's mqtt_host, mqtt_port, mqtt_user and mqtt_password (the login only for that
    broker). For `espblink boards` and `espblink fleet deploy --mqtt`."""
    cfg: dict[str, Any] = {}
    if settings_path.exists():
        try:
            cfg = settings.load(settings_path, create_missing=False)
        except UserError:
            if target is None:
                raise
    if target is None:
        if not cfg.get("mqtt_host"):
            raise UserError(f"give the broker: --mqtt HOST[:PORT] (or set mqtt_host in {settings_path})")
        target = f"{cfg['mqtt_host']}:{cfg.get('mqtt_port', 1883)}"
    host, _ = broker_address(target)
    if user is None and cfg.get("mqtt_user") and host == cfg.get("mqtt_host"):
        user, password = cfg["mqtt_user"], password or cfg.get("mqtt_password")
    return target, user, password


def cmd_boards(args: argparse.Namespace) -> int:
    target, user, password = broker(args.mqtt, args.user, args.password, Path(args.settings))
    host, port = broker_address(target)
    found = find(target, user, password)
    if args.json:
        json.dump(found, sys.stdout, indent=2)
        print()
    elif found:
        print(table(found))
    else:
        print(f"no espblink board on the MQTT broker at {host}:{port} (a board publishes itself there once "
              "its mqtt_host is this broker and it has joined home Wi-Fi)")
    return 0


def login_options(p: argparse.ArgumentParser) -> None:
    """--user and --password, for every command that reads the broker."""
    p.add_argument("--user", help="MQTT user name (default: mqtt_user in the settings file)")
    p.add_argument("--password", help="MQTT password (default: mqtt_password in the settings file)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("boards", help="list the espblink boards an MQTT broker knows (Home Assistant's)")
    p.add_argument("--mqtt", metavar="HOST[:PORT]", help="the broker (default: mqtt_host in settings.toml)")
    login_options(p)
    p.add_argument("--settings", default=str(settings.DEFAULT), help="settings file for the defaults")
    p.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    p.set_defaults(func=cmd_boards)
