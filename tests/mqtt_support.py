"""A real MQTT broker for tests (Debian's mosquitto on a free loopback port) and a paho-mqtt client that
plays Home Assistant.

    with broker(tmp, users={"ha": "secret"}) as b:     # users=None: anonymous
        ha = HomeAssistant(b, "ha", "secret")
        ha.wait(lambda m: "homeassistant/light/..." in m)
        ha.publish("espblink/<id>/blue/set", "ON")
        b.stop(); b.start()                            # the same port, retained messages kept
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from device_support import stop
from espblink import settings
from espblink.errors import UserError
from nodemcu import runtime

HOME, HOME_KEY = "home", "home key 123"  # the home Wi-Fi the boards join (`espblink sim --sta`)
STA = ["--sta", f"{HOME}={HOME_KEY}", "--sta-delay-ms", "300"]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


class Broker:
    def __init__(self, folder: Path, users: dict[str, str] | None) -> None:
        if not Path(MOSQUITTO).exists():
            raise UserError("mosquitto is not installed: run `make mosquitto` (Debian's package)")
        self.folder = folder
        self.port = runtime.free_port()  # kept across a restart: below the ephemeral range
        self.host = "127.0.0.1"
        self.log = folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 f"log_dest file {self.log}", "log_type all", "connection_messages true",
                 f"user {getpass.getuser()}"]
        if users is None:
            lines.append("allow_anonymous true")
        else:
            pw = folder / "passwords"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run([MOSQUITTO_PASSWD, "-U", str(pw)], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"mosquitto did not start: {self.proc.stderr.read().decode()}") from None
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop(self.proc)

    def log_lines(self, text: str) -> list[str]:
        try:
            return [ln for ln in self.log.read_text(errors="replace").splitlines() if text in ln]
        except OSError:
            return []


@contextmanager
def broker(folder: Path, users: dict[str, str] | None = None) -> Iterator[Broker]:
    folder.mkdir(parents=True, exist_ok=True)
    b = Broker(folder, users)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def board_settings(path: Path, b: Broker, user: str | None = None, password: str | None = None,
                   **extra: object) -> Path:
    """Settings (made with settings.create when path does not exist) for a board on the home Wi-Fi with MQTT
    set to broker b, logged in as user; extra: more keys of the top table."""
    if not path.exists():
        settings.create(path)
    keys = {"wifi_ssid": HOME, "wifi_key": HOME_KEY, "mqtt_host": b.host, "mqtt_port": b.port,
            "mqtt_user": user or "", "mqtt_password": password or "", **extra}
    lines = [ln for ln in path.read_text().splitlines() if ln.split("=")[0].strip() not in keys]
    first_table = next(i for i, ln in enumerate(lines) if ln.startswith("[["))
    lines[first_table:first_table] = [f"{k} = {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class HomeAssistant:
    """A paho-mqtt client subscribed to everything: `retained` holds the last retained payload per topic
    (an empty one removes it), `seen` every message as (topic, payload) in arrival order."""

    def __init__(self, b: Broker, user: str | None = None, password: str | None = None,
                 topics: tuple[str, ...] = ("#",)) -> None:
        self.retained: dict[str, bytes] = {}
        self.last: dict[str, bytes] = {}
        self.seen: list[tuple[str, bytes, float]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"ha-{time.monotonic_ns()}")
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: [c.subscribe(t) for t in topics]
        self.client.connect(b.host, b.port, keepalive=60)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:  # noqa: ANN401
        with self.lock:
            self.seen.append((msg.topic, msg.payload, time.monotonic()))
            self.last[msg.topic] = msg.payload
            if msg.payload:
                self.retained[msg.topic] = msg.payload
            else:
                self.retained.pop(msg.topic, None)

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        self.client.publish(topic, payload, retain=retain).wait_for_publish(5)

    def wait(self, pred: Callable[[HomeAssistant], Any], timeout: float = 20, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                got = pred(self)
            if got:
                return got
            time.sleep(0.02)
        with self.lock:
            topics = sorted(self.retained)
        raise AssertionError(f"Home Assistant never saw {what or 'what it waited for'}; retained topics: {topics}")

    def configs(self, board_id: str) -> dict[str, dict[str, Any]]:
        """The discovery configs of one board: LED name -> the config, as JSON."""
        start = f"homeassistant/light/{board_id}/"
        return {t[len(start):-len("/config")]: json.loads(p) for t, p in list(self.retained.items())
                if t.startswith(start) and t.endswith("/config")}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
