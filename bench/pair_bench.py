#!/usr/bin/env python3
"""Benchmark `mmx pair` and its readers on generated session data (issue 16's goals).

    /work/venv/bin/python bench/pair_bench.py [--minutes 15] [--sessions 4] [--reads 3000] [--rounds 3] [--keep DIR]

Generates ``--sessions`` sessions of ``--minutes`` each (4 cameras, 10 Hz pose, one music cue
covering the session) plus one feature artifact (default 4 × 15 min = one hour of session
data), then measures, each in a fresh child process (imports excluded from the timings,
peak RSS as the child's own ``VmHWM``):

1. bytes on disk per window: the Parquet dataset (segments + windows.parquet + manifest)
   against the format it replaced (uncompressed ``.npz`` shards with every window
   materialised, mmx at commit ``OLD_COMMIT``, run from ``git archive`` of this repository on
   one session of the same data). Goal ≤ 1/5. Also shown: what ``numpy.savez_compressed``
   of the same window arrays takes (a sample of windows), a stronger reference than the old
   format; when git or the old commit is not at hand, that is the reference and it is said so.
2. windows/s written, new against old on the same session (goal ≥ the old), wall and CPU,
   medians of ``--rounds`` alternating rounds.
3. random-access reads: windows/s through ``mmx.dataset.open`` (random order, and index
   order) and through the torch loader (``WindowDataset``, DataLoader with 2 workers,
   shuffled; and the streaming ``IterableWindowDataset``) when torch is installed.
4. peak RSS of pairing 1 session and ``--sessions`` sessions (every window in train):
   goal: flat (ratio ≤ 1.2).

The machine is shared: the load average is printed next to each figure; judge throughput
by the CPU-second figures when it is high.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
#: The last commit whose `mmx pair` wrote the .npz shard format ("today's" in issue 16).
OLD_COMMIT = "45c69fd"
CAMERAS = ("cam-1", "cam-2", "cam-3", "cam-4")


def load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "short"


def hwm_mb() -> float:
    # VmHWM: this process's own peak RSS (ru_maxrss would count memory inherited at fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024


# ---------------------------------------------------------------- children (fresh processes)


def preimport() -> None:
    """Imports outside the timings: pyarrow imports pandas (when installed) on its first array."""
    try:
        import pyarrow  # noqa: F401
        import pandas  # noqa: F401
    except ImportError:
        pass


def child_pair(src: str, inventory: str, out: str, split: str) -> None:
    """Pair with the mmx found at ``src`` (this repo, or the old commit's tree); one JSON line."""
    sys.path.insert(0, src)
    preimport()
    from mmx.dataset.pair import PairParams, pair_dataset, parse_split

    t0, c0, u0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    with open(inventory, "rb") as fp:
        summary = pair_dataset(fp, Path(out), params=PairParams(split=parse_split(split)), inventory_name=inventory)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(orjson.dumps({"windows": sum(summary["windows"].values()), "wall_s": wall, "cpu_s": cpu,
                        "user_s": usage.ru_utime - u0.ru_utime, "sys_s": usage.ru_stime - u0.ru_stime,
                        "peak_rss_mb": hwm_mb()}).decode())  # fmt: skip


def child_read(directory: str, n: int, how: str) -> None:
    """Read ``n`` train windows: ``open-random``, ``open-order``, ``torch-map`` or ``torch-stream``."""
    sys.path.insert(0, str(ROOT))
    preimport()
    import mmx.dataset

    ds = mmx.dataset.open(directory, "train")
    n = min(n, len(ds))
    frames = 0
    if how.startswith("open"):
        order = np.random.default_rng(0).permutation(len(ds))[:n] if how == "open-random" else np.arange(n)
        t0 = time.perf_counter()
        for i in order:
            frames += ds[int(i)]["audio"].shape[0]
        wall = time.perf_counter() - t0
    else:
        import torch
        from torch.utils.data import DataLoader

        from mmx.dataset.torch import IterableWindowDataset, WindowDataset, collate

        if how == "torch-map":
            loader = DataLoader(WindowDataset(ds), batch_size=64, shuffle=True, num_workers=2, collate_fn=collate)
        else:
            loader = DataLoader(IterableWindowDataset(ds), batch_size=64, num_workers=2, collate_fn=collate)
        torch.set_num_threads(1)
        it = iter(loader)
        first = next(it)  # the workers' start-up (fork, first row groups) is not counted
        t0 = time.perf_counter()
        got = 0
        for batch in it:
            got += batch["audio"].shape[0]
            frames += batch["audio"].shape[0] * batch["audio"].shape[1]
            if got + first["audio"].shape[0] >= n:
                break
        wall = time.perf_counter() - t0
        n = got
    print(orjson.dumps({"windows": n, "wall_s": wall, "frames": frames, "peak_rss_mb": hwm_mb()}).decode())


def run(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr.decode()[-3000:]}")
    return orjson.loads(proc.stdout.splitlines()[-1])


# ---------------------------------------------------------------- the parent


def generate(root: Path, n_sessions: int, minutes: float) -> list[dict]:
    sys.path.insert(0, str(ROOT))
    from tests.pair_fixtures import HOP, SR, beat_frames_for, burst_motion, features_item, session_item, write_features, write_session  # noqa: E501

    duration = minutes * 60.0
    npz, sha = write_features(root / "features", "bench-track", duration_s=duration + 30.0, bpm=120.0)
    beats_s = beat_frames_for(duration + 30.0, 120.0) * HOP / SR
    items = [features_item(npz, sha)]
    for i in range(n_sessions):
        sd = write_session(root, f"bench-{i:02d}", cameras=CAMERAS, duration_s=duration, rate_hz=10.0,
                           cues=[{"track": sha, "at_s": 0.0, "offset_s": 0.0}], motion=burst_motion(beats_s[:4000]),
                           wall0=1_795_000_000.0 + i * 86_400)  # fmt: skip
        items.append(session_item(sd))
    return items


def inventory(root: Path, items: list[dict], n: int) -> Path:
    from tests.pair_fixtures import write_inventory

    return write_inventory(root / f"inv-{n}.jsonl", items[: n + 1])


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def old_source(into: Path) -> Path | None:
    """The mmx package of `OLD_COMMIT` (git archive), or None when git or the commit is missing."""
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", OLD_COMMIT, "mmx"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def savez_compressed_per_window(directory: Path, sample: int = 300) -> float:
    """Mean bytes of ``numpy.savez_compressed`` of one window's arrays (a spread sample)."""
    sys.path.insert(0, str(ROOT))
    import mmx.dataset

    ds = mmx.dataset.open(directory)
    picks = np.linspace(0, len(ds) - 1, min(sample, len(ds))).astype(int)
    total = 0
    for i in picks:
        buf = io.BytesIO()
        np.savez_compressed(buf, **ds[int(i)])
        total += buf.tell()
    return total / len(picks)


def median_rate(results: list[dict], key: str) -> float:
    import statistics

    return statistics.median(r["windows"] / r[key] for r in results)


def rates(results: list[dict]) -> str:
    return "; ".join(f"{r['windows'] / r['wall_s']:,.0f}/s wall, {r['windows'] / r['cpu_s']:,.0f}/CPU-s, {r['load']}"
                     for r in results)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=15.0, help="minutes per session (default 15)")
    ap.add_argument("--sessions", type=int, default=4, help="sessions in the large run (default 4)")
    ap.add_argument("--reads", type=int, default=3000, help="windows read per reader figure (default 3000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating new/old write rounds (default 3)")
    ap.add_argument("--keep", type=Path, default=None, help="keep generated data here instead of a temp dir")
    ap.add_argument("--child", nargs=4, metavar=("SRC", "INVENTORY", "OUT", "SPLIT"), help=argparse.SUPPRESS)
    ap.add_argument("--child-read", nargs=3, metavar=("DIR", "N", "HOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_pair(*args.child)
    if args.child_read:
        return child_read(args.child_read[0], int(args.child_read[1]), args.child_read[2])

    root = args.keep or Path(tempfile.mkdtemp(prefix="mmx-pair-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"mmx pair benchmark on {os.cpu_count()} CPUs; {load()} at start")
    try:
        t0 = time.perf_counter()
        items = generate(root, args.sessions, args.minutes)
        print(f"generated {args.sessions} sessions x {args.minutes:g} min x {len(CAMERAS)} cameras at 10 Hz in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        inv1, inv_n = inventory(root, items, 1), inventory(root, items, args.sessions)

        # 1 + 2: one session, new format vs old format, output on disk, alternating rounds
        src = old_source(root / "old-src")
        news: list[dict] = []
        olds: list[dict] = []
        for r in range(args.rounds):
            shutil.rmtree(root / "new-1", ignore_errors=True)
            news.append(run(["--child", str(ROOT), str(inv1), str(root / "new-1"), "0.8/0.1/0.1"]))
            news[-1]["load"] = load()
            if src is not None:
                olds.append(run(["--child", str(src), str(inv1), str(root / "old-1"), "0.8/0.1/0.1"]))
                olds[-1]["load"] = load()
                olds[-1]["bytes"] = disk_bytes(root / "old-1")
                shutil.rmtree(root / "old-1", ignore_errors=True)
        new1_bytes = disk_bytes(root / "new-1")
        windows = news[0]["windows"]
        new_bpw = new1_bytes / windows
        new_rate, new_cpu = median_rate(news, "wall_s"), median_rate(news, "cpu_s")
        print(f"\n1 session, Parquet: {windows} windows, {new1_bytes / 1e6:.1f} MB = {new_bpw / 1e3:.2f} kB per window; "
              f"median of {len(news)} rounds {new_rate:,.0f} windows/s, {new_cpu:,.0f} per CPU-second "
              f"(rounds: {rates(news)})")  # fmt: skip
        zipped = savez_compressed_per_window(root / "new-1")
        if src is not None:
            old_bpw = olds[0]["bytes"] / olds[0]["windows"]
            old_rate, old_cpu = median_rate(olds, "wall_s"), median_rate(olds, "cpu_s")
            print(f"1 session, old .npz shards (mmx {OLD_COMMIT}): {olds[0]['windows']} windows, "
                  f"{olds[0]['bytes'] / 1e6:.1f} MB = {old_bpw / 1e3:.2f} kB per window; median {old_rate:,.0f} windows/s, "
                  f"{old_cpu:,.0f} per CPU-second (rounds: {rates(olds)})")  # fmt: skip
            print(f"  bytes per window: {new_bpw / old_bpw:.3f} of the old format (1/{old_bpw / new_bpw:.1f}); "
                  f"goal <= 1/5: {verdict(new_bpw * 5 <= old_bpw)}")  # fmt: skip
            print(f"  windows/s written: {new_rate / old_rate:.2f}x the old format's wall rate, {new_cpu / old_cpu:.2f}x "
                  f"per CPU-second; goal >= 1x: {verdict(new_rate >= old_rate)} (wall), {verdict(new_cpu >= old_cpu)} (CPU)")  # fmt: skip
        else:
            print(f"  the old format (mmx {OLD_COMMIT}) is not at hand (no git history): comparing with "
                  "numpy.savez_compressed of the same arrays instead")  # fmt: skip
        print(f"  numpy.savez_compressed of the same window arrays: {zipped / 1e3:.2f} kB per window; Parquet is "
              f"{new_bpw / zipped:.3f} of that" + ("" if src is not None else
              f"; goal <= 1/5: {verdict(new_bpw * 5 <= zipped)}"))  # fmt: skip

        # 3: readers, on the N-session dataset
        big = run(["--child", str(ROOT), str(inv_n), str(root / "new-n"), "0.8/0.1/0.1"])
        print(f"\n{args.sessions} sessions, Parquet ({load()}): {big['windows']} windows in {big['wall_s']:.1f} s = "
              f"{big['windows'] / big['wall_s']:,.0f} windows/s; {disk_bytes(root / 'new-n') / 1e6:.0f} MB on disk")  # fmt: skip
        hows = ["open-random", "open-order"]
        try:
            import torch  # noqa: F401

            hows += ["torch-map", "torch-stream"]
        except ImportError:
            print("  torch is not installed: no torch loader figures (pip install 'mmx[torch]')")
        names = {"open-random": "mmx.dataset.open, random order", "open-order": "mmx.dataset.open, index order",
                 "torch-map": "torch WindowDataset, DataLoader 2 workers, shuffled",
                 "torch-stream": "torch IterableWindowDataset, DataLoader 2 workers"}  # fmt: skip
        for how in hows:
            r = run(["--child-read", str(root / "new-n"), str(args.reads), how])
            print(f"  read {r['windows']} train windows, {names[how]}: {r['windows'] / r['wall_s']:,.0f} windows/s "
                  f"({r['frames'] / r['wall_s'] / 1e3:,.0f} k frames/s); reader peak RSS {r['peak_rss_mb']:.0f} MB ({load()})")  # fmt: skip
        shutil.rmtree(root / "new-n", ignore_errors=True)

        # 4: peak RSS, 1 vs N sessions, every window in train (like with like)
        one = run(["--child", str(ROOT), str(inv1), str(root / "rss-1"), "1/0/0"])
        many = run(["--child", str(ROOT), str(inv_n), str(root / "rss-n"), "1/0/0"])
        ratio = many["peak_rss_mb"] / one["peak_rss_mb"]
        print(f"\npeak RSS pairing 1 session {one['peak_rss_mb']:.0f} MB, {args.sessions} sessions "
              f"{many['peak_rss_mb']:.0f} MB: ratio {ratio:.2f}; goal flat (<= 1.2): {verdict(ratio <= 1.2)} ({load()})")  # fmt: skip
        print(f"\n{load()} at the end (other work on the machine slows every wall figure)")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
