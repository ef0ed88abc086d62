"""Deploy and settings changed on the board (its settings page): the `.deployed` manifest's hashes, which
config.json is kept, what is printed, `--replace-settings`; pure pieces, a whole deploy against a board
held in a dict, and one run on the virtual NodeMCU."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest

from espblink import cli, keys, paths, settings, sync

SECRET_KEY = "board-only-key-123"  # set "on the board": must never be printed


def cfg_from(tmp_path: Path, name: str = "settings.toml") -> tuple[Path, dict]:
    p = tmp_path / name
    settings.create(p)
    return p, settings.load(p)


def board_json(cfg: dict) -> bytes:
    """config.json as the board's settings page writes it: MicroPython's json.dumps spacing, its own order."""
    c = settings.canonical(cfg)
    c["leds"] = [dict(reversed(list(led.items()))) for led in c["leds"]]
    return json.dumps(dict(reversed(list(c.items())))).encode()


def edited(cfg: dict) -> dict:
    out = json.loads(json.dumps(cfg))
    out["leds"][1]["name"] = "lamp"
    out["ap_key"] = SECRET_KEY
    out["ap_ssid"] = "kitchen"
    return out


# -- manifest --------------------------------------------------------------------------------------------
def test_manifest_keeps_hashes_and_reads_an_older_deploys_bare_names():
    assert sync.read_manifest("app.mpy\nboot.py") == {"app.mpy": None, "boot.py": None}
    record = {"config.json": "ab" * 32, "app.mpy": "cd" * 32, "old.mpy": None}
    text = sync.manifest_text(record)
    assert text.decode().splitlines()[0] == "app.mpy " + "cd" * 32  # sorted, one "name sha256" a line
    assert sync.read_manifest(text.decode()) == record
    # An older host reads the manifest as whitespace-separated names: the names are all still there.
    assert {"app.mpy", "config.json", "old.mpy"} <= set(text.decode().split())


def test_plan_records_what_it_leaves_and_writes_the_manifest_only_when_that_changes():
    local = {"app.mpy": b"a", "config.json": b"{}", "boot.py": b"b", "main.py": b"m"}
    hashes = {n: sync.sha256(d) for n, d in local.items()}
    first = sync.plan(local, {}, {})
    assert first.manifest and first.record == hashes
    again = sync.plan(local, hashes, hashes)
    assert not again.manifest and not again.write
    # After an older deploy (names only), the hashes get recorded even if no file changed.
    older = sync.plan(local, hashes, dict.fromkeys(local))
    assert older.manifest and not older.write and older.record == hashes
    # A killed deploy's manifest.tmp: rewritten when the manifest is, else stale.
    board = {**hashes, sync.MANIFEST: "x", sync.MANIFEST + ".tmp": "x"}
    assert sync.MANIFEST + ".tmp" not in sync.plan(local, board, dict.fromkeys(local)).remove
    assert sync.plan(local, board, hashes).remove == [sync.MANIFEST + ".tmp"]


def test_plan_keeps_a_file_changed_on_the_board_and_still_records_the_hosts_hash():
    local = {"app.mpy": b"new code", "config.json": b"host settings", "boot.py": b"b", "main.py": b"m"}
    last = {"app.mpy": sync.sha256(b"old code"), "config.json": sync.sha256(b"last deploy's settings"),
            "boot.py": sync.sha256(b"b"), "main.py": sync.sha256(b"m")}
    board = {**last, "config.json": sync.sha256(b"changed on the phone"), "config.json.tmp": "x"}
    p = sync.plan(local, board, last, keep=["config.json"])
    assert p.write == ["app.mpy"] and p.kept == ["config.json"]
    assert p.record["config.json"] == last["config.json"]  # the next deploy still sees the board's change
    assert p.remove == ["config.json.tmp"]  # a save the board never finished
    # Nothing to keep when the board has no config.json: it is written.
    del board["config.json"]
    assert "config.json" in sync.plan(local, board, last, keep=["config.json"]).write


@pytest.mark.parametrize("board,recorded,expect", [
    ("phone", "last", True),  # changed on the board since the last deploy, and not what this one writes
    ("last", "last", False),  # as the last deploy left it: settings.toml wins, as always
    ("now", "last", False),  # already what this deploy writes
    ("phone", None, False),  # no deploy recorded a hash (first deploy, or an older host): as before
    (None, "last", False),  # no config.json on the board
])
def test_edited_on_board(board, recorded, expect):
    h = {"phone": sync.sha256(b"phone"), "last": sync.sha256(b"last"), "now": sync.sha256(b"now"), None: None}
    files = {"config.json": h[board]} if board else {}
    previous = {"config.json": h[recorded]} if recorded else {"config.json": None}
    assert sync.edited_on_board("config.json", {"config.json": b"now"}, files, previous) is expect


def test_settings_to_keep_looks_at_what_the_settings_say_not_how_they_are_spelled(tmp_path):
    _, cfg = cfg_from(tmp_path)
    _, newer = cfg_from(tmp_path, "newer.toml")  # settings.toml changed since the last deploy
    last = settings.digest(cfg)
    phone = edited(cfg)
    assert sync.settings_to_keep(board_json(phone), newer, last) == settings.canonical(phone)
    # The same settings the last deploy wrote, re-saved by the board in its own spelling: not a change.
    assert sync.settings_to_keep(board_json(cfg), newer, last) is None
    # The board's change is already in settings.toml: nothing to keep, settings.toml's bytes are written.
    assert sync.settings_to_keep(board_json(phone), phone, last) is None
    # Not settings at all (the board runs on defaults then): overwritten.
    for junk in (b"{not json", b"\xff\xfe", b"[]", json.dumps({**phone, "ap_key": "short"}).encode()):
        assert sync.settings_to_keep(junk, newer, last) is None


# -- settings compared -----------------------------------------------------------------------------------
def test_render_is_one_spelling_and_unchanged_for_settings_written_in_order(tmp_path):
    _, cfg = cfg_from(tmp_path)
    old_render = json.dumps(settings.rules.complete(cfg), separators=(",", ":")).encode()
    assert settings.render(cfg) == old_render  # boards deployed before are not rewritten for nothing
    shuffled = json.loads(board_json(cfg))
    del shuffled["leds"][0]["active_low"], shuffled["hostname"]
    shuffled["leds"][0]["active_low"] = True
    assert settings.render(shuffled) == old_render
    no_active_low = json.loads(json.dumps(cfg))
    no_active_low["leds"][0].pop("active_low")
    assert json.loads(settings.render(no_active_low))["leds"][0]["active_low"] is False


def test_differences_name_each_key_and_never_show_a_secret(tmp_path):
    _, cfg = cfg_from(tmp_path)
    phone = edited(cfg)
    phone["wifi_ssid"], phone["wifi_key"] = "home", "home-key-456"
    phone["leds"].append({"name": "porch", "gpio": 5, "active_low": False})
    lines = settings.differences(phone, cfg, "my.toml")
    assert lines == [
        'ap_ssid: "kitchen" on the board, "" in my.toml',
        "ap_key: changed",
        'wifi_ssid: "home" on the board, "" in my.toml',
        "wifi_key: changed",
        'leds[1].name: "lamp" on the board, "red" in my.toml',
        'leds[2]: only on the board (name = "porch", gpio = 5, active_low = false)',
    ]
    text = "\n".join(lines)
    assert SECRET_KEY not in text and "home-key-456" not in text and cfg["ap_key"] not in text
    fewer = json.loads(json.dumps(cfg))
    fewer["leds"].pop()
    fewer["admin_password"] = "another-password"
    assert settings.differences(fewer, cfg) == [
        "admin_password: changed", 'leds[1]: only in settings.toml (name = "red", gpio = 16, active_low = true)']
    assert settings.differences(json.loads(board_json(cfg)), cfg) == []


def test_kept_message_says_what_differs_and_both_ways_on(tmp_path):
    path, cfg = cfg_from(tmp_path)
    text = sync.explain_kept(edited(cfg), cfg, path)
    assert "changed on the board" in text and "kept" in text
    assert "ap_key: changed" in text and 'leds[1].name: "lamp" on the board, "red" in settings.toml' in text
    assert f"copy these changes into {path}" in text
    assert f"espblink deploy --settings {path} --replace-settings" in text
    assert f"make deploy SETTINGS={path} REPLACE_SETTINGS=1" in text
    default = sync.explain_kept(edited(cfg), cfg, settings.DEFAULT)
    assert "espblink deploy --replace-settings" in default and "make deploy REPLACE_SETTINGS=1" in default
    assert SECRET_KEY not in text and cfg["ap_key"] not in text and cfg["admin_password"] not in text


def test_settings_page_line(tmp_path):
    path, cfg = cfg_from(tmp_path)
    url = "http://192.168.4.1/"
    line = sync.settings_page(url, cfg, cfg, path)
    assert line == f"settings page: http://192.168.4.1/settings (admin password: {cfg['admin_password']})"
    off = sync.settings_page(url, {**cfg, "admin_password": ""}, {**cfg, "admin_password": ""}, path)
    assert "settings page: off" in off and f"set admin_password in {path}" in off and "deploy again" in off
    board_own = sync.settings_page(url, {**cfg, "admin_password": "phone-set-pass"}, cfg, path)
    assert "phone-set-pass" not in board_own and cfg["admin_password"] not in board_own


def test_replace_settings_flag_on_the_command_line_and_in_make():
    assert cli.parser().parse_args(["deploy", "--replace-settings"]).replace_settings is True
    assert cli.parser().parse_args(["deploy"]).replace_settings is False

    def dry(*args: str) -> str:
        r = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(paths.ROOT), "deploy", "PORT=/dev/x",
                            *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert "--replace-settings" in dry("REPLACE_SETTINGS=1")
    assert "--replace-settings" not in dry() and "--replace-settings" not in dry("REPLACE_SETTINGS=0")


# -- a whole deploy against a board held in a dict -------------------------------------------------------
class DictBoard:
    """What deploy() asks of mpremote's transport, over a dict of files: the probe, the rename script."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.direct_writes: list[str] = []  # files written under their own name (not .tmp then renamed)
        self.code = b"code v1"  # app.mpy as the host builds it

    def exec(self, code: str) -> bytes:
        if code == sync.PROBE:
            return ("6.3\n" + "".join(f"{n} {sync.sha256(d)}\n" for n, d in self.files.items())).encode()
        lines = code.splitlines()
        assert lines[0] == "import os"
        for line in lines[1:]:
            call = ast.parse(line).body[0].value
            args = [ast.literal_eval(a) for a in call.args]
            if call.func.attr == "rename":
                self.files[args[1]] = self.files.pop(args[0])
            else:
                assert call.func.attr == "remove", line
                del self.files[args[0]]
        return b""

    def fs_readfile(self, name: str) -> bytes:
        return self.files[name]

    def fs_writefile(self, name: str, data: bytes, chunk_size: int = 256) -> None:
        if not name.endswith(".tmp"):
            self.direct_writes.append(name)
        self.files[name] = data

    def exit_raw_repl(self) -> None:
        pass

    def read_until(self, *a, **kw) -> None:  # noqa: ANN002, ANN003
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def dict_board(monkeypatch):
    board = DictBoard()
    monkeypatch.setattr(sync.ports, "detect", lambda port: "/dev/fake")
    monkeypatch.setattr(sync, "open_board", lambda port: board)
    monkeypatch.setattr(sync, "build_for_board", lambda mpy, cfg: {
        "app.mpy": board.code, "boot.py": b"boot", "main.py": b"main", "config.json": settings.render(cfg)})
    monkeypatch.setattr(sync, "restart_and_watch", lambda port: ("http://192.168.4.1/", "espblink-test"))
    monkeypatch.setattr(keys, "ensure_key", lambda *a: None)  # the deploy key: test_ota's part
    return board


def test_deploy_keeps_settings_changed_on_the_board_until_replace_settings(dict_board, tmp_path, capsys):
    board = dict_board
    path, cfg = cfg_from(tmp_path)
    capsys.readouterr()
    sync.deploy(None, path)  # the first deploy: settings.toml's, as always
    out = capsys.readouterr().out
    assert board.files["config.json"] == settings.render(cfg)
    assert sync.read_manifest(board.files[sync.MANIFEST].decode())["config.json"] == settings.digest(cfg)
    assert f"settings page: http://192.168.4.1/settings (admin password: {cfg['admin_password']})" in out
    assert f"(key in {path.name})" in out

    phone = edited(cfg)
    board.files["config.json"] = board_json(phone)  # saved from the settings page
    board.code = b"code v2"
    p = sync.deploy(None, path)
    out = capsys.readouterr().out
    assert p.write == ["app.mpy"] and p.kept == ["config.json"]  # code still deployed, settings kept
    assert board.files["config.json"] == board_json(phone)
    assert "1 kept (config.json)" in out and "ap_key: changed" in out and "leds[1].name" in out
    assert "--replace-settings" in out and SECRET_KEY not in out
    assert "key set on the board" in out
    assert f"(admin password: {cfg['admin_password']})" in out  # the board kept settings.toml's

    p = sync.deploy(None, path)  # said again on every deploy until one of the two ways is taken
    out = capsys.readouterr().out
    assert not p.write and p.kept == ["config.json"] and "ap_key: changed" in out

    p = sync.deploy(None, path, replace_settings=True)
    out = capsys.readouterr().out
    assert p.write == ["config.json"] and board.files["config.json"] == settings.render(cfg)
    assert "changed on the board" not in out and f"(key in {path.name})" in out
    p = sync.deploy(None, path)
    assert not p.write and not p.kept and not p.manifest
    assert board.direct_writes == []  # the manifest too goes in as .tmp, renamed with the others


def test_deploy_after_the_changes_were_copied_into_settings_toml(dict_board, tmp_path, capsys):
    board = dict_board
    path, cfg = cfg_from(tmp_path)
    sync.deploy(None, path)
    phone = edited(cfg)
    board.files["config.json"] = board_json(phone)
    text = path.read_text().replace('name = "red"', 'name = "lamp"').replace('ap_ssid = ""', 'ap_ssid = "kitchen"')
    path.write_text(text.replace(f'ap_key = "{cfg["ap_key"]}"', f'ap_key = "{SECRET_KEY}"'))
    capsys.readouterr()
    p = sync.deploy(None, path)
    out = capsys.readouterr().out
    assert p.write == ["config.json"] and not p.kept and "changed on the board" not in out
    assert board.files["config.json"] == settings.render(phone)
    assert not sync.deploy(None, path).write


def test_deploy_after_an_older_host_overwrites_and_starts_recording(dict_board, tmp_path, capsys):
    board = dict_board
    path, cfg = cfg_from(tmp_path)
    board.files = {"app.mpy": b"code v1", "boot.py": b"boot", "main.py": b"main", "config.json": b"{}",
                   sync.MANIFEST: b"app.mpy\nboot.py\nconfig.json\nmain.py"}
    p = sync.deploy(None, path)
    assert p.write == ["config.json"] and p.manifest and not p.kept
    assert sync.read_manifest(board.files[sync.MANIFEST].decode())["app.mpy"] == sync.sha256(b"code v1")


# -- on the virtual NodeMCU ------------------------------------------------------------------------------
def test_on_the_virtual_board_deploy_keeps_the_boards_settings_and_replace_settings_overwrites(tmp_path):
    from sim_support import ESPBLINK, flashed, mpremote, running_sim

    state = flashed(tmp_path / "board")  # as `make flash` leaves it (flashing is tested in test_e2e and test_sim)
    path, cfg = cfg_from(tmp_path)

    def leds(sim) -> list[str]:  # noqa: ANN001
        with urllib.request.urlopen(sim.http + "api/leds", timeout=5) as r:
            return [d["name"] for d in json.loads(r.read())["leds"]]

    with running_sim(state) as sim:
        def deploy(*extra: str) -> str:
            r = subprocess.run([*ESPBLINK, "deploy", "--port", sim.serial, "--settings", str(path), *extra],
                               capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stdout + r.stderr
            return r.stdout

        deploy()
        assert leds(sim) == ["blue", "red"]
        phone = tmp_path / "config.json"
        phone.write_bytes(board_json(edited(cfg)))
        r = mpremote(sim, "fs", "cp", str(phone), ":config.json")
        assert r.returncode == 0, r.stdout + r.stderr

        out = deploy()
        assert "1 kept (config.json)" in out and 'leds[1].name: "lamp" on the board, "red"' in out
        assert "ap_key: changed" in out and "--replace-settings" in out
        assert SECRET_KEY not in out.split("the app is running")[0]
        assert leds(sim) == ["blue", "lamp"]
        assert sim.state()["wlan"]["ap"]["key"] == SECRET_KEY
        r = mpremote(sim, "fs", "cat", ":config.json")
        assert json.loads(r.stdout) == json.loads(board_json(edited(cfg)))

        r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), "deploy", f"PORT={sim.serial}",
                            f"SETTINGS={path}", "REPLACE_SETTINGS=1"], capture_output=True, text=True, timeout=180,
                           env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "changed on the board" not in r.stdout and f"admin password: {cfg['admin_password']}" in r.stdout
        assert leds(sim) == ["blue", "red"]
        assert sim.state()["wlan"]["ap"]["key"] == cfg["ap_key"]
