#!/usr/bin/env python3
"""Benchmark the relay's recordings: CPU per recorded camera, write throughput, drift between ISOs.

    /work/venv/bin/python bench/record_bench.py [--cameras 4] [--size 1280x720] [--fps 30]
        [--seconds 8] [--rounds 3] [--drift-minutes 10] [--skip-cpu]

1. CPU. A real `mmx relay --events -` (its CPU read with psutil) receives ``--cameras``
   WebRTC publishers from this process, each sending real VP8 frames at ``--size`` and
   ``--fps`` (the shared video, encoded once before the run at the relay's 720p bitrate,
   ~2.2 Mbit/s, and looped; a keyframe request jumps to the loop's next keyframe, like a
   camera would answer it). The relay's CPU is measured over windows with a take armed
   (``recording.armed`` on its events input: every camera's ISO and the program written)
   and not armed, alternating, ``--rounds`` of each. The relay decodes every received
   frame either way (aiortc does), so the difference is the recording's own cost.
   Goal (issue 14): < 5 % of one core per camera, i.e. no decode/encode for recording.
2. Write throughput: the same 720p frames through `mmx.mkv.Recorder` into ``--cameras``
   files as fast as its writer thread goes. Goal: ≥ 10× what ``--cameras`` cameras need.
3. Drift after ``--drift-minutes`` of media time: ``--cameras`` simulated senders capture
   frames at the same instants, with sender clocks off by -100, +150, -20, +60 ppm, path
   delays of 20-50 ms, exponential jitter (5 ms mean) and 1 % of frames 50-250 ms late (and
   the frames after them held back: aiortc's jitter buffer hands frames out in order); the
   frames go through the relay's recorder (`mmx.relay.record`: RTP to wall clock, Matroska
   files) faster than real time, and the files are read back. Drift: how much the offset
   between two ISOs at the same capture instant moved from the first to the last 30 s.
   Goal: < 1 frame. RTP timestamps alone would drift by the clock error x duration.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402

from mmx.events import Producer, encode  # noqa: E402

TOKEN = "bench"
VIDEO = ROOT.parent / "shared" / "data" / "video" / "vtest.avi"
CPU_GOAL_PCT = 5.0
THROUGHPUT_GOAL_X = 10.0
LOOP_FRAMES = 120
GOP = 30


def verdict(ok: bool) -> str:
    return "met" if ok else "short"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encode_loop(width: int, height: int, n: int = LOOP_FRAMES) -> list[tuple[bytes, bool]]:
    """``n`` VP8 frames of the shared video (or a moving pattern) at the relay's realtime
    settings, a keyframe every `GOP`: (data, keyframe)."""
    import numpy as np

    from mmx.relay.hub import VIDEO_TIME_BASE, _vp8_context

    ctx = _vp8_context(width, height)
    images = []
    if VIDEO.exists():
        with av.open(str(VIDEO)) as c:
            for frame in c.decode(video=0):
                images.append(frame.reformat(width=width, height=height, format="yuv420p"))
                if len(images) == n:
                    break
    while len(images) < n:
        i = len(images)
        img = np.zeros((height, width, 3), np.uint8)
        img[:, :, 0] = (np.arange(width)[None, :] + i * 8) % 256
        img[:, :, 1] = (np.arange(height)[:, None] * 2 + i * 3) % 256
        images.append(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p"))
    out = []
    for i, frame in enumerate(images):
        frame.pts = i * 3000
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if i % GOP == 0 else av.video.frame.PictureType.NONE
        packets = list(ctx.encode(frame))
        out += [(bytes(p), bool(p.is_keyframe)) for p in packets[:1]]
    return out


def loop_track(frames: list[tuple[bytes, bool]], fps: float):
    """An aiortc track yielding the pre-encoded ``frames`` (looped) at ``fps`` as `av.Packet`s."""
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    keys = [i for i, (_, k) in enumerate(frames) if k]

    class _Track(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.sent = 0
            self.i = 0
            self._start: float | None = None

        def request_keyframe(self) -> None:
            self.i = next((k for k in keys if k >= self.i), keys[0])

        async def recv(self) -> av.Packet:
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = now
            due = self._start + self.sent / fps
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.5:
                self._start = now - self.sent / fps
            data, _ = frames[self.i % len(frames)]
            self.i = (self.i + 1) % len(frames)
            packet = av.Packet(data)
            packet.pts = int((time.monotonic() - self._start) * 90000)
            packet.time_base = fractions.Fraction(1, 90000)
            self.sent += 1
            return packet

    return _Track()


# -- 1. CPU ---------------------------------------------------------------------------------

async def bench_cpu(args: argparse.Namespace, frames: list[tuple[bytes, bool]], workdir: Path) -> dict:
    from mmx.relay.client import whip_publish

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    relay = subprocess.Popen([sys.executable, "-m", "mmx", "relay", "--events", "-", "--port", str(port),
                              "--token", TOKEN, "--ice-host", "127.0.0.1"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    proc = psutil.Process(relay.pid)
    serve = Producer("serve")
    http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    sessions = []

    async def status() -> dict:
        return (await http.get("/status")).json()

    async def until(predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                st = await status()
                if predicate(st):
                    return st
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise SystemExit(f"record_bench: {what} not within {timeout} s")

    def send(etype: str, data: dict) -> None:
        relay.stdin.write(encode(serve.make(etype, data, session=None)) + b"\n")
        relay.stdin.flush()

    try:
        await until(lambda st: True, 30, "relay up")
        cams = [f"cam-{i + 1}" for i in range(args.cameras)]
        for cam in cams:
            sessions.append(await whip_publish(f"{base}/whip/{cam}", loop_track(frames, args.fps), token=TOKEN))
        await until(lambda st: sum(c["fps"] >= args.fps * 0.8 for c in st["cameras"]) == args.cameras, 60,
                    "every camera publishing")  # fmt: skip
        send("director.cut", {"from": None, "to": cams[0], "by": "operator"})
        await asyncio.sleep(2.0)  # settle
        rows = {"off": [], "on": []}
        recorded = 0
        for r in range(args.rounds):
            for mode in ("off", "on"):
                if mode == "on":
                    take = f"bench-{r}"
                    send("recording.armed", {"take": take, "session": None, "path": str(workdir / take),
                                             "origin_ts": time.time()})  # fmt: skip
                    await until(lambda st: len(st["recording"].get("files", [])) == args.cameras + 1, 30,
                                "every file started")  # fmt: skip
                before_frames = sum(c["frames"] for c in (await status())["cameras"])
                t0, c0 = time.monotonic(), proc.cpu_times()
                await asyncio.sleep(args.seconds)
                t1, c1 = time.monotonic(), proc.cpu_times()
                st = await status()
                received = sum(c["frames"] for c in st["cameras"]) - before_frames
                cpu = (c1.user + c1.system - c0.user - c0.system) / (t1 - t0) * 100
                rows[mode].append({"cpu_pct": cpu, "fps": received / (t1 - t0) / args.cameras})
                if mode == "on":
                    recorded += sum(f["frames"] for f in st["recording"]["files"])
                    send("recording.disarmed", {"take": take, "reason": "operator"})
                    await until(lambda st: not st["recording"]["armed"], 60, "the take stopped")
                    shutil.rmtree(workdir / take, ignore_errors=True)
                    await asyncio.sleep(1.0)
        off = statistics.median(x["cpu_pct"] for x in rows["off"])
        on = statistics.median(x["cpu_pct"] for x in rows["on"])
        return {"relay_cpu_off_pct": round(off, 1), "relay_cpu_on_pct": round(on, 1),
                "recording_cpu_per_camera_pct": round((on - off) / args.cameras, 2),
                "rounds_off": [round(x["cpu_pct"], 1) for x in rows["off"]],
                "rounds_on": [round(x["cpu_pct"], 1) for x in rows["on"]],
                "fps_per_camera": round(statistics.median(x["fps"] for x in rows["on"] + rows["off"]), 1),
                "frames_recorded": recorded}  # fmt: skip
    finally:
        for s in sessions:
            await s.close()
        await http.aclose()
        relay.stdin.close()
        relay.terminate()
        try:
            relay.wait(20)
        except subprocess.TimeoutExpired:
            relay.kill()


# -- 2. throughput --------------------------------------------------------------------------

def bench_throughput(args: argparse.Namespace, frames: list[tuple[bytes, bool]], workdir: Path) -> dict:
    from mmx.mkv import Recorder

    seconds = 30.0
    n = int(seconds * args.fps)
    rec = Recorder(max_pending=n * args.cameras + 10)
    tracks = [rec.open(workdir / f"tp-{i}.mkv", codec="vp8", origin_ts=0.0, camera=f"cam-{i}", kind="iso")
              for i in range(args.cameras)]  # fmt: skip
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    payload = 0
    for k in range(n):
        data, key = frames[k % len(frames)]
        for track in tracks:
            rec.write(track, data, 1.0 + k / args.fps, key)
            payload += len(data)
    stopped = [rec.close(t, "stop").result(120) for t in tracks]
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rec.shutdown()
    need = payload / seconds  # bytes/s the cameras produce
    written = sum(s["bytes"] for s in stopped)
    for s in stopped:
        Path(s["path"]).unlink()
    return {"frames": n * args.cameras, "media_s": seconds, "elapsed_s": round(elapsed, 2),
            "mb_per_s": round(written / elapsed / 1e6, 1), "frames_per_s": round(n * args.cameras / elapsed),
            "x_real_time": round(elapsed and seconds / elapsed, 1), "need_mb_per_s": round(need / 1e6, 2),
            "cpu_ms_per_frame": round(cpu / (n * args.cameras) * 1000, 3)}  # fmt: skip


# -- 3. drift -------------------------------------------------------------------------------

async def bench_drift(args: argparse.Namespace, workdir: Path) -> dict:
    from mmx.relay.record import RelayRecording

    class Hub:
        program = "cam-1"

    frames = encode_loop(320, 180, 60)
    rng = random.Random(14)
    skews = [-100e-6, 150e-6, -20e-6, 60e-6, 0.0, 30e-6, -60e-6, 90e-6][: args.cameras]
    delays = [0.020 + 0.010 * i for i in range(args.cameras)]
    n = int(args.drift_minutes * 60 * args.fps)
    rec = RelayRecording(Hub(), max_pending=n * (args.cameras + 1) + 10)
    pubs = [rec.publisher(f"cam-{i + 1}", f"s{i}", []) for i in range(args.cameras)]
    origin = 1_800_000_000.0
    await rec.arm(take="drift", session=None, path=str(workdir / "drift"), origin_ts=origin)
    arrivals = []
    for i, pub in enumerate(pubs):
        arrival = 0.0
        for k in range(n):
            capture = origin + 1.0 + k / args.fps
            late = rng.uniform(0.05, 0.25) if rng.random() < 0.01 else 0.0
            # the jitter buffer hands frames out in order: a late one holds back those after it
            arrival = max(arrival, capture + delays[i] + rng.expovariate(1 / 0.005) + late)
            rtp = round(k / args.fps * (1 + skews[i]) * 90000)
            arrivals.append((arrival, i, k, rtp))
    arrivals.sort()
    t0 = time.perf_counter()
    for arrival, i, k, rtp in arrivals:
        data, key = frames[k % len(frames)]
        rec.frame(pubs[i], "VP8", data, rtp, key, arrival=arrival)
    stopped = await rec.close("stop")
    elapsed = time.perf_counter() - t0
    pts = {}
    for s in stopped:
        if s["kind"] != "iso":
            continue
        with av.open(s["path"]) as c:
            pts[s["camera"]] = [p.pts / 1000 for p in c.demux(video=0) if p.pts is not None]
    assert all(len(v) == n for v in pts.values()), {c: len(v) for c, v in pts.items()}
    window = int(30 * args.fps)
    names = sorted(pts)
    drift, spread, offsets = 0.0, 0.0, []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            d = [x - y for x, y in zip(pts[names[a]], pts[names[b]])]
            start, end = statistics.median(d[:window]), statistics.median(d[-window:])
            drift = max(drift, abs(end - start))
            spread = max(spread, max(abs(x - start) for x in d))
            offsets.append(abs(start))
    rtp_only = (max(skews) - min(skews)) * args.drift_minutes * 60
    shutil.rmtree(workdir / "drift", ignore_errors=True)
    return {"media_min": args.drift_minutes, "cameras": args.cameras, "drift_ms": round(drift * 1000, 2),
            "worst_frame_ms": round(spread * 1000, 1), "constant_offset_ms_max": round(max(offsets) * 1000, 1),
            "rtp_only_drift_ms": round(rtp_only * 1000, 1), "elapsed_s": round(elapsed, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="CPU window per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="CPU rounds (each: not recording, then recording)")
    parser.add_argument("--drift-minutes", type=float, default=10.0)
    parser.add_argument("--skip-cpu", action="store_true", help="only throughput and drift (no WebRTC)")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    frame_ms = 1000 / args.fps
    print(f"# record bench on {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}; "
          f"{args.cameras} cameras at {args.size} {args.fps:g} fps", flush=True)
    frames = encode_loop(width, height)
    kbit = sum(len(d) for d, _ in frames) * 8 / (len(frames) / args.fps) / 1000
    print(f"# {len(frames)} VP8 frames encoded once, {kbit:.0f} kbit/s per camera", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="record-bench-"))
    results = {}
    try:
        if not args.skip_cpu:
            results["cpu"] = cpu = asyncio.run(bench_cpu(args, frames, workdir))
            print(json.dumps({"cpu": cpu}), flush=True)
        results["throughput"] = tp = bench_throughput(args, frames, workdir)
        print(json.dumps({"throughput": tp}), flush=True)
        results["drift"] = drift = asyncio.run(bench_drift(args, workdir))
        print(json.dumps({"drift": drift}), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    if "cpu" in results:
        cpu = results["cpu"]
        per = cpu["recording_cpu_per_camera_pct"]
        print(f"recording CPU per camera: {per:.2f} % of one core (relay {cpu['relay_cpu_off_pct']} % not recording, "
              f"{cpu['relay_cpu_on_pct']} % recording {args.cameras} ISOs + program; "
              f"{cpu['fps_per_camera']} fps received per camera)  goal < {CPU_GOAL_PCT:g} %  {verdict(per < CPU_GOAL_PCT)}")
    tp = results["throughput"]
    print(f"write throughput: {tp['mb_per_s']} MB/s, {tp['frames_per_s']} frames/s = {tp['x_real_time']}x real time "
          f"for {args.cameras} cameras ({tp['need_mb_per_s']} MB/s; writer {tp['cpu_ms_per_frame']} ms CPU per frame)"
          f"  goal >= {THROUGHPUT_GOAL_X:g}x  {verdict(tp['x_real_time'] >= THROUGHPUT_GOAL_X)}")
    d = results["drift"]
    print(f"drift between ISOs after {d['media_min']:g} min: {d['drift_ms']} ms (worst single frame "
          f"{d['worst_frame_ms']} ms; constant path-delay offset up to {d['constant_offset_ms_max']} ms; RTP "
          f"timestamps alone would drift {d['rtp_only_drift_ms']} ms)  goal < 1 frame ({frame_ms:.1f} ms)  "
          f"{verdict(d['drift_ms'] < frame_ms)}")


if __name__ == "__main__":
    main()
