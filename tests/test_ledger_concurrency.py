"""Crash safety and concurrent writers: real `mmx ledger push` processes on one ledger file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading

import orjson

from mmx.events import Producer, encode

from .conftest import MMX
from .test_cli_ledger import read_line, read_rest


def make_lines(n: int, src: str, session: str) -> list[bytes]:
    p = Producer(src, session=session)
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(encode(p.make("director.cut", {"from": "cam-1", "to": "cam-2", "by": src})))
        elif i % 3 == 1:
            out.append(encode(p.make("ghost.proposed", {"proposal": f"{src}-{i}", "to": "cam-3", "score": 0.5})))
        else:
            out.append(encode(p.make("still.captured", {"still": f"{src}-{i}", "camera": "cam-1", "bytes": i})))
    return out


def test_a_push_killed_mid_stream_keeps_everything_it_echoed(tmp_path):
    path = tmp_path / "crash.sqlite"
    lines = make_lines(20_000, "serve", "S-crash")
    killed = threading.Event()
    proc = subprocess.Popen([*MMX, "ledger", "push", "--echo", "--batch-size", "500", "--ledger", str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip

    def feed():
        try:
            for i in range(0, len(lines), 1000):
                if i == 10_000:
                    killed.wait(60)  # the rest comes only after the kill: the stream is mid-flight
                proc.stdin.write(b"".join(lines[i : i + 1000]))
                proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # killed while we were writing

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    echoed = []
    while len(echoed) < 3000:  # several batches acknowledged, the stream still flowing
        line = read_line(proc, 30.0)
        assert line, "push echoed nothing"
        echoed.append(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed.set()
    feeder.join(timeout=10)
    # read whatever else was already echoed before the kill: it too must be stored
    rest = read_rest(proc)
    echoed.extend(rest.splitlines(keepends=True))
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {row[0] for row in conn.execute("SELECT id FROM events")}
    echoed_ids = [orjson.loads(line)["id"] for line in echoed if line.endswith(b"\n")]
    assert len(echoed_ids) >= 3000
    assert set(echoed_ids) <= stored
    assert len(stored) < len(lines)  # it really was killed mid-stream
    # the projections committed with their events
    n_cuts = conn.execute("SELECT count(*) FROM production_director_events WHERE kind = 'cut'").fetchone()[0]
    assert n_cuts == conn.execute("SELECT count(*) FROM events WHERE type = 'director.cut'").fetchone()[0]
    conn.close()
    # and the file takes more writes afterwards
    again = subprocess.run([*MMX, "ledger", "push", "--ledger", str(path)], input=b"".join(lines[:5000]),
                           capture_output=True)  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_two_concurrent_pushes_into_one_ledger_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite"
    serve = make_lines(8_000, "serve", "S-live")
    ghost = make_lines(8_000, "ghost", "S-live")
    overlap = serve[:1000]  # both streams carry some of the same events: stored once
    files = []
    for name, lines in (("serve", serve), ("ghost", ghost + overlap)):
        f = tmp_path / f"{name}.jsonl"
        f.write_bytes(b"".join(lines))
        files.append(f)
    procs = [
        subprocess.Popen([*MMX, "ledger", "push", str(f), "--batch-size", "200", "--ledger", str(path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        for f in files
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err.decode()
        assert b"Error" not in err and b"warning" not in err
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
    expected = {orjson.loads(line)["id"] for line in serve + ghost}
    assert len(ids) == len(expected) and set(ids) == expected
    seqs = [row[0] for row in conn.execute("SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(expected) + 1))
    # both writers' batches interleaved (not one after the other) …
    srcs = [row[0] for row in conn.execute("SELECT src FROM events ORDER BY seq")]
    switches = sum(1 for a, b in zip(srcs, srcs[1:]) if a != b)
    assert switches >= 1
    # … and the projections saw every new event exactly once
    n_director = conn.execute("SELECT count(*) FROM production_director_events").fetchone()[0]
    assert n_director == conn.execute(
        "SELECT count(*) FROM events WHERE type IN ('director.cut', 'ghost.proposed')").fetchone()[0]  # fmt: skip
    status = conn.execute("SELECT status, inferred FROM production_sessions WHERE id = 'S-live'").fetchone()
    assert status == ("active", 1)
    conn.close()
