"""`espblink deploy`: settings checked, code built for the board's firmware, only changed files written
(each under a temporary name, then renamed; boot.py and main.py last), stale files removed, then the
board restarted and its console read until the app says it serves.

On a board whose firmware has a ROMFS partition (the FLASH_2M_ROMFS build) the modules and pages also go
there as one image, built with mpremote's own writer, and run from flash without being copied to the heap.
The files stay on littlefs as the known-good copy, the modules in lib/: the board's sys.path is '', .frozen,
/rom, /rom/lib, /lib, /, so a module in the root would be imported instead of the image's, and one in /lib
only when the partition holds no valid image. The image is written only when the hash of the partition,
computed on the board, differs: the old image erased after the new files are on the board and before they
are swapped in, the new one written after the swap, its first chunk (the header) last. A deploy killed
anywhere leaves the old files with the old image or none, or the new files with the new image or none;
with none, main.py says so and the copy on littlefs runs.

The board's config.json is settings.toml's, except after someone changed it on the board (its settings
page): the `.deployed` manifest records the hash of every file the last deploy wrote, so a config.json that
is neither that one nor the one this deploy would write is kept, and its differences are shown, until
`--replace-settings`."""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import io
import re
import tempfile
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial
from mpremote.romfs import VfsRomWriter
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from espblink import build, device, keys, paths, ports, qr, settings
from espblink.errors import UserError

MANIFEST = ".deployed"  # on the board: the files the last deploy wrote, "name sha256" a line
CONFIG = device.CONFIG  # the settings: kept when changed on the board since the last deploy
LAST = ("boot.py", "main.py")  # the files the board runs by name: written last
RESET_ON_DEPLOY = (device.CRASHES, device.OTA_STATE)  # the boot-loop guard's count and an update's trial start again
IN_ROMFS = (".mpy", ".gz")  # what the ROMFS image holds: the compiled modules and the gzip pages
LIB = "lib/"  # where the known-good copy of the modules is kept on a ROMFS board's littlefs
CODE_ID = "code.id"  # in the image and in lib/: which code each holds
ROMFS_CHUNK = 4096  # bytes of the image per exec: one flash sector
# The board's .mpy version: "6.3" from 1.20 on; before that bits 8-9 of _mpy were feature flags, not a
# sub-version, and the version is the major number alone ("6" for 1.19, "5" for 1.12 to 1.18). Then the
# size of its ROMFS partition (0: none), then every file in the root and in lib/ with its SHA-256.
PROBE = """\
import os, sys, hashlib, binascii
try:
    import vfs
    _r = vfs.rom_ioctl(2, 0) if hasattr(vfs, 'rom_ioctl') and vfs.rom_ioctl(1) > 0 else 0
except ImportError:
    _r = 0
def _h(n):
    d = hashlib.sha256()
    b = bytearray(256)
    with open(n, 'rb') as f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            d.update(memoryview(b)[:k])
    return binascii.hexlify(d.digest()).decode()
_v = sys.implementation._mpy
print('%d.%d' % (_v & 0xff, _v >> 8 & 3) if sys.implementation.version >= (1, 20) else _v & 0xff,
      0 if isinstance(_r, int) else len(_r))
for _p in ('', 'lib/'):
    try:
        _l = os.listdir(_p[:-1]) if _p else os.listdir()
    except OSError:
        _l = ()
    for _n in _l:
        if os.stat(_p + _n)[0] & 0x8000:
            print(_p + _n, _h(_p + _n))
"""
ROMFS_HASH = """\
import vfs, hashlib, binascii
print(binascii.hexlify(hashlib.sha256(vfs.rom_ioctl(2, 0)[:%d]).digest()).decode())
"""
# The mounted image is let go before its flash is erased (mpremote's romfs deploy does the same).
ROMFS_ERASE = """\
import vfs
from binascii import a2b_base64
try:
    vfs.umount('/rom')
except OSError:
    pass
_e = vfs.rom_ioctl(3, 0, %d)
if _e < 0:
    raise OSError(-_e)
"""
ROMFS_WRITE = """\
_e = vfs.rom_ioctl(4, 0, %d, a2b_base64(%r))
if _e:
    raise OSError(-_e)
"""


Manifest = Mapping[str, str | None]  # file name: sha256 as written (None: an older deploy recorded no hash)


def read_manifest(text: str) -> dict[str, str | None]:
    """The manifest's "name sha256" lines; a deploy before hashes were kept wrote bare names."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            out[words[0]] = words[1] if len(words) > 1 else None
    return out


def manifest_text(record: Manifest) -> bytes:
    return "".join(f"{n} {h}\n" if h else f"{n}\n" for n, h in sorted(record.items())).encode()


@dataclass
class Plan:
    write: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # changed on the board: left as they are
    bytes: int = 0
    record: dict[str, str | None] = field(default_factory=dict)  # the manifest this deploy leaves
    manifest: bool = False  # the record differs from the board's manifest: write it


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan(local: dict[str, bytes], board: dict[str, str], previous: Manifest, keep: Collection[str] = ()) -> Plan:
    p = Plan()
    modules = {n.rsplit("/", 1)[-1][:-4] for n in local if n.endswith(".mpy")}
    for name in sorted(local, key=lambda n: (n in LAST, LAST.index(n) if n in LAST else 0, n)):
        digest: str | None = sha256(local[name])
        if name in keep and name in board:
            p.kept.append(name)
            digest = previous.get(name)  # still the file the host last wrote: the board's change stays known
        elif board.get(name) == digest:
            p.unchanged.append(name)
        else:
            p.write.append(name)
            p.bytes += len(local[name])
        p.record[name] = digest
    p.manifest = p.record != dict(previous)
    written = [*p.write, *([MANIFEST] if p.manifest else [])]
    for name in board:
        # Another foo.py or foo.mpy than the one deployed: imported instead of it (foo.py before foo.mpy, the
        # root before /rom), or a copy left in another folder by an earlier layout.
        base = name.rsplit("/", 1)[-1]
        shadowing = base.endswith((".py", ".mpy")) and base.rsplit(".", 1)[0] in modules
        # A killed deploy's foo.tmp: rewritten and renamed by this one if foo is written, else stale.
        stale = name.endswith(".tmp") and name[:-4] not in written
        if name not in local and (name in previous or shadowing or stale or name in RESET_ON_DEPLOY):
            p.remove.append(name)
    return p


def edited_on_board(name: str, local: dict[str, bytes], board: dict[str, str], previous: Manifest) -> bool:
    """The board's `name` is neither the file the last deploy wrote nor the one this deploy would write:
    it was changed on the board. Unknown (False) when no deploy recorded its hash, or it is not there."""
    recorded, now = previous.get(name), board.get(name)
    return recorded is not None and now is not None and now not in (recorded, sha256(local[name]))


def settings_to_keep(data: bytes, cfg: dict[str, Any], recorded: str | None) -> dict[str, Any] | None:
    """The board's own settings, from its config.json (data), when a deploy must not overwrite them: valid,
    and different from both the settings the last deploy wrote (sha256 `recorded`) and cfg, not merely
    spelled differently (the board writes its JSON its own way). None: nothing to keep."""
    board_cfg = settings.parse_board(data)
    if board_cfg is None or settings.digest(board_cfg) == recorded:
        return None
    return None if settings.canonical(board_cfg) == settings.canonical(cfg) else board_cfg


def explain_kept(board_cfg: dict[str, Any], cfg: dict[str, Any], settings_path: Path) -> str:
    """Why the board's settings stay, what differs from settings.toml, and the two ways on."""
    name = settings_path.name
    other = other_make = ""
    if settings_path.resolve() != settings.DEFAULT.resolve():
        other, other_make = f" --settings {settings_path}", f" SETTINGS={settings_path}"
    lines = [f"settings: {CONFIG} was changed on the board (its settings page) since the last deploy: kept, not "
             "overwritten.", f"It differs from {name} in:"]
    lines += [f"  {d}" for d in settings.differences(board_cfg, cfg, name)]
    lines += [f"To keep the board's settings, copy these changes into {settings_path} (the next deploy then finds "
              "them equal);",
              f"to replace them with {name} instead: espblink deploy{other} --replace-settings "
              f"(or make deploy{other_make} REPLACE_SETTINGS=1)."]
    return "\n".join(lines)


def open_board(port: str) -> SerialTransport:
    ports.check_free(port)
    try:
        t = SerialTransport(port, baudrate=115200)
    except (TransportError, serial.SerialException, OSError) as e:
        raise UserError(ports.explain(port, e)) from None
    for _ in range(3):  # a board that is rebooting (a crashing app) answers a moment later
        read = io.StringIO()
        try:
            with contextlib.redirect_stdout(read):  # mpremote prints what it read when it fails
                t.enter_raw_repl(soft_reset=True)
            return t
        except TransportError:
            if read.getvalue().strip() in ("", "b''"):
                break  # not a byte in 10 s (an erased chip, no firmware): asking again will not help
            time.sleep(1.5)
    t.close()
    raise UserError(f"no MicroPython answers on {port}: flash it first with `make flash PORT={port}` "
                    "(or press RST and try again)")


@dataclass
class BoardInfo:
    mpy: str  # the .mpy version its firmware loads
    romfs: int  # the size of its ROMFS partition in bytes; 0: none
    files: dict[str, str]  # name: sha256, the root's and lib/'s


def parse_probe(text: str) -> BoardInfo:
    lines = text.splitlines()
    head = lines[0].split()
    rest = " ".join(lines[1:]).split()
    return BoardInfo(head[0], int(head[1]) if len(head) > 1 else 0, dict(zip(rest[0::2], rest[1::2], strict=True)))


def probe(t: SerialTransport) -> tuple[BoardInfo, dict[str, str | None]]:
    info = parse_probe(t.exec(PROBE).decode())
    previous = {}
    if MANIFEST in info.files:
        previous = read_manifest(t.fs_readfile(MANIFEST).decode(errors="replace"))
    return info, previous


def romfs_layout(local: dict[str, bytes]) -> tuple[dict[str, bytes], bytes]:
    """For a board whose code goes to ROMFS: the files for littlefs (the same, the modules in lib/) and
    the image of the modules and pages, made with mpremote's writer (the bytes `mpremote romfs build`
    makes from a folder holding them). Both carry code.id, naming the code: main.py runs the image's
    only when it names the same code as lib/ (a deploy writes the files first, the image after)."""
    code = {n: data for n, data in local.items() if n.endswith(IN_ROMFS)}
    code[CODE_ID] = sha256("".join(f"{n} {sha256(d)}\n" for n, d in sorted(code.items())).encode())[:16].encode()
    w = VfsRomWriter()
    for name in sorted(code):
        w.mkfile(name, code[name])
    files = {(LIB + n if n.endswith(".mpy") else n): data for n, data in local.items()}
    files[LIB + CODE_ID] = code[CODE_ID]
    return files, w.finalise()


def romfs_holds(t: SerialTransport, image: bytes) -> bool:
    """Whether the board's partition holds image: a hash computed on the board, not the bytes over serial."""
    return t.exec(ROMFS_HASH % len(image)).decode().strip() == sha256(image)


def write_romfs(t: SerialTransport, image: bytes) -> None:
    """The image into the erased partition from its second chunk on, the first (the header) last: until
    then the partition holds no valid image."""
    offsets = list(range(0, len(image), ROMFS_CHUNK))
    for i, at in enumerate(offsets[1:] + offsets[:1], 1):
        chunk = image[at:at + ROMFS_CHUNK]
        chunk += b"\xff" * (-len(chunk) % 4)  # the flash is written in 4-byte words; 0xFF leaves bits as erased
        print(f"  ROMFS image [{i}/{len(offsets)}] ({len(chunk)} bytes at {at})")
        t.exec(ROMFS_WRITE % (at, binascii.b2a_base64(chunk, newline=False)))
    if not romfs_holds(t, image):
        raise UserError("the board's ROMFS partition does not hold the image just written (a flash fault?); "
                        "run the deploy again; until then the board runs the copy of the app on its filesystem")


def board_settings(t: SerialTransport, local: dict[str, bytes], board: dict[str, str], previous: Manifest,
                   cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The board's settings when they were changed on the board and must be kept (read only then)."""
    if not edited_on_board(CONFIG, local, board, previous):
        return None
    data = t.fs_readfile(CONFIG)
    if settings.parse_board(data) is None:
        print(f"settings: the board's {CONFIG} is not valid settings (the board runs on defaults): replaced")
    return settings_to_keep(data, cfg, previous.get(CONFIG))


def write(t: SerialTransport, local: dict[str, bytes], p: Plan, romfs_erase: int = 0) -> None:
    """The plan's files written under temporary names, then swapped in by one script. romfs_erase: the
    bytes of the ROMFS partition to erase before the swap, so its old image never runs with new files."""
    folders = sorted({n.rsplit("/", 1)[0] for n in p.write if "/" in n})
    if folders:
        t.exec("import os\n" + "".join(f"try:\n os.mkdir({d!r})\nexcept OSError:\n pass\n" for d in folders))
    for i, name in enumerate(p.write, 1):
        print(f"  [{i}/{len(p.write)}] {name} ({len(local[name])} bytes)")
        t.fs_writefile(name + ".tmp", local[name], chunk_size=1024)
    if p.manifest:
        t.fs_writefile(MANIFEST + ".tmp", manifest_text(p.record))
    if romfs_erase:
        t.exec(ROMFS_ERASE % romfs_erase)
    # Every new file is on the board: now swap them in, the files the board runs by name last, and the
    # manifest in the same script, so it never records a config.json the board does not have.
    script = ["import os"]
    script += [f"os.rename({n + '.tmp'!r}, {n!r})" for n in p.write]
    script += [f"os.remove({n!r})" for n in p.remove]
    if p.manifest:
        script.append(f"os.rename({MANIFEST + '.tmp'!r}, {MANIFEST!r})")
    t.exec("\n".join(script))


def leave_raw_repl(t: SerialTransport) -> None:
    """Back to the friendly REPL (where a soft reset runs main.py), its banner read so none is left over."""
    t.exit_raw_repl()
    with contextlib.suppress(TransportError, serial.SerialException, OSError):
        t.read_until(1, b">>> ", timeout=2)


APP_SERVES = re.compile(r"espblink: serving (\S+) on Wi-Fi (.+?)\r?\n")
APP_FAILED = ("Traceback", "crashed", "safe mode")
AT_PROMPT = 'Type "help()"'  # MicroPython's banner: main.py has ended, nothing is serving
NO_RESET_AFTER = 3.0  # seconds of silence after the RTS pulse: no auto-reset circuit reached the chip


def restart_and_watch(port: str, timeout: float = 30) -> tuple[str, str]:
    """Restart the board and read its console until the app says it serves; (url, ssid).

    A hard reset through RTS (as esptool does after flashing) starts the app as power-on does. Where RTS
    reaches no reset circuit (a bare terminal, an adapter without it) the board stays silent, and a soft
    reset from its REPL (Ctrl-D, which runs boot.py and main.py) restarts it instead."""
    s = serial.serial_for_url(port, baudrate=115200, timeout=0.2)
    try:
        s.reset_input_buffer()
        with contextlib.suppress(OSError, serial.SerialException):  # a pty has no modem lines
            s.dtr = False
            s.rts = True
            time.sleep(0.1)
            s.rts = False
        out = b""
        start = time.monotonic()
        soft_reset = False
        while time.monotonic() < start + timeout:
            out += s.read(4096)
            if not out and not soft_reset and time.monotonic() > start + NO_RESET_AFTER:
                s.write(b"\r\x03")  # stop the app if it runs, to reach the friendly REPL...
                time.sleep(1)
                s.read(s.in_waiting or 1)  # ...whose banner is not the restarted board's
                s.reset_input_buffer()
                s.write(b"\x04")  # ...where Ctrl-D soft-resets: boot.py, then main.py
                soft_reset = True
            text = out.decode(errors="replace")
            m = APP_SERVES.search(text)
            if m:
                for w in re.findall(r"espblink: warning: (.*)", text):
                    print(f"board warning: {w.strip()}")
                return m.group(1), m.group(2)
            failed = any(w in text for w in APP_FAILED)
            if failed or AT_PROMPT in text:
                time.sleep(0.5)
                said = (out + s.read(4096)).decode(errors="replace").strip()
                if failed:
                    raise UserError(f"the app did not start on the board; its console said:\n{said}")
                raise UserError("the board restarted to its REPL prompt without starting the app (is main.py "
                                f"missing?); run `make deploy` again. Its console said:\n{said}")
        raise UserError("the board did not say it serves within %ds after reset; its console said:\n%s"
                        % (timeout, out.decode(errors="replace").strip()))
    finally:
        s.close()


def build_for_board(mpy: str, cfg: dict, src: Path = paths.DEVICE) -> dict[str, bytes]:
    """Every file the board gets, by name: the build of src for its .mpy version (in a folder of its own:
    another build may be replacing build/device meanwhile), and config.json from the settings."""
    cmd = build.compiler_for(mpy)  # no matching compiler: stops here, before anything is copied
    with tempfile.TemporaryDirectory(prefix="espblink-deploy-") as tmp:
        out = build.build(src, out=Path(tmp) / "device", cmd=cmd)
        local = {f.name: f.read_bytes() for f in sorted(out.iterdir())}
    local[CONFIG] = settings.render(cfg)
    return local


def settings_page(url: str, running: dict[str, Any], cfg: dict[str, Any], settings_path: Path) -> str:
    """The line about the board's settings page: its address and admin password, or that it is off."""
    password = running.get("admin_password", "")
    if not password:
        return (f"settings page: off (admin_password is empty); to turn it on, set admin_password in "
                f"{settings_path} (8 to 64 characters) and deploy again")
    page = url.rstrip("/") + "/settings"
    if password != cfg.get("admin_password"):
        return f"settings page: {page} (admin password: the board's own, not the one in {settings_path.name})"
    return f"settings page: {page} (admin password: {password})"


def deploy(port: str | None, settings_path: Path = settings.DEFAULT, replace_settings: bool = False,
           builder: Callable[[str, dict[str, Any]], dict[str, bytes]] | None = None) -> Plan:
    """builder(mpy, cfg) makes the files (default build_for_board: this checkout's device/)."""
    cfg = settings.load(settings_path)  # invalid settings stop here, before the board is touched
    port = ports.detect(port)
    t = open_board(port)
    try:
        info, previous = probe(t)
        board_files = info.files
        local = (builder or build_for_board)(info.mpy, cfg)
        image = b""
        erase = 0  # bytes of the partition to erase before the files are swapped in
        if info.romfs:
            files, image = romfs_layout(local)
            if len(image) > info.romfs:
                print(f"the code, {len(image)} bytes as a ROMFS image, does not fit the board's "
                      f"{info.romfs // 1024} KB ROMFS partition: deployed as files instead")
                image = b""
                erase = 1  # an earlier image, valid, would still be imported: its header sector erased
            else:
                local = files
        board_cfg = None if replace_settings else board_settings(t, local, board_files, previous, cfg)
        p = plan(local, board_files, previous, keep=[CONFIG] if board_cfg else [])
        print(f"deploy to {port}: {len(p.write)} to write ({p.bytes} bytes), {len(p.remove)} to remove, "
              f"{len(p.unchanged)} unchanged" + (f", {len(p.kept)} kept ({', '.join(p.kept)})" if p.kept else ""))
        if board_cfg:
            print(explain_kept(board_cfg, cfg, settings_path))
        # Files and image switch together: the old image is erased before the new files are swapped in, the
        # new one written after; killed in between, the board runs the files (main.py says why).
        new_image = bool(image) and not romfs_holds(t, image)
        if new_image:
            erase = len(image)
        if p.write or p.remove or p.manifest:
            write(t, local, p, romfs_erase=erase)
        elif erase:
            t.exec(ROMFS_ERASE % erase)
        if new_image:
            write_romfs(t, image)
        if image:
            print(f"code in ROMFS ({len(image)} bytes of {info.romfs // 1024} KB)"
                  + ("" if new_image else ": the board's partition holds this image already, not written"))
        else:
            print("code as files")

        keys.ensure_key(t, board_files, settings_path)  # the deploy key for updates over Wi-Fi, on the board and here
        leave_raw_repl(t)
    except TransportExecError as e:
        raise UserError(f"the board refused a file operation: {e.error_output.strip()}") from None
    finally:
        t.close()
    url, ssid = restart_and_watch(port)
    running = board_cfg or cfg  # the settings the board runs with
    key = running.get("ap_key")
    where = f"in {settings_path.name}"
    if key != cfg.get("ap_key"):
        where = f"set on the board, not the one {where}"
    print(f"the app is running. Join Wi-Fi {ssid!r} (key {where}) and open {url}")
    if key:
        print(qr.terminal(ssid, key))
    print(settings_page(url, running, cfg, settings_path))
    if board_cfg:
        print(f"settings: the board runs on its own settings, not {settings_path.name}'s (see above)")
    return p
