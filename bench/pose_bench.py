#!/usr/bin/env python3
"""Benchmark `mmx pose` (issue 13): plumbing cost, frame → pose.sample latency, offline speed.

    /work/venv/bin/python bench/pose_bench.py [--frames 150] [--fps 10] [--skip-offline]

Needs mediapipe (the mmx[pose] extra) and ../shared/data/video/vtest.avi.

1. Per-core rate at 640×360. The same frames (vtest.avi frames 166-318, where a walker is
   tracked, scaled to 640×360 and JPEG-encoded as `mmx device` does) go
   a) straight into MediaPipe Pose (``solutions.pose``, full model, tracking) in this process,
      decoded from those JPEGs beforehand; and
   b) through the live path: a device in this process sends them at --fps over the device
      WebSocket of a real `mmx serve`, `mmx pose --server` reads them over the previews
      socket, decodes, estimates and posts ``pose.sample``.
   Rate per core = frames estimated / CPU seconds of the estimating process (all threads:
   MediaPipe runs its own), so a busy shared machine slows both the same way. The direct
   calls get exactly the frames the live path estimated (same start, same drops: tracking
   costs differ with who is tracked), paced at the same rate; each round is one live run
   and its direct replay, and the figure is the median ratio over the rounds.
   Goal: live / direct >= 0.9 (our plumbing costs < 10 %).
2. Frame → ``pose.sample`` latency on loopback: from the frame's capture stamp (the
   device's ``frame`` message, this machine's clock) to the sample arriving on
   ``GET /v1/events`` here. Goal (ours, the issue sets none): p95 < 2 frame periods.
3. Offline: `mmx pose vtest.avi -o DIR` wall seconds per minute of video (768×576, 10 fps,
   every frame), and its agreement with the shared vtest.pose.jsonl (issue: detected in the
   same frames ±5 %, median joint error < 0.02 where both detect). Goal (ours): faster than
   real time, < 60 s per video minute.

The machine has 2 cores shared by up to 8 engineers: the load (``uptime``) is printed
before and after; figures taken under load are noted as such.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

SHARED = Path(os.environ.get("MMX_SHARED_DATA", ROOT.parent / "shared" / "data"))
VIDEO = SHARED / "video" / "vtest.avi"
REFERENCE = SHARED / "pose" / "vtest.pose.jsonl"
TOKEN = "bench-token"
MMX = [sys.executable, "-m", "mmx"]
FIRST_FRAME, LAST_FRAME = 166, 318  # a walker in view all along (the reference detects each)


def verdict(ok: bool) -> str:
    return "met" if ok else "SHORT"


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise SystemExit(f"timed out after {timeout_s} s waiting for {what}")


def jpeg_frames() -> tuple[list[bytes], list[np.ndarray]]:
    """The bench's frames: 640×360 JPEGs as `mmx device` makes them, and their decoded RGB."""
    import av
    from PIL import Image

    from mmx.device.frames import encode_jpeg
    from mmx.pose.live import decode_jpeg

    jpegs: list[bytes] = []
    with av.open(str(VIDEO)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if n > LAST_FRAME:
                break
            if n >= FIRST_FRAME:
                jpegs.append(encode_jpeg(frame.to_image().resize((640, 360), Image.BILINEAR)))
    return jpegs, [decode_jpeg(j) for j in jpegs]


def direct(rgbs: list[np.ndarray], seqs: list[int], measured_from: int, fps: float | None) -> dict:
    """MediaPipe Pose straight on decoded frames: frames per CPU second of this process.

    ``seqs`` are the preview frame numbers the live path estimated, in order (frame seq k is
    ``rgbs[(k - 1) % len(rgbs)]``): the same frames from the same start, so tracking finds the
    same people and costs the same. Only ``seqs[measured_from:]`` are measured.
    """
    from mmx.pose.estimator import load_mediapipe

    mp_pose = load_mediapipe()
    pose = mp_pose.Pose(static_image_mode=False, model_complexity=1, min_detection_confidence=0.5,
                        min_tracking_confidence=0.5)  # fmt: skip
    frames = [rgbs[(k - 1) % len(rgbs)] for k in seqs]
    for rgb in frames[:measured_from]:  # what the live path saw before its window
        pose.process(rgb)
    me = psutil.Process()
    cpu0, wall0 = sum(me.cpu_times()[:2]), time.monotonic()
    detected = 0
    next_at = time.monotonic()
    for rgb in frames[measured_from:]:
        detected += pose.process(rgb).pose_landmarks is not None
        if fps:
            next_at += 1.0 / fps
            time.sleep(max(0.0, next_at - time.monotonic()))
    cpu, wall = sum(me.cpu_times()[:2]) - cpu0, time.monotonic() - wall0
    pose.close()
    n = len(frames) - measured_from
    return {"frames": n, "cpu_s": cpu, "wall_s": wall, "fps_per_core": n / cpu, "detected": detected}


async def device(url: str, jpegs: list[bytes], fps: float, stop: asyncio.Event, sent: list[float]) -> None:
    """A camera without pose of its own: hello, heartbeats, ``frame`` + JPEG at ``fps``."""
    import aiohttp
    import orjson

    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url.replace("http", "ws") + "/v1/devices/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            await ws.send_str(orjson.dumps({"t": "hello", "token": TOKEN, "device": "bench-walker", "name": "walker",
                                            "capabilities": {"preview": True, "pose": False}, "ts": time.time()}).decode())  # fmt: skip
            await ws.receive(timeout=10)
            period, k, next_at, beat = 1.0 / fps, 0, time.monotonic(), 0.0
            while not stop.is_set():
                now = time.time()
                if now - beat >= 0.5:
                    await ws.send_str(orjson.dumps({"t": "heartbeat", "ts": now}).decode())
                    beat = now
                await ws.send_str(orjson.dumps({"t": "frame", "ts": now}).decode())
                await ws.send_bytes(jpegs[k % len(jpegs)])
                sent.append(now)
                k += 1
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))


def live(jpegs: list[bytes], frames: int, fps: float, tmp: Path) -> dict:
    """The live path: serve + a device here + `mmx pose`; its per-core rate and latency."""
    import threading

    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([*MMX, "serve", "--port", str(port), "--token", TOKEN, "--data", str(tmp / "serve"), "--no-record"],
                             stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.err", "wb"))  # fmt: skip
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def up() -> bool:
        try:
            return client.get("/v1/state").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, "mmx serve")
    stop, sent = asyncio.Event(), []
    loop = asyncio.new_event_loop()
    cam_thread = threading.Thread(target=loop.run_until_complete, args=(device(url, jpegs, fps, stop, sent),), daemon=True)
    cam_thread.start()
    pose = subprocess.Popen([*MMX, "pose", "--server", url, "--token", TOKEN], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "pose.err", "wb"))  # fmt: skip
    arrivals: list[tuple[float, dict]] = []

    def listen() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=None) as c:
            with c.stream("GET", "/v1/events", params={"types": "pose.sample"}) as resp:
                for line in resp.iter_lines():
                    if line.strip():
                        arrivals.append((time.time(), json.loads(line)))

    threading.Thread(target=listen, daemon=True).start()
    try:
        wait_for(lambda: len(arrivals) >= 10, 120, "the first pose samples")  # MediaPipe's start-up is not measured
        proc = psutil.Process(pose.pid)
        cpu0, n0 = sum(proc.cpu_times()[:2]), len(arrivals)
        wait_for(lambda: len(arrivals) - n0 >= frames, 30 + 3 * frames / fps, f"{frames} pose samples")
        cpu, n1 = sum(proc.cpu_times()[:2]) - cpu0, len(arrivals)
        state = client.get("/v1/state").json()
    finally:
        pose.send_signal(signal.SIGINT)
        pose.wait(20)
        loop.call_soon_threadsafe(stop.set)
        cam_thread.join(10)
        serve.send_signal(signal.SIGINT)
        serve.wait(20)
    window = arrivals[n0:n1]
    latency_ms = [(at - e["data"]["t"]) * 1000 for at, e in window]
    camera = window[0][1]["data"]["camera"]
    seqs = [e["data"]["frame_seq"] for _, e in arrivals[:n1]]
    return {"frames": n1 - n0, "cpu_s": cpu, "fps_per_core": (n1 - n0) / cpu, "latency_ms": latency_ms,
            "seqs": seqs, "measured_from": n0,
            "detected": sum(1 for _, e in window if e["data"]["joints"]), "pose_fps": state["pose_fps"].get(camera),
            "dropped": state["pose_dropped"].get(camera), "sent": len(sent)}  # fmt: skip


def offline(tmp: Path) -> dict:
    out = tmp / "poses"
    started = time.monotonic()
    proc = subprocess.run([*MMX, "pose", str(VIDEO), "-o", str(out), "--force"], capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"mmx pose failed ({proc.returncode}): {proc.stderr}")
    ours = [json.loads(line) for line in (out / "vtest.pose.jsonl").read_text().splitlines()][1:]
    ref = [json.loads(line) for line in REFERENCE.read_text().splitlines()][1:]
    same = sum((a["joints"] is None) == (b["joints"] is None) for a, b in zip(ours, ref)) / len(ref)
    errors = [float(np.hypot(a["joints"][k][0] - b["joints"][k][0], a["joints"][k][1] - b["joints"][k][1]))
              for a, b in zip(ours, ref) if a["joints"] and b["joints"] for k in a["joints"]]  # fmt: skip
    duration_min = len(ours) / 10.0 / 60.0
    return {"wall_s": wall, "s_per_video_min": wall / duration_min, "frames": len(ours), "same_detection": same,
            "median_error": float(np.median(errors)), "detected": sum(a["joints"] is not None for a in ours),
            "detected_ref": sum(b["joints"] is not None for b in ref)}  # fmt: skip


def _print_direct(d: dict, how: str) -> None:
    print(f"direct MediaPipe ({how}): {d['frames']} frames in {d['cpu_s']:.2f} CPU s ({d['wall_s']:.2f} s wall), "
          f"{d['fps_per_core']:.1f} frames/s per core, {d['detected']} with a person")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=150, help="frames measured per path (after warm-up)")
    ap.add_argument("--fps", type=float, default=10.0, help="the device's preview rate in the live path")
    ap.add_argument("--rounds", type=int, default=3, help="live runs, each between two direct runs")
    ap.add_argument("--skip-offline", action="store_true")
    args = ap.parse_args()
    if not VIDEO.exists():
        raise SystemExit(f"{VIDEO} is absent")
    print(f"load before: {load()}")
    jpegs, rgbs = jpeg_frames()
    print(f"{len(jpegs)} frames of {VIDEO.name} ({FIRST_FRAME}-{LAST_FRAME}) at 640x360, JPEG ~{sum(map(len, jpegs)) // len(jpegs) // 1024} KB")
    # each round: the live path, then MediaPipe directly on exactly the frames it estimated;
    # the shared machine's load drifts, so the median ratio of the rounds is the figure
    lives, ratios = [], []
    with tempfile.TemporaryDirectory(prefix="pose-bench-") as tmp:
        for r in range(args.rounds):
            lv = live(jpegs, args.frames, args.fps, Path(tmp) / f"round-{r}")
            lives.append(lv)
            print(f"live path (mmx pose): {lv['frames']} samples in {lv['cpu_s']:.2f} CPU s of mmx pose, "
                  f"{lv['fps_per_core']:.1f} frames/s per core, {lv['detected']} with a person; "
                  f"GET /v1/state pose_fps {lv['pose_fps']}, pose_dropped {lv['dropped']} ({lv['sent']} frames sent)")  # fmt: skip
            if r == 0:
                _print_direct(direct(rgbs, lv["seqs"], lv["measured_from"], None), "back to back")
            d = direct(rgbs, lv["seqs"], lv["measured_from"], args.fps)
            _print_direct(d, f"paced at {args.fps:g} fps like the live frames")
            ratios.append(lv["fps_per_core"] / d["fps_per_core"])
        ratio = float(np.median(ratios))
        latency = [ms for lv in lives for ms in lv["latency_ms"]]
        p50, p95 = pct(latency, 50), pct(latency, 95)
        print(f"ratios per round: {', '.join(f'{x:.3f}' for x in ratios)}")
        period_ms = 1000 / args.fps
        print(f"plumbing: live/direct per-core rate {ratio:.3f}, median of {len(ratios)} rounds (goal >= 0.9): {verdict(ratio >= 0.9)}")
        print(f"frame -> pose.sample latency p50 {p50:.1f} ms, p95 {p95:.1f} ms "
              f"(goal p95 < {2 * period_ms:.0f} ms, 2 frame periods at {args.fps:g} fps): {verdict(p95 < 2 * period_ms)}")  # fmt: skip
        if not args.skip_offline:
            o = offline(Path(tmp))
            print(f"offline: {VIDEO.name} ({o['frames']} frames, 768x576) in {o['wall_s']:.1f} s = "
                  f"{o['s_per_video_min']:.1f} s per video minute (goal < 60): {verdict(o['s_per_video_min'] < 60)}")  # fmt: skip
            print(f"offline agreement with vtest.pose.jsonl: same detection in {o['same_detection']:.1%} of frames "
                  f"({o['detected']} vs {o['detected_ref']} detected; goal >= 95 %): {verdict(o['same_detection'] >= 0.95)}; "
                  f"median joint error {o['median_error']:.5f} (goal < 0.02): {verdict(o['median_error'] < 0.02)}")  # fmt: skip
    print(f"load after: {load()}")


if __name__ == "__main__":
    from mmx.pose.estimator import NativeLogFilter

    with NativeLogFilter():  # MediaPipe's native start-up lines, as mmx pose filters them
        main()
