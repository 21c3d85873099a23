"""Benchmark: `mmx ledger sync` to the loopback Convex fake.

    /work/venv/bin/python bench/convex_sync_bench.py [--events 20000] [--backlog 100000]

Prints events per second synced at batch sizes 50, 200 and 500 (each run against a fresh
fake deployment, the ledger's sync marks reset), then the time to drain a backlog of
``--backlog`` events at batch 500. The fake (tests/convex_fake.py: aiohttp + SQLite with
``synchronous=FULL``, one transaction per call) runs in its own process on 127.0.0.1, so the
figures include a real HTTP round trip and a durable commit on both sides per batch; a real
deployment adds network latency per call, which larger batches amortize.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmx.events import Producer  # noqa: E402
from mmx.ledger import convex as cx  # noqa: E402
from mmx.ledger.store import Ledger  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.convex_fake import FakeConvex  # noqa: E402

KEY = "bench-key"


def build_ledger(path: Path, n: int) -> None:
    """``n`` realistic events (cuts, stills, markers, camera changes) over 4 sessions."""
    producers = [Producer("serve", session=f"01BENCHSESSION{i:012d}") for i in range(4)]
    kinds = [
        ("director.cut", lambda i: {"from": f"cam-{i % 4}", "to": f"cam-{(i + 1) % 4}", "by": "ghost", "proposal": f"p-{i}"}),
        ("camera.changed", lambda i: {"camera": f"cam-{i % 4}", "zoom": 0.5 + (i % 3), "placement": {"label": "front-left", "azimuth_deg": -30.0}}),
        ("still.captured", lambda i: {"still": f"st-{i}", "camera": f"cam-{i % 4}", "path": f"stills/cam-{i % 4}/st-{i}.jpg", "sha256": "ab" * 32, "bytes": 812345, "width": 4032, "height": 3024}),
        ("still.marker", lambda i: {"label": "beat drop", "camera": f"cam-{i % 4}"}),
    ]
    with Ledger.open(path) as led:
        batch = []
        for i in range(n):
            etype, data = kinds[i % len(kinds)]
            batch.append(producers[i % 4].make(etype, data(i)))
            if len(batch) == 5000:
                led.write(batch)
                batch = []
        if batch:
            led.write(batch)


def reset_marks(path: Path) -> None:
    with Ledger.open(path) as led:
        led.conn.execute("DELETE FROM convex_sync")


def run(path: Path, state: Path, batch: int) -> tuple[int, float]:
    with FakeConvex(state, free_port(), key=KEY) as fake, Ledger.open(path) as led:
        with cx.ConvexClient(fake.url, KEY) as client:
            start = time.perf_counter()
            progress = cx.sync(led, client, batch_size=batch)
            elapsed = time.perf_counter() - start
        assert len(fake.event_ids()) == progress.sent
    return progress.sent, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per batch-size run")
    parser.add_argument("--backlog", type=int, default=100_000, help="events in the backlog to drain")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        ledger = tmpdir / "ledger.sqlite"
        build_ledger(ledger, args.events)
        print(f"convex sync to the loopback fake, {args.events} events per run")
        for batch in (50, 200, 500):
            reset_marks(ledger)
            sent, elapsed = run(ledger, tmpdir / f"fake-{batch}.sqlite", batch)
            print(f"  batch {batch:>3}: {sent / elapsed:>8.0f} events/s ({sent} events in {elapsed:.2f} s)")
        backlog = tmpdir / "backlog.sqlite"
        t0 = time.perf_counter()
        build_ledger(backlog, args.backlog)
        built = time.perf_counter() - t0
        sent, elapsed = run(backlog, tmpdir / "fake-backlog.sqlite", 500)
        print(f"  backlog: {sent} events drained in {elapsed:.1f} s ({sent / elapsed:.0f} events/s, batch 500; "
              f"building the ledger took {built:.1f} s)")  # fmt: skip
    print(f"  load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
