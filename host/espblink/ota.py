"""`espblink deploy --ota http://<board>/` (or `--ota <hostname>`): the USB deploy's plan, sent over Wi-Fi.

The board says what it has (GET /api/ota: its id, .mpy version, every file's sha256, the last deploy's
record); the same plan as a USB deploy decides what to send, so with nothing changed nothing is sent. The
update (the files to write, the names to remove, the new record) goes in one signed request: an
HMAC-SHA256 with the board's deploy key over a sequence number (above the last one the board accepted: a
replayed request is refused), the length and the SHA-256 of the update. The board streams it to flash,
checks the SHA-256, swaps the files in by renames and restarts; the new app is on trial until it has run
30 s, and if it does not serve within 30 s of a start, or crashes 3 times in a row, the board puts the old
app back by itself.

The deploy key: 256 random bits, written to the board (`ota.key`) by the first USB deploy and kept on the
host in `deploy-keys.json` next to the settings file, under its public name (the start of its SHA-256),
which the board tells (GET /api/ota) so the host finds the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from espblink import device, keys, settings, sync
from espblink.errors import UserError

OWN = device.OTA_OWN  # on the board: the updates' own files
PROTOCOL = b"espblink-ota"
CHUNK = 1024  # what the board reads at a time (its request buffer)
TIMEOUT = 10.0  # seconds without progress before the board counts as unreachable
RESTART_S = 70.0  # how long a restarted board may take to serve again (a new app that hangs is given 30 s)
BUSY_S = 40.0  # how long a board that answers 503 (short of heap: a 1 MB board's new app on trial) is asked again


@dataclass
class BoardInfo:
    id: str
    mpy: str
    seq: int
    key: str  # the deploy key's name (key_id); "-": the board has none
    state: str
    last: str
    files: dict[str, str] = field(default_factory=dict)
    deployed: dict[str, str | None] = field(default_factory=dict)
    romfs: int = 0  # the size of its ROMFS partition; 0: none
    rom: str = "-"  # the sha256 of the image in it ("-": no valid image)
    # "app": the app takes updates; "files": its code runs from files and it has no heap for them (it tells
    # no file hashes, only the last deploy's record): it restarts into "update" mode first.
    mode: str = "app"

    @property
    def version(self) -> str:
        """The app's version: the start of the sha256 of the last deploy's record (.deployed)."""
        if sync.MANIFEST not in self.files and self.deployed:
            return hashlib.sha256(sync.manifest_text(self.deployed)).hexdigest()[:8]
        return (self.files.get(sync.MANIFEST) or "-")[:8]


@dataclass
class Result:
    before: str = "-"
    after: str = "-"
    sent: int = 0
    seconds: float = 0.0
    ok: bool = False
    verdict: str = ""
    expected: str = "-"  # the version the board should have after this deploy


# --- talking to the board ---------------------------------------------------------------------------

def board_url(target: str) -> tuple[str, int, str]:
    """(host, port, base url) from http://<board>/ or a bare hostname or address."""
    url = target if "://" in target else f"http://{target}/"
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UserError(f"--ota {target}: give the board's address as http://<address or hostname>/ or just the "
                        "hostname (the board speaks plain HTTP)")
    port = parts.port or 80
    return parts.hostname, port, f"http://{parts.hostname}{f':{port}' if port != 80 else ''}/"


def _connect(host: str, port: int, url: str) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=TIMEOUT)
    except socket.gaierror:
        raise UserError(f"board unreachable: no address for {host!r}; check the name (see your router's list) "
                        "or use its IP address") from None
    except TimeoutError:
        raise UserError(f"board unreachable at {url}: no answer in {TIMEOUT:.0f} s (is it on and on this network? "
                        "a board busy with another update answers once it is done)") from None
    except OSError as e:
        raise UserError(f"board unreachable at {url}: {e.strerror or e}; is it on and on this network?") from None


def _request(host: str, port: int, url: str, method: str, body: bytes = b"", upgrade: bool = False,
             path: str = "/api/ota") -> tuple[socket.socket, int, dict[str, str], bytes]:
    """Send one request; returns the socket, status, headers and what was read past the head."""
    s = _connect(host, port, url)
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Espblink: 1\r\nUser-Agent: espblink\r\n"
            f"Content-Length: {len(body)}\r\n")
    if upgrade:
        head += "Connection: Upgrade\r\nUpgrade: espblink-ota\r\n"
    else:
        head += "Connection: close\r\n"
    try:
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise UserError(f"the board at {url} closed the connection without answering (busy or restarting? "
                                "try again in a moment)")
            data += chunk
    except TimeoutError:
        s.close()
        raise UserError(f"the board at {url} did not answer in {TIMEOUT:.0f} s (busy with another update? try "
                        "again in a minute)") from None
    except OSError as e:
        s.close()
        raise UserError(f"the connection to {url} failed: {e}; try again") from None
    head_text, rest = data.split(b"\r\n\r\n", 1)
    lines = head_text.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return s, status, headers, rest


def _read_body(s: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    n = int(headers.get("content-length", "-1"))
    while n < 0 or len(rest) < n:
        chunk = s.recv(4096)
        if not chunk:
            break
        rest += chunk
    s.close()
    if len(rest) < n:  # it restarted, or its watchdog bit, while answering: what came is not the answer
        raise UserError(f"the board's answer was cut off ({len(rest)} of {n} bytes): restarting or busy? try again")
    return rest


def parse_info(text: str) -> BoardInfo:
    fields: dict[str, str] = {}
    files: dict[str, str] = {}
    deployed: dict[str, str | None] = {}
    for line in text.splitlines():
        word, _, value = line.partition(" ")
        if word == "file":
            name, _, digest = value.partition(" ")
            files[name] = digest
        elif word == "deployed":
            deployed.update(sync.read_manifest(value))
        else:
            fields[word] = value
    rom = (fields.get("rom") or "0 -").split()
    return BoardInfo(id=fields.get("id", "?"), mpy=fields.get("mpy", "?"), seq=int(fields.get("seq") or 0),
                     key=fields.get("key", "-"), state=fields.get("state", "idle"),
                     last=fields.get("last", "").strip(), files=files, deployed=deployed, romfs=int(rom[0]),
                     rom=rom[1] if len(rom) > 1 else "-", mode=fields.get("mode", "app"))


def explain(status: int, text: str, url: str, keys_file: Path | None = None) -> str:
    """What a refusal means, and what to do next."""
    text = text.strip()
    if status == 404:
        return (f"{url} has no update endpoint (an app from before updates over Wi-Fi, or not an espblink "
                "board): deploy once over USB (make deploy)")
    if status == 403 and "off" in text:
        return f"{url}: {text}"
    if status == 403 and "signature" in text:
        where = f" in {keys_file}" if keys_file else ""
        return (f"{url} refused the update: {text}. The key{where} is not this board's: deploy once over USB "
                "(make deploy) to read its key, or fix the key in the fleet file")
    if status == 503:
        return f"{url}: {text}. Try again in a moment, or deploy over USB"
    if status == 409:
        return f"board busy: {text}"
    if status == 507:
        return f"{url}: {text}; remove files from the board or deploy fewer pages"
    return f"{url} refused the update ({status}): {text}"


def get_info(target: str, patience: float = BUSY_S) -> BoardInfo:
    host, port, url = board_url(target)
    deadline = time.monotonic() + patience
    while True:
        s, status, headers, rest = _request(host, port, url, "GET")
        try:
            data = _read_body(s, headers, rest)
        except UserError:  # cut off: it restarted while it answered (power, its watchdog): asked again
            if time.monotonic() > deadline:
                raise
        else:
            if status != 503 or time.monotonic() > deadline:  # 503: short of heap just now (a 1 MB board's app)
                break
        time.sleep(2)
    body = data.decode(errors="replace")
    if status != 200:
        raise UserError(explain(status, body, url))
    mode = headers.get("x-espblink-mode", "").split()
    if mode and mode[0] == "files":  # the app of a board whose code runs from files: its last deploy's record
        v = int(mode[1]) if len(mode) > 1 and mode[1].isdigit() else 0  # sys.implementation._mpy
        return BoardInfo(id="?", mpy=f"{v & 0xFF}.{v >> 8 & 3}", seq=0, key="?", state="idle", last="",
                         files={sync.MANIFEST: hashlib.sha256(data).hexdigest()},
                         deployed=sync.read_manifest(body), mode="files")
    return parse_info(body)


def sign(key: bytes, board_id: str, seq: int, length: int, digest: str) -> bytes:
    """The update request's body; the HMAC covers the board's id too (its MAC address, in GET /api/ota)."""
    msg = b"%s %s %016d %d %s" % (PROTOCOL, board_id.encode(), seq, length, digest.encode())
    return b"%016d %d %s %s" % (seq, length, digest.encode(), hmac.new(key, msg, hashlib.sha256).hexdigest().encode())


def enter_update_mode(target: str, say: Callable[[str], None] = print, timeout: float = RESTART_S) -> BoardInfo:
    """Restart a board whose code runs from files into update mode; its full info once it serves there."""
    host, port, url = board_url(target)
    s, status, headers, rest = _request(host, port, url, "POST")
    text = _read_body(s, headers, rest).decode(errors="replace").strip()
    if status != 200:
        raise UserError(explain(status, text, url))
    say(f"the board: {text} (its code runs from files: it has no heap for an update beside the app)")
    deadline = time.monotonic() + timeout
    time.sleep(0.3)
    while time.monotonic() < deadline:
        try:
            new = get_info(target)
            if new.mode == "update":
                return new
        except UserError:
            pass
        time.sleep(0.3)
    raise UserError(f"the board did not come back in update mode within {timeout:.0f} s; it goes back to its app "
                    "by itself within a minute: try again then, or deploy over USB")


def leave_update_mode(target: str) -> None:
    """Any update request that ends restarts a board in update mode into its app: an empty one does."""
    host, port, url = board_url(target)
    s, _, headers, rest = _request(host, port, url, "POST")
    _read_body(s, headers, rest)


def next_seq(board_seq: int) -> int:
    """Above the board's last one; microseconds since 1970 otherwise, so two hosts rarely collide."""
    return max(time.time_ns() // 1000, board_seq + 1)


def pack(local: dict[str, bytes], p: sync.Plan, image: bytes = b"") -> bytes:
    """The update: the ROMFS image (if it changes), the files the plan writes (boot.py and main.py last), the
    new record, then removals."""
    out = bytearray(b"rom %d\n" % len(image) + image if image else b"")
    for name in p.write:
        out += b"put %s %d\n" % (name.encode(), len(local[name])) + local[name]
    if p.manifest:
        record = sync.manifest_text(p.record)
        out += b"put %s %d\n" % (sync.MANIFEST.encode(), len(record)) + record
    for name in p.remove:
        out += b"del %s\n" % name.encode()
    return bytes(out)


def send_update(target: str, key: bytes, board_id: str, seq: int, update: bytes,
                progress: Callable[[int, int, float], None] | None = None) -> str:
    """POST the signed update and stream it; the board's verdict line ("OK ..."), or UserError."""
    host, port, url = board_url(target)
    digest = hashlib.sha256(update).hexdigest()
    s, status, headers, rest = _request(host, port, url, "POST", sign(key, board_id, seq, len(update), digest),
                                         upgrade=True)
    if status != 101:
        raise UserError(explain(status, _read_body(s, headers, rest).decode(errors="replace"), url))
    start = time.monotonic()
    try:
        for i in range(0, len(update), CHUNK):
            s.sendall(update[i:i + CHUNK])
            if progress:
                progress(min(i + CHUNK, len(update)), len(update), time.monotonic() - start)
        verdict = b""
        while b"\n" not in verdict:
            chunk = s.recv(256)
            if not chunk:
                break
            verdict += chunk
    except (TimeoutError, OSError) as e:
        raise UserError(f"the transfer to {url} was cut ({e}): the board keeps its old app; try again") from None
    finally:
        s.close()
    line = verdict.decode(errors="replace").strip()
    if line.startswith("OK"):
        return line[2:].strip()
    if line.startswith("ERR"):
        words = line.split(" ", 2)
        code = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
        raise UserError(explain(code, words[-1], url))
    raise UserError(f"the board at {url} gave no verdict (cut off?): it keeps its old app; try again")


def _rolled_back(target: str) -> str | None:
    """From /api/status: why the last update was undone ("" if it was not); None while the app does not serve."""
    host, port, url = board_url(target)
    try:
        s, status, headers, rest = _request(host, port, url, "GET", path="/api/status")
        data = json.loads(_read_body(s, headers, rest))
    except (UserError, ValueError):
        return None
    return (data.get("update_rolled_back") or "") if status == 200 else None


def wait_back(target: str, timeout: float = RESTART_S, files: bool = False) -> BoardInfo:
    """After the board restarted: its info once it serves again with the new app on trial, or rolled back.
    files: its code runs from files, and while its new app is on trial it may have no heap to tell its
    files; that it serves and reports no rollback is what is asked then (ota.py checked the SHA-256)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.3)
    last_error = ""
    while files and time.monotonic() < deadline:
        why = _rolled_back(target)
        if why is not None:
            return BoardInfo(id="?", mpy="?", seq=0, key="?", state="trial", last=why, mode="files")
        time.sleep(0.3)
    gone = False  # it stopped answering once: it restarted
    state = ""
    while time.monotonic() < deadline:
        try:
            info = get_info(target)
        except UserError as e:
            last_error, gone = str(e), True
            time.sleep(0.3)
            continue
        state = info.state
        if state == "switch" and gone:
            break
        if info.mode == "update" or state in ("trial 0", "switch"):
            pass  # not restarted yet: the app that took the update answers until it restarts, 300 ms later
        elif state.startswith("trial") or info.last or state == "idle":  # (the update cleared "last")
            return info
        time.sleep(0.3)
    if state == "switch":
        raise UserError("the board restarted without putting the update in place: its boot.py has no update "
                        "step (an app from before updates over Wi-Fi could carry a new ROMFS image); deploy "
                        "once over USB (make deploy), then over Wi-Fi")
    raise UserError(f"the board did not serve again within {timeout:.0f} s of restarting ({last_error}); if it "
                    "does not come back, power-cycle it: a new app that keeps failing is replaced by the old one "
                    "after 3 starts")


# --- the deploy ---------------------------------------------------------------------------------------

def deploy(target: str, settings_path: Path = settings.DEFAULT, replace_settings: bool = False,
           key_hex: str | None = None, dry_run: bool = False, say: Callable[[str], None] = print,
           builder: Callable[[str, dict[str, Any]], dict[str, bytes]] | None = None,
           result: Result | None = None) -> Result:
    """One board over Wi-Fi. Raises UserError with what to do next when it cannot be done; `result` (when
    given) holds what was known by then."""
    cfg = settings.load(settings_path)
    _, _, url = board_url(target)
    t0 = time.monotonic()
    r = result or Result()
    info = get_info(target)
    r.before = info.version
    if info.last:
        say(f"the board rolled back its last update: {info.last}")
    keys_file = keys.keys_path(settings_path)

    def find_key(info: BoardInfo) -> str:
        if info.key == "-":
            raise UserError(f"{url}: updates over Wi-Fi are off on this board (no deploy key): deploy once over USB "
                            "(make deploy) to set one")
        found = key_hex or keys.load_keys(keys_file).get(info.key)
        if not found or not re.fullmatch(r"[0-9a-fA-F]{64}", found):
            raise UserError(f"no deploy key for board {info.id} in {keys_file} (the board's is named {info.key}): "
                            "deploy once over USB (make deploy) from this computer to read it")
        return found

    if info.mode != "files":  # (one that is tells its key in update mode)
        key_hex = find_key(info)
    local = (builder or sync.build_for_board)(info.mpy, cfg)
    image = b""
    if info.romfs:  # as a USB deploy: the modules and pages in one image, the files as the known-good copy
        files, image = sync.romfs_layout(local)
        if len(image) > info.romfs:
            say(f"the code, {len(image)} bytes as a ROMFS image, does not fit the board's {info.romfs // 1024} KB "
                "ROMFS partition: sent as files instead")
            image = b""
        else:
            local = files
    new_image = image if image and hashlib.sha256(image).hexdigest() != info.rom else b""

    mode = info.mode
    if mode == "files":
        # Its app tells only the hash of the last deploy's record: the same as this deploy's, nothing changed.
        record = sync.manifest_text({n: sync.sha256(data) for n, data in local.items()})
        if hashlib.sha256(record).hexdigest() == info.files.get(sync.MANIFEST):
            r.after, r.ok, r.verdict = info.version, True, "unchanged"
            r.expected = info.version
            r.seconds = time.monotonic() - t0
            say(f"deploy to {url} over Wi-Fi: {len(local)} unchanged; code as files\nnothing changed: nothing sent")
            return r
        if dry_run:
            r.verdict, r.ok = "would restart into update mode and send what changed", True
            r.seconds = time.monotonic() - t0
            return r
        say("restarting the board into update mode ...")
        info = enter_update_mode(target, say)
        if info.last:
            say(f"the board rolled back its last update: {info.last}")
        try:
            key_hex = find_key(info)
        except UserError:
            leave_update_mode(target)
            raise
    # The plan from the board's full info (in update mode, for a board whose code runs from files).
    keep: list[str] = []
    if not replace_settings and sync.edited_on_board(sync.CONFIG, local, info.files, info.deployed):
        keep = [sync.CONFIG]
        say(f"settings: {sync.CONFIG} was changed on the board since the last deploy: kept (a USB deploy lists "
            "the differences; --replace-settings overwrites it)")
    on_board = {n: h for n, h in info.files.items() if n not in OWN}  # the update's own files are not the app's
    p = sync.plan(local, on_board, info.deployed, keep=keep)
    update = pack(local, p, new_image) if (p.write or p.remove or p.manifest or new_image) else b""
    r.expected = hashlib.sha256(sync.manifest_text(p.record)).hexdigest()[:8]
    say(f"deploy to {url} over Wi-Fi: {len(p.write)} to write ({p.bytes} bytes), {len(p.remove)} to remove, "
        f"{len(p.unchanged)} unchanged" + (f", {len(p.kept)} kept ({', '.join(p.kept)})" if p.kept else "")
        + (f"; code in ROMFS ({len(image)} bytes of {info.romfs // 1024} KB{', new' if new_image else ', unchanged'})"
           if image else "; code as files"))
    if not update:
        if mode == "files":
            leave_update_mode(target)
        r.after, r.ok, r.verdict = info.version, True, "unchanged"
        r.seconds = time.monotonic() - t0
        say("nothing changed: nothing sent" + ("; the board restarts into its app" if mode == "files" else ""))
        return r
    if dry_run:
        r.verdict, r.ok = f"would send {len(update)} bytes", True
        r.seconds = time.monotonic() - t0
        return r
    shown = [0]

    def progress(done: int, total: int, elapsed: float) -> None:
        if done < total and done - shown[0] >= total // 4:
            shown[0] = done
            say(f"  sent {done} of {total} bytes ({done * 100 // total}%)")

    t1 = time.monotonic()
    verdict = send_update(target, bytes.fromhex(key_hex), info.id, next_seq(info.seq), update, progress)
    took = time.monotonic() - t1  # until the board's verdict: all of it on its flash and checked
    r.sent = len(update)
    r.seconds = time.monotonic() - t0
    say(f"  sent {len(update)} bytes in {took:.1f} s ({len(update) / max(took, 1e-3) / 1024:.0f} KB/s)")
    say(f"the board: {verdict}")
    after = wait_back(target, files=mode == "files")
    r.seconds = time.monotonic() - t0
    r.after = r.expected if mode == "files" and not after.last else after.version
    if after.last:
        r.verdict = f"rolled back: {after.last}"
        raise UserError(f"the new app failed on the board and it went back to the previous one by itself: "
                        f"{after.last}")
    r.ok = r.after == r.expected
    r.verdict = "updated (on trial: kept once it has run 30 s)" if r.ok else "the board is not on the new version"
    say(f"the app is running at {url}: {r.verdict}")
    return r


def cmd_deploy(args: Any) -> int:
    r = deploy(args.ota, Path(args.settings), replace_settings=args.replace_settings)
    return 0 if r.ok else 1
