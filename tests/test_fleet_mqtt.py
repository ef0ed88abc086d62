"""`espblink fleet deploy --mqtt`: the boards a broker knows updated over Wi-Fi, found at the address each
publishes. Virtual boards with addresses of their own (`espblink sim --ip 127.x.y.z --mac ...`), as boards
have on a LAN: their web server on port 80 there, that address their IP on home Wi-Fi."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from mqtt_support import STA, HomeAssistant, board_settings, broker
from nodemcu import runtime
from sim_support import ESPBLINK, deploy, flashed, running_sim

USER, PASSWORD = "fleet", "broker secret 2"


def espblink(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*ESPBLINK, *args], capture_output=True, text=True, timeout=timeout)


def leds(url: str) -> list[str]:
    with urllib.request.urlopen(url + "api/leds", timeout=5) as r:
        return [d["name"] for d in json.loads(r.read())["leds"]]


def own_addresses(n: int) -> list[str]:
    """n loopback addresses for boards of their own address; the test is skipped, saying why, where this user
    may not bind their ports 80 and 53 (CI runs as root)."""
    try:
        return [runtime.free_address() for _ in range(n)]
    except runtime.BuildError as e:
        pytest.skip(str(e))


def test_fleet_deploy_over_mqtt_updates_the_online_boards_at_their_addresses(tmp_path):
    """Four boards from one deployed flash, each its own MAC and loopback address, on home Wi-Fi and one
    broker (with a login); one switched off. The dry run changes nothing; the deploy updates the three online
    boards and skips the one the broker says is offline, and its exit status says not all are updated."""
    macs = [f"5c:cf:7f:f1:ee:{i:02x}" for i in range(4)]
    with broker(tmp_path / "broker", users={USER: PASSWORD}) as b, ExitStack() as stack:
        old = board_settings(tmp_path / "settings.toml", b, USER, PASSWORD)
        first = flashed(tmp_path / "b0")
        with running_sim(first, extra=[*STA, "--mac", macs[0]]) as sim:  # it is the first of the four
            r = deploy(sim, old)
            assert r.returncode == 0, r.stdout + r.stderr  # and its deploy key is in deploy-keys.json now
        for i in range(1, 4):
            (tmp_path / f"b{i}").mkdir()
            shutil.copyfile(first / "flash.bin", tmp_path / f"b{i}" / "flash.bin")
        addresses = own_addresses(len(macs))
        sims = [stack.enter_context(running_sim(tmp_path / f"b{i}", extra=[*STA, "--ip", ip, "--mac", mac]))
                for i, (ip, mac) in enumerate(zip(addresses, macs, strict=True))]
        for ip, sim in zip(addresses, sims, strict=True):
            assert sim.http == f"http://{ip}/"
        ids = [m.replace(":", "") for m in macs]
        ha = stack.enter_context(closing(HomeAssistant(b, USER, PASSWORD)))
        # Each board publishes its STA IP as its address: where the host finds it. (The first board's info of
        # its deploy, without an address of its own, is retained until it publishes again.)
        ha.wait(lambda h: all(h.last.get(f"espblink/{i}/status") == b"online" for i in ids)
                and [json.loads(h.retained.get(f"espblink/{i}/info", b"{}")).get("address") for i in ids] == addresses,
                timeout=60, what="four boards online, each at its address")
        infos = {i: json.loads(ha.retained[f"espblink/{i}/info"]) for i in ids}
        names = [infos[i]["name"] for i in ids]
        assert len(set(names)) == 4
        sims[3].ctl("power-off")
        ha.wait(lambda h: h.last.get(f"espblink/{ids[3]}/status") == b"offline", timeout=10, what="the will")

        new = tmp_path / "new.toml"  # beside deploy-keys.json, where the first deploy kept the key
        new.write_text(old.read_text().replace('name = "red"', 'name = "rot"'))
        target = f"{b.host}:{b.port}"  # the login: mqtt_user and mqtt_password of the settings file
        r = espblink("fleet", "deploy", "--mqtt", target, "--settings", str(new), "--dry-run")
        assert r.returncode == 1, r.stdout + r.stderr
        rows = _rows(r.stdout, names)
        said = lambda: r.stdout + "".join(f"\n{s.http}: " + " | ".join(s.console[-5:]) for s in sims)  # noqa: E731
        for n in names[:3]:
            assert "would send" in rows[n], said()
        assert "offline" in rows[names[3]], r.stdout
        assert [leds(s.http) for s in sims[:3]] == [["blue", "red"]] * 3

        r = espblink("fleet", "deploy", "--mqtt", target, "--settings", str(new))
        assert r.returncode == 1, r.stdout + r.stderr
        rows = _rows(r.stdout, names)
        for n, sim in zip(names[:3], sims[:3], strict=True):
            name, before, after, sent, *_ = rows[n].split()
            assert "updated" in rows[n] and before != after and int(sent) > 0, said()
            assert leds(sim.http) == ["blue", "rot"]
        assert "offline" in rows[names[3]] and "skipped" in rows[names[3]], r.stdout
        assert f"3 of 4 boards on the new version; not: {names[3]}" in r.stdout

        r = espblink("fleet", "deploy", "--mqtt", target, "--user", USER, "--password", "wrong", "--settings", str(new))
        assert r.returncode == 2 and "refused the login" in r.stderr and "--password" in r.stderr, r.stderr


def _rows(out: str, names: list[str]) -> dict[str, str]:
    """The fleet table's row of each board, by its name."""
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in names}
    assert set(rows) == set(names), out
    return rows


def test_sim_ip_says_what_is_wrong(tmp_path):
    r = espblink("sim", "--state", str(tmp_path / "b"), "--ip", "192.0.2.7")
    assert r.returncode == 2 and "192.0.2.7 is not an address of this machine" in r.stderr, r.stderr
    assert "127.0.0.2" in r.stderr
    r = espblink("sim", "--state", str(tmp_path / "b"), "--ip", "kitchen")
    assert r.returncode == 2 and "'kitchen' is not an IPv4 address" in r.stderr, r.stderr
    r = espblink("sim", "--state", str(tmp_path / "b"), "--mac", "5c:cf:7f")
    assert r.returncode == 2 and "--mac wants six hex bytes" in r.stderr, r.stderr
    taken = own_addresses(1)[0]
    with socket.create_server((taken, 80)):  # a web server, or another board, at that address already
        r = espblink("sim", "--state", str(tmp_path / "b"), "--ip", taken)
    assert r.returncode == 2 and f"port 80 on {taken} is taken" in r.stderr and "another address" in r.stderr


def test_sim_ip_without_the_right_to_bind_port_80_says_what_to_do():
    # `espblink sim --ip` as a user who may not bind ports below 1024 (root dropped to nobody; CI runs as root).
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 53:
        pytest.skip("every user may bind ports 53 and 80 on this machine")
    drop = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv (util-linux) to run as another user")
        drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    with tempfile.TemporaryDirectory() as folder:  # not under pytest's folder: only root may enter that
        home = Path(folder)
        home.chmod(0o777)
        r = subprocess.run([*drop, *ESPBLINK, "sim", "--state", str(home / "board"), "--ip", "127.0.0.2"],
                           capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": folder}, cwd=home)
        made = (home / "board").exists()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "may not bind ports below 1024" in r.stderr and "run as root" in r.stderr, r.stderr
    assert "net.ipv4.ip_unprivileged_port_start" in r.stderr
    assert not made  # nothing made before it said so
