"""The deploy keys of updates over Wi-Fi: the first USB deploy gives a board a random 256-bit key and keeps
it on the host, in deploy-keys.json next to the settings file, under the key's public name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Collection
from pathlib import Path
from typing import Any

from espblink import device
from espblink.errors import UserError

KEY = device.OTA_KEY  # on the board
LAST = device.OTA_LAST  # on the board: why the last update was rolled back
KEYS_FILE = "deploy-keys.json"  # on the host, next to the settings file: {key name: hex key}


def keys_path(settings_path: Path) -> Path:
    return settings_path.with_name(KEYS_FILE)


def load_keys(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError(f"{path} is not valid JSON; fix it, or delete it and deploy over USB to set new keys") from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def key_id(key: str) -> str:
    """A key's public name: the start of its SHA-256 (the board computes the same)."""
    return hashlib.sha256(bytes.fromhex(key)).hexdigest()[:16]


def save_key(path: Path, key: str) -> None:
    keys = load_keys(path)
    keys[key_id(key)] = key
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def ensure_key(t: Any, board_files: Collection[str], settings_path: Path) -> None:
    """During a USB deploy (t: mpremote's transport, in raw REPL; board_files: the files the probe found):
    give the board a deploy key if it has none and keep it on the host; a board that has one tells it (USB
    is trusted). Prints a rollback the board reported, then forgets it."""
    key = t.fs_readfile(KEY).decode(errors="replace").strip() if KEY in board_files else ""
    path = keys_path(settings_path)
    if not re.fullmatch(r"[0-9a-f]{64}", key):
        key = secrets.token_hex(32)
        t.fs_writefile(KEY + ".tmp", key.encode())
        t.exec(f"import os\nos.rename({KEY + '.tmp'!r}, {KEY!r})")
        print(f"deploy key: a new one, kept in {path} (updates over Wi-Fi: espblink deploy --ota http://<board>/)")
    if load_keys(path).get(key_id(key)) != key:
        save_key(path, key)
    if LAST in board_files:
        why = t.fs_readfile(LAST).decode(errors="replace").strip()
        print(f"the board rolled back its last update over Wi-Fi: {why}")
        t.exec(f"import os\nos.remove({LAST!r})")
