"""Benchmark: `mmx features` against a plain librosa script computing the same arrays.

    /work/venv/bin/python bench/features_bench.py [--tracks 6] [--runs 5] [--baseline] [--parts local,dask]

The workload is a library of ``--tracks`` files (default 6: the three real tracks of
../shared/data/music, then copies of them under other names). Three sides, each in fresh
processes (imports included, as a user runs them): the plain librosa script (one file after
another, every array computed from the waveform as a tutorial would: ``librosa.load`` at
22050 Hz, melspectrogram, onset_strength, beat_track, chroma_stft, mfcc), then
``mmx features --force --no-baseline`` with ``--jobs 1`` and ``--jobs 2``. With
``--baseline`` both sides also compute EDGE's baseline block (the plain script loads the
audio a second time at 15360 Hz; mmx drops ``--no-baseline``).

Every side runs once untimed first (warm-up: numba compiles librosa's kernels into its cache
on the first run, ~19 s that a user pays once), then the sides alternate A B C A B C for
``--runs`` rounds; the figures are medians with the min–max over the rounds. Goals (issue
18): ``--jobs 1`` ≤ 1.1× the plain script's wall time, ``--jobs 2`` ≥ 1.7× faster than it.

The Dask part (issue 16) runs ``mmx features --cluster`` against a real ``dask scheduler``
with two ``dask worker`` processes on 127.0.0.1, the second paused for the 1-worker side
(alternating rounds, same warm workers) on a library of ``--dask-tracks`` files (default
12: the client's fixed start-up is in both sides' times); goal: 2 workers ≥ 1.7× faster
than 1. The workers' CPU seconds are printed beside each round.
``--parts local`` or ``--parts dask`` runs one part alone.
Also printed: CPU seconds per audio minute, peak RSS of the largest process and of the
process tree (workers included, sampled every 0.1 s), the load average before each run,
and whether mmx's arrays equal the plain script's. Wall-clock ratios mean something only
on an otherwise idle machine: CPU seconds are steadier under load but cannot show the
parallel speed-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PLAIN_SCRIPT = textwrap.dedent('''
    """Plain librosa: the arrays of `mmx features` for each file given, one after another."""
    import sys
    from pathlib import Path

    import librosa
    import numpy as np

    out = Path(sys.argv[1])
    with_baseline = sys.argv[2] == "baseline"
    out.mkdir(parents=True, exist_ok=True)
    for path in sys.argv[3:]:
        y, sr = librosa.load(path, sr=22050)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max).T
        onset_env = librosa.onset.onset_strength(y=y, sr=sr)
        tempo, beat_frames = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr)
        beat_times = librosa.frames_to_time(beat_frames, sr=sr)
        chroma = librosa.feature.chroma_stft(y=y, sr=sr).T
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20).T
        if not with_baseline:
            np.savez(out / (Path(path).stem + ".npz"), mel=mel, onset_env=onset_env, tempo=tempo,
                     beat_frames=beat_frames, beat_times=beat_times, chroma=chroma, mfcc=mfcc)
            continue
        # EDGE's baseline_features.py at 30 fps: sr = 30 * 512
        SR = 30 * 512
        data, _ = librosa.load(path, sr=SR)
        envelope = librosa.onset.onset_strength(y=data, sr=SR)
        mfcc_b = librosa.feature.mfcc(y=data, sr=SR, n_mfcc=20).T
        chroma_b = librosa.feature.chroma_cens(y=data, sr=SR, hop_length=512, n_chroma=12).T
        peaks = librosa.onset.onset_detect(onset_envelope=envelope, sr=SR, hop_length=512)
        peak_onehot = np.zeros_like(envelope, dtype=np.float32)
        peak_onehot[peaks] = 1.0
        _, beat_idxs = librosa.beat.beat_track(onset_envelope=envelope, sr=SR, hop_length=512,
                                               start_bpm=float(np.atleast_1d(tempo)[0]), tightness=100)
        beat_onehot = np.zeros_like(envelope, dtype=np.float32)
        beat_onehot[beat_idxs] = 1.0
        baseline = np.concatenate([envelope[:, None], mfcc_b, chroma_b, peak_onehot[:, None],
                                   beat_onehot[:, None]], axis=-1)
        np.savez(out / (Path(path).stem + ".npz"), mel=mel, onset_env=onset_env, tempo=tempo,
                 beat_frames=beat_frames, beat_times=beat_times, chroma=chroma, mfcc=mfcc, baseline=baseline)
''')


def run_measured(cmd: list[str]) -> tuple[float, float, float, float]:
    """Run ``cmd``; (wall s, CPU s of the process tree, peak RSS MiB of its largest process,
    peak summed tree RSS MiB)."""
    peak_tree = 0
    stop = threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        nonlocal peak_tree
        try:
            parent = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs)
                peak_tree = max(peak_tree, total)
            except psutil.Error:
                pass
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.send_signal(signal.SIGINT)  # mmx stops its workers on SIGINT
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        stop.set()
    wall = time.perf_counter() - start
    sampler.join()
    cpu = usage.ru_utime + usage.ru_stime  # includes the workers it reaped
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} … failed ({proc.returncode}):\n{stderr[-2000:]}")
    return wall, cpu, usage.ru_maxrss / 1024.0, peak_tree / 2**20


def audio_minutes(paths: list[Path]) -> float:
    import soundfile as sf

    return sum(sf.info(str(p)).duration for p in paths) / 60.0


def make_library(tracks: list[Path], n: int, into: Path) -> list[Path]:
    """``n`` files: the real ``tracks``, then copies of them under other names (same bytes)."""
    into.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i in range(n):
        src = tracks[i % len(tracks)]
        dst = into / (src.name if i < len(tracks) else f"copy{i:02d}-{src.name}")
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def compare(plain_dir: Path, mmx_dir: Path, keys: tuple[str, ...]) -> str:
    """Whether mmx's arrays equal the plain script's for every file (max abs difference)."""
    import numpy as np

    worst = 0.0
    checked = 0
    for npz in sorted(mmx_dir.glob("*.npz")):
        stem = npz.name.rsplit("-", 1)[0]
        plain = plain_dir / f"{stem}.npz"
        if not plain.exists():
            continue
        with np.load(npz) as a, np.load(plain) as b:
            for key in keys:
                if a[key].shape != b[key].shape:
                    return f"{key} shape differs for {stem}: {a[key].shape} vs {b[key].shape}"
                worst = max(worst, float(np.max(np.abs(a[key].astype(np.float64) - b[key]))) if a[key].size else 0.0)
        checked += 1
    return f"{checked} files, max |difference| {worst:.3g}"


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):6.1f} s (min–max {min(values):.1f}–{max(values):.1f})"


def verdict(ok: bool) -> str:
    return "met" if ok else "short"


def bench(files: list[Path], work: Path, *, runs: int, baseline: bool) -> None:
    minutes = audio_minutes(files)
    listdir = files[0].parent
    script = work / "plain_librosa.py"
    script.write_text(PLAIN_SCRIPT)
    extra = [] if baseline else ["--no-baseline"]
    block = "with" if baseline else "without"
    print(f"\n{len(files)} files, {minutes:.1f} min of audio, {block} the EDGE baseline block", flush=True)
    sides = {
        "plain librosa": [sys.executable, str(script), str(work / "plain"), "baseline" if baseline else "-", *map(str, files)],
        "mmx --jobs 1": [sys.executable, "-m", "mmx", "features", str(listdir), "-o", str(work / "j1"), "--force", "--jobs", "1", *extra],
        "mmx --jobs 2": [sys.executable, "-m", "mmx", "features", str(listdir), "-o", str(work / "j2"), "--force", "--jobs", "2", *extra],
    }  # fmt: skip
    for name, cmd in sides.items():  # warm-up: numba's cache, the page cache
        wall, *_ = run_measured(cmd)
        print(f"  warm-up {name:14s} {wall:6.1f} s (not counted)", flush=True)
    walls: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    peaks: dict[str, tuple[float, float]] = {}
    for r in range(runs):
        for name, cmd in sides.items():
            load = os.getloadavg()[0]
            wall, cpu, rss, tree = run_measured(cmd)
            walls[name].append(wall)
            cpus[name].append(cpu)
            peaks[name] = (max(rss, peaks.get(name, (0, 0))[0]), max(tree, peaks.get(name, (0, 0))[1]))
            print(f"  round {r + 1} {name:14s} wall {wall:6.1f} s, CPU {cpu:6.1f} s; load average {load:.1f} before", flush=True)
    print()
    for name in sides:
        print(f"  {name:14s} wall {spread(walls[name])}, {statistics.median(walls[name]) / minutes:.2f} s per audio minute; "
              f"CPU median {statistics.median(cpus[name]):.1f} s = {statistics.median(cpus[name]) / minutes:.2f} s per audio minute; "
              f"peak RSS {peaks[name][0]:.0f} MiB (largest process), {peaks[name][1]:.0f} MiB (process tree)")  # fmt: skip
    plain = statistics.median(walls["plain librosa"])
    j1, j2 = statistics.median(walls["mmx --jobs 1"]), statistics.median(walls["mmx --jobs 2"])
    ratio1 = [a / b for a, b in zip(walls["mmx --jobs 1"], walls["plain librosa"])]
    ratio2 = [b / a for a, b in zip(walls["mmx --jobs 2"], walls["plain librosa"])]
    print(f"  jobs 1: {j1 / plain:.2f}x the plain script's time (per round {min(ratio1):.2f}–{max(ratio1):.2f}); "
          f"goal ≤ 1.1x: {verdict(j1 <= 1.1 * plain)}")  # fmt: skip
    print(f"  jobs 2: {plain / j2:.2f}x faster than the plain script (per round {min(ratio2):.2f}–{max(ratio2):.2f}); "
          f"goal ≥ 1.7x: {verdict(plain / j2 >= 1.7)}; {j1 / j2:.2f}x faster than mmx --jobs 1")  # fmt: skip
    keys = ("mel", "onset_env", "beat_frames", "chroma", "mfcc", *(("baseline",) if baseline else ()))
    print(f"  same arrays: {compare(work / 'plain', work / 'j1', keys)}")


def _set_paused(cluster, name: str, paused: bool) -> None:
    """Pause (no new tasks) or resume one worker, and wait until the scheduler knows."""
    from distributed.core import Status

    want = "paused" if paused else "running"
    info = cluster.client.scheduler_info(n_workers=-1)["workers"]
    addr = next(a for a, w in info.items() if w["name"] == name)
    status = Status.paused if paused else Status.running
    cluster.client.run(lambda dask_worker: setattr(dask_worker, "status", status), workers=[addr])
    end = time.monotonic() + 30
    while cluster.client.scheduler_info(n_workers=-1)["workers"][addr]["status"] != want:
        if time.monotonic() > end:
            raise SystemExit(f"worker {name} did not become {want}")
        time.sleep(0.05)


def bench_dask(files: list[Path], work: Path, *, runs: int, baseline: bool) -> None:
    """`mmx features --cluster` with 1 and with 2 Dask workers (one thread each) on this machine.

    A real `dask scheduler` and two `dask worker` processes on 127.0.0.1 (tests/dask_fixtures);
    the 1-worker side pauses the second worker (Dask's own pause: it takes no new tasks), so
    the sides alternate A B A B with the same warm worker processes (librosa imported, numba
    kernels loaded) and see the same load. Wall time of the client run (submit to last artifact).
    """
    from tests.dask_fixtures import DaskCluster

    minutes = audio_minutes(files)
    extra = [] if baseline else ["--no-baseline"]
    cluster = DaskCluster(work / "dask")
    try:
        cluster.start_workers(2)
        workers = {name: psutil.Process(proc.pid) for name, proc in cluster.workers.items()}

        def worker_cpu() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in workers.values())

        cmd = [sys.executable, "-m", "mmx", "features", str(files[0].parent), "-o", str(work / "dask-out"),
               "--force", "--cluster", cluster.address, *extra]  # fmt: skip
        print(f"\nDask: scheduler {cluster.address}, workers w0 and w1 (1 thread each, no nanny); "
              f"{len(files)} files, {minutes:.1f} min of audio", flush=True)  # fmt: skip
        sides = {"dask 1 worker": True, "dask 2 workers": False}
        for name, pause in sides.items():  # warm-up: imports in both workers, page cache
            _set_paused(cluster, "w1", pause)
            wall, *_ = run_measured(cmd)
            print(f"  warm-up {name:15s} {wall:6.1f} s (not counted)", flush=True)
        walls: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(runs):
            for name, pause in sides.items():
                _set_paused(cluster, "w1", pause)
                load = os.getloadavg()[0]
                cpu0 = worker_cpu()
                wall, client_cpu, *_ = run_measured(cmd)
                walls[name].append(wall)
                print(f"  round {r + 1} {name:15s} wall {wall:6.1f} s, CPU {worker_cpu() - cpu0:5.1f} s in the workers "
                      f"+ {client_cpu:4.1f} s in the client; load average {load:.1f} before", flush=True)  # fmt: skip
        one, two = statistics.median(walls["dask 1 worker"]), statistics.median(walls["dask 2 workers"])
        ratios = [a / b for a, b in zip(walls["dask 1 worker"], walls["dask 2 workers"], strict=True)]
        for name in sides:
            print(f"  {name:15s} wall {spread(walls[name])}, {statistics.median(walls[name]) / minutes:.2f} s per audio minute")
        print(f"  2 Dask workers: {one / two:.2f}x faster than 1 (per round {min(ratios):.2f}–{max(ratios):.2f}); "
              f"goal ≥ 1.7x: {verdict(one / two >= 1.7)}; load average {os.getloadavg()[0]:.1f} now "
              f"(a 2-core machine shared with other work cannot show 2x)")  # fmt: skip
    finally:
        cluster.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=6, help="files in the library (the real tracks, then copies)")
    ap.add_argument("--runs", type=int, default=5, help="timed rounds of A B C after the warm-up")
    ap.add_argument("--baseline", action="store_true", help="both sides also compute EDGE's baseline block")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared real-data folder")
    ap.add_argument("--parts", default="local,dask",
                    help="which parts: local (plain script vs --jobs 1/2), dask (1 vs 2 Dask workers); default both")  # fmt: skip
    ap.add_argument("--dask-tracks", type=int, default=12, help="files in the Dask part's library (default 12)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts <= {"local", "dask"}:
        raise SystemExit(f"--parts: unknown {', '.join(sorted(parts - {'local', 'dask'}))}")
    tracks = sorted((args.data / "music").glob("*.ogg"))
    if not tracks:
        raise SystemExit(f"no .ogg tracks under {args.data / 'music'}")
    print(f"mmx features benchmark on {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="mmx-features-bench-") as tmp:
        work = Path(tmp)
        files = make_library(tracks, max(args.tracks, 1), work / "library")
        if "local" in parts:
            bench(files, work, runs=max(args.runs, 1), baseline=args.baseline)
        if "dask" in parts:
            try:
                import distributed  # noqa: F401
            except ImportError:
                print("\nDask part skipped: dask[distributed] is not installed (pip install 'mmx[cluster]')")
            else:
                # more files than the local part: the client's fixed start-up (imports, connect)
                # is in both sides' wall time and would cap the ratio on a short library
                dask_files = make_library(tracks, max(args.dask_tracks, 1), work / "dask-library")
                bench_dask(dask_files, work, runs=max(args.runs, 1), baseline=args.baseline)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
