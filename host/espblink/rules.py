"""The settings rules: the device's rules.py, loaded here so host and board share one copy."""

from __future__ import annotations

import importlib.util

from espblink import paths

_spec = importlib.util.spec_from_file_location("espblink_device_rules", paths.DEVICE / "rules.py")
assert _spec and _spec.loader
_rules = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rules)

GPIOS: tuple[int, ...] = _rules.GPIOS
KEYS: tuple[str, ...] = _rules.KEYS
LED_KEYS: tuple[str, ...] = _rules.LED_KEYS
check = _rules.check
check_led = _rules.check_led
complete = _rules.complete
defaults = _rules.defaults
default_leds = _rules.default_leds
RESTORE: tuple[str, ...] = _rules.RESTORE
hostname_ok = _rules.hostname_ok
hostname_for = _rules.hostname_for
