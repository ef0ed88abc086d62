"""The README's first command, `make sim`, typed in a fresh clone as a newcomer would: it builds what it
needs, serves the page, its REPL is the board's MicroPython, and Ctrl-C stops all of it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from espblink import paths
from nodemcu import runtime

REPL_CHECK = """\
import sys, gc, flashbdev
b = bytearray(4096)
flashbdev.bdev.readblocks(0, b)
print(repr((sys.implementation.version[:3], sys.maxsize, gc.mem_free() + gc.mem_alloc(),
            hasattr(b"", "partition"), b[8:16])))
"""


def _session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(sid)]


def test_make_sim_in_a_fresh_clone_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    readme = (paths.ROOT / "README.md").read_text()
    assert "    make sim " in readme  # the command this test types, as the README shows it
    clone = tmp_path / "espblink"
    subprocess.run(["git", "clone", "-q", str(paths.ROOT), str(clone)], check=True)
    # ../shared is not beside a clone in a temporary folder: the source is found where this checkout found it.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL")}
    env["ESPBLINK_MICROPYTHON_SRC"] = str(runtime.source())
    env["ESPBLINK_MICROPYTHON_CACHE"] = str(runtime.CACHE)  # built once for both: the same source and variant
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
    proc = subprocess.Popen(["make", "sim"], cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 600  # a new .venv is made first
        out = ""
        while "Ctrl-C stops the board" not in out and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            out = "".join(lines)
        assert "Ctrl-C stops the board" in out, out
        url = re.search(r"page is at (http://127\.0\.0\.1:\d+/)", out).group(1)
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"<title>espblink</title>" in r.read()
        toggle = urllib.request.Request(url + "api/leds/blue", data=b'{"toggle": true}', method="POST",
                                        headers={"Content-Type": "application/json", "X-Espblink": "1"})
        with urllib.request.urlopen(toggle, timeout=10) as r:
            assert json.loads(r.read())["on"] is True
        state_file = clone / ".sim" / "demo" / "state.json"
        lit = time.monotonic() + 5
        while not json.loads(state_file.read_text())["leds"]["blue"] and time.monotonic() < lit:
            time.sleep(0.05)
        assert json.loads(state_file.read_text())["leds"]["blue"] is True  # GPIO2 went low: the LED is lit

        serial = re.search(r"virtual NodeMCU on (rfc2217://\S+)", out).group(1)
        r = subprocess.run([sys.executable, "-m", "mpremote", "connect", serial, "exec", REPL_CHECK],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        version, maxsize, heap, partition, fs = eval(r.stdout.strip().splitlines()[-1])  # noqa: S307
        assert version == (1, 27, 0) and maxsize == 2**31 - 1 and heap == 38016 and partition is False
        assert fs == b"littlefs"  # the superblock the firmware's inisetup.py formatted

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches make and the board alike
        proc.wait(timeout=30)
        time.sleep(0.5)
        out = "".join(lines)
        assert "board stopped" in out and "Traceback" not in out, out
        assert not _session_processes(proc.pid), "processes left after Ctrl-C"
        assert not (clone / ".sim" / "demo" / "ctl.sock").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
