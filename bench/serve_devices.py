#!/usr/bin/env python3
"""Benchmark `mmx serve` with many `mmx device` cameras on loopback (issue 3).

    /work/venv/bin/python bench/serve_devices.py [--commands 300] [--seconds 5]

Processes: the server (`mmx serve`, its CPU measured with psutil), one process running all
the cameras as in-process `DeviceClient`s (pre-encoded 640×360 JPEG previews, so the cameras
cost little CPU), one process of MJPEG viewers, and this one (the operator's HTTP calls and
the GET /v1/state polling).

1. 16 devices, each sending heartbeats (1 Hz), pose (10 Hz) and previews (10 fps):
   operator command → device ack round trip over N zoom commands (round robin over the
   cameras, sequential): the HTTP round trip seen by the operator and the server's own
   command→ack ``latency_ms``; p50/p99. Target p99 < 20 ms. Server CPU while idle-streaming
   and while commands run.
2. 8 cameras × 15 fps × 3 MJPEG viewers each: server CPU. Target < 50 % of one core.
3. 64 devices connecting at once (same traffic as 1): time from the moment the device
   process starts connecting until GET /v1/state lists all 64 as live. Target < 2 s.

CPU is percent of one core (100 = one core busy). The machine has 2 cores shared by every
process here, so the load generators compete with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402

TOKEN = "bench-token"
MMX = [sys.executable, "-m", "mmx"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


# -- child process: cameras -------------------------------------------------------------


def run_cameras(server: str, n: int, fps: float, size: tuple[int, int], seconds: float | None) -> None:
    """Run ``n`` DeviceClients in one loop; print {"started": ts} then {"connected": n, "ts"}
    on stdout; run until stdin closes (or ``seconds``), then print counts."""
    from mmx.device import DeviceClient, DeviceConfig, PoseTrack, TestPattern, encode_jpeg, render_view
    from mmx.device.frames import pattern_joints
    from mmx.device.pose import PoseSample

    video = ROOT.parent / "shared" / "data" / "video" / "vtest.avi"
    if video.exists():  # real camera pictures compress like real previews (~40 KB), a pattern does not
        from mmx.device import VideoSource

        source = VideoSource(video)
    else:
        source = TestPattern(size=(1280, 720), fps=10, duration_s=2.0)
    jpegs = [encode_jpeg(render_view(source.frame_at(i / 10), size=size)) for i in range(20)]
    source.close()
    track = PoseTrack([PoseSample(t=i / 10, joints=pattern_joints(i / 10)) for i in range(80)], fps=10.0)

    def out(obj) -> None:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()

    async def main() -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            clients = [DeviceClient(DeviceConfig(server=server, token=TOKEN, name=f"bench-{i}", device_id=f"dev-bench-{n}-{i}",
                                                 fps=fps, size=size, pose_offset_s=i * 0.37, connect_timeout_s=20),
                                    preview_jpegs=jpegs[i % 7:] + jpegs[: i % 7], pose=track, http=http)
                       for i in range(n)]  # fmt: skip
            out({"started": time.time(), "jpeg_bytes": round(statistics.mean(map(len, jpegs)))})
            tasks = [asyncio.create_task(c.run()) for c in clients]
            await asyncio.gather(*(c.connected.wait() for c in clients))
            out({"connected": n, "ts": time.time()})
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not os.read(sys.stdin.fileno(), 1024) else None)
            t0 = time.monotonic()
            sent0 = [(c.frames_sent, c.poses_sent) for c in clients]
            try:
                await asyncio.wait_for(done.wait(), seconds)
            except asyncio.TimeoutError:
                pass
            elapsed = time.monotonic() - t0
            frames = sum(c.frames_sent - s[0] for c, s in zip(clients, sent0))
            poses = sum(c.poses_sent - s[1] for c, s in zip(clients, sent0))
            for c in clients:
                c.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            out({"frames_per_s": round(frames / elapsed, 1), "poses_per_s": round(poses / elapsed, 1), "window_s": round(elapsed, 2),
                 "commands": sum(c.commands_done for c in clients)})  # fmt: skip

    asyncio.run(main())


# -- child process: MJPEG viewers ----------------------------------------------------------


def run_viewers(server: str, cameras: list[str], per_camera: int, seconds: float) -> None:
    """``per_camera`` MJPEG viewers on each camera for ``seconds``; print parts received per
    viewer per second (min/mean)."""

    async def main() -> None:
        import aiohttp

        counts: list[int] = []

        async def view(http: aiohttp.ClientSession, camera: str) -> None:
            n = 0
            marker = b"--mmxframe"
            tail = b""
            try:
                async with http.get(f"{server}/v1/cameras/{camera}/preview.mjpeg", params={"token": TOKEN}) as resp:
                    resp.raise_for_status()
                    async for chunk in resp.content.iter_any():
                        data = tail + chunk
                        n += data.count(marker)
                        tail = data[-(len(marker) - 1):]
            finally:
                counts.append(n)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = [asyncio.create_task(view(http, cam)) for cam in cameras for _ in range(per_camera)]
            sys.stdout.write('{"viewing": true}\n')
            sys.stdout.flush()
            await asyncio.sleep(seconds)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        rates = [c / seconds for c in counts]
        sys.stdout.write(orjson.dumps({"viewers": len(rates), "fps_min": round(min(rates), 1),
                                       "fps_mean": round(statistics.mean(rates), 1)}).decode() + "\n")  # fmt: skip
        sys.stdout.flush()

    asyncio.run(main())


# -- the orchestrator ---------------------------------------------------------------------


class Server:
    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([*MMX, "serve", "--port", str(self.port), "--token", TOKEN, "--data", str(data),
                                      "--events", str(data / "events.jsonl")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.ps = psutil.Process(self.proc.pid)
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/v1/state").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("mmx serve did not start")
            time.sleep(0.1)

    def live(self) -> list[dict]:
        return [c for c in self.http.get("/v1/state").json()["cameras"] if c["status"] == "live"]

    def cpu(self, seconds: float) -> float:
        """Server CPU over ``seconds`` in percent of one core."""
        self.ps.cpu_percent(None)
        time.sleep(seconds)
        return self.ps.cpu_percent(None)

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Child:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def line(self, timeout: float = 60.0) -> dict:
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise SystemExit(f"child {self.proc.args[2:]} said nothing in {timeout} s")
        raw = self.proc.stdout.readline()
        if not raw:
            raise SystemExit(f"child {self.proc.args[2:]} ended (exit {self.proc.wait()})")
        return orjson.loads(raw)

    def finish(self) -> dict:
        self.proc.stdin.close()
        last = self.line(30)
        self.proc.wait(30)
        return last


def cameras_child(server: Server, n: int, fps: float, seconds: float | None = None) -> Child:
    args = ["_cameras", "--server", server.url, "--n", str(n), "--fps", str(fps)]
    return Child(*args, *(["--seconds", str(seconds)] if seconds else []))


def bench_commands(tmp: Path, n_commands: int, seconds: float) -> None:
    server = Server(tmp / "a")
    child = cameras_child(server, 16, 10)
    try:
        started = child.line()
        child.line()  # all connected
        cams = sorted(c["camera"] for c in server.live())
        time.sleep(1.0)
        idle_cpu = server.cpu(seconds)
        http_ms, ack_ms = [], []
        # the stdlib client: the thinnest keep-alive HTTP/1.1 operator (httpx adds ~3 ms here)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        server.ps.cpu_percent(None)
        t0 = time.perf_counter()
        for i in range(n_commands):
            cam = cams[i % len(cams)]
            zoom = 2 if (i // len(cams)) % 2 == 0 else 1
            t = time.perf_counter()
            conn.request("POST", f"/v1/cameras/{cam}/zoom", body=b'{"zoom": %d}' % zoom, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            http_ms.append((time.perf_counter() - t) * 1000)
            assert resp.status == 200, body
            ack_ms.append(orjson.loads(body)["latency_ms"])
        conn.close()
        cmd_cpu = server.ps.cpu_percent(None)
        cmd_s = time.perf_counter() - t0
        stats = child.finish()
    finally:
        server.close()
    print(f"1. 16 devices (heartbeat 1 Hz, pose 10 Hz, JPEG 640x360 ~{started['jpeg_bytes']} B at 10 fps):")
    print(f"   measured traffic: {stats['frames_per_s']} previews/s, {stats['poses_per_s']} poses/s into the server")
    print(f"   command -> ack, {n_commands} zoom commands over HTTP ({n_commands / cmd_s:.0f}/s, sequential):")
    print(f"     operator HTTP round trip  p50 {pct(http_ms, 50):6.2f} ms   p99 {pct(http_ms, 99):6.2f} ms   max {max(http_ms):6.2f} ms")
    print(f"     server command->ack       p50 {pct(ack_ms, 50):6.2f} ms   p99 {pct(ack_ms, 99):6.2f} ms   "
          f"(target p99 < 20 ms: {'met' if pct(http_ms, 99) < 20 else 'short'})")  # fmt: skip
    print(f"   server CPU: {idle_cpu:.0f} % of one core streaming, {cmd_cpu:.0f} % while the commands ran")


def bench_viewers(tmp: Path, seconds: float) -> None:
    server = Server(tmp / "b")
    child = cameras_child(server, 8, 15)
    viewers = None
    try:
        child.line()
        child.line()
        cams = sorted(c["camera"] for c in server.live())
        time.sleep(1.0)
        base_cpu = server.cpu(seconds)
        viewers = Child("_viewers", "--server", server.url, "--cameras", ",".join(cams), "--per-camera", "3",
                        "--seconds", str(seconds + 2))  # fmt: skip
        viewers.line()
        time.sleep(1.0)
        cpu = server.cpu(seconds)
        seen = viewers.line(seconds + 30)
        stats = child.finish()
    finally:
        server.close()
    print(f"2. 8 cameras x 15 fps ({stats['frames_per_s']} previews/s in), 3 MJPEG viewers each "
          f"({seen['viewers']} viewers, {seen['fps_mean']} fps mean, {seen['fps_min']} min):")  # fmt: skip
    print(f"   server CPU {cpu:.0f} % of one core with viewers ({base_cpu:.0f} % without)   "
          f"(target < 50 %: {'met' if cpu < 50 else 'short'})")  # fmt: skip


def bench_connect(tmp: Path, seconds: float) -> None:
    server = Server(tmp / "c")
    child = cameras_child(server, 64, 10)
    try:
        started = child.line()["started"]
        polls = 0
        while True:
            polls += 1
            live = len(server.live())
            now = time.time()
            if live >= 64:
                break
            if now - started > 60:
                raise SystemExit(f"only {live} of 64 registered after 60 s")
            time.sleep(0.01)
        all_connected = child.line()["ts"]
        time.sleep(seconds)  # the measuring window of the traffic figures below (it starts at "connected")
        stats = child.finish()
    finally:
        server.close()
    took = now - started
    print(f"3. 64 devices connecting at once: all live in GET /v1/state after {took:.2f} s "
          f"(every welcome after {all_connected - started:.2f} s; {polls} polls)   "
          f"(target < 2 s: {'met' if took < 2 else 'short'})")  # fmt: skip
    print(f"   then {stats['frames_per_s']} previews/s and {stats['poses_per_s']} poses/s from the 64 "
          f"over {stats['window_s']} s (offered: {64 * 10} of each)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_cameras":
        p = argparse.ArgumentParser()
        p.add_argument("_role")
        p.add_argument("--server")
        p.add_argument("--n", type=int)
        p.add_argument("--fps", type=float)
        p.add_argument("--seconds", type=float, default=None)
        a = p.parse_args()
        return run_cameras(a.server, a.n, a.fps, (640, 360), a.seconds)
    if len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        p = argparse.ArgumentParser()
        p.add_argument("_role")
        p.add_argument("--server")
        p.add_argument("--cameras")
        p.add_argument("--per-camera", type=int)
        p.add_argument("--seconds", type=float)
        a = p.parse_args()
        return run_viewers(a.server, a.cameras.split(","), a.per_camera, a.seconds)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=300, help="operator commands to time (default 300)")
    p.add_argument("--seconds", type=float, default=5.0, help="CPU sampling window in seconds (default 5)")
    p.add_argument("--only", choices=["commands", "viewers", "connect"], help="run one part only")
    a = p.parse_args()
    print(f"mmx serve + mmx device benchmark on {os.cpu_count()} cores (CPU in % of one core); "
          f"load average before: {os.getloadavg()[0]:.1f}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mmx-bench-") as tmp:
        os.environ["MMX_HOME"] = tmp
        if a.only in (None, "commands"):
            bench_commands(Path(tmp), a.commands, a.seconds)
        if a.only in (None, "viewers"):
            bench_viewers(Path(tmp), a.seconds)
        if a.only in (None, "connect"):
            bench_connect(Path(tmp), a.seconds)
    print(f"load average after: {os.getloadavg()[0]:.1f} (other work on the machine competes for the 2 cores)")


if __name__ == "__main__":
    main()
