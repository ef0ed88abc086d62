"""The device code uses only names the ESP8266 port has (micropython-esp8266-stubs is the reference)."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

from espblink import paths

STUBS = Path(sysconfig.get_paths()["purelib"])
DEVICE_MODULES = {p.stem for p in paths.DEVICE.glob("*.py")}


def stub_tree(module: str) -> ast.Module | None:
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


def missing_names(source: str, filename: str) -> list[str]:
    """file:line of every module attribute the ESP8266 stubs do not have."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name not in DEVICE_MODULES:
                    modules[a.asname or a.name] = a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module not in DEVICE_MODULES:
            stub = stub_tree(node.module)
            for a in node.names:
                if stub is None or a.name not in names(stub.body):
                    problems.append(f"{filename}:{node.lineno}: {node.module}.{a.name}")
    for mod in set(modules.values()):
        if stub_tree(mod) is None:
            problems.append(f"{filename}: module {mod} has no ESP8266 stub")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            stub = stub_tree(modules[node.value.id])
            if stub is None:
                continue
            top = names(stub.body)
            if node.attr not in top:
                problems.append(f"{filename}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and isinstance(node.value.value, ast.Name) and node.value.value.id in modules):
            stub = stub_tree(modules[node.value.value.id])
            cls = names(stub.body).get(node.value.attr) if stub else None
            if isinstance(cls, ast.ClassDef) and node.attr not in names(cls.body):
                problems.append(f"{filename}:{node.lineno}: {modules[node.value.value.id]}.{node.value.attr}."
                                f"{node.attr}")
    return problems


def test_device_code_uses_only_esp8266_names():
    problems = []
    for p in sorted(paths.DEVICE.glob("*.py")):
        problems += missing_names(p.read_text(), p.name)
    assert problems == []


def test_the_check_catches_names_the_port_lacks():
    old_tutorial = "\n".join([
        "import machine", "import time", "import os", "pin = machine.Pin(2, machine.Pin.OUT)", "pin.high()",
        "time.sleep_ms(1)", "machine.Pin.HIGH_LEVEL", "esp.wifi_connect()", "from network import WiFi", "import esp"])
    assert missing_names(old_tutorial, "t.py") == ["t.py:9: network.WiFi", "t.py:7: machine.Pin.HIGH_LEVEL",
                                                   "t.py:8: esp.wifi_connect"]
