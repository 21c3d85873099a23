"""Reading a JSON Lines event stream into ledger batches, fast, and pushing it.

`BatchReader` turns a binary stream (a file, a pipe, stdin) into batches of ``events`` rows
that commit on ``batch_size`` lines or ``interval_ms`` after the first pending event,
whichever comes first, so a slow live stream (``mmx serve | mmx ledger push``) is durable
within ``interval_ms`` even when no further line arrives. On a pipe it waits with
``select()`` and the remaining time to the deadline as timeout — one thread, no busy loop,
no lock ping-pong between a reader thread and the writer.

Lines are read in large ``os.read`` chunks and split in C. Each line is decoded once with
orjson and checked by `mmx.events.certainly_valid`, the fast acceptance test of the one
validation contract; any line it does not accept goes through `mmx.events.decode`, which
either raises the canonical ``line N: …`` error or accepts it (the fast test is only ever
stricter, and decode runs it first too). Line numbers count every line, blank lines included; blank lines
are skipped; CRLF is accepted; a line longer than ``max_line_bytes`` is reported without
being held in memory whole.
"""

from __future__ import annotations

import io
import os
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from mmx.errors import DataError, EventError
from mmx.events import MAX_LINE_BYTES, certainly_valid, decode
from mmx.ledger.store import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_INTERVAL_MS,
    BatchRefused,
    BatchResult,
    Ledger,
    PushStats,
    StagedBatch,
    event_row,
)
from mmx.ledger.projections import DIRECTOR_KINDS, STATE_SQL, Batch, director_row, still_row

#: Bytes asked of the OS per read.
CHUNK_BYTES = 1 << 20

_EMPTY: dict[str, Any] = {}


def fast_row(obj: Any, raw: bytes) -> tuple[Any, ...] | None:
    """The ``events`` row ``(id, type, session, ts, src, seq, raw)`` of a decoded line when
    `mmx.events.certainly_valid` accepts it, else None ("not sure": the caller asks
    `mmx.events.decode`, which runs the same test first and then the whole contract)."""
    if not certainly_valid(obj, raw):
        return None
    get = obj.get
    return (get("id"), get("type"), get("session"), get("ts"), get("src", ""), get("seq"), raw.decode())


class BatchReader:
    """Iterate over batches (`mmx.ledger.projections.Batch`) read from a binary stream.

    ``on_error`` receives each bad line's EventError (with its line number). With
    ``strict`` the reader stops after the first bad line: it yields what was pending before
    it and ends, leaving the error in ``stopped_by``. ``pending`` holds the rows of the
    batch being filled (committed by `push_stream` on Ctrl-C).
    """

    def __init__(
        self,
        fp: IO[bytes],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        interval_ms: float = DEFAULT_INTERVAL_MS,
        max_line_bytes: int = MAX_LINE_BYTES,
        on_error: Callable[[EventError], None] | None = None,
        strict: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if interval_ms < 0:
            raise ValueError("interval_ms must not be negative")
        self.fp = fp
        self.batch_size = batch_size
        self.interval_s = interval_ms / 1000
        self.max_line_bytes = max_line_bytes
        self.on_error = on_error
        self.strict = strict
        self.line_no = 0
        self.bad_lines = 0
        self.stopped_by: EventError | None = None
        self.pending = Batch()
        self._fd, self._wait = self._source()

    def _source(self) -> tuple[int | None, bool]:
        """The fd to ``os.read`` (None: use the file object) and whether to ``select`` on it."""
        try:
            fd = self.fp.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            return None, False
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return None, False
        return fd, not stat.S_ISREG(mode)

    def _read(self, timeout: float | None) -> bytes | None:
        """Next chunk; b"" at EOF; None when ``timeout`` (s) passed with nothing to read."""
        if self._fd is None:
            reader = getattr(self.fp, "read1", None) or self.fp.read
            return reader(CHUNK_BYTES)
        if self._wait and timeout is not None:
            ready, _, _ = select.select([self._fd], [], [], max(timeout, 0.0))
            if not ready:
                return None
        return os.read(self._fd, CHUNK_BYTES)

    def _bad(self, error: EventError) -> None:
        self.bad_lines += 1
        if self.on_error is not None:
            self.on_error(error)
        if self.strict:
            self.stopped_by = error

    def __iter__(self) -> Iterator[Batch]:
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        row_of = fast_row
        director_kinds = DIRECTOR_KINDS
        state_types = STATE_SQL
        monotonic = time.monotonic
        batch_size = self.batch_size
        max_line = self.max_line_bytes
        rest = b""  # the incomplete last line of the previous chunk
        overlong = False  # discarding the remainder of a line longer than max_line
        deadline = 0.0
        pending = self.pending
        rows, director, stills, lines_of = pending.rows, pending.director, pending.stills, pending.lines
        while True:
            timeout = None
            if rows:
                timeout = deadline - monotonic()
                if timeout <= 0:
                    yield pending
                    pending = self.pending = Batch()
                    rows, director, stills, lines_of = pending.rows, pending.director, pending.stills, pending.lines
                    continue
            chunk = self._read(timeout)
            if chunk is None:  # the deadline passed while the source stayed silent
                continue
            if not chunk:
                lines = [rest] if rest and not overlong else []
                if overlong:
                    self.line_no += 1
                    self._bad(EventError(f"line longer than {max_line} bytes", line=self.line_no))
            else:
                if overlong:
                    end = chunk.find(b"\n")
                    if end < 0:
                        continue
                    self.line_no += 1
                    overlong = False
                    self._bad(EventError(f"line longer than {max_line} bytes", line=self.line_no))
                    if self.stopped_by is not None:
                        break
                    chunk = chunk[end + 1 :]
                lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
                rest = lines.pop()
                if len(rest) > max_line:
                    rest = b""
                    overlong = True
            line_no = self.line_no
            for line in lines:
                line_no += 1
                if len(line) > max_line + 1:  # + 1: a CR before the LF
                    self._bad(EventError(f"line longer than {max_line} bytes", line=line_no))
                    if self.stopped_by is not None:
                        break
                    continue
                raw = line.strip()
                if not raw:
                    continue
                try:
                    obj = loads(raw)
                    row = row_of(obj, raw)
                except decode_error:
                    row = None
                if row is None:
                    try:
                        event = decode(raw, line_no=line_no)
                    except EventError as exc:
                        self._bad(exc)
                        if self.stopped_by is not None:
                            break
                        continue
                    row = event_row(event)
                    etype, data = event.type, event.data
                else:
                    etype = row[1]
                    data = obj.get("data") or _EMPTY
                if etype in director_kinds:
                    director.append(director_row(len(rows), row[2], row[3], etype, data))
                elif etype == "still.captured":
                    stills.append(still_row(len(rows), row[2], row[3], data))
                elif etype in state_types and row[2] is not None:
                    pending.state.append((len(rows), data))
                if not rows:
                    deadline = monotonic() + self.interval_s
                rows.append(row)
                lines_of.append(line_no)
                if len(rows) >= batch_size:
                    self.line_no = line_no
                    yield pending
                    pending = self.pending = Batch()
                    rows, director, stills, lines_of = pending.rows, pending.director, pending.stills, pending.lines
            self.line_no = line_no
            if self.stopped_by is not None or not chunk:
                break
        if rows:
            self.pending = Batch()
            yield pending


def push_stream(
    ledger: Ledger,
    fp: IO[bytes],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    interval_ms: float = DEFAULT_INTERVAL_MS,
    strict: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
    on_error: Callable[[EventError], None] | None = None,
    on_commit: Callable[[BatchResult], None] | None = None,
) -> PushStats:
    """Store the events of a JSON Lines stream in ``ledger``; returns the totals.

    A batch the store refuses (`BatchRefused`: a row broke a constraint) is split until the
    refused rows are alone; every other row is stored and each refused one is reported as a
    bad line (``line N: the ledger refused …``): one bad event never costs the rest of the
    input.

    Commits every ``batch_size`` events or ``interval_ms`` after the first pending event,
    whichever comes first; ``on_commit`` runs after each commit (after the ledger's own
    hooks) — ``--echo`` writes there, so what it writes is durable. Bad lines go to
    ``on_error`` and are counted in ``stats.bad_lines``; the rest is stored. With ``strict``
    the stream stops at the first bad line (lines before it are committed) and DataError
    is raised. On Ctrl-C the pending batch is committed before KeyboardInterrupt goes on.
    Raises TemporaryFailure / LedgerError from `Ledger.write_rows`.
    """
    stats = PushStats()
    reader = BatchReader(fp, batch_size=batch_size, interval_ms=interval_ms, max_line_bytes=max_line_bytes,
                         on_error=on_error, strict=strict)  # fmt: skip
    refused: list[EventError] = []
    ahead = CommitAhead(ledger)

    def record(result: BatchResult) -> None:
        stats.add(result)
        if on_commit is not None:
            on_commit(result)

    def write(batch: Batch) -> None:
        ahead.drain(record)
        if len(batch) >= batch_size and ahead.start(batch):
            return  # a full batch: more input is waiting, read it while this one commits
        for result in write_splitting(ledger, batch, refused.append if on_error is None else _both(refused.append, on_error)):
            record(result)

    try:
        try:
            for batch in reader:
                write(batch)
                if strict and refused:
                    break
        except KeyboardInterrupt:
            if reader.pending.rows:
                write(reader.pending)
            raise
        finally:
            ahead.close(record)
    finally:
        stats.bad_lines = reader.bad_lines + len(refused)
    if strict and refused and reader.stopped_by is None:
        reader.stopped_by = refused[0]
    if reader.stopped_by is not None:
        raise DataError(f"stopped at the first bad line ({reader.stopped_by.message})",
                        hint="without --strict bad lines are reported and the rest is stored")  # fmt: skip
    return stats


class CommitAhead:
    """Commit one full batch on a worker thread while the caller reads the next one.

    A push from a file or a fast pipe spends 14 % (ULIDs) to 25 % (random UUIDs) of its
    time in SQLite's ``COMMIT``: writing the WAL, its fsync and the checkpoints. ``COMMIT``
    releases the GIL, so the next batch's lines are decoded and checked meanwhile on the
    other core (issue 18). At most one batch is in flight; the ledger's connection is used
    by one thread at a time (the caller calls nothing on the ledger until `drain`). The
    commit hooks and ``on_commit`` run on the caller's thread, in order, once the commit
    returned — later than with `Ledger.write_batch` by at most the reading of one batch.
    Partial batches (the interval of a slow live stream, the end of the input) are not sent
    ahead: the caller writes those itself after `drain`.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._staged: StagedBatch | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, batch: Batch) -> bool:
        """Insert ``batch`` and start its COMMIT on a worker thread; False (nothing done,
        the transaction rolled back) when the ledger refused a row of it (`BatchRefused`):
        the caller then writes it with `write_splitting`. Call `drain` first. Raises what
        `Ledger.stage` raises otherwise."""
        assert self._thread is None, "drain the batch in flight first"
        try:
            staged = self.ledger.stage(batch)
        except BatchRefused:
            return False
        self._staged, self._error = staged, None
        self._thread = threading.Thread(target=self._commit, args=(staged,), name="mmx-commit", daemon=True)
        self._thread.start()
        return True

    def _commit(self, staged: StagedBatch) -> None:
        try:
            self.ledger.commit_staged(staged)
        except BaseException as exc:  # handed to the caller's thread by drain
            self._error = exc

    def drain(self, record: Callable[[BatchResult], None]) -> None:
        """Wait for the batch in flight (if any); hand its result to ``record`` after the
        commit hooks. Raises the commit's TemporaryFailure / LedgerError (rolled back)."""
        thread, staged = self._thread, self._staged
        if thread is None or staged is None:
            return
        thread.join()
        self._thread = self._staged = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        record(self.ledger.finish(staged))

    def close(self, record: Callable[[BatchResult], None]) -> None:
        """`drain`, also while an exception (Ctrl-C) goes through the caller: the commit in
        flight is waited for before the ledger can be closed under it."""
        thread = self._thread
        if thread is None:
            return
        try:
            self.drain(record)
        finally:
            while thread.is_alive():  # a second Ctrl-C while joining: still wait
                try:
                    thread.join()
                except KeyboardInterrupt:
                    continue


def _both(first: Callable[[EventError], None], second: Callable[[EventError], None]) -> Callable[[EventError], None]:
    def call(error: EventError) -> None:
        first(error)
        second(error)

    return call


def write_splitting(ledger: Ledger, batch: Batch, on_refused: Callable[[EventError], None]) -> Iterator[BatchResult]:
    """Write ``batch``; when the store refuses it, write its halves (recursively) instead.

    Yields the result of each committed (sub-)batch in input order; each row the store
    refuses on its own goes to ``on_refused`` as an EventError with its line number. Costs
    one extra transaction per halving, only on the failure path (about 2·log2(n) for one
    refused row in n).
    """
    try:
        yield ledger.write_batch(batch)
        return
    except BatchRefused as exc:
        if len(batch) == 1:
            reason = str(exc.__cause__ or exc)
            on_refused(EventError(f"the ledger refused event {batch.rows[0][0]!r}: {reason}", line=batch.line_of(0)))
            return
    half = len(batch) // 2
    yield from write_splitting(ledger, batch.slice(0, half), on_refused)
    yield from write_splitting(ledger, batch.slice(half, len(batch)), on_refused)
