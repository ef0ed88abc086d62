"""The host pieces on their own: settings, firmware files and downloads, ports, the sync plan, QR codes."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
from pathlib import Path

import pytest
from host_support import serving

from espblink import build, cli, firmware, image, ota, paths, ports, qr, rules, settings, sync
from espblink.errors import UserError


# -- settings --------------------------------------------------------------------------------------------
def test_first_settings_file_gets_random_secrets(tmp_path, capsys):
    p = tmp_path / "settings.toml"
    cfg = settings.load(p)
    cfg2 = settings.load(tmp_path / "other.toml")
    assert p.exists() and "created" in capsys.readouterr().out
    assert 8 <= len(cfg["ap_key"]) <= 63 and cfg["ap_key"] != cfg2["ap_key"]
    assert len(cfg["admin_password"]) >= 8
    board = json.loads(settings.render(cfg))
    assert board["leds"] == [{"name": "blue", "gpio": 2, "active_low": True},
                             {"name": "red", "gpio": 16, "active_low": True}]
    assert set(board) == set(rules.KEYS)  # every setting the board knows, from the shared rules
    assert board["restore"] == "off" and board["mqtt_host"] == ""  # off unless asked for


@pytest.mark.parametrize("edit,message", [
    (("ap_key = ", "ap_key = 'short' #"), "ap_key: must be 8 to 63"),
    (("ap_ssid = \"\"", "ap_ssid = \"" + "x" * 33 + "\""), "ap_ssid: must be at most 32 bytes"),
    (("gpio = 16", "gpio = 9"), "leds[1].gpio: GPIO9 drives the flash chip"),
    (("gpio = 16", "gpio = 17"), "leds[1].gpio: the ESP8266 has no GPIO17"),
    (("gpio = 16", "gpio = 1"), "leds[1].gpio: GPIO1 is the USB serial link"),
    (("name = \"red\"", "name = \"blue\""), "leds[1].name: name 'blue' is used by another LED"),
    (("hostname = \"\"", "hostname = \"\"\ncolour = 1"), "colour: unknown key"),
    (("wifi_key = \"\"", "wifi_key = \"abc\""), "wifi_key: must be empty or a WPA2 key"),
])
def test_bad_settings_name_the_key(tmp_path, edit, message):
    p = tmp_path / "settings.toml"
    settings.create(p)
    p.write_text(p.read_text().replace(*edit, 1))
    with pytest.raises(UserError) as e:
        settings.load(p)
    assert message in str(e.value) and "nothing was sent to the board" in str(e.value)


def test_settings_that_are_not_toml(tmp_path):
    p = tmp_path / "settings.toml"
    p.write_text("ap_key = \n")
    with pytest.raises(UserError, match="not valid TOML"):
        settings.load(p)


# -- firmware --------------------------------------------------------------------------------------------
@pytest.fixture
def fw_root(tmp_path):
    root = tmp_path / "firmware"
    root.mkdir()
    shutil.copy(paths.FIRMWARE / "manifest.json", root)
    return root


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    with serving(served) as url:
        yield served, url


ROMFS_FW = "ESP8266_GENERIC-FLASH_2M_ROMFS-20251209-v1.27.0.bin"


def test_variant_follows_the_flash_size(fw_root):
    fw = firmware.Firmware(fw_root)
    # 2 MB and up: the build with the ROMFS partition the app runs from; 1 MB: the app as files.
    assert fw.variant("4MB").file == ROMFS_FW
    assert fw.variant("2MB").file == ROMFS_FW
    assert fw.variant(16 << 20).file == ROMFS_FW
    assert fw.variant("1MB").file == "ESP8266_GENERIC-FLASH_1M-20251209-v1.27.0.bin"
    # The 512 KB build has no filesystem: refused, with the reason.
    with pytest.raises(UserError, match="512KB flash chip: .*no filesystem.*1 MB of flash or more"):
        fw.variant("512KB")
    with pytest.raises(UserError, match="fits a 256KB"):
        fw.variant("256KB")


def test_download_is_checked_pinned_and_reused(fw_root, server, capsys):
    www, url = server
    good = image.make()
    (www / ROMFS_FW).write_bytes(good)
    fw = firmware.Firmware(fw_root, base_url=url)
    path = fw.fetch(fw.variant("4MB"))
    assert path.read_bytes() == good
    assert "downloading" in capsys.readouterr().err
    lock = json.loads((fw_root / "lock.json").read_text())
    assert lock[ROMFS_FW] == hashlib.sha256(good).hexdigest()
    assert not list((fw_root / "downloads").glob("*.part*"))
    # Later flashes check the pinned sum: a file changed on disk is refused.
    path.write_bytes(image.make(seed=1))
    with pytest.raises(UserError, match="changed since its SHA-256 was pinned"):
        fw.fetch(fw.variant("4MB"))


@pytest.mark.parametrize("body,message", [
    (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML page"),
    (b"\xe9\x03\x02\x20" + b"\x00" * 4 + b"\xee" + b"\x00" * 3000, "ESP32-family image"),
    (image.make()[:5000], "truncated"),
    (b"", "empty file"),
])
def test_a_bad_download_is_refused_and_not_kept(fw_root, server, body, message):
    www, url = server
    (www / ROMFS_FW).write_bytes(body)
    fw = firmware.Firmware(fw_root, base_url=url)
    with pytest.raises(UserError, match=message):
        fw.fetch(fw.variant("4MB"))
    assert not (fw_root / "downloads" / ROMFS_FW).exists()
    assert not (fw_root / "lock.json").exists()


def test_a_missing_release_says_what_to_do(fw_root, server):
    _, url = server
    fw = firmware.Firmware(fw_root, base_url=url)
    with pytest.raises(UserError, match="HTTP 404.*FIRMWARE=path"):
        fw.fetch(fw.variant("1MB"))


def test_local_firmware_file_is_checked(tmp_path):
    p = tmp_path / "esp32.bin"
    p.write_bytes(b"\xe9\x04\x02\x20\x00\x00\x00\x00\xee" + bytes(40))
    with pytest.raises(UserError, match="ESP32"):
        firmware.local(str(p))
    with pytest.raises(UserError, match="no such file"):
        firmware.local(str(tmp_path / "nope.bin"))
    good = tmp_path / "ok.bin"
    good.write_bytes(image.make())
    assert firmware.local(str(good)) == good


# -- build -----------------------------------------------------------------------------------------------
def test_build_compiles_modules_keeps_boot_and_main_as_source(tmp_path):
    out = build.build(out=tmp_path / "out")
    names = {f.name for f in out.iterdir()}
    assert {"boot.py", "main.py", "app.mpy", "server.mpy", "rules.mpy", "page.html.gz"} <= names
    assert not {n for n in names if n.endswith(".py")} - {"boot.py", "main.py"}
    assert (out / "app.mpy").read_bytes()[:2] == b"M\x06"  # .mpy version 6
    assert (paths.DEVICE / "app.py").exists()  # sources untouched


def test_build_output_is_replaced_whole_even_by_builds_at_the_same_time(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.mpy").write_bytes(b"from a module since deleted")
    expected = {f.name for f in build.build(out=tmp_path / "reference").iterdir()}
    threads = [threading.Thread(target=build.build, kwargs={"out": out}) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {f.name for f in out.iterdir()} == expected
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out", "reference"]  # no half-built folders left


def test_build_without_a_board_emits_the_pinned_firmwares_mpy(capsys):
    pinned = json.loads((paths.FIRMWARE / "manifest.json").read_text())["mpy"]
    assert cli.main(["build"]) == 0
    assert f".mpy version {pinned}:" in capsys.readouterr().out
    assert cli.main(["build", "--mpy", "4.9"]) == 2
    assert "loads .mpy version 4.9" in capsys.readouterr().err


def test_mpy_version_follows_the_board():
    assert build.emitted_version(build.compiler_for("6.3")) == "6.3"
    older = build.compiler_for("6.2")
    assert older != build.compiler_for("6.3")
    with pytest.raises(UserError, match="loads .mpy version 9.9.*make flash"):
        build.compiler_for("9.9")


# -- sync plan -------------------------------------------------------------------------------------------
def test_plan_writes_only_changes_and_runs_boot_and_main_last():
    local = {"app.mpy": b"new", "boot.py": b"b", "main.py": b"m", "config.json": b"{}", "leds.mpy": b"same"}
    board = {"leds.mpy": hashlib.sha256(b"same").hexdigest(), "app.py": "x", "old.mpy": "x", "notes.txt": "x",
             "app.mpy.tmp": "x", "leds.mpy.tmp": "x", "crashes.txt": "x"}
    p = sync.plan(local, board, previous=sync.read_manifest("old.mpy\nleds.mpy"))  # an older deploy's list
    assert p.write[-2:] == ["boot.py", "main.py"]
    assert set(p.write) == {"app.mpy", "boot.py", "main.py", "config.json"}
    assert p.unchanged == ["leds.mpy"]
    # app.py would shadow app.mpy; old.mpy was deployed before; notes.txt is the user's own; a killed
    # deploy's leds.mpy.tmp is stale, its app.mpy.tmp is rewritten and renamed to app.mpy (not removed after).
    assert sorted(p.remove) == ["app.py", "crashes.txt", "leds.mpy.tmp", "old.mpy"]


# -- ports and QR ----------------------------------------------------------------------------------------
def test_no_board_connected_lists_what_was_seen(monkeypatch):
    monkeypatch.setattr(ports.serial.tools.list_ports, "comports", lambda: [])
    with pytest.raises(UserError, match="(?s)no NodeMCU found.*PORT="):
        ports.detect(None)
    assert ports.detect("rfc2217://127.0.0.1:1") == "rfc2217://127.0.0.1:1"


def test_port_problems_in_plain_words(tmp_path):
    with pytest.raises(UserError, match="no serial port"):
        ports.check_free(str(tmp_path / "ttyUSB9"))
    assert "dialout" in ports.explain("/dev/ttyUSB0", PermissionError(13, "Permission denied"))
    assert "busy" in ports.explain("/dev/ttyUSB0", OSError(16, "Device or resource busy"))


def test_busy_port_is_reported(tmp_path):
    import os
    import pty

    master, slave = pty.openpty()
    path = os.ttyname(slave)
    import serial as pyserial

    holder = pyserial.Serial(path, exclusive=True)
    try:
        with pytest.raises(UserError, match="busy"):
            ports.check_free(path)
    finally:
        holder.close()
        os.close(master)
        os.close(slave)


def test_wifi_qr_payload_escapes_and_draws():
    assert qr.wifi_payload('my;net', 'p"a:ss,\\') == 'WIFI:T:WPA;S:my\\;net;P:p\\"a\\:ss\\,\\\\;;'
    art = qr.terminal("espblink-1A2B3C", "secretkey")
    assert len(art.splitlines()) > 10


def test_manifest_names_official_files():
    m = json.loads((paths.FIRMWARE / "manifest.json").read_text())
    assert all(Path(v["file"]).name.startswith("ESP8266_GENERIC") for v in m["variants"].values())


def test_deploy_waits_for_the_restarted_board_and_not_a_cut_off_answer():
    """After an update the app that took it answers until it restarts, and a board that restarts (or whose
    watchdog bites) while answering cuts its answer off: neither is taken for the new app on trial."""
    def info(state: str, deployed: str) -> bytes:
        return (f"mode app\nid 5ccf7f000001\nmpy 6.3\nseq 2\nkey k1\nstate {state}\nlast \nrom 0 -\n"
                f"file .deployed {deployed}\nfile config.json {'c' * 64}\n").encode()

    def answer(body: bytes, cut: int = 0) -> bytes:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        return head + body[:len(body) - cut]

    new = "a" * 64
    answers = [answer(info("trial 1", new), cut=1),  # read on its own first: get_info without patience refuses it
               answer(info("trial 0", new)),  # the app that took the update, before its restart
               answer(info("trial 1", new), cut=40),  # the new app, reset while it answered
               answer(info("trial 1", new))]
    srv = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def board() -> None:
        for a in answers:
            c, _ = srv.accept()
            got.append(c.recv(4096))
            c.sendall(a)
            c.close()

    t = threading.Thread(target=board, daemon=True)
    t.start()
    target = f"http://127.0.0.1:{srv.getsockname()[1]}/"
    with pytest.raises(UserError, match="cut off"):
        ota.get_info(target, patience=0)  # (with patience it asks again)
    back = ota.wait_back(target, timeout=20)
    t.join(5)
    srv.close()
    assert back.state == "trial 1" and back.version == new[:8] and len(got) == 4
