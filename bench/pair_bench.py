#!/usr/bin/env python3
"""Benchmark `mmx pair`: windows per second and peak RSS on generated session data.

    /work/venv/bin/python bench/pair_bench.py [--minutes 15] [--sessions 4] [--keep DIR]

Generates sessions of ``--minutes`` each (4 cameras, 10 Hz pose, one music cue covering the
session) plus one feature artifact (default 4 × 15 min = one hour of session data).
Runs: 1 and ``--sessions`` sessions with every window in train (same buffers, so their
peak RSS compares like with like), then ``--sessions`` sessions with the default
0.8/0.1/0.1 split with the output on disk and on tmpfs (/dev/shm). Each run pairs in a
fresh child process (the library call `mmx pair` makes: read the inventory, parse the
events, pair, write shards) and prints windows, wall and CPU time (user and kernel),
windows per second (target ≥ 5,000) and the child's peak RSS (``VmHWM``): peak RSS must
not grow with the number of sessions. tmpfs separates disk speed from compute.

On a machine shared with other work, judge by windows per CPU-second (the child's user +
kernel time); the wall figure measures the neighbours too. The kernel time is almost all
the output (3.2 GB for the default hour): tmpfs copies every byte into fresh pages, whose
cost varies a lot on a VM; on disk the shards go out with O_DIRECT (no page cache), so the
kernel share is small and the wall time includes the device.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from tests.pair_fixtures import (  # noqa: E402
    HOP,
    SR,
    beat_frames_for,
    burst_motion,
    features_item,
    session_item,
    write_features,
    write_inventory,
    write_session,
)

CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")


def generate(root: Path, n_sessions: int, minutes: float) -> tuple[Path, list[Path]]:
    duration = minutes * 60.0
    npz, sha = write_features(root / "features", "bench-track", duration_s=duration + 30.0, bpm=120.0)
    beats_s = beat_frames_for(duration + 30.0, 120.0) * HOP / SR
    sessions = []
    for i in range(n_sessions):
        sd = write_session(root, f"bench-{i:02d}", cameras=CAMERAS, duration_s=duration, rate_hz=10.0,
                           cues=[{"track": sha, "at_s": 0.0, "offset_s": 0.0}], motion=burst_motion(beats_s[:4000]),
                           wall0=1_795_000_000.0 + i * 86_400)  # fmt: skip
        sessions.append(sd)
    return npz, sessions


def child(inventory: str, out: str, split: str) -> None:
    """Run the pairing in this process and print its timing as one JSON line."""
    from mmx.dataset.pair import PairParams, pair_dataset, parse_split

    t0, c0, u0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    with open(inventory, "rb") as fp:
        summary = pair_dataset(fp, Path(out), params=PairParams(split=parse_split(split)), inventory_name=inventory)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    usage = resource.getrusage(resource.RUSAGE_SELF)  # user vs kernel: the kernel's share is the writes
    # VmHWM: this process's own peak RSS. (getrusage's ru_maxrss would also count the parent's
    # memory the child inherited at fork, which Linux carries across exec.)
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(orjson.dumps({"windows": sum(summary["windows"].values()), "wall_s": wall, "cpu_s": cpu,
                        "user_s": usage.ru_utime - u0.ru_utime, "sys_s": usage.ru_stime - u0.ru_stime,
                        "peak_rss_mb": hwm_kb / 1024}).decode())  # fmt: skip


def run_child(inventory: Path, out: Path, split: str) -> dict:
    """Pair in a fresh child process, which reports its own peak RSS (VmHWM)."""
    cmd = [sys.executable, __file__, "--child", str(inventory), str(out), split]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout = proc.stdout.read()  # type: ignore[union-attr]
    stderr = proc.stderr.read()  # type: ignore[union-attr]
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"pairing failed ({proc.returncode}): {stderr.decode()}")
    r = orjson.loads(stdout.splitlines()[-1])
    r["output_gb"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e9
    r["windows_per_s"] = r["windows"] / r["wall_s"]
    r["windows_per_cpu_s"] = r["windows"] / r["cpu_s"]
    return r


def cli_startup_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmx", "pair", "--help"], capture_output=True, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="minutes per session (default 15)")
    ap.add_argument("--sessions", type=int, default=4, help="sessions in the large run (default 4)")
    ap.add_argument("--keep", type=Path, default=None, help="keep generated data here instead of a temp dir")
    ap.add_argument("--child", nargs=3, metavar=("INVENTORY", "OUT", "SPLIT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="mmx-pair-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    shm = Path("/dev/shm")
    try:
        t0 = time.perf_counter()
        npz, sessions = generate(root, args.sessions, args.minutes)
        sha = str(np.load(npz)["sha256"])
        feat = features_item(npz, sha)
        items = [session_item(s) for s in sessions]
        events_mb = sum((s / "events.jsonl").stat().st_size for s in sessions) / 1e6
        print(f"generated {args.sessions} sessions x {args.minutes:g} min x {len(CAMERAS)} cameras at 10 Hz "
              f"({events_mb:.0f} MB of events) in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        fast = shm if shm.is_dir() and os.access(shm, os.W_OK) else root
        fast_name = "tmpfs" if fast == shm else "disk"
        # (sessions, output root, where, split): the first two keep every window in train, so
        # both hold the same shard images and their peak RSS compares like with like; the last
        # two use the default split (images for three splits) for throughput on disk and tmpfs
        runs = [(1, fast, fast_name, "1/0/0"), (args.sessions, fast, fast_name, "1/0/0"),
                (args.sessions, root, "disk", "0.8/0.1/0.1"), (args.sessions, fast, fast_name, "0.8/0.1/0.1")]
        results = {}
        for n, out_root, where, split in runs:
            inv = write_inventory(root / f"inv-{n}.jsonl", [feat, *items[:n]])
            out = out_root / f"mmx-pair-bench-ds-{os.getpid()}-{n}"
            try:
                r = results[(n, where, split)] = run_child(inv, out, split)
            finally:
                shutil.rmtree(out, ignore_errors=True)
            print(f"{n} session(s) = {n * args.minutes:g} min x {len(CAMERAS)} cameras, split {split}, output on "
                  f"{where}: {r['windows']} windows in {r['wall_s']:.2f} s = {r['windows_per_s']:,.0f} windows/s "
                  f"(target >= 5,000); CPU {r['cpu_s']:.2f} s (user {r['user_s']:.2f}, kernel {r['sys_s']:.2f}) = "
                  f"{r['windows_per_cpu_s']:,.0f} windows per CPU-second; "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB; output {r['output_gb']:.2f} GB")  # fmt: skip
        small, big = results[(1, fast_name, "1/0/0")], results[(args.sessions, fast_name, "1/0/0")]
        print(f"peak RSS, same split occupancy: {args.sessions} sessions / 1 session = "
              f"{big['peak_rss_mb'] / small['peak_rss_mb']:.2f} (1.0 = does not grow with the number of sessions; "
              "the default split adds the shard images of two more splits)")  # fmt: skip
        print(f"`mmx pair --help` start-up (imports of the whole CLI), not included above: {cli_startup_s():.2f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
