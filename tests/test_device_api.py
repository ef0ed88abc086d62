"""The device code uses only names the ESP8266 port has (micropython-esp8266-stubs is the reference)."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

from espblink import paths

STUBS = Path(sysconfig.get_paths()["purelib"])
DEVICE_MODULES = {p.stem for p in paths.DEVICE.glob("*.py")}


def stub_tree(module: str) -> ast.Module | None:
    module = module.replace(".", "/")  # umqtt.simple: umqtt/simple.pyi
    for p in (STUBS / f"{module}.pyi", STUBS / module / "__init__.pyi", STUBS / "stdlib" / f"{module}.pyi",
              STUBS / "stdlib" / module / "__init__.pyi"):
        if p.exists():
            return ast.parse(p.read_text())
    return None


def names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    out: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = node
        elif isinstance(node, ast.If):
            out.update(names(node.body))
            out.update(names(node.orelse))
    return out


def members(stub: ast.Module, cls: ast.ClassDef) -> dict[str, ast.stmt]:
    """A stub class's names, with those of its bases defined in the same stub (Signal(Pin))."""
    out = names(cls.body)
    for base in cls.bases:
        found = names(stub.body).get(base.id) if isinstance(base, ast.Name) else None
        if isinstance(found, ast.ClassDef) and found is not cls:
            out = {**members(stub, found), **out}
    return out


def missing_names(source: str, filename: str) -> list[str]:
    """file:line of every name used on an ESP8266 module, one of its classes, or an object made from one of
    its classes (x = network.WLAN(...); x.config(...); self.signal = Signal(...)) that the stubs lack."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> module
    classes: dict[str, tuple[str, ast.ClassDef]] = {}  # local name from `from m import C` -> (m, C)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in DEVICE_MODULES:
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module not in DEVICE_MODULES:
            stub = stub_tree(node.module)
            for a in node.names:
                found = names(stub.body).get(a.name) if stub else None
                if found is None:
                    problems.append(f"{filename}:{node.lineno}: {node.module}.{a.name}")
                elif isinstance(found, ast.ClassDef):
                    classes[a.asname or a.name] = (node.module, found)
    for mod in set(modules.values()):
        if stub_tree(mod) is None:
            problems.append(f"{filename}: module {mod} has no ESP8266 stub")

    def key(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return expr.id
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id == "self":
            return "self." + expr.attr
        return None

    def class_of(expr: ast.expr) -> tuple[str, ast.ClassDef] | None:
        """The stub class an expression names: C (from-imported) or module.C."""
        if isinstance(expr, ast.Name) and expr.id in classes:
            return classes[expr.id]
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in modules:
            mod = modules[expr.value.id]
            stub = stub_tree(mod)
            found = names(stub.body).get(expr.attr) if stub else None
            if isinstance(found, ast.ClassDef):
                return mod, found
        return None

    instances: dict[str, tuple[str, ast.ClassDef]] = {}  # x = network.WLAN(...) -> (network, WLAN)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            made = class_of(node.value.func)
            if made:
                for t in node.targets:
                    if key(t):
                        instances[key(t)] = made

    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        v = node.value
        if isinstance(v, ast.Name) and v.id in modules:
            stub = stub_tree(modules[v.id])
            if stub is not None and node.attr not in names(stub.body):
                problems.append(f"{filename}:{node.lineno}: {modules[v.id]}.{node.attr}")
            continue
        owner = class_of(v)  # machine.Pin.OUT, Pin.OUT
        if owner is None and isinstance(v, ast.Call):
            owner = class_of(v.func)  # network.WLAN(...).config
        if owner is None and key(v) in instances:
            owner = instances[key(v)]  # ap.config, self.signal.value
        if owner is not None:
            mod, cls = owner
            if node.attr not in members(stub_tree(mod), cls):
                problems.append(f"{filename}:{node.lineno}: {mod}.{cls.name}.{node.attr}")
    return problems


# Names the v1.27.0 firmware has that the stubs leave out, each seen in its source (../shared/micropython).
NOT_IN_STUBS = {
    "umqtt.simple.MQTTClient.sock",  # set in MQTTClient.__init__ (micropython-lib umqtt.simple/umqtt/simple.py)
    "vfs.VfsRom",  # extmod/modvfs.c with MICROPY_VFS_ROM, which the FLASH_2M_ROMFS build has
}


def test_device_code_uses_only_esp8266_names():
    problems = []
    for p in sorted(paths.DEVICE.glob("*.py")):
        problems += [m for m in missing_names(p.read_text(), p.name) if m.split(": ")[-1] not in NOT_IN_STUBS]
    assert problems == []


def test_the_check_catches_names_the_port_lacks():
    old_tutorial = "\n".join([
        "import machine", "import time", "import os", "pin = machine.Pin(2, machine.Pin.OUT)", "pin.high()",
        "time.sleep_ms(1)", "machine.Pin.HIGH_LEVEL", "esp.wifi_connect()", "from network import WiFi", "import esp",
        "from machine import Signal", "class L:", "    def __init__(self):", "        self.s = Signal(pin)",
        "    def on(self):", "        self.s.high()", "        self.s.on()", "import network",
        "network.WLAN(network.AP_IF).config(essid='x')", "network.WLAN(network.AP_IF).ifconfig_dhcp()"])
    assert sorted(missing_names(old_tutorial, "t.py")) == [
        "t.py:16: machine.Signal.high", "t.py:20: network.WLAN.ifconfig_dhcp", "t.py:5: machine.Pin.high",
        "t.py:7: machine.Pin.HIGH_LEVEL", "t.py:8: esp.wifi_connect", "t.py:9: network.WiFi"]
