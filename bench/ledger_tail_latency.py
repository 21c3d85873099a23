#!/usr/bin/env python3
"""Benchmark the delay from a committed push to `mmx ledger tail -f` output.

    python bench/ledger_tail_latency.py               # 1,000 events
    python bench/ledger_tail_latency.py --events 200

Runs two real processes on one ledger file: ``mmx ledger push --echo --interval-ms 0``
(each line committed on its own; its echo is written only after the commit returned) and
``mmx ledger tail -f --json``. For each event, one line is written to the push's stdin;
the latency is the time from the echo (commit acknowledged) to the same event on the
tail's stdout, both read here with one monotonic clock. Events are sent one at a time with
a random 0–20 ms pause, so every event is a separate commit and a separate wake-up of the
tail. Prints p50, p90, p99 and max in ms (target: under 250 ms), and the tail's CPU time
(a busy-polling tail would burn CPU while idle).
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mmx.events import Producer, encode

MMX = [sys.executable, "-m", "mmx"]


class Lines:
    """Line reader over a child's stdout with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.fd = proc.stdout.fileno()
        self.buf = bytearray()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def next(self, timeout_s: float) -> tuple[bytes, float]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise TimeoutError("no line within the timeout")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the process ended")
            self.buf += chunk
        now = time.monotonic()
        end = self.buf.index(b"\n") + 1
        line = bytes(self.buf[:end])
        del self.buf[:end]
        return line, now


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description="commit -> tail -f latency")
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mmx-bench-tail-"))
    ledger = work / "ledger.sqlite"
    producer = Producer("serve", session="bench-tail")
    rng = random.Random(3)
    push = subprocess.Popen([*MMX, "ledger", "push", "--echo", "--interval-ms", "0", "--ledger", str(ledger)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    echoes = Lines(push)
    # the first event creates the ledger; tail starts after it, from the end
    first = encode(producer.make("session.started", {"title": "tail latency"}))
    push.stdin.write(first)
    push.stdin.flush()
    echoes.next(60)
    tail = subprocess.Popen([*MMX, "ledger", "tail", "-f", "--json", "--ledger", str(ledger)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    tails = Lines(tail)
    try:
        line, _ = tails.next(60)  # the backlog (last 10): just the first event
        assert line == first, line
        time.sleep(0.5)  # let it settle into its wait
        tail_cpu0 = psutil.Process(tail.pid).cpu_times()
        idle_t0 = time.monotonic()
        time.sleep(3.0)  # idle: a tail that polls would use CPU here (resolution: 10 ms ticks)
        idle_cpu = sum(psutil.Process(tail.pid).cpu_times()[:2]) - sum(tail_cpu0[:2])
        idle_s = time.monotonic() - idle_t0
        latencies = []
        for i in range(args.events):
            data = encode(producer.make("director.cut", {"from": "cam-1", "to": f"cam-{i % 3 + 1}", "by": "ghost"}))
            push.stdin.write(data)
            push.stdin.flush()
            echoed, t_commit = echoes.next(30)
            seen, t_seen = tails.next(30)
            assert echoed == data and seen == data, (echoed, seen, data)
            latencies.append((t_seen - t_commit) * 1000)
            time.sleep(rng.uniform(0, 0.02))
    finally:
        push.stdin.close()
        push.wait(timeout=30)
        tail.kill()
        tail.wait()
    p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
    print(f"commit -> tail -f output over {len(latencies)} events: p50 {p50:.2f} ms, p90 {p90:.2f} ms, "
          f"p99 {p99:.2f} ms, max {max(latencies):.2f} ms, mean {statistics.fmean(latencies):.2f} ms")  # fmt: skip
    print(f"tail CPU while idle: {1000 * idle_cpu / idle_s:.1f} ms per s (no busy polling)")
    print(f"load average during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
