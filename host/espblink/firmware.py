"""The MicroPython firmware: which file for which flash size (firmware/manifest.json: the FLASH_2M_ROMFS build
from 2 MB, the FLASH_1M build on 1 MB, none on 512 KB), downloading it safely, and checking a file is an
ESP8266 image before anything is flashed."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from espblink import image, paths
from espblink.errors import UserError

SIZES = {"512KB": 512 * 1024, "1MB": 1 << 20, "2MB": 2 << 20, "4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}


@dataclass
class Variant:
    name: str
    file: str
    sha256: str | None


class Firmware:
    def __init__(self, root: Path = paths.FIRMWARE, base_url: str | None = None) -> None:
        self.root = root
        self.manifest = json.loads((root / "manifest.json").read_text())
        self.base_url = base_url or os.environ.get("ESPBLINK_FIRMWARE_URL") or self.manifest["base_url"]
        self.downloads = root / "downloads"
        self.lock_path = root / "lock.json"

    @property
    def release(self) -> str:
        return self.manifest["release"]

    def variant(self, flash_size: str | int) -> Variant:
        """The build for a chip's flash size (esptool's name for it, e.g. "4MB", or bytes); a size whose
        build the manifest marks "refused" stops here with the reason."""
        size = SIZES.get(flash_size, 0) if isinstance(flash_size, str) else flash_size
        fits = [(v["min_flash"], name) for name, v in self.manifest["variants"].items() if v["min_flash"] <= size]
        if not fits:
            raise UserError(f"no MicroPython build in firmware/manifest.json fits a {flash_size} flash chip")
        name = max(fits)[1]
        v = self.manifest["variants"][name]
        if v.get("refused"):
            raise UserError(f"this board has a {flash_size} flash chip: {v['refused']}")
        return Variant(name, v["file"], v["sha256"] or self._lock().get(v["file"]))

    def _lock(self) -> dict[str, str]:
        try:
            return json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}

    def _pin(self, file: str, digest: str) -> None:
        lock = self._lock()
        lock[file] = digest
        self.lock_path.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n")

    def fetch(self, v: Variant, progress: bool = True) -> Path:
        """The firmware file, downloaded once (temporary name, then renamed) and checked every time."""
        path = self.downloads / v.file
        if not path.exists():
            self.downloads.mkdir(parents=True, exist_ok=True)
            url = self.base_url.rstrip("/") + "/" + v.file
            tmp = path.with_suffix(f".part{os.getpid()}")
            try:
                download(url, tmp, progress)
                data = tmp.read_bytes()
                check_image(data, url)
                if v.sha256 and hashlib.sha256(data).hexdigest() != v.sha256:
                    raise UserError(f"{url} does not match the SHA-256 pinned for it: the download is corrupt or "
                                    "was replaced; try again, or pass FIRMWARE=path to a file you trust")
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if v.sha256 is None:
            self._pin(v.file, digest)  # the first verified download pins the sum for every later flash
        elif digest != v.sha256:
            raise UserError(f"{path} changed since its SHA-256 was pinned ({v.sha256[:12]}…, now {digest[:12]}…): "
                            f"delete it to download it again")
        check_image(data, str(path))
        return path


def download(url: str, dest: Path, progress: bool) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as r, open(dest, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while chunk := r.read(64 * 1024):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    bar = "#" * (30 * done // total) if total else ""
                    pct = f"{100 * done // total:3d}%" if total else f"{done // 1024} KB"
                    print(f"\rdownloading {dest.name.split('.part')[0]} [{bar:<30}] {pct}", end="", file=sys.stderr)
            if progress:
                print(file=sys.stderr)
    except urllib.error.HTTPError as e:
        raise UserError(f"downloading {url} failed: HTTP {e.code} {e.reason}; check the release in "
                        "firmware/manifest.json, or pass FIRMWARE=path to a file you have") from None
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"downloading {url} failed ({e}); check your internet connection, or pass "
                        "FIRMWARE=path to a firmware file you have") from None


def check_image(data: bytes, name: str) -> image.ImageInfo:
    try:
        return image.check(data)
    except ValueError as e:
        raise UserError(f"{name} is {e}; espblink flashes MicroPython's ESP8266 firmware "
                        "(ESP8266_GENERIC-*.bin from micropython.org)") from None


def local(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"FIRMWARE={path}: no such file")
    check_image(p.read_bytes(), str(p))
    return p
