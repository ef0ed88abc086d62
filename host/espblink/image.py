"""ESP8266 firmware images (esptool's "v1" format): checking one before it is flashed or booted, and
making one for the virtual board and the tests (no MicroPython image can be downloaded here)."""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass

from esptool.bin_image import ESP8266ROMFirmwareImage, ImageSegment
from esptool.util import FatalError

ESP_IMAGE_MAGIC = 0xE9
IROM_OFFSET = 0x9000  # MicroPython's ESP8266 build puts irom0 text here, mapped at 0x40209000
SIZES = {0x00: "512KB", 0x10: "256KB", 0x20: "1MB", 0x30: "2MB", 0x40: "4MB", 0x80: "8MB", 0x90: "16MB"}


@dataclass
class ImageInfo:
    segments: int
    entry: int
    flash_size: str
    size: int


def describe(data: bytes) -> str:
    """What a file that is not an ESP8266 image most likely is, in a few words."""
    head = data[:512].lstrip().lower()
    if not data:
        return "an empty file"
    if head.startswith((b"<!doctype", b"<html", b"<?xml")) or b"<html" in head:
        return "an HTML page (an error page saved instead of the firmware?)"
    if head.startswith((b"{", b"[")):
        return "a JSON document, not firmware"
    if data[0] == ESP_IMAGE_MAGIC and len(data) > 12 and data[12] in range(0, 0x20):
        # ESP32-family images carry an extended header whose chip id sits at byte 12.
        return "an ESP32-family image (chip id %d), not an ESP8266 one" % data[12]
    if data[:4] == b"\x7fELF":
        return "an ELF file: convert it with esptool elf2image first"
    if data[:2] == b"PK":
        return "a zip archive: unpack the .bin from it"
    return "not an ESP8266 firmware image (first byte 0x%02x, expected 0xe9)" % data[0]


def check(data: bytes) -> ImageInfo:
    """Raise ValueError saying what is wrong unless data starts with a valid ESP8266 v1 image."""
    if len(data) < 8 or data[0] != ESP_IMAGE_MAGIC:
        raise ValueError(describe(data))
    if data[12:13] and data[1] <= 16 and _looks_esp32(data):
        raise ValueError(describe(data))
    try:
        img = ESP8266ROMFirmwareImage(io.BytesIO(data))
    except (FatalError, struct.error, ValueError) as e:
        raise ValueError(f"a damaged or truncated ESP8266 image ({e})") from None
    if img.checksum != img.calculate_checksum():
        raise ValueError("an ESP8266 image whose checksum is wrong (damaged or truncated download)")
    if len(data) > IROM_OFFSET and len(data) < IROM_OFFSET + 4096:
        raise ValueError("a truncated ESP8266 image (its irom0 part is missing)")
    return ImageInfo(len(img.segments), img.entrypoint, SIZES.get(img.flash_size_freq & 0xF0, "?"), len(data))


def _looks_esp32(data: bytes) -> bool:
    # ESP32 images: byte 3 is flash size/freq like ESP8266, but the 16-byte extended header follows the
    # 8-byte common header; its WP pin byte is 0xEE and the first segment then starts at offset 24.
    return len(data) > 24 and data[8] == 0xEE


def make(version: str = "v1.27.0", size: int = 600 * 1024, seed: int = 8266, variant: str = "") -> bytes:
    """A valid ESP8266 image laid out like MicroPython's firmware .bin, about `size` bytes. `variant` (e.g.
    "FLASH_2M_ROMFS") puts the build's name in it, ESP8266_GENERIC-<variant>, as the firmware carries it
    (sys.implementation._build): the virtual board gives an image naming FLASH_2M_ROMFS the ROMFS partition."""
    rnd = random.Random(seed)

    def body(n: int) -> bytes:
        # Half noise, half repeated words: compresses about as well as real firmware does.
        out = bytearray()
        while len(out) < n:
            out += rnd.randbytes(16) if rnd.random() < 0.5 else b"\x00\x00\x00\x00\x21\x00\x60\x40" * 2
        return bytes(out[:n])

    img = ESP8266ROMFirmwareImage()
    img.flash_mode = 2  # dio
    img.flash_size_freq = 0x40  # 4 MB, 40 MHz
    img.entrypoint = 0x40100004
    img.segments = [
        ImageSegment(0x40100000, body(28 * 1024)),
        ImageSegment(0x3FFE8000, body(1024)),
        ImageSegment(0x3FFE8400, body(512)),
    ]
    _, head = img.save(None)
    banner = f"MicroPython {version} on 2025-12-09; ESP module with ESP8266".encode()
    if variant:
        banner += b"\x00ESP8266_GENERIC-" + variant.encode() + b"\x00"
    irom = banner + body(max(0, size - IROM_OFFSET - len(banner)))
    return head.ljust(IROM_OFFSET, b"\x00") + irom
