"""`espblink deploy`: over USB (sync.py), or over Wi-Fi with --ota (ota.py), from the same plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from espblink import ota, settings, sync


def cmd_deploy(args: argparse.Namespace) -> int:
    if args.ota:
        return ota.cmd_deploy(args)
    sync.deploy(args.port, Path(args.settings), replace_settings=args.replace_settings)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="build for the board's firmware and copy what changed; restart and check")
    p.add_argument("--port", help="serial port or URL (default: the one NodeMCU found)")
    p.add_argument("--settings", default=str(settings.DEFAULT), help="settings file (default: settings.toml)")
    p.add_argument("--replace-settings", action="store_true",
                   help="overwrite the board's config.json with the settings file even if it was changed on the "
                   "board (its settings page) since the last deploy; without it such a config.json is kept")
    p.add_argument("--ota", metavar="http://BOARD/", help="update the board over Wi-Fi (its address or hostname) "
                   "instead of USB, with the deploy key the first USB deploy set")
    p.set_defaults(func=cmd_deploy)


