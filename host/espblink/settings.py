"""The host's settings file (settings.toml): created from settings.example.toml with fresh secrets,
checked with the board's own rules (device/rules.py), rendered to the board's config.json."""

from __future__ import annotations

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


def render(cfg: dict[str, Any]) -> bytes:
    """The board's config.json."""
    return json.dumps(rules.complete(cfg), separators=(",", ":")).encode()
