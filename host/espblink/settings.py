"""The host's settings file (settings.toml): created from settings.example.toml with fresh secrets,
checked with the board's own rules (device/rules.py), rendered to the board's config.json, and compared
key by key with a config.json changed on the board (its settings page)."""

from __future__ import annotations

import hashlib
import json
import secrets
import string
import tomllib
from pathlib import Path
from typing import Any

from espblink import paths, rules
from espblink.errors import UserError

DEFAULT = paths.ROOT / "settings.toml"
EXAMPLE = paths.ROOT / "settings.example.toml"


def random_key(n: int = 16) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def create(path: Path) -> None:
    text = EXAMPLE.read_text().replace("@AP_KEY@", random_key()).replace("@ADMIN_PASSWORD@", random_key())
    path.write_text(text)
    print(f"created {path} with a random Wi-Fi key (edit it to change names, LEDs or keys)")


def load(path: Path = DEFAULT, create_missing: bool = True) -> dict[str, Any]:
    """The settings, valid for the board, or a UserError listing every key that is wrong."""
    if not path.exists():
        if not create_missing:
            raise UserError(f"no settings file {path}")
        create(path)
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e}); fix it, or delete it to start from the example") from None
    errors = rules.check(cfg)
    if errors:
        raise UserError(f"{path} has invalid settings (nothing was sent to the board):\n  "
                        + "\n  ".join(errors))
    return cfg


SECRETS = ("ap_key", "wifi_key", "admin_password", "mqtt_password")  # never printed: a difference is only "changed"


def canonical(cfg: dict[str, Any]) -> dict[str, Any]:
    """Valid settings spelled one way: every key, each LED's keys in one order with active_low given, so
    the same settings compare (and render) equal whichever order the board or settings.toml holds them in."""
    out = rules.complete(cfg)
    out["leds"] = [{"name": led["name"], "gpio": led["gpio"], "active_low": led.get("active_low", False)}
                   for led in out["leds"]]
    return out


def render(cfg: dict[str, Any]) -> bytes:
    """The board's config.json."""
    return json.dumps(canonical(cfg), separators=(",", ":")).encode()


def digest(cfg: dict[str, Any]) -> str:
    """The sha256 of render(cfg): what the board's file hash is once a deploy wrote these settings."""
    return hashlib.sha256(render(cfg)).hexdigest()


def parse_board(data: bytes) -> dict[str, Any] | None:
    """A config.json read from the board as settings, or None if it is not valid settings."""
    try:
        cfg = json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        return None
    return cfg if not rules.check(cfg) else None


def _toml(v: Any) -> str:  # noqa: ANN401
    return json.dumps(v)  # a string, number or true/false as settings.toml spells it


def _led(led: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_toml(led[k])}" for k in rules.LED_KEYS)


def differences(board: dict[str, Any], cfg: dict[str, Any], name: str = "settings.toml") -> list[str]:
    """Each key whose value on the board differs from cfg's (read from the file `name`), one line each:
    the two values, or only "changed" for keys and passwords."""
    b, c = canonical(board), canonical(cfg)
    out = []
    for k in rules.KEYS:
        if k == "leds" or b.get(k) == c.get(k):
            continue
        out.append(f"{k}: changed" if k in SECRETS else f"{k}: {_toml(b[k])} on the board, {_toml(c[k])} in {name}")
    bl, cl = b["leds"], c["leds"]
    for i in range(max(len(bl), len(cl))):
        if i >= len(cl):
            out.append(f"leds[{i}]: only on the board ({_led(bl[i])})")
        elif i >= len(bl):
            out.append(f"leds[{i}]: only in {name} ({_led(cl[i])})")
        else:
            out += [f"leds[{i}].{k}: {_toml(bl[i][k])} on the board, {_toml(cl[i][k])} in {name}"
                    for k in rules.LED_KEYS if bl[i][k] != cl[i][k]]
    return out
