"""`make bench`: espblink, Microdot and the tutorial server on the board's own MicroPython (nodemcu.runtime:
v1.27.0, 32-bit, the ESP8266 settings) with the board's heap and shims, compiled to .mpy the same way,
measured in one run. Ratios against the peers are the headline."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from espblink import build, paths, runner
from nodemcu import runtime
from nodemcu.board import Board, NodeMCU

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = {"ap_ssid": "espblink-bench", "ap_key": "benchmark-key", "leds": [
    {"name": "blue", "gpio": 2, "active_low": True}, {"name": "red", "gpio": 16, "active_low": True}]}
HEAP = NodeMCU.HEAP  # the board's: does each boot and serve in it?
PERF_HEAP = 100_000  # speed is compared where all three run, with the same heap
N = 300


def prepare(peer: str, root: Path) -> Path:
    """The peer's files as they would sit on the board: compiled to .mpy, main.py by name. espblink as deploy
    leaves a NodeMCU (2 MB and up: code in the ROMFS partition) or, "espblink-files", a 1 MB board."""
    d = root / peer
    d.mkdir()
    page = build.build(out=root / "espblink-build")
    if peer.startswith("espblink"):
        config = root / "config.json"
        config.write_text(json.dumps(CONFIG))
        runner.install(d, config, romfs=peer == "espblink")
        return d
    shutil.copy(page / "page.html.gz", d)
    if peer == "microdot":
        import microdot

        pkg = Path(microdot.__file__).parent
        for name in ("__init__", "microdot", "helpers"):
            build.compile_module(pkg / f"{name}.py", d / "microdot" / f"{name}.mpy")
        build.compile_module(HERE / "peers" / "microdot_app.py", d / "microdot_app.mpy")
        (d / "main.py").write_text("import microdot_app\n")
    else:
        build.compile_module(HERE / "peers" / "tutorial_server.py", d / "tutorial_server.mpy")
        (d / "main.py").write_text("import tutorial_server\n")
    return d


class Peer:
    def __init__(self, name: str, folder: Path, heap: int) -> None:
        self.name = name
        self.port = runtime.free_port()
        self.proc, self.link = runner.power_on(folder, lambda msg: None, self.port, heap=heap,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started = time.monotonic()
        self.up = self._wait()

    def _wait(self, timeout: float = 15) -> bool:
        # Up when it answers a request: a connect-and-close probe would crash the tutorial server.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.request("GET", "/api/leds", timeout=1)[0]:
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def request(self, method: str, path: str, body: str | None = None, timeout: float = 5) -> tuple[int, int]:
        """One request on its own connection, sent in one write, read until the server closes:
        (status, bytes received)."""
        status, data = self.exchange(method, path, body, timeout)
        return status, len(data)

    def exchange(self, method: str, path: str, body: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: 192.168.4.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nX-Espblink: 1\r\nContent-Length: {len(body)}\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall((head + "\r\n" + (body or "")).encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        parts = data.split(b" ", 2)
        return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0), data

    def heap_free(self) -> int | None:
        """Free heap after a collection, from the peer's /api/status (each peer reports gc.mem_free())."""
        try:
            status, data = self.exchange("GET", "/api/status")
            return json.loads(data.split(b"\r\n\r\n", 1)[1])["heap_free"] if status == 200 else None
        except (OSError, ValueError, KeyError, IndexError):
            return None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.link.close()


def toggle(p: Peer) -> int:
    return p.request("POST", "/api/leds/blue", '{"toggle": true}')[0]


def timed(fn, n: int) -> dict[str, float]:  # noqa: ANN001
    lat = []
    errors = 0
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        try:
            ok = fn() == 200
        except OSError:
            ok = False
        lat.append((time.perf_counter() - t) * 1000)
        errors += not ok
    total = time.perf_counter() - t0
    lat.sort()
    return {"rps": n / total, "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
            "errors": errors}


def with_idle_sockets(p: Peer, n: int = 50, idle_n: int = 6) -> dict[str, Any]:
    """Toggles while a phone browser's idle connections (up to 6 to one host) sit open: latency p50, p99, max."""
    try:
        idle = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(idle_n)]
    except OSError:
        return {"p50_ms": None, "answered": 0, "of": n}
    try:
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            try:
                ok = p.request("POST", "/api/leds/blue", '{"toggle": true}', timeout=5)[0] == 200
            except OSError:
                ok = False
            if not ok:
                return {"p50_ms": None, "answered": len(lat), "of": n}
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        return {"p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))], "max_ms": lat[-1],
                "answered": n, "of": n}
    finally:
        for s in idle:
            s.close()


def serves(name: str, folder: Path, heap: int, n: int = 1000) -> bool:
    """serve_mixed's verdict on a fresh copy of folder: what a run at too small a heap leaves there (the
    boot-loop guard's count of its crashes) must not stop the next run from starting."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / folder.name
        shutil.copytree(folder, copy)
        if runner.romfs_file(folder).exists():
            shutil.copyfile(runner.romfs_file(folder), runner.romfs_file(copy))
        return serve_mixed(name, copy, heap, n)[0]


def serve_mixed(name: str, folder: Path, heap: int, n: int = 1000) -> tuple[bool, int | None, int | None]:
    """Boot at this heap and serve n mixed requests: (all answered 200, free heap after boot, after the n)."""
    p = Peer(name, folder, heap)
    try:
        if not p.up:
            return False, None, None
        before = p.heap_free()
        for i in range(n):
            path, body = (("/", None), ("/api/leds", None), ("/api/leds/blue", '{"toggle": true}'))[i % 3]
            if p.request("POST" if body else "GET", path, body)[0] != 200:
                return False, before, None
        after = p.heap_free()
        return p.proc.poll() is None, before, after
    except OSError:
        return False, None, None
    finally:
        p.stop()


def min_heap(name: str, folder: Path, lo: int = 8192, hi: int = 131072, step: int = 2048) -> int | None:
    if not serves(name, folder, hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if serves(name, folder, mid):
            hi = mid
        else:
            lo = mid
    return hi


def page_load(p: Peer) -> dict[str, int] | None:
    """Requests and bytes for one page load in headless Chromium (Debian's), phone profile."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path("/usr/bin/chromium").exists():
        return None
    sys.path.insert(0, str(paths.ROOT / "tests"))
    from conftest import CHROMIUM, CHROMIUM_ARGS, PHONE

    sizes: list[int] = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = b.new_context(**PHONE).new_page()

        def done(r: Any) -> None:
            s = r.sizes()
            sizes.append(s["responseBodySize"] + s["responseHeadersSize"] + s["requestHeadersSize"])

        page.on("requestfinished", done)
        try:
            page.goto(f"http://127.0.0.1:{p.port}/", timeout=10000)
            page.wait_for_load_state("networkidle", timeout=10000)
        except Exception:  # noqa: BLE001 (a peer that stops answering gets no figure)
            return None
        finally:
            b.close()
    return {"requests": len(sizes), "bytes": sum(sizes)}


def measure_peers() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("espblink", "microdot", "tutorial"):
            folder = prepare(name, root)
            print(f"{name}: throughput and latency…", flush=True)
            ok, free_boot, free_after = serve_mixed(name, folder, HEAP)
            r: dict[str, Any] = {"serves_at_board_heap": ok, "board_heap_free_after_boot": free_boot,
                                 "board_heap_free_after_1000": free_after}
            p = Peer(name, folder, PERF_HEAP)
            if p.up:
                free = p.heap_free()
                r["heap_used_after_boot"] = PERF_HEAP - free if free is not None else None
                r["get_page"] = timed(lambda p=p: p.request("GET", "/")[0], N)
                r["post_toggle"] = timed(lambda p=p: toggle(p), N)
                r["page_load"] = page_load(p)
                r["idle6_toggle"] = with_idle_sockets(p)
            p.stop()
            print(f"{name}: smallest heap…", flush=True)
            r["min_heap"] = min_heap(name, folder)
            out[name] = r
        print("espblink, code as files (1 MB boards)…", flush=True)
        folder = prepare("espblink-files", root)
        ok, free_boot, free_after = serve_mixed("espblink-files", folder, HEAP)
        out["espblink-files"] = {"serves_at_board_heap": ok, "board_heap_free_after_boot": free_boot,
                                 "board_heap_free_after_1000": free_after,
                                 "min_heap": min_heap("espblink-files", folder)}
    return out


def measure_mqtt() -> dict[str, Any]:
    """Free heap after boot on a virtual NodeMCU joined to home Wi-Fi, MQTT off and then on (connected to a
    real Mosquitto): what MQTT costs."""
    import urllib.request

    from espblink import image, settings, sync
    from nodemcu.flash import SIZE

    sys.path.insert(0, str(paths.ROOT / "tests"))
    from mqtt_support import broker

    def heap_free(board: Board, want: str) -> int | None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(board.info()["http"] + "api/status", timeout=2) as r:
                    s = json.loads(r.read())
                if want == "off" or (s.get("mqtt") or {}).get("state") == "connected":
                    time.sleep(2)  # past the discovery and state messages sent on connecting
                    with urllib.request.urlopen(board.info()["http"] + "api/status", timeout=2) as r:
                        return json.loads(r.read())["heap_free"]
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        return None

    with tempfile.TemporaryDirectory() as tmp, broker(Path(tmp) / "broker") as b:
        root = Path(tmp)
        base = root / "settings.toml"
        settings.create(base)
        home = base.read_text().replace('wifi_ssid = ""', 'wifi_ssid = "home"').replace(
            'wifi_key = ""', 'wifi_key = "home key 123"')
        off, on = root / "off.toml", root / "on.toml"
        off.write_text(home)
        on.write_text(home.replace('mqtt_host = ""', 'mqtt_host = "127.0.0.1"').replace(
            "mqtt_port = 1883", f"mqtt_port = {b.port}"))
        (root / "board").mkdir()
        fw = image.make(variant="FLASH_2M_ROMFS")
        (root / "board" / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
        board = Board(root / "board", sta={"home": "home key 123"}, sta_delay_ms=300, log=lambda s: None)
        try:
            board.power_on()
            out = {}
            for label, cfg in (("off", off), ("on", on)):
                with contextlib.redirect_stdout(io.StringIO()):
                    sync.deploy(board.rfc2217.url, cfg)
                out[label] = heap_free(board, label)
            return out
        finally:
            board.close()


def measure_ota() -> dict[str, Any]:
    """The same changes deployed over USB to one virtual NodeMCU (ROMFS build) and over Wi-Fi to its twin
    (a copy of its flash): time, and bytes sent (serial for USB, the signed update for Wi-Fi)."""
    from espblink import image, ota, settings, sync
    from nodemcu.flash import SIZE

    def quiet(fn: Any, *a: Any, **k: Any) -> Any:
        with contextlib.redirect_stdout(io.StringIO()):
            return fn(*a, **k)

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg, renamed = root / "settings.toml", root / "renamed.toml"
        settings.create(cfg)
        renamed.write_text(cfg.read_text().replace('name = "red"', 'name = "rot"'))
        src = root / "device"
        shutil.copytree(paths.DEVICE, src)
        app = src / "app.py"
        app.write_text(app.read_text().replace('VERSION = "', 'VERSION = "bench-'))
        (root / "usb").mkdir()
        fw = image.make(variant="FLASH_2M_ROMFS")
        (root / "usb" / "flash.bin").write_bytes(fw + b"\xff" * (SIZE - len(fw)))
        usb = CountingBoard(root / "usb", log=lambda s: None)
        usb.power_on()
        quiet(sync.deploy, usb.rfc2217.url, cfg)  # the first deploy, over USB: it gives the board its key
        usb.power_off()
        (root / "wifi").mkdir()
        shutil.copy(root / "usb" / "flash.bin", root / "wifi" / "flash.bin")
        wifi = CountingBoard(root / "wifi", log=lambda s: None)
        try:
            usb.power_on()
            wifi.power_on()
            time.sleep(2)
            changes = (("an LED renamed (settings)", renamed, None), ("the app changed (code)", renamed, src),
                       ("nothing changed", renamed, src))
            for label, settings_path, code in changes:
                builder = (lambda mpy, c, code=code: sync.build_for_board(mpy, c, code)) if code else None
                usb.link()
                t = time.perf_counter()
                quiet(sync.deploy, usb.rfc2217.url, settings_path, builder=builder)
                usb_s, usb_bytes = time.perf_counter() - t, usb.link()["to_board"]
                t = time.perf_counter()
                r = quiet(ota.deploy, wifi.info()["http"], settings_path, builder=builder, say=lambda s: None)
                out[label] = {"usb_s": usb_s, "usb_bytes": usb_bytes, "ota_s": time.perf_counter() - t,
                              "ota_bytes": r.sent, "ota_ok": r.ok or not r.sent}
        finally:
            usb.close()
            wifi.close()
    return out


class CountingBoard(Board):
    """The virtual board, counting the bytes that cross its serial link (to it, from it)."""

    to_board = from_board = 0

    def uart_in(self, data: bytes) -> None:
        self.to_board += len(data)
        super().uart_in(data)

    def emit(self, data: bytes) -> None:
        self.from_board += len(data)
        super().emit(data)

    def link(self) -> dict[str, int]:
        out = {"to_board": self.to_board, "from_board": self.from_board}
        self.to_board = self.from_board = 0
        return out


def measure_sim() -> dict[str, Any]:
    from espblink import flash, image, settings, sync

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        board = CountingBoard(root / "board", log=lambda s: None)
        try:
            board.power_on()
            fw = root / "fw.bin"
            fw.write_bytes(image.make())
            board.link()
            t = time.perf_counter()
            flash.flash(board.rfc2217.url, str(fw))
            flash_s = time.perf_counter() - t
            flash_link = board.link()
            cfg = root / "settings.toml"
            settings.create(cfg)
            t = time.perf_counter()
            board.link()
            first = sync.deploy(board.rfc2217.url, cfg)
            full_s = time.perf_counter() - t
            full_link = board.link()
            t = time.perf_counter()
            again = sync.deploy(board.rfc2217.url, cfg)
            again_s = time.perf_counter() - t
            again_link = board.link()
            board.power_off()
            t = time.perf_counter()
            board.power_on()
            url = board.info()["http"] + "api/leds"
            while True:
                try:
                    import urllib.request

                    urllib.request.urlopen(url, timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.01)
            boot_s = time.perf_counter() - t
            return {"flash_s": flash_s, "image_bytes": fw.stat().st_size, "flash_link": flash_link,
                    "deploy_full": {"files": len(first.write), "bytes": first.bytes, "s": full_s, **full_link},
                    "deploy_again": {"files": len(again.write), "bytes": again.bytes, "s": again_s, **again_link},
                    "power_on_to_200_s": boot_s}
        finally:
            board.close()


SHIMS_PROBE = """import gc
gc.collect()
a = gc.mem_free()
import hwlink, esp, machine, network
gc.collect()
print(a - gc.mem_free())
"""


def shims_heap() -> int:
    """Heap the board's C modules take as frozen shims here (module and class objects, the host link): what
    the virtual board spends that a NodeMCU does not."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "probe.py").write_text(SHIMS_PROBE)
        p = runtime.run(["probe.py"], Path(tmp), stdout=subprocess.PIPE, text=True)
        out, _ = p.communicate(timeout=30)
    return int(out.strip())


README = paths.ROOT / "README.md"
BEGIN, END = "<!-- bench: generated by make bench from bench/results/results.md -->", "<!-- /bench -->"


def readme_block(md: str) -> str:
    """The README's benchmark section: results.md without its title."""
    body = md.split("\n", 2)[2].strip().replace("](chart.png)", "](bench/results/chart.png)")
    return body.replace("\n## ", "\n### ")  # under the README's own "## Benchmarks"


def write_readme(md: str) -> None:
    text = README.read_text()
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:i] + "\n" + readme_block(md) + "\n" + text[j:])


def fmt_b(v: int | None) -> str:
    return "n/a" if v is None else f"{v:,} B"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a"  # noqa: E501


def table(r: dict[str, Any]) -> str:
    e, m, t = r["espblink"], r["microdot"], r["tutorial"]

    def g(x: dict, *keys: str) -> Any:
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        return x

    def fmt(v: Any) -> str:
        if v is None:
            return "n/a (hangs or does not boot)"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:,.2f}" if isinstance(v, float) and v < 100 else f"{v:,.0f}"

    rows = [
        (f"boots and serves 1,000 requests in {HEAP:,} B", e.get("serves_at_board_heap"),
         m.get("serves_at_board_heap"), t.get("serves_at_board_heap"), "none"),
        ("GET / requests/s", g(e, "get_page", "rps"), g(m, "get_page", "rps"), g(t, "get_page", "rps"), "higher"),
        ("GET / p50 (ms)", g(e, "get_page", "p50_ms"), g(m, "get_page", "p50_ms"), g(t, "get_page", "p50_ms"), "lower"),
        ("GET / p99 (ms)", g(e, "get_page", "p99_ms"), g(m, "get_page", "p99_ms"), g(t, "get_page", "p99_ms"), "lower"),
        ("POST toggle requests/s", g(e, "post_toggle", "rps"), g(m, "post_toggle", "rps"), g(t, "post_toggle", "rps"),
         "higher"),
        ("POST toggle p50 (ms)", g(e, "post_toggle", "p50_ms"), g(m, "post_toggle", "p50_ms"),
         g(t, "post_toggle", "p50_ms"), "lower"),
        ("POST toggle p99 (ms)", g(e, "post_toggle", "p99_ms"), g(m, "post_toggle", "p99_ms"),
         g(t, "post_toggle", "p99_ms"), "lower"),
        *((f"toggle {k} with 6 idle sockets (ms)", g(e, "idle6_toggle", f"{k}_ms"), g(m, "idle6_toggle", f"{k}_ms"),
           g(t, "idle6_toggle", f"{k}_ms"), "lower") for k in ("p50", "p99", "max")),
        ("toggles answered with 6 idle sockets (of 50)", g(e, "idle6_toggle", "answered"),
         g(m, "idle6_toggle", "answered"), g(t, "idle6_toggle", "answered"), "higher"),
        ("heap in use after boot (B)", e.get("heap_used_after_boot"), m.get("heap_used_after_boot"),
         t.get("heap_used_after_boot"), "lower"),
        (f"free heap after boot in {HEAP:,} B", e.get("board_heap_free_after_boot"),
         m.get("board_heap_free_after_boot"), t.get("board_heap_free_after_boot"), "higher"),
        ("free heap after 1,000 more requests", e.get("board_heap_free_after_1000"),
         m.get("board_heap_free_after_1000"), t.get("board_heap_free_after_1000"), "higher"),
        ("smallest heap for 1,000 requests (B): the peak", e.get("min_heap"), m.get("min_heap"), t.get("min_heap"),
         "lower"),
        ("bytes for one page load", g(e, "page_load", "bytes"), g(m, "page_load", "bytes"),
         g(t, "page_load", "bytes"), "lower"),
        ("requests for one page load", g(e, "page_load", "requests"), g(m, "page_load", "requests"),
         g(t, "page_load", "requests"), "lower"),
    ]
    lines = ["| figure | espblink | Microdot | tutorial server | espblink vs Microdot (>1x: espblink better) |",
             "|---|---:|---:|---:|---:|"]
    for name, a, b, c, better in rows:
        rel = "" if better == "none" else ratio(a, b) if better == "higher" else ratio(b, a)
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {rel} |")
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = ["espblink", "microdot", "tutorial"]
    figs = [("POST toggle req/s", lambda x: (x.get("post_toggle") or {}).get("rps")),
            ("smallest heap (KB)", lambda x: (x.get("min_heap") or 0) / 1024 or None),
            ("toggle p99 ms, 6 idle sockets", lambda x: (x.get("idle6_toggle") or {}).get("p99_ms"))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, f) in zip(axes, figs, strict=True):
        vals = [f(r[p]) for p in peers]
        ax.bar(peers, [v or 0 for v in vals], color=["#2a7fff", "#999", "#ccc"])
        for i, v in enumerate(vals):
            label = "hangs" if v is None else f"{v:,.0f}" if v >= 10 else f"{v:.2f}"
            ax.text(i, (v or 0), label, ha="center", va="bottom", fontsize=9)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    r: dict[str, Any] = measure_peers()
    print("virtual board: flash, deploy, power-on…", flush=True)
    r["sim"] = measure_sim()
    r["shims_heap"] = shims_heap()
    print("MQTT off and on…", flush=True)
    r["mqtt"] = measure_mqtt()
    print("updates over USB and over Wi-Fi…", flush=True)
    r["ota"] = measure_ota()
    (RESULTS / "results.json").write_text(json.dumps(r, indent=1))
    s = r["sim"]
    md = ["# espblink benchmark", "", "Same machine, same run, the board's own MicroPython (v1.27.0 unix port, "
          f"32-bit, ESP8266 settings) with the board's shims; speed at a {PERF_HEAP:,} B heap for all three; "
          f"{N} sequential requests per figure from a Python client "
          "on loopback (one connection per request); page loads in headless Chromium, phone profile. "
          "Reproduce: `make bench`. "
          "Free heap is what each server's /api/status reports after gc.collect() (the peers got that route "
          "for the bench); the smallest heap is found by bisection in 2 KB steps.", "", table(r), "",
          "## On the virtual board", "",
          "| figure | value |", "|---|---:|",
          f"| flash a {s['image_bytes']:,} B image (erase, write compressed, verify) | "
          f"{s['flash_link']['to_board']:,} B sent over serial "
          f"({s['flash_link']['to_board'] / s['image_bytes']:.0%} of the image), {s['flash_s']:.1f} s |",
          *(f"| {label} | {d['files']} files written ({d['bytes']:,} B of files), {d['to_board']:,} B sent "
            f"and {d['from_board']:,} B received over serial (restart and console check included), {d['s']:.1f} s |"
            for label, d in (("full deploy", s["deploy_full"]), ("deploy with nothing changed", s["deploy_again"]))),
          f"| power-on to first HTTP 200 | {s['power_on_to_200_s']:.2f} s |",
          f"| heap the shims of machine, network and esp take here, not on a board | {r['shims_heap']:,} B |", "",
          "## Where the code lives (NodeMCU 2 MB and up: ROMFS; 1 MB boards: .mpy files on littlefs)", "",
          f"At the board's heap ({HEAP:,} B); the app as `deploy` leaves each kind of board.", "",
          "| figure | code in ROMFS | code as files |", "|---|---:|---:|",
          *(f"| {label} | {fmt_b(r['espblink'].get(k))} | {fmt_b(r['espblink-files'].get(k))} |" for label, k in (
              ("free heap after boot", "board_heap_free_after_boot"),
              ("free heap after 1,000 mixed requests", "board_heap_free_after_1000"),
              ("smallest heap for 1,000 requests", "min_heap"))),
          f"| free heap after boot on home Wi-Fi, MQTT off / on (connected to Mosquitto) | "
          f"{fmt_b(r['mqtt'].get('off'))} / {fmt_b(r['mqtt'].get('on'))} | |", "",
          "## An update over Wi-Fi against one over USB, the same change", "",
          "Two virtual NodeMCUs (ROMFS build) with the same flash; times include the restart and the check "
          "that the app serves again.", "",
          "| change | USB: time | USB: bytes over serial | Wi-Fi: time | Wi-Fi: bytes of the signed update |",
          "|---|---:|---:|---:|---:|",
          *(f"| {label} | {d['usb_s']:.1f} s | {d['usb_bytes']:,} | {d['ota_s']:.1f} s | {d['ota_bytes']:,}"
            f"{'' if d['ota_ok'] else ' (refused)'} |" for label, d in r["ota"].items()), "",
          "![chart](chart.png)", ""]
    (RESULTS / "results.md").write_text("\n".join(md))
    write_readme("\n".join(md))
    chart(r, RESULTS / "chart.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
