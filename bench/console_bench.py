#!/usr/bin/env python3
"""Benchmark the operator console (issue 11) in headless Chromium against a real `mmx serve`.

    /work/venv/bin/python bench/console_bench.py [--cameras 16] [--fps 10] [--seconds 10] [--cuts 200]

Processes: the server (`mmx serve --no-record`, its CPU measured with psutil), one process
running every camera as in-process `DeviceClient`s (bench/serve_devices.py's camera child:
pre-encoded 640×360 JPEG previews of the shared video when present, ~40 KB, heartbeats and
pose at 10 Hz), Debian's headless Chromium on the console (selenium), and this one.

1. Multiview: N cameras at F fps through the page's one preview WebSocket. Per tile over the
   window: frames drawn per second and the frame age p95 (drawn on the tile's canvas minus
   the server's receive stamp, one machine's clock). Goals: every tile's p95 < 300 ms;
   serve's CPU < 40 % of one core meanwhile.
2. Key → cut: K key presses ("1"/"2" alternating, dispatched in the page to the console's
   own key handler, 60 ms apart) → the server's `director.cut` stamp, and → the cut seen by
   the page on its event stream. Goal: key → `director.cut` p99 < 50 ms on loopback.

CPU is percent of one core. The machine may have 2 cores shared by the cameras, Chromium
and the server, so the load generators compete with the server.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

TOKEN = "bench-token"  # bench/serve_devices.py's camera child uses this one
MMX = [sys.executable, "-m", "mmx"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def verdict(ok: bool) -> str:
    return "met" if ok else "SHORT"


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-background-timer-throttling", "--disable-renderer-backgrounding"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    driver.set_script_timeout(120)
    return driver


class CutWatcher(threading.Thread):
    """Follows ``GET /v1/events?types=director.cut`` and keeps every cut event."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.cuts: list[dict] = []
        self.ready = threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", f"{self.url}/v1/events", params={"types": "director.cut"},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=None) as resp:  # fmt: skip
            self.ready.set()
            for line in resp.iter_lines():
                if line.strip():
                    self.cuts.append(json.loads(line))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, default=16, help="simulated cameras (default 16)")
    p.add_argument("--fps", type=float, default=10.0, help="preview frames per second per camera (default 10)")
    p.add_argument("--seconds", type=float, default=10.0, help="measuring window in seconds (default 10)")
    p.add_argument("--cuts", type=int, default=200, help="key presses to time (default 200)")
    a = p.parse_args()
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        raise SystemExit("needs Debian's chromium and chromium-driver")

    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MMX_HOME": str(tmp / "home")}
    serve = subprocess.Popen([*MMX, "serve", "--port", str(port), "--token", TOKEN, "--data", str(tmp / "data"), "--no-record",
                              "--device-timeout", "5"], stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.err", "wb"), env=env)  # fmt: skip
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def up():
        try:
            return http.get("/v1/state").status_code == 200
        except httpx.HTTPError:
            return False

    cams = driver = None
    try:
        wait_for(up, 30, "mmx serve")
        cams = subprocess.Popen([sys.executable, str(ROOT / "bench" / "serve_devices.py"), "_cameras", "--server", url,
                                 "--n", str(a.cameras), "--fps", str(a.fps)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp / "cameras.err", "wb"), env=env)  # fmt: skip
        first = json.loads(cams.stdout.readline())
        print(f"console bench: {a.cameras} cameras × {a.fps:g} fps, previews ~{first['jpeg_bytes'] // 1024} KB, "
              f"one browser at 1280×800 (headless Chromium)")  # fmt: skip
        json.loads(cams.stdout.readline())  # {"connected": n}
        driver = browser()
        driver.get(f"{url}/?token={TOKEN}")
        wait_for(lambda: driver.execute_script(
            f"return document.querySelectorAll('#multiview [data-camera][data-status=live]').length === {a.cameras}"
            " && document.querySelector('#connection').dataset.state === 'live'"), 30, "every tile live")  # fmt: skip
        wait_for(lambda: driver.execute_script(
            f"return Object.values(window.mmx.multiview.frameStats()).filter(s => s.frames > 5).length >= {a.cameras}"), 30,
            "frames on every tile")  # fmt: skip

        # 1. multiview
        proc = psutil.Process(serve.pid)
        driver.execute_script("window.mmx.multiview.resetStats()")
        proc.cpu_percent(None)
        t0 = time.monotonic()
        time.sleep(a.seconds)
        cpu = proc.cpu_percent(None)
        elapsed = time.monotonic() - t0
        stats = driver.execute_script("return window.mmx.multiview.frameStats()")
        tiles = sorted(stats.items())
        fps = [s["frames"] / elapsed for _c, s in tiles]
        p95s = [s["p95_ms"] for _c, s in tiles if s["p95_ms"] is not None]
        worst = max(p95s) if len(p95s) == a.cameras else float("inf")
        print(f"1. multiview over one WebSocket, {elapsed:.1f} s window:")
        print(f"   frames drawn per tile: min {min(fps):.1f}/s, mean {sum(fps) / len(fps):.1f}/s of {a.fps:g} sent "
              f"(skipped as stale: {sum(s['skipped'] for _c, s in tiles)})")  # fmt: skip
        print(f"   frame age (server receive → drawn) p95 per tile: worst {worst:.0f} ms, median tile "
              f"{pct(p95s, 50):.0f} ms, p50 over tiles {pct([s['p50_ms'] for _c, s in tiles], 50):.0f} ms "
              f"(goal every tile < 300 ms: {verdict(worst < 300)})")  # fmt: skip
        print(f"   mmx serve CPU: {cpu:.0f} % of one core (goal < 40 %: {verdict(cpu < 40)})")

        # 2. key → cut
        watcher = CutWatcher(url)
        watcher.start()
        watcher.ready.wait(10)
        time.sleep(0.2)
        base = len(watcher.cuts)
        driver.execute_script("""
            const app = window.mmx; app.benchSeen = [];
            const add = app.log.add.bind(app.log);
            app.log.add = (ev) => { if (ev.type === 'director.cut') app.benchSeen.push({to: ev.data.to, t: Date.now(), seq: ev.seq}); add(ev); };
        """)
        keys = driver.execute_async_script(f"""
            const done = arguments[arguments.length - 1];
            const app = window.mmx; const out = [];
            let i = 0;
            const order = [...app.cameras.keys()];
            const next = () => {{
              if (i >= {a.cuts}) {{ setTimeout(() => done(out), 500); return; }}
              // alternate "1"/"2" so every press is a real cut
              const key = app.program === 'cam-1' ? '2' : '1';
              const t = Date.now();
              document.dispatchEvent(new KeyboardEvent('keydown', {{key, bubbles: true}}));
              out.push({{key, t}});
              i++;
              // the next press once this cut is back on the page's stream (or after 500 ms)
              const want = key === '1' ? 'cam-1' : 'cam-2', t0 = Date.now();
              const wait = () => (app.program === want && app.benchSeen.length >= i) || Date.now() - t0 > 500 ? setTimeout(next, 60) : setTimeout(wait, 2);
              wait();
            }};
            next();
        """)
        wait_for(lambda: len(watcher.cuts) - base >= len(keys), 10, "every cut event")
        seen = driver.execute_script("return window.mmx.benchSeen")
        cuts = watcher.cuts[base:]
        lat_server = [cut["ts"] * 1000 - k["t"] for k, cut in zip(keys, cuts)]
        lat_page = [s["t"] - k["t"] for k, s in zip(keys, seen)]
        print(f"2. key → cut over {len(keys)} presses:")
        print(f"   key → director.cut stamped by serve: p50 {pct(lat_server, 50):.1f} ms, p99 {pct(lat_server, 99):.1f} ms, "
              f"max {max(lat_server):.1f} ms (goal p99 < 50 ms: {verdict(pct(lat_server, 99) < 50)})")  # fmt: skip
        if lat_page:
            print(f"   key → cut back on the page's event stream: p50 {pct(lat_page, 50):.1f} ms, p99 {pct(lat_page, 99):.1f} ms")
    finally:
        if driver is not None:
            driver.quit()
        if cams is not None and cams.poll() is None:
            cams.stdin.close()
            try:
                cams.wait(20)
            except subprocess.TimeoutExpired:
                cams.kill()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                serve.kill()
        http.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
