"""`espblink fleet deploy FLEETFILE [--mqtt HOST] [--dry-run]`: the same update over Wi-Fi to many boards.

The fleet file has one board a line: its name, its address or hostname, its deploy key (64 hex digits, or
`-` for the key the first USB deploy kept in deploy-keys.json); `#` starts a comment. With `--mqtt HOST` the
boards are the ones `espblink boards` finds on that broker (logged in as `espblink boards` does: --user and
--password, else the settings file's), at the address each publishes, with their keys from deploy-keys.json;
one the broker says is offline (its last will) is skipped.
A few boards are updated at a time; one that fails or is offline does not stop the others. The table at
the end says, for each board, its version before and after, the bytes sent, the time and the result; the
exit status is 0 only when every board is on the new version.
"""

from __future__ import annotations

import argparse
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espblink import boards as finder
from espblink import keys, ota, settings, sync
from espblink.errors import UserError

JOBS = 4


@dataclass
class Board:
    name: str
    address: str
    key: str | None  # None: from deploy-keys.json
    offline: bool = False  # the broker says so: not tried


def read_fleet(path: Path) -> list[Board]:
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read the fleet file {path}: {e.strerror}") from None
    boards: list[Board] = []
    problems: list[str] = []
    for i, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 3:
            problems.append(f"line {i}: expected `name address key` (key: 64 hex digits or -), got {line.strip()!r}")
            continue
        name, address, key = words
        if key != "-" and not re.fullmatch(r"[0-9a-fA-F]{64}", key):
            problems.append(f"line {i}: the key of {name} must be 64 hex digits, or - for the one in "
                            f"{keys.KEYS_FILE}")
            continue
        if any(b.name == name for b in boards):
            problems.append(f"line {i}: {name} is named twice")
            continue
        boards.append(Board(name, address, None if key == "-" else key))
    if problems:
        raise UserError(f"{path} has mistakes (no board was touched):\n  " + "\n  ".join(problems))
    if not boards:
        raise UserError(f"{path} names no board: one a line, `name address key`")
    return boards


def from_mqtt(target: str, user: str | None = None, password: str | None = None) -> list[Board]:
    found: list[dict[str, Any]] = finder.find(target, user, password)
    out = []
    for b in found:
        if b["address"]:  # a board publishes its info once it has joined home Wi-Fi: with its address
            out.append(Board(str(b["name"] or b["id"]), str(b["address"]), None, offline=not b["online"]))
    if not out:
        raise UserError(f"no espblink board on the MQTT broker at {target} (`espblink boards --mqtt {target}` lists "
                        "them; a board publishes itself there once it has joined home Wi-Fi with mqtt_host set)")
    return out


class Builds:
    """One build per .mpy version, shared by the boards (they usually run the same firmware)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done: dict[str, dict[str, bytes]] = {}

    def __call__(self, mpy: str, cfg: dict[str, Any]) -> dict[str, bytes]:
        with self.lock:
            if mpy not in self.done:
                self.done[mpy] = sync.build_for_board(mpy, cfg)
            return self.done[mpy]


def update_one(board: Board, settings_path: Path, dry_run: bool, builds: Builds, lock: threading.Lock
               ) -> ota.Result:
    r = ota.Result()

    def say(line: str) -> None:
        with lock:
            print(f"[{board.name}] {line}", flush=True)

    if board.offline:
        r.verdict = "offline (its MQTT status): skipped"
        say(r.verdict)
        return r
    try:
        ota.deploy(board.address, settings_path, key_hex=board.key, dry_run=dry_run, say=say, builder=builds,
                   result=r)
    except UserError as e:
        text = str(e)
        if r.before == "-" and "unreachable" in text:
            r.verdict = "offline: skipped"
        else:
            r.verdict = f"failed: {text}"
        say(r.verdict)
    return r


def table(rows: list[tuple[Board, ota.Result]], dry_run: bool) -> str:
    head = ("board", "before", "after", "bytes", "time", "result")
    lines = [head]
    for b, r in rows:
        after = r.expected if dry_run else r.after
        lines.append((b.name, r.before, after, str(r.sent), f"{r.seconds:.1f} s", r.verdict.split("\n")[0]))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head) - 1)]
    out = []
    for row in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return "\n".join(out)


def deploy(boards: list[Board], settings_path: Path, dry_run: bool = False, jobs: int = JOBS
           ) -> list[tuple[Board, ota.Result]]:
    settings.load(settings_path)  # invalid settings stop here, before any board is touched
    builds = Builds()
    lock = threading.Lock()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda b: update_one(b, settings_path, dry_run, builds, lock), boards))
    return list(zip(boards, results, strict=True))


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.mqtt is not None and args.fleetfile:
        raise UserError("give a fleet file or --mqtt, not both")
    if args.mqtt is not None:
        boards = from_mqtt(*finder.broker(args.mqtt or None, args.user, args.password, Path(args.settings)))
    elif args.fleetfile:
        boards = read_fleet(Path(args.fleetfile))
    else:
        raise UserError("name a fleet file (one board a line: name address key) or --mqtt HOST")
    rows = deploy(boards, Path(args.settings), args.dry_run, args.jobs)
    print()
    print(table(rows, args.dry_run))
    if args.dry_run:  # 0: every board is on the new version already, nothing to send
        return 0 if all(r.verdict == "unchanged" for _, r in rows) else 1
    behind = [b.name for b, r in rows if not (r.ok and r.after == r.expected)]
    print(f"{len(rows) - len(behind)} of {len(rows)} boards on the new version"
          + (f"; not: {', '.join(behind)}" if behind else ""))
    return 1 if behind else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="update many boards over Wi-Fi at once")
    fsub = p.add_subparsers(dest="fleet_command", required=True, metavar="COMMAND")
    d = fsub.add_parser("deploy", help="update every board of a fleet file (or found over MQTT), a few at a time")
    d.add_argument("fleetfile", nargs="?", help="one board a line: name, address or hostname, key (or -)")
    d.add_argument("--mqtt", metavar="HOST[:PORT]", nargs="?", const="",
                   help="update every board `espblink boards` finds on this broker instead (alone: mqtt_host of the "
                   "settings file)")
    finder.login_options(d)
    d.add_argument("--dry-run", action="store_true", help="show each board's plan; send nothing")
    d.add_argument("--settings", default=str(settings.DEFAULT), help="settings file (default: settings.toml)")
    d.add_argument("--jobs", type=int, default=JOBS, help=f"boards updated at once (default {JOBS})")
    d.set_defaults(func=cmd_fleet)
