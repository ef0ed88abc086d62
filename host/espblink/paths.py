"""Where things live in a checkout."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVICE = ROOT / "device"
BUILD = ROOT / "build"
FIRMWARE = ROOT / "firmware"
