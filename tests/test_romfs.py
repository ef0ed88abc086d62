"""Code in ROMFS (issue 13): the deploy's image is mpremote's, the board's MicroPython has vfs.rom_ioctl over the
flash image's partition and runs code from it in place, and on a virtual NodeMCU flashed with the FLASH_2M_ROMFS
build `espblink deploy` puts the code there, `mpremote romfs query|deploy` work unmodified, and a partition
without a valid image leaves the board running the copy on its filesystem."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from espblink import build, image, paths, settings, sync
from nodemcu import runtime
from nodemcu.board import NodeMCU
from nodemcu.flash import SIZE
from sim_support import ESPBLINK, mpremote, running_sim

ROMFS_AT, ROMFS_SIZE = NodeMCU.ROMFS  # 0xB0000, 320 KB: boards/esp8266_2MiB_ROMFS.ld
VARIANT = "FLASH_2M_ROMFS"


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> dict[str, bytes]:
    """The device code built as deploy builds it for the pinned firmware (.mpy 6.3), without config.json."""
    out = build.build(out=tmp_path_factory.mktemp("build") / "device", cmd=build.compiler_for("6.3"))
    return {f.name: f.read_bytes() for f in out.iterdir()}


def board_python(script: str, tmp: Path, partition: Path | None, **env: str) -> str:
    """Run script on the board's MicroPython at the board's heap; partition: a flash image whose ROMFS
    partition it gets; env: more environment variables."""
    path = tmp / "script.py"  # a file, not -c: sys.argv is not set with -c in this build
    path.write_text(script)
    env.update({"PATH": os.environ["PATH"], "MICROPYPATH": ".frozen", "ESPBLINK_HW": "{}"})
    if partition:
        env["ESPBLINK_ROMFS"] = f"{partition}:{ROMFS_AT}:{ROMFS_SIZE}"
    r = subprocess.run([str(runtime.build().exe), "-X", f"heapsize={runtime.HEAP}", str(path)], env=env, cwd=tmp,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def flash_with(image: bytes, path: Path) -> Path:
    path.write_bytes(b"\xff" * ROMFS_AT + image.ljust(ROMFS_SIZE, b"\xff") + b"\xff" * (SIZE - ROMFS_AT - ROMFS_SIZE))
    return path


# -- the image and the files -------------------------------------------------------------------------------
def test_the_deploy_image_is_what_mpremote_romfs_build_makes(device, tmp_path):
    files, image = sync.romfs_layout({**device, "config.json": b"{}"})
    folder = tmp_path / "code"
    folder.mkdir()
    for name, data in device.items():
        if name.endswith((".mpy", ".gz")):
            (folder / name).write_bytes(data)
    (folder / sync.CODE_ID).write_bytes(files["lib/" + sync.CODE_ID])
    r = subprocess.run([sys.executable, "-m", "mpremote", "romfs", "-o", str(tmp_path / "x.romfs"), "build",
                        str(folder)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert image == (tmp_path / "x.romfs").read_bytes()
    # On littlefs: the modules in lib/ (after /rom on the board's sys.path, where the root is before it), the
    # rest where the board opens it by name; nothing else.
    mods = {n for n in device if n.endswith(".mpy")}
    assert set(files) == {f"lib/{n}" for n in mods} | (set(device) - mods) | {"config.json", "lib/" + sync.CODE_ID}
    assert "page.html.gz" in files and "boot.py" in files and "main.py" in files
    # Another build of the same code is the same image: a deploy compares hashes.
    assert sync.romfs_layout({**device, "config.json": b"{}"})[1] == image


def test_the_code_id_changes_with_the_code_not_the_settings(device):
    a = sync.romfs_layout({**device, "config.json": b"{}"})
    b = sync.romfs_layout({**device, "config.json": b'{"x": 1}'})
    c = sync.romfs_layout({**device, "app.mpy": device["app.mpy"] + b"\0", "config.json": b"{}"})
    ident = "lib/" + sync.CODE_ID
    assert a[0][ident] == b[0][ident] and a[1] == b[1]
    assert c[0][ident] != a[0][ident] and c[1] != a[1]


def test_a_killed_deploys_leftovers_and_an_older_layouts_files_are_removed():
    local, _ = sync.romfs_layout({"app.mpy": b"a", "server.mpy": b"s", "boot.py": b"b", "page.html.gz": b"p"})
    board = {"app.mpy": "1", "server.py": "2", "lib/app.mpy": sync.sha256(b"a"), "lib/app.mpy.tmp": "3",
             "mine.py": "4", "lib/theirs.mpy": "5"}
    p = sync.plan(local, board, {"app.mpy": "1"})
    # app.mpy in the root would be imported instead of /rom's, server.py too; lib/app.mpy.tmp is what a
    # killed deploy left (lib/app.mpy is unchanged); mine.py and lib/theirs.mpy are the user's own.
    assert sorted(p.remove) == ["app.mpy", "lib/app.mpy.tmp", "server.py"]


# -- vfs.rom_ioctl on the board's MicroPython --------------------------------------------------------------
def test_rom_ioctl_without_a_partition_answers_as_the_port_without_one(tmp_path):
    out = board_python("import vfs\nprint(vfs.rom_ioctl(1), vfs.rom_ioctl(2, 0), vfs.rom_ioctl(3, 0, 4096))\n",
                       tmp_path, None)
    assert out.split() == ["0", "-22", "-22"]


def test_rom_ioctl_reads_erases_and_writes_the_flash_images_partition(tmp_path):
    flash = flash_with(b"", tmp_path / "flash.bin")
    data = bytearray(flash.read_bytes())
    data[ROMFS_AT - 1] = 0x12  # the firmware's last byte and the filesystem's first must stay as they are
    data[ROMFS_AT + ROMFS_SIZE] = 0x34
    data[ROMFS_AT:ROMFS_AT + 8192] = b"\x5a" * 8192
    flash.write_bytes(data)
    out = board_python("""\
import vfs
m = vfs.rom_ioctl(2, 0)
print(vfs.rom_ioctl(1), len(m), m[0])
print(vfs.rom_ioctl(3, 0, 4097))  # whole sectors: 8 KB erased; the minimum write size answered
print(m[0], m[8191])
print(vfs.rom_ioctl(4, 0, 8, b'\\xd2\\xcd\\x31\\x00'), bytes(m[8:12]))
print(vfs.rom_ioctl(4, 0, 8, b'\\x0f\\xff\\xff\\xff'), bytes(m[8:12]))  # NOR flash: bits only cleared
print(vfs.rom_ioctl(4, 0, %d, b'toolong'), vfs.rom_ioctl(3, 0, %d))  # past the partition: refused
try:
    m[0] = 1
except TypeError:
    print('read-only')
""" % (ROMFS_SIZE - 4, ROMFS_SIZE + 1), tmp_path, flash)
    lines = out.splitlines()
    assert lines[0] == f"1 {ROMFS_SIZE} 90"
    assert lines[1] == "4"
    assert lines[2] == "255 255"
    assert lines[3] == r"0 b'\xd2\xcd1\x00'"
    assert lines[4] == r"0 b'\x02\xcd1\x00'"
    assert lines[5] == "-22 -22"
    assert lines[6] == "read-only"
    after = flash.read_bytes()  # the writes are in the image file, where the virtual board keeps its flash
    assert after[ROMFS_AT + 8:ROMFS_AT + 12] == b"\x02\xcd1\x00"
    assert after[ROMFS_AT + 12:ROMFS_AT + 8192] == b"\xff" * (8192 - 12)
    assert after[ROMFS_AT - 1] == 0x12 and after[ROMFS_AT + ROMFS_SIZE] == 0x34


HEAP_SCRIPT = """\
import gc, os, sys, vfs
code = os.getenv('CODE')
if code == 'rom':
    vfs.mount(vfs.VfsRom(vfs.rom_ioctl(2, 0)), '/rom')
    code = '/rom'
sys.path[:] = [code, '.frozen']
import machine, network, esp  # C on the board: loaded before counting
gc.collect()
before = gc.mem_free()
import app
gc.collect()
print(before - gc.mem_free())
"""


def test_code_in_romfs_runs_in_place_and_costs_far_less_heap(device, tmp_path):
    _, image = sync.romfs_layout({**device, "config.json": b"{}"})
    flash = flash_with(image, tmp_path / "flash.bin")
    as_files = tmp_path / "files"
    as_files.mkdir()
    for name, data in device.items():
        (as_files / name).write_bytes(data)
    in_rom = int(board_python(HEAP_SCRIPT, tmp_path, flash, CODE="rom"))
    from_files = int(board_python(HEAP_SCRIPT, tmp_path, flash, CODE=str(as_files)))
    print(f"importing app (and what it imports): {in_rom} B of heap from ROMFS, {from_files} B as .mpy files")
    assert in_rom < from_files / 2, (in_rom, from_files)


# -- on a virtual NodeMCU flashed with the FLASH_2M_ROMFS build --------------------------------------------
def romfs_board(tmp: Path) -> Path:
    """A board as `make flash` leaves it with the FLASH_2M_ROMFS build (flashing is tested in test_e2e)."""
    state = tmp / "board"
    state.mkdir()
    fw = image.make(variant=VARIANT)
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    return state


def deploy(sim, cfg: Path) -> str:  # noqa: ANN001
    r = subprocess.run([*ESPBLINK, "deploy", "--port", sim.serial, "--settings", str(cfg)], capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def page_and_leds(sim) -> list[str]:  # noqa: ANN001
    req = urllib.request.Request(sim.http, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
    with urllib.request.urlopen(sim.http + "api/leds", timeout=5) as r:
        return [d["name"] for d in json.loads(r.read())["leds"]]


def power_cycle_until_serving(sim) -> str:  # noqa: ANN001
    """Power-cycle and return what the board printed until its app said it serves."""
    out = sim.uart(30, action=sim.power_cycle, until=b"espblink: serving")
    assert b"espblink: serving" in out, out
    return out.decode(errors="replace")


def test_make_flash_deploy_puts_the_code_in_romfs_once_and_mpremote_romfs_query_shows_it(tmp_path):
    cfg = tmp_path / "settings.toml"
    fw = tmp_path / f"ESP8266_GENERIC-{VARIANT}-test.bin"
    fw.write_bytes(image.make(variant=VARIANT))
    with running_sim(tmp_path / "fresh") as sim:
        r = subprocess.run(["make", "--no-print-directory", "-C", str(paths.ROOT), "flash", "deploy",
                            f"PORT={sim.serial}", f"FIRMWARE={fw}", f"SETTINGS={cfg}"], capture_output=True, text=True,
                           timeout=400, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"code in ROMFS \((\d+) bytes of 320 KB\)\n", r.stdout)
        assert m, r.stdout
        size = int(m.group(1))
        assert page_and_leds(sim) == ["blue", "red"]
        r = mpremote(sim, "romfs", "query")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"ROMFS0 partition has size {ROMFS_SIZE} bytes" in r.stdout
        shown = int(re.search(r"ROMFS image size: (\d+)", r.stdout).group(1))  # what follows the header
        assert size - 8 < shown < size, r.stdout

        # The same code again: the partition's hash (computed on the board) matches, nothing is written.
        out = deploy(sim, cfg)
        assert f"code in ROMFS ({size} bytes of 320 KB): the board's partition holds this image already" in out
        assert "ROMFS image [" not in out and "0 to write" in out

        # The app runs from the image: with the copy on the filesystem gone it still serves.
        r = mpremote(sim, "exec", "import os\nfor n in os.listdir('lib'):\n os.remove('lib/' + n)")
        assert r.returncode == 0, r.stdout + r.stderr
        boot = power_cycle_until_serving(sim)
        assert "ROMFS" not in boot, boot
        assert page_and_leds(sim) == ["blue", "red"]


def test_a_partition_without_a_valid_image_runs_the_copy_on_the_filesystem(tmp_path):
    cfg = tmp_path / "settings.toml"
    settings.create(cfg)
    with running_sim(romfs_board(tmp_path)) as sim:
        deploy(sim, cfg)
        # As a deploy killed while writing the image leaves it: erased, its header not written yet.
        r = mpremote(sim, "exec", "import vfs\ntry:\n vfs.umount('/rom')\nexcept OSError:\n pass\n"
                     "print(vfs.rom_ioctl(3, 0, 4096))")
        assert r.returncode == 0 and r.stdout.split() == ["4"], r.stdout + r.stderr
        boot = power_cycle_until_serving(sim)
        assert page_and_leds(sim) == ["blue", "red"]
        assert "ROMFS" in boot, "main.py must say the partition holds no valid image:\n" + boot
        # The next deploy writes the image again.
        out = deploy(sim, cfg)
        assert re.search(r"code in ROMFS \(\d+ bytes of 320 KB\)\n", out), out
        r = mpremote(sim, "romfs", "query")
        assert "ROMFS image size" in r.stdout, r.stdout


def test_mpremote_romfs_deploy_and_query_work_unmodified(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "hello.py").write_text("print('hello from', __name__, 'in ROMFS')\n")
    with running_sim(romfs_board(tmp_path)) as sim:
        sim.booted(timeout=40)
        r = mpremote(sim, "romfs", "query")
        assert r.returncode == 0 and "Not a valid ROMFS" in r.stdout, r.stdout + r.stderr  # erased: 0xFF
        r = mpremote(sim, "romfs", "deploy", str(code), timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        r = mpremote(sim, "romfs", "query")
        assert "ROMFS image size" in r.stdout, r.stdout
        # /rom is mounted at start and on sys.path: the module is compiled .mpy there and imports.
        r = mpremote(sim, "exec", "import os\nprint(os.listdir('/rom'))\nimport hello")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "['hello.mpy']" in r.stdout and "hello from hello in ROMFS" in r.stdout


def test_a_board_without_the_partition_gets_the_code_as_files(tmp_path):
    cfg = tmp_path / "settings.toml"
    settings.create(cfg)
    state = tmp_path / "board"
    state.mkdir()
    fw = image.make()  # a build without the ROMFS partition, as on a 1 MB board
    (state / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
    with running_sim(state) as sim:
        out = deploy(sim, cfg)
        assert "code as files" in out and "ROMFS" not in out, out
        assert page_and_leds(sim) == ["blue", "red"]
        r = mpremote(sim, "romfs", "query")
        assert "No ROMFS partitions available" in r.stdout, r.stdout
