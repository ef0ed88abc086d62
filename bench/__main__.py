"""`make bench`: espblink, Microdot and the tutorial server on the same MicroPython unix runtime, heap and
shims, compiled to .mpy the same way, measured in one run. Ratios against the peers are the headline."""

from __future__ import annotations

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

from espblink import build, paths, runtime

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CONFIG = {"ap_ssid": "espblink-bench", "ap_key": "benchmark-key", "leds": [
    {"name": "blue", "gpio": 2, "active_low": True}, {"name": "red", "gpio": 16, "active_low": True}]}
HEAP = runtime.DEFAULT_HEAP  # the board's: does each boot and serve in it?
PERF_HEAP = 100_000  # speed is compared where all three run, with the same heap
N = 300


def prepare(peer: str, root: Path) -> Path:
    """The peer's files as they would sit on the board: compiled to .mpy, main.py by name."""
    d = root / peer
    d.mkdir()
    page = build.build(out=root / "espblink-build")
    if peer == "espblink":
        for f in page.iterdir():
            shutil.copy(f, d)
        (d / "config.json").write_text(json.dumps(CONFIG))
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
        self.proc = runtime.spawn([str(build.compile_shims() / "launch.py")], folder, heap, {},
                                  {80: self.port}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
        head = f"{method} {path} HTTP/1.1\r\nHost: 192.168.4.1\r\nAccept-Encoding: gzip\r\nConnection: close\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nX-Espblink: 1\r\nContent-Length: {len(body)}\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall((head + "\r\n" + (body or "")).encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        parts = data.split(b" ", 2)
        return (int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0), len(data)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


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


def with_idle_sockets(p: Peer, n: int = 20) -> dict[str, Any]:
    try:
        idle = [socket.create_connection(("127.0.0.1", p.port)) for _ in range(4)]
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
        return {"p50_ms": statistics.median(lat), "answered": n, "of": n}
    finally:
        for s in idle:
            s.close()


def serves(name: str, folder: Path, heap: int, n: int = 1000) -> bool:
    p = Peer(name, folder, heap)
    try:
        if not p.up:
            return False
        for i in range(n):
            path, body = (("/", None), ("/api/leds", None), ("/api/leds/blue", '{"toggle": true}'))[i % 3]
            if p.request("POST" if body else "GET", path, body)[0] != 200:
                return False
        return p.proc.poll() is None
    except OSError:
        return False
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
            r: dict[str, Any] = {"serves_at_board_heap": serves(name, folder, HEAP)}
            p = Peer(name, folder, PERF_HEAP)
            if p.up:
                r["get_page"] = timed(lambda p=p: p.request("GET", "/")[0], N)
                r["post_toggle"] = timed(lambda p=p: toggle(p), N)
                r["page_load"] = page_load(p)
                r["idle4_toggle"] = with_idle_sockets(p)
            p.stop()
            print(f"{name}: smallest heap…", flush=True)
            r["min_heap"] = min_heap(name, folder)
            out[name] = r
    return out


def measure_sim() -> dict[str, Any]:
    from espblink import flash, image, settings, sync
    from espblink.sim.board import Board

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        board = Board(root / "board", log=lambda s: None)
        try:
            board.power_on()
            fw = root / "fw.bin"
            fw.write_bytes(image.make())
            t = time.perf_counter()
            flash.flash(board.rfc2217.url, str(fw))
            flash_s = time.perf_counter() - t
            cfg = root / "settings.toml"
            settings.create(cfg)
            t = time.perf_counter()
            first = sync.deploy(board.rfc2217.url, cfg)
            full_s = time.perf_counter() - t
            t = time.perf_counter()
            again = sync.deploy(board.rfc2217.url, cfg)
            again_s = time.perf_counter() - t
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
            return {"flash_s": flash_s, "image_bytes": fw.stat().st_size,
                    "deploy_full": {"files": len(first.write), "bytes": first.bytes, "s": full_s},
                    "deploy_again": {"files": len(again.write), "bytes": again.bytes, "s": again_s},
                    "power_on_to_200_s": boot_s}
        finally:
            board.close()


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
            return "hangs/fails"
        if isinstance(v, bool):
            return "yes" if v else "no"
        return f"{v:,.2f}" if isinstance(v, float) and v < 100 else f"{v:,.0f}"

    rows = [
        (f"boots and serves 1,000 requests in {HEAP:,} B", e.get("serves_at_board_heap"),
         m.get("serves_at_board_heap"), t.get("serves_at_board_heap"), "none"),
        ("GET / requests/s", g(e, "get_page", "rps"), g(m, "get_page", "rps"), g(t, "get_page", "rps"), "higher"),
        ("POST toggle requests/s", g(e, "post_toggle", "rps"), g(m, "post_toggle", "rps"), g(t, "post_toggle", "rps"),
         "higher"),
        ("POST toggle p99 (ms)", g(e, "post_toggle", "p99_ms"), g(m, "post_toggle", "p99_ms"),
         g(t, "post_toggle", "p99_ms"), "lower"),
        ("toggle p50 with 4 idle sockets (ms)", g(e, "idle4_toggle", "p50_ms"), g(m, "idle4_toggle", "p50_ms"),
         g(t, "idle4_toggle", "p50_ms"), "lower"),
        ("smallest heap for 1,000 requests (B)", e.get("min_heap"), m.get("min_heap"), t.get("min_heap"), "lower"),
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
            ("toggle p50 ms, 4 idle sockets", lambda x: (x.get("idle4_toggle") or {}).get("p50_ms"))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (title, f) in zip(axes, figs, strict=True):
        vals = [f(r[p]) for p in peers]
        ax.bar(peers, [v or 0 for v in vals], color=["#2a7fff", "#999", "#ccc"])
        for i, v in enumerate(vals):
            ax.text(i, (v or 0), "hangs" if v is None else f"{v:,.0f}", ha="center", va="bottom", fontsize=9)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    r: dict[str, Any] = measure_peers()
    print("virtual board: flash, deploy, power-on…", flush=True)
    r["sim"] = measure_sim()
    (RESULTS / "results.json").write_text(json.dumps(r, indent=1))
    s = r["sim"]
    md = ["# espblink benchmark", "", f"Same machine, same run, MicroPython unix port with the board's shims, "
          f"speed at a {PERF_HEAP:,} B heap for all three; {N} sequential requests per figure from a Python client "
          "on loopback (one connection per request); page loads in headless Chromium, phone profile. "
          "Reproduce: `make bench`.", "", table(r), "",
          "## On the virtual board", "",
          "| figure | value |", "|---|---:|",
          f"| flash a {s['image_bytes'] // 1024} KB image (erase, write, verify) | {s['flash_s']:.1f} s |",
          f"| full deploy | {s['deploy_full']['files']} files, {s['deploy_full']['bytes']:,} B, "
          f"{s['deploy_full']['s']:.1f} s |",
          f"| deploy with nothing changed | {s['deploy_again']['files']} files, {s['deploy_again']['bytes']:,} B, "
          f"{s['deploy_again']['s']:.1f} s |",
          f"| power-on to first HTTP 200 | {s['power_on_to_200_s']:.2f} s |", "",
          "![chart](chart.png)", ""]
    (RESULTS / "results.md").write_text("\n".join(md))
    chart(r, RESULTS / "chart.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
