"""Facts the device code owns and the host needs: the names of the files the app keeps on the board, and the
app's version. Each is read from the device module that states it, so host and board spell it once (as
espblink.rules loads the device's rules)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

try:
    from espblink.paths import DEVICE
except ImportError:  # loaded on its own: setuptools reads VERSION here while it installs the package
    DEVICE = Path(__file__).resolve().parents[2] / "device"


@functools.cache
def _constants(module: str) -> dict[str, object]:
    tree = ast.parse((DEVICE / f"{module}.py").read_text())
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def constant(module: str, name: str) -> str:
    """device/<module>.py's `name = "text"`."""
    value = _constants(module).get(name)
    if not isinstance(value, str):
        raise LookupError(f"device/{module}.py has no string constant {name}")
    return value


CONFIG = constant("config", "PATH")  # the settings
CRASHES = constant("startup", "CRASHES")  # the boot-loop guard's count
OTA_KEY = constant("ota", "KEY")  # the deploy key of updates over Wi-Fi
OTA_LAST = constant("ota", "LAST")  # why the last update was rolled back
OTA_STATE = constant("ota", "STATE")  # an update's journal (its new app on trial)
OTA_OWN = tuple(constant("ota", c) for c in ("KEY", "LAST", "SEQ", "STATE", "IMG"))  # the updates' own files
VERSION = constant("app", "VERSION")  # the app's, which is this package's too (pyproject.toml reads it here)
