"""`espblink` command line: thin commands over the reusable pieces (firmware, build, sync, sim)."""

from __future__ import annotations

import argparse
import importlib
import sys

from espblink.errors import UserError

# Each module adds its own subcommands with register(subparsers).
COMMAND_MODULES = ("runner", "build", "flash", "deploy", "board", "sim", "fleet", "boards")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="espblink", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"espblink.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"espblink.{name}":
                raise
            continue
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"espblink: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
