#!/usr/bin/env python3
"""Benchmark `mmx ledger push` against `sqlite-utils insert --nl` on the same events file.

    python bench/ledger_push.py                  # 1,000,000 events
    python bench/ledger_push.py --events 100000  # smaller

Writes a realistic events file (several sessions; cuts, ghost proposals and decisions,
camera changes, commands and acks, stills, markers, holds), then runs as child processes:

1. ``mmx ledger push FILE --ledger L`` (WAL, synchronous=FULL, default batches),
2. ``sqlite-utils insert R events FILE --nl`` (one table, the reference),

and prints for each: wall time, events/s (with and without the process start-up, measured
with an empty input), events per CPU second (the child's user+sys time, which a busy
shared machine disturbs far less than the wall clock), and the child's peak RSS
(``os.wait4`` rusage). Targets (issue 2):
>= 100,000 events/s, >= 1.5x sqlite-utils, peak RSS < 200 MB whatever the input size.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from ulid import ULID

MMX = [sys.executable, "-m", "mmx"]
SQLITE_UTILS = shutil.which("sqlite-utils", path=os.path.dirname(sys.executable)) or shutil.which("sqlite-utils")

CAMS = ["cam-1", "cam-2", "cam-3", "cam-4"]


def write_events(path: Path, n: int, *, seed: int = 7, per_session: int = 100_000) -> None:
    """``n`` realistic events as JSON Lines in ``path`` (ULID ids, sessions of ``per_session``)."""
    rng = random.Random(seed)
    t = 1795791600.0
    seqs = {"serve": 0, "ghost": 0, "operator": 0}
    out = []
    session = None
    program = "cam-1"
    proposals: list[str] = []
    written = 0

    def ev(etype: str, data: dict, src: str = "serve") -> None:
        nonlocal t
        t += rng.uniform(0.001, 0.05)
        seqs[src] += 1
        out.append(orjson.dumps({"v": 1, "id": str(ULID.from_timestamp(t)), "seq": seqs[src], "ts": round(t, 3),
                                 "type": etype, "session": session, "src": src, "data": data}))  # fmt: skip

    next_session_at = 0  # events made so far at which the next session starts
    with open(path, "wb") as fp:
        while written < n:
            if written + len(out) >= next_session_at:
                next_session_at += per_session
                if session is not None:
                    ev("session.ended", {"reason": "operator", "state": {"program": program}})
                session = str(ULID.from_timestamp(t))
                ev("session.started", {"kind": "photoshoot_performance", "title": f"bench {written}", "mode": "ghost"})
                for i, cam in enumerate(CAMS):
                    ev("camera.joined", {"camera": cam, "device": f"D{i}", "model": "iPhone 15 Pro", "zoom": 1.0,
                                         "placement": {"label": cam, "azimuth_deg": -90 + 60 * i, "distance_m": 2.5}})  # fmt: skip
            r = rng.random()
            if r < 0.28:
                to = rng.choice([c for c in CAMS if c != program])
                data = {"from": program, "to": to, "by": "ghost"}
                if proposals and rng.random() < 0.7:
                    data["proposal"] = proposals.pop()
                else:
                    data["by"] = "operator"
                ev("director.cut", data)
                program = to
            elif r < 0.48:
                proposal = str(ULID.from_timestamp(t))
                proposals.append(proposal)
                del proposals[:-8]
                ev("ghost.proposed", {"proposal": proposal, "from": program, "to": rng.choice(CAMS),
                                      "score": round(rng.random(), 3),
                                      "reasons": {"beat": round(rng.random(), 3), "pose_energy": round(rng.random(), 3)},
                                      "cut_at": round(t + 0.4, 3), "expires_at": round(t + 3, 3)}, "ghost")  # fmt: skip
            elif r < 0.63:
                kind = rng.choice(["ghost.accepted", "ghost.accepted", "ghost.vetoed", "ghost.expired"])
                ev(kind, {"proposal": proposals[-1] if proposals else "none", "by": "operator"}, "operator")
            elif r < 0.71:
                ev("camera.changed", {"camera": rng.choice(CAMS), "zoom": rng.choice([0.5, 1.0, 2.0])})
            elif r < 0.81:
                cid = str(ULID.from_timestamp(t))
                cam = rng.choice(CAMS)
                ev("camera.command", {"camera": cam, "command_id": cid, "command": "zoom", "args": {"zoom": 0.5}})
                ev("camera.ack", {"camera": cam, "command_id": cid, "ok": True, "error": None,
                                  "latency_ms": round(rng.uniform(20, 90), 1)})  # fmt: skip
            elif r < 0.88:
                still = str(ULID.from_timestamp(t))
                cam = rng.choice(CAMS)
                ev("still.captured", {"still": still, "camera": cam, "path": f"stills/{cam}/{still}.jpg",
                                      "sha256": "%064x" % rng.getrandbits(256), "bytes": rng.randint(10**6, 5 * 10**6),
                                      "width": 4032, "height": 3024})  # fmt: skip
            elif r < 0.92:
                ev("still.marker", {"label": "look", "camera": program}, "operator")
            elif r < 0.96:
                ev("director.hold", {"camera": program, "by": "operator"}, "operator")
                ev("director.release", {"camera": program, "by": "operator"}, "operator")
            else:
                ev("director.mode", {"mode": rng.choice(["manual", "ghost"]), "previous": "ghost"}, "operator")
            if len(out) >= 10_000:
                written += _flush(fp, out, n - written)
        written += _flush(fp, out, n - written)


def _flush(fp, out: list[bytes], room: int) -> int:
    chunk = out[:room]
    fp.write(b"\n".join(chunk) + b"\n" if chunk else b"")
    out.clear()
    return len(chunk)


def run_child(cmd: list[str], stdin_path: Path | None = None) -> tuple[float, int, int, bytes, float]:
    """Run a child; returns (wall seconds, exit status, peak RSS bytes, stderr, CPU seconds)."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stdin_path:
        stdin.close()
    err.seek(0)
    return wall, proc.returncode, usage.ru_maxrss * 1024, err.read(), usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description="ledger push vs sqlite-utils insert --nl")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=None, help="mmx ledger push --batch-size")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if SQLITE_UTILS is None:
        print("sqlite-utils is not installed (pip install sqlite-utils)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="mmx-bench-ledger-"))
    try:
        src = work / "events.jsonl"
        empty = work / "empty.jsonl"
        empty.write_bytes(b"")
        t0 = time.perf_counter()
        write_events(src, args.events)
        size_mb = src.stat().st_size / 1e6
        print(f"events file: {args.events:,} events, {size_mb:.0f} MB (written in {time.perf_counter() - t0:.1f} s)")

        extra = ["--batch-size", str(args.batch_size)] if args.batch_size else []
        ledger = work / "ledger.sqlite"
        startup, _, _, _, startup_cpu = run_child([*MMX, "ledger", "push", str(empty), "--ledger", str(work / "empty.sqlite")])
        wall, code, rss, err, cpu = run_child([*MMX, "ledger", "push", str(src), "--ledger", str(ledger), *extra])
        if code != 0:
            print(err.decode(), file=sys.stderr)
            return 1
        stored = sqlite3.connect(ledger).execute("SELECT count(*) FROM events").fetchone()[0]
        assert stored == args.events, (stored, args.events)
        mmx_rate = args.events / wall
        mmx_rate_core = args.events / max(wall - startup, 1e-9)

        ref = work / "reference.db"
        su_startup, _, _, _, su_startup_cpu = run_child([SQLITE_UTILS, "insert", str(work / "empty.db"), "events", str(empty), "--nl"])
        su_wall, su_code, su_rss, su_err, su_cpu = run_child([SQLITE_UTILS, "insert", str(ref), "events", str(src), "--nl"])
        if su_code != 0:
            print(su_err.decode(), file=sys.stderr)
            return 1
        su_stored = sqlite3.connect(ref).execute("SELECT count(*) FROM events").fetchone()[0]
        assert su_stored == args.events, (su_stored, args.events)
        su_rate = args.events / su_wall
        su_rate_core = args.events / max(su_wall - su_startup, 1e-9)

        print(f"mmx ledger push        : {wall:7.2f} s  {mmx_rate:10,.0f} events/s "
              f"({mmx_rate_core:,.0f}/s without {startup:.2f} s start-up)  peak RSS {rss / 2**20:6.1f} MB")  # fmt: skip
        print(f"sqlite-utils insert --nl: {su_wall:7.2f} s  {su_rate:10,.0f} events/s "
              f"({su_rate_core:,.0f}/s without {su_startup:.2f} s start-up)  peak RSS {su_rss / 2**20:6.1f} MB")  # fmt: skip
        # on a shared machine the wall clock measures the neighbours too; CPU time does not
        cpu_rate = args.events / max(cpu - startup_cpu, 1e-9)
        su_cpu_rate = args.events / max(su_cpu - su_startup_cpu, 1e-9)
        print(f"per CPU second (user+sys, start-up excluded): mmx {cpu_rate:,.0f} events/s, "
              f"sqlite-utils {su_cpu_rate:,.0f} events/s, {cpu_rate / su_cpu_rate:.2f}x")  # fmt: skip
        print(f"speed-up vs sqlite-utils: {mmx_rate / su_rate:.2f}x (without start-up {mmx_rate_core / su_rate_core:.2f}x)")
        print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
