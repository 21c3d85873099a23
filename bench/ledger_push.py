#!/usr/bin/env python3
"""Benchmark `mmx ledger push` against `sqlite-utils insert --nl` on the same events file.

    python bench/ledger_push.py                              # 1,000,000 events, ULID then UUID ids, 5 rounds
    python bench/ledger_push.py --events 10000000 --runs 3   # studio scale
    python bench/ledger_push.py --events 200000 --ids uuid   # smaller, one id kind

Writes a realistic events file (several sessions; cuts, ghost proposals and decisions,
camera changes, commands and acks, stills, markers, holds) once per id kind: time-ordered
ULIDs (what mmx producers make) and random UUIDv4s (what the device protocol allows and the
phone app sends; they scatter inserts over the unique ``id`` index). Then, after one untimed
warm-up of each side, alternates for ``--runs`` rounds (A B A B, fresh output each time, after an
``os.sync()`` so no run pays for the write-back of the one before):

1. ``mmx ledger push FILE --ledger L`` (WAL, synchronous=FULL, default batches),
2. ``sqlite-utils insert R events FILE --nl`` (one table, the reference),

and prints medians with min–max of: events/s (wall), events per CPU second (the child's
user+sys time, start-up excluded: a busy shared machine disturbs it far less than the wall
clock), the mmx/sqlite-utils ratio, and the peak RSS (GNU time's). Goals (issue 18), each
with met/short: >= 100,000 events/s and >= 1.5x sqlite-utils at 1M and 10M events, with
ULIDs and with UUIDs, peak RSS < 200 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from ulid import ULID

MMX = [sys.executable, "-m", "mmx"]
SQLITE_UTILS = shutil.which("sqlite-utils", path=os.path.dirname(sys.executable)) or shutil.which("sqlite-utils")

GNU_TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"

CAMS = ["cam-1", "cam-2", "cam-3", "cam-4"]


def write_events(path: Path, n: int, *, ids: str = "ulid", seed: int = 7, per_session: int = 100_000) -> None:
    """``n`` realistic events as JSON Lines in ``path``, sessions of ``per_session``.

    ``ids``: ``"ulid"`` (time-ordered, as mmx producers make them) or ``"uuid"`` (random
    UUIDv4 strings, which the device protocol allows and the phone app sends) for every
    event id; the other ids in the data (sessions, proposals, stills) are ULIDs either way.
    """
    rng = random.Random(seed)
    id_rng = random.Random(seed + 1)

    def event_id(t: float) -> str:
        if ids == "uuid":
            return str(uuid.UUID(int=id_rng.getrandbits(128), version=4))
        return str(ULID.from_timestamp(t))

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
        out.append(orjson.dumps({"v": 1, "id": event_id(t), "seq": seqs[src], "ts": round(t, 3),
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
    """Run a child; returns (wall seconds, exit status, peak RSS bytes, stderr, CPU seconds).

    The child runs under GNU time (``/usr/bin/time -f %M``), whose own wait4 gives the peak
    RSS: a child forked straight from this process would report at least this process's RSS
    (Linux carries the parent's high-water mark across fork and exec).
    """
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    err = tempfile.TemporaryFile()
    with tempfile.NamedTemporaryFile("r") as rss_file:
        t0 = time.perf_counter()
        proc = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", rss_file.name, *cmd], stdin=stdin,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        rss_kb = int(rss_file.read().split()[-1])
    proc.returncode = os.waitstatus_to_exitcode(status)
    if stdin_path:
        stdin.close()
    err.seek(0)
    return wall, proc.returncode, rss_kb * 1024, err.read(), usage.ru_utime + usage.ru_stime


#: Goals (issue 18): at 1M and 10M events, ULIDs and random UUIDs alike.
GOAL_RATE = 100_000
GOAL_RATIO = 1.5
GOAL_RSS_MB = 200


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} (min {min(values):,.0f} – max {max(values):,.0f})"


def _verdict(ok: bool) -> str:
    return "met" if ok else "short"


def bench_ids(work: Path, n: int, ids: str, runs: int, extra: list[str]) -> None:
    """Push one events file with ``ids`` into fresh ledgers, mmx and sqlite-utils alternating
    (A B A B …) for ``runs`` rounds after an untimed warm-up of each; print medians."""
    src = work / f"events-{ids}.jsonl"
    empty = work / "empty.jsonl"
    t0 = time.perf_counter()
    write_events(src, n, ids=ids)
    print(f"\n{ids} ids: {n:,} events, {src.stat().st_size / 1e6:.0f} MB (written in {time.perf_counter() - t0:.1f} s)")
    startup, _, _, _, startup_cpu = run_child([*MMX, "ledger", "push", str(empty), "--ledger", str(work / "empty.sqlite")])
    su_startup, _, _, _, su_startup_cpu = run_child([SQLITE_UTILS, "insert", str(work / "empty.db"), "events", str(empty), "--nl"])
    sides = {
        "mmx": lambda out: [*MMX, "ledger", "push", str(src), "--ledger", str(out), *extra],
        "su": lambda out: [SQLITE_UTILS, "insert", str(out), "events", str(src), "--nl"],
    }
    figures: dict[str, dict[str, list[float]]] = {side: {"rate": [], "cpu_rate": [], "rss": []} for side in sides}
    for round_no in range(runs + 1):  # round 0 is the warm-up (page cache, bytecode), not counted
        for side, cmd in sides.items():
            out = work / f"out-{side}.db"
            for leftover in work.glob(f"out-{side}.db*"):
                leftover.unlink()
            # the previous run's ~600 MB of dirty pages would otherwise be written back (and
            # its deleted file's blocks discarded) while this run fsyncs: a cost of the other side
            os.sync()
            wall, code, rss, err, cpu = run_child(cmd(out))
            if code != 0:
                raise SystemExit(f"{side} failed: {err.decode()}")
            stored = sqlite3.connect(out).execute("SELECT count(*) FROM events").fetchone()[0]
            assert stored == n, (side, stored, n)
            if round_no:
                base_cpu = startup_cpu if side == "mmx" else su_startup_cpu
                figures[side]["rate"].append(n / wall)
                figures[side]["cpu_rate"].append(n / max(cpu - base_cpu, 1e-9))
                figures[side]["rss"].append(rss / 2**20)
    mmx, su = figures["mmx"], figures["su"]
    ratios = [a / b for a, b in zip(mmx["rate"], su["rate"])]
    cpu_ratios = [a / b for a, b in zip(mmx["cpu_rate"], su["cpu_rate"])]
    rate = statistics.median(mmx["rate"])
    print(f"  mmx ledger push         events/s {_stats(mmx['rate'])}   goal >= {GOAL_RATE:,}: {_verdict(rate >= GOAL_RATE)}")
    print(f"  sqlite-utils insert --nl events/s {_stats(su['rate'])}")
    print(f"  mmx / sqlite-utils      {statistics.median(ratios):.2f}x (min {min(ratios):.2f} – max {max(ratios):.2f})"
          f"   goal >= {GOAL_RATIO}x: {_verdict(statistics.median(ratios) >= GOAL_RATIO)}")
    print(f"  per CPU second (user+sys, start-up of {startup:.2f} s excluded): mmx {_stats(mmx['cpu_rate'])}, "
          f"sqlite-utils {_stats(su['cpu_rate'])}, {statistics.median(cpu_ratios):.2f}x")
    peak = max(mmx["rss"])
    print(f"  mmx peak RSS {peak:.0f} MB (sqlite-utils {max(su['rss']):.0f} MB)   goal < {GOAL_RSS_MB} MB: {_verdict(peak < GOAL_RSS_MB)}")
    src.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description="ledger push vs sqlite-utils insert --nl")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ids", choices=["ulid", "uuid", "both"], default="both", help="event ids (default both, one after the other)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds per id kind, A B alternating (default 5)")
    parser.add_argument("--batch-size", type=int, default=None, help="mmx ledger push --batch-size")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if SQLITE_UTILS is None:
        print("sqlite-utils is not installed (pip install sqlite-utils)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="mmx-bench-ledger-"))
    extra = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.runs} rounds after a warm-up")
    try:
        (work / "empty.jsonl").write_bytes(b"")
        for ids in (["ulid", "uuid"] if args.ids == "both" else [args.ids]):
            bench_ids(work, args.events, ids, args.runs, extra)
        print(f"\nload average after: {os.getloadavg()[0]:.2f} (wall figures on a busy machine measure the neighbours too)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
