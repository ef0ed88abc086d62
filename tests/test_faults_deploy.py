"""Deploys killed at random points, then the board power-cycled, on the virtual NodeMCU: it boots the old app
or the new one, whole (every file from one deploy or every file from the other, never a mix), and the next
deploy completes. Twice: a board whose code is stored as files, and one flashed with the FLASH_2M_ROMFS build
whose code goes to its ROMFS partition too (killed while the files or the image are written, it runs the
image only when the image holds the code the files name, else main.py says so and runs the copy on littlefs)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from espblink import image, paths, settings, sync
from nodemcu.flash import SIZE
from sim_support import ESPBLINK, mpremote, running_sim

# The old app: the same code with every source one line lower, so every file the board gets (each .mpy,
# boot.py, main.py, the gzip page) differs from the new build and a deploy has all of them to write.
OLD_DEPLOY = """\
import functools, sys
from pathlib import Path
from espblink import cli, sync
sync.build_for_board = functools.partial(sync.build_for_board, src=Path(sys.argv[1]))
sys.exit(cli.main(sys.argv[2:]))
"""
SEED = 8266
KILLS = 5


def old_source(tmp: Path) -> Path:
    src = tmp / "old-device"
    src.mkdir()
    for f in paths.DEVICE.iterdir():
        if f.is_file():
            (src / f.name).write_bytes(b"\n" + f.read_bytes())
    return src


@pytest.fixture(scope="module", params=["files", "romfs"])
def board(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("deploy-faults")
    state = tmp / "board"
    state.mkdir()
    # A board as `make flash` leaves it (flashing itself is tested in test_e2e and test_sim).
    fw = image.make(variant="FLASH_2M_ROMFS" if request.param == "romfs" else "")
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    with running_sim(state) as sim:
        sim.romfs = request.param == "romfs"
        sim.tmp = tmp
        sim.old_src = old_source(tmp)
        sim.old_settings = tmp / "old.toml"
        settings.create(sim.old_settings)
        sim.new_settings = tmp / "new.toml"
        sim.new_settings.write_text(sim.old_settings.read_text().replace('name = "red"', 'name = "rot"'))
        assert sim.new_settings.read_text() != sim.old_settings.read_text()
        yield sim


def deploy_new(board, **popen) -> subprocess.Popen:  # noqa: ANN001, ANN003
    return subprocess.Popen([*ESPBLINK, "deploy", "--port", board.serial, "--settings", str(board.new_settings)],
                            text=True, **popen)


def deploy_old(board) -> None:  # noqa: ANN001
    r = subprocess.run([sys.executable, "-c", OLD_DEPLOY, str(board.old_src), "deploy", "--port", board.serial,
                        "--settings", str(board.old_settings)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def board_files(board) -> dict[str, str]:  # noqa: ANN001
    r = mpremote(board, "exec", sync.PROBE)
    assert r.returncode == 0, r.stdout + r.stderr
    return sync.parse_probe(r.stdout).files


CODE_IDS = """\
for n in ('/rom/', 'lib/'):
    try:
        print(open(n + 'code.id').read())
    except OSError:
        print('-')
"""


def code_ids(board) -> tuple[str, str]:  # noqa: ANN001
    """Which code the ROMFS image holds ('-': no valid image, /rom not mounted) and which the files hold."""
    r = mpremote(board, "exec", CODE_IDS)
    assert r.returncode == 0, r.stdout + r.stderr
    rom, lib = r.stdout.split()
    return rom, lib


def deployed(board) -> set[str]:  # noqa: ANN001
    r = mpremote(board, "exec", f"print(open({sync.MANIFEST!r}).read())")
    assert r.returncode == 0, r.stdout + r.stderr
    return set(sync.read_manifest(r.stdout))


def app_files(files: dict[str, str], names: set[str]) -> dict[str, str]:
    return {n: h for n, h in files.items() if n in names}


def serving(board, console: list[str] | None = None) -> list[str]:  # noqa: ANN001
    """Power-cycle, wait for the access point, and return the LED names the app serves (its page must load);
    what the board printed as it started goes to console."""
    boots = board.state()["boots"]
    out = board.uart(30, action=lambda: board.ctl("power-cycle"), until=b"espblink: serving")
    if console is not None:
        console.append(out.decode(errors="replace"))
    board.wait_state(lambda s: s["boots"] > boots and s["wlan"].get("ap", {}).get("active"), timeout=30)
    req = urllib.request.Request(board.http, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
    with urllib.request.urlopen(board.http + "api/leds", timeout=5) as r:
        return [d["name"] for d in json.loads(r.read())["leds"]]


def test_deploy_killed_at_random_points_boots_old_or_new_whole(board):
    p = deploy_new(board, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert ("code in ROMFS (" if board.romfs else "code as files") in out, out
    new = board_files(board)
    deploy_old(board)
    old = board_files(board)
    names = deployed(board)  # the files a deploy writes (the manifest lists them), those of the old one too
    assert app_files(old, names).keys() == app_files(new, names).keys()
    assert all(old[n] != new[n] for n in names), "every file must differ"
    assert serving(board) == ["blue", "red"]

    rnd = random.Random(SEED)
    outcomes = []
    for i in range(KILLS):
        p = deploy_new(board, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
        assert p.stdout
        if i == KILLS - 1:
            when = f"after {(delay := rnd.uniform(0.5, 4.0)):.2f} s"  # anywhere: probe, renames, restart
            time.sleep(delay)
        else:
            # While the files are written: after the k-th file started, plus a bit; on the ROMFS board every
            # other kill while the image is written: after its k-th chunk started (its header is the last).
            k = rnd.randint(1, len(names))
            mark, when = f"[{k}/", f"at file {k}"
            if board.romfs and i % 2:
                k = rnd.randint(1, 8)
                mark, when = f"ROMFS image [{k}/", f"at ROMFS chunk {k}"
            for line in p.stdout:
                if mark in line or "code in ROMFS" in line or "the app is running" in line:
                    break
            time.sleep(rnd.uniform(0, 0.3))
        p.kill()
        p.wait()
        time.sleep(0.3)  # the serial port is free again
        console: list[str] = []
        leds = serving(board, console)
        files = app_files(board_files(board), names)
        whole = "new" if files == app_files(new, names) else "old" if files == app_files(old, names) else None
        assert whole, f"killed {when}: a mix of old and new files on the board: " + ", ".join(
            n for n in sorted(files) if files[n] != old.get(n))
        assert leds == (["blue", "rot"] if whole == "new" else ["blue", "red"]), (when, whole, leds)
        if board.romfs:
            rom, lib = code_ids(board)
            if rom != lib:  # no valid image, or the other deploy's: the copy on littlefs runs, and it says so
                assert "ROMFS" in console[0], (when, rom, lib, console[0])
        outcomes.append(whole)
        if whole == "new":
            deploy_old(board)
    # The next deploy completes, whatever the killed ones left behind (.tmp files are cleared).
    p = deploy_new(board, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert serving(board) == ["blue", "rot"]
    files = board_files(board)
    assert app_files(files, names) == app_files(new, names)
    assert not [n for n in files if n.endswith(".tmp")], files
    if board.romfs:
        rom, lib = code_ids(board)
        assert rom == lib != "-"  # the image holds the code the files name: it runs from flash
    assert "old" in outcomes, outcomes  # at least one kill really interrupted the writing

