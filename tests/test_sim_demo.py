"""`make sim` (espblink sim demo): a fresh virtual board, flashed and deployed, its page served, Ctrl-C stops it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request

from sim_support import ESPBLINK


def test_demo_flashes_deploys_serves_the_page_and_stops_on_ctrl_c(tmp_path):
    state = tmp_path / "demo"
    state.mkdir()
    (state / "notes.txt").write_text("the user's own file")
    (state / "flash.bin").write_bytes(b"\xff" * 0x200000 + b"an earlier board's file" + b"\xff" * 0x1FFFE9)
    # Relative folders, as a user types them from where they work (an absolute --state was the only one working).
    cmd = [*ESPBLINK, "sim", "demo", "--state", "demo", "--settings", "settings.toml"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=tmp_path)
    lines: list[str] = []
    try:
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
        deadline = time.monotonic() + 240
        out = ""
        while "Ctrl-C stops the board" not in out and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            out = "".join(lines)
        assert "Ctrl-C stops the board" in out, out
        assert b"an earlier board's file" not in (state / "flash.bin").read_bytes()  # a fresh board
        assert (state / "notes.txt").exists()  # and nothing else in the folder lost
        assert (tmp_path / "settings.toml").exists()  # the settings it deployed, where it was told
        assert "Hash of data verified" in out
        url = re.search(r"page is at (http://127\.0\.0\.1:\d+/)", out).group(1)
        with urllib.request.urlopen(url, timeout=10) as r:
            page = r.read()
        assert b"<title>espblink</title>" in page and b"blue" in page and b"red" in page  # its LEDs
        s = json.loads((state / "state.json").read_text())
        assert s["wlan"]["ap"]["active"] and s["wlan"]["ap"]["ssid"] in out  # the Wi-Fi it printed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert not (state / "ctl.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
