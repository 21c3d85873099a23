"""`push_stream` commits a full batch on a worker thread while it reads the next one
(`mmx.ledger.ingest.CommitAhead`): same rows, same order, same errors as one thread."""

from __future__ import annotations

import io
import sqlite3
import threading

import pytest

from mmx.errors import EventError, LedgerError
from mmx.events import Producer, encode
from mmx.ledger import Ledger, push_stream
from mmx.ledger.ingest import CommitAhead, write_splitting
from mmx.ledger.projections import Batch
from mmx.ledger.store import event_row


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as store:
        yield store


def lines(n: int) -> bytes:
    p = Producer("serve", session="S")
    return b"".join(encode(p.make("director.cut", {"to": f"cam-{i}"})) for i in range(n))


def test_full_batches_commit_on_the_worker_and_are_durable_in_order_when_reported(ledger):
    commits: list[str] = []
    ledger.conn.set_trace_callback(lambda sql: commits.append(threading.current_thread().name) if sql == "COMMIT" else None)
    seen: list[tuple[int, int, int]] = []

    def on_commit(result):
        with sqlite3.connect(ledger.path) as other:  # another connection sees the batch already
            seen.append((result.first_seq, result.last_seq, other.execute("SELECT max(seq) FROM events").fetchone()[0]))

    stats = push_stream(ledger, io.BytesIO(lines(35)), batch_size=10, on_commit=on_commit)
    assert stats.inserted == 35 == ledger.count() and stats.batches == 4
    assert seen == [(1, 10, 10), (11, 20, 20), (21, 30, 30), (31, 35, 35)]
    assert commits == ["mmx-commit"] * 3 + [threading.current_thread().name]  # the partial last batch: on the caller
    cams = [r[0] for r in ledger.conn.execute("SELECT camera FROM production_director_events ORDER BY event_seq")]
    assert cams == [f"cam-{i}" for i in range(35)]
    assert not ledger.conn.in_transaction


def test_a_commit_failing_on_the_worker_is_a_ledger_error_and_keeps_what_came_before(ledger):
    def deny_commit(action, arg1, *_):
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT" else sqlite3.SQLITE_OK

    reported: list[int] = []

    def on_commit(result):
        reported.append(result.last_seq)
        ledger.conn.set_authorizer(deny_commit)  # every later COMMIT fails (re-prepared: statements expire)

    data = lines(30)
    with pytest.raises(LedgerError, match="cannot write ledger"):
        push_stream(ledger, io.BytesIO(data), batch_size=10, on_commit=on_commit)
    assert reported == [10]
    assert not ledger.conn.in_transaction  # the failed batch was rolled back on the worker
    ledger.conn.set_authorizer(None)
    assert ledger.count() == 10
    again = push_stream(ledger, io.BytesIO(data), batch_size=10)  # and the file still takes writes
    assert (again.inserted, again.duplicates) == (20, 10)


def test_a_refused_full_batch_is_not_sent_ahead_and_is_split_instead(ledger):
    p = Producer("serve", session="S")
    batch = Batch()
    for i, event in enumerate(p.make("director.cut", {"to": f"cam-{i}"}) for i in range(8)):
        batch.add(event_row(event), event.data)
        batch.lines.append(i + 1)
    batch.rows[3] = (*batch.rows[3][:5], 1 << 64, batch.rows[3][6])  # a producer seq SQLite cannot hold
    ahead = CommitAhead(ledger)
    assert ahead.start(batch) is False
    assert not ledger.conn.in_transaction and ledger.count() == 0
    refused: list[EventError] = []
    assert sum(r.inserted for r in write_splitting(ledger, batch, refused.append)) == 7
    assert [e.line for e in refused] == [4]


class InterruptedRead:
    """A stream that gives ``chunks`` and then raises KeyboardInterrupt (Ctrl-C while reading)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def read1(self, size: int) -> bytes:
        if not self.chunks:
            raise KeyboardInterrupt
        return self.chunks.pop(0)


def test_ctrl_c_while_a_commit_is_in_flight_waits_for_it_and_commits_the_pending_lines(ledger):
    data = lines(25)
    cut = sum(map(len, data.splitlines(keepends=True)[:12]))  # 12 lines, then Ctrl-C: a full batch of 10 is ahead
    reported: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        push_stream(ledger, InterruptedRead([data[:cut]]), batch_size=10, on_commit=lambda r: reported.append(r.last_seq))
    assert reported == [10, 12]
    assert ledger.count() == 12 and not ledger.conn.in_transaction
