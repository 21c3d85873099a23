"""Benchmark: `mmx features` against a plain librosa script computing the same arrays.

    /work/venv/bin/python bench/features_bench.py [--minutes 30] [--data ../shared/data]

Two workloads, each run three ways in fresh processes (imports included, as a user runs
them): the plain librosa script (one file after another, every array computed from the
waveform as a tutorial would: ``librosa.load`` at 22050 Hz and at 15360 Hz, melspectrogram,
onset_strength, beat_track, chroma_stft, mfcc, and EDGE's baseline block), then
``mmx features --force`` with ``--jobs 1`` and ``--jobs 2``.

1. the three real tracks of ../shared/data/music (11.7 min of audio);
2. copies of them up to ``--minutes`` of audio (default 30).

Prints wall-clock and CPU seconds per audio minute for each, the ratios to the plain script
(targets: ≤ 1.1× its time with one job, ≥ 1.7× faster with two), the peak RSS of the
largest single process and the peak RSS summed over the process tree (workers included,
sampled every 0.1 s), and checks that mmx's arrays equal the plain script's. Wall-clock
ratios are only meaningful on an otherwise idle machine: the load average is printed with
every run; CPU seconds are steadier under load but cannot show the parallel speed-up.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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
    out.mkdir(parents=True, exist_ok=True)
    for path in sys.argv[2:]:
        y, sr = librosa.load(path, sr=22050)
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr), ref=np.max).T
        onset_env = librosa.onset.onset_strength(y=y, sr=sr)
        tempo, beat_frames = librosa.beat.beat_track(onset_envelope=onset_env, sr=sr)
        beat_times = librosa.frames_to_time(beat_frames, sr=sr)
        chroma = librosa.feature.chroma_stft(y=y, sr=sr).T
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=20).T
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


def make_copies(tracks: list[Path], minutes: float, into: Path) -> list[Path]:
    """Copies of ``tracks`` (distinct names, same bytes) until they hold ``minutes`` of audio."""
    import soundfile as sf

    into.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    total = 0.0
    i = 0
    while total < minutes * 60:
        src = tracks[i % len(tracks)]
        dst = into / f"copy{i:03d}-{src.name}"
        shutil.copyfile(src, dst)
        out.append(dst)
        total += sf.info(str(dst)).duration
        i += 1
    return out


def compare(plain_dir: Path, mmx_dir: Path) -> str:
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
            for key in ("mel", "onset_env", "beat_frames", "chroma", "mfcc", "baseline"):
                if a[key].shape != b[key].shape:
                    return f"{key} shape differs for {stem}: {a[key].shape} vs {b[key].shape}"
                worst = max(worst, float(np.max(np.abs(a[key].astype(np.float64) - b[key]))) if a[key].size else 0.0)
        checked += 1
    return f"{checked} files, max |difference| {worst:.3g}"


def bench(label: str, files: list[Path], work: Path) -> dict[str, float]:
    minutes = audio_minutes(files)
    listdir = work / f"{label}-audio"
    if files[0].parent != listdir:
        listdir.mkdir(parents=True, exist_ok=True)
        for f in files:
            link = listdir / f.name
            if not link.exists():
                shutil.copyfile(f, link)
        files = sorted(listdir.iterdir())
    script = work / "plain_librosa.py"
    script.write_text(PLAIN_SCRIPT)
    print(f"\n{label}: {len(files)} files, {minutes:.1f} min of audio", flush=True)
    results: dict[str, tuple[float, float, float, float]] = {}
    runs = [
        ("plain librosa", [sys.executable, str(script), str(work / f"{label}-plain"), *map(str, files)]),
        ("mmx --jobs 1", [sys.executable, "-m", "mmx", "features", str(listdir), "-o", str(work / f"{label}-j1"), "--force", "--jobs", "1"]),
        ("mmx --jobs 2", [sys.executable, "-m", "mmx", "features", str(listdir), "-o", str(work / f"{label}-j2"), "--force", "--jobs", "2"]),
    ]  # fmt: skip
    for name, cmd in runs:
        load = os.getloadavg()[0]
        wall, cpu, rss, tree = run_measured(cmd)
        results[name] = (wall, cpu, rss, tree)
        print(f"  {name:14s} wall {wall:6.1f} s = {wall / minutes:5.2f} s per audio minute; CPU {cpu:6.1f} s = "
              f"{cpu / minutes:5.2f} s per audio minute; peak RSS {rss:4.0f} MiB (largest process), "
              f"{tree:4.0f} MiB (process tree); load average {load:.1f} before", flush=True)  # fmt: skip
    plain = results["plain librosa"][0]
    j1, j2 = results["mmx --jobs 1"][0], results["mmx --jobs 2"][0]
    cpu_plain, cpu_j1 = results["plain librosa"][1], results["mmx --jobs 1"][1]
    print(f"  CPU time: mmx --jobs 1 uses {cpu_j1 / cpu_plain:.2f}x the plain script's CPU seconds")
    ok1 = "meets" if j1 <= 1.1 * plain else "MISSES"
    ok2 = "meets" if plain / j2 >= 1.7 else "MISSES"
    print(f"  jobs 1: {j1 / plain:.2f}x the plain script's time ({ok1} the ≤ 1.1x target)")
    print(f"  jobs 2: {plain / j2:.2f}x faster than the plain script ({ok2} the ≥ 1.7x target); "
          f"{j1 / j2:.2f}x faster than mmx --jobs 1")  # fmt: skip
    print(f"  same arrays: {compare(work / f'{label}-plain', work / f'{label}-j1')}")
    return {"plain": plain, "j1": j1, "j2": j2, "minutes": minutes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="audio minutes of the repeated workload (0 skips it)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared real-data folder")
    args = ap.parse_args()
    tracks = sorted((args.data / "music").glob("*.ogg"))
    if not tracks:
        raise SystemExit(f"no .ogg tracks under {args.data / 'music'}")
    print(f"mmx features benchmark on {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="mmx-features-bench-") as tmp:
        work = Path(tmp)
        bench("three-tracks", tracks, work)
        if args.minutes > 0:
            copies = make_copies(tracks, args.minutes, work / "repeated-audio")
            bench("repeated", copies, work)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
