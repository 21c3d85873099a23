"""`Ledger`: the SQLite production ledger file, written in batched durable transactions.

One ledger is one SQLite file in WAL mode with ``synchronous=FULL``: a batch counts as
written once its ``COMMIT`` returned (the WAL is fsync'ed), and a crash never corrupts what
was committed. ``busy_timeout`` lets several writer processes (the server's push and the
ghost director's push) share a file: each batch takes the write lock with
``BEGIN IMMEDIATE`` and holds it only for the batch's few multi-row inserts.

Rows are inserted with ``INSERT OR IGNORE`` on the unique event ``id``: the same event
pushed twice is stored once, and the projections (`mmx.ledger.projections`) are updated
only for rows really inserted, in the same transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from mmx.errors import DataError, InputMissingError, LedgerError, TemporaryFailure
from mmx.events import Event, decode
from mmx.ledger.projections import Batch, apply_projections, insert_rows
from mmx.ledger.schema import MIGRATIONS, Migration, migrate, schema_version

#: How long a writer waits for another process's transaction before giving up (ms).
DEFAULT_BUSY_TIMEOUT_MS = 30_000
#: Page size of a new ledger file (bytes).
PAGE_SIZE = 16384
#: Default batch: commit every N events … (a fast source: fewer fsyncs, and a batch of
#: this size stays well under the memory bound: about 35 MB of rows and projections)
DEFAULT_BATCH_SIZE = 20_000
#: … or T ms after the first uncommitted event arrived, whichever comes first.
DEFAULT_INTERVAL_MS = 100

#: One ``events`` row as bound to `INSERT_EVENT`:
#: ``(id, type, session, ts, src, producer_seq, raw)``.
Row = tuple[str, str, "str | None", float, str, "int | None", str]

_SESSION_OF = itemgetter(2)  # a Row's session

INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (id, type, session, ts, src, producer_seq, raw) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def event_row(event: Event) -> Row:
    """The ``events`` row of an `Event` (its raw JSON as received, or its encoding)."""
    return (event.id, event.type, event.session, event.ts, event.src, event.seq, event.encode().decode())


@dataclass(slots=True)
class BatchResult:
    """One committed batch.

    ``rows`` are the batch's rows in input order (all of them durable now, inserted or
    already present); ``inserted`` how many were new; ``first_seq``/``last_seq`` the local
    seq range given to the new rows (None when nothing was new).
    """

    rows: Sequence[Row]
    inserted: int
    first_seq: int | None
    last_seq: int | None

    @property
    def duplicates(self) -> int:
        return len(self.rows) - self.inserted


@dataclass(slots=True)
class StagedBatch:
    """A batch inserted inside a transaction not yet committed (`Ledger.stage`): ``before``
    the highest seq before it, ``inserted`` how many of its rows were new, ``settled`` the
    sessions it settled (see `Ledger._settled`)."""

    batch: Batch
    before: int
    inserted: int
    settled: set[str]


@dataclass(slots=True)
class PushStats:
    """Totals of a push: events read (valid lines), inserted, duplicates, bad lines, batches."""

    events: int = 0
    inserted: int = 0
    duplicates: int = 0
    bad_lines: int = 0
    batches: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def add(self, batch: BatchResult) -> None:
        self.events += len(batch.rows)
        self.inserted += batch.inserted
        self.duplicates += batch.duplicates
        self.batches += 1
        if batch.first_seq is not None:
            self.first_seq = batch.first_seq if self.first_seq is None else self.first_seq
            self.last_seq = batch.last_seq


@dataclass(slots=True, frozen=True)
class StoredEvent:
    """An event as the ledger holds it: local ``seq`` plus the envelope columns and ``raw``."""

    seq: int
    id: str
    type: str
    session: str | None
    ts: float
    src: str
    raw: str

    def event(self) -> Event:
        """Decode ``raw`` into an `Event` (raises EventError if it was stored malformed)."""
        return decode(self.raw.encode())


CommitHook = Callable[[BatchResult], None]


class BatchRefused(DataError):
    """SQLite refused a row of a batch (a constraint failed, a value it cannot hold); the
    batch was rolled back, nothing of it stored. Exit 65. `mmx.ledger.ingest.push_stream`
    splits such a batch to store every other row and report the refused one by line."""


@dataclass
class Ledger:
    """An open ledger file. Use `Ledger.open`; close with `close` or a ``with`` block."""

    path: Path
    conn: sqlite3.Connection
    #: Called after every committed batch, in order (``--echo``, a sync worker, …).
    commit_hooks: list[CommitHook] = field(default_factory=list)
    #: Sessions known to have a real start or end in production_sessions: ordinary events
    #: no longer change their row, so a batch of theirs skips `project_sessions`.
    _settled_sessions: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        migrations: Sequence[Migration] = MIGRATIONS,
        create: bool = True,
    ) -> Ledger:
        """Open (creating parent dirs and the file, unless ``create=False``) and migrate.

        Sets WAL journaling, ``synchronous=FULL`` and ``busy_timeout``. Raises LedgerError
        when the file cannot be created or opened, is not a SQLite database, or has a schema
        newer than this mmx; InputMissingError when ``create=False`` and the file does not
        exist.
        """
        path = Path(path)
        if not create and not path.exists():
            raise InputMissingError(f"no ledger at {path}", hint="store events first: mmx ledger push FILE --ledger PATH")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            # 16 KiB pages for a new file (a no-op on an existing one): fewer b-tree pages,
            # splits and WAL frames per event; a push costs ~12% less CPU than with 4 KiB
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = _journal_mode_wal(conn, busy_timeout_ms / 1000)
            if mode.lower() != "wal":
                raise LedgerError(f"cannot put ledger {path} in WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            # 96 MB page cache (a ceiling, filled only as needed): with random ids (UUIDs) the
            # unique id index of 1M events no longer fits 16 MB; measured at 1M UUID events:
            # 20-24k -> 25-30k events per CPU second, peak RSS 76 -> 165 MB (issue 18).
            conn.execute("PRAGMA cache_size = -96000")
            migrate(conn, migrations)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise LedgerError(f"cannot open ledger {path}: {exc}",
                              hint="is it an mmx ledger (a SQLite file)?") from exc  # fmt: skip
        except BaseException:
            conn.close()
            raise
        return cls(path=path, conn=conn)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return schema_version(self.conn)

    def write_batch(self, batch: Batch) -> BatchResult:
        """Store one batch in one transaction, then run the commit hooks.

        The event rows go in with ``INSERT OR IGNORE`` (a known id is skipped); the
        append-only projection rows of the events that were new go in keyed by their local
        seq; sessions first seen here are created (inferred) — all in the same transaction.
        Every row of the batch is durable when this returns. Raises TemporaryFailure when
        another process held the write lock longer than the busy timeout, LedgerError on any
        other SQLite failure (disk full, I/O error), BatchRefused when a row broke a constraint
        or held a value SQLite cannot store; then nothing of the batch was stored.
        """
        staged = self.stage(batch)
        self.commit_staged(staged)
        return self.finish(staged)

    def stage(self, batch: Batch) -> StagedBatch:
        """The first half of `write_batch`: begin the transaction and insert the batch,
        leaving the transaction open for `commit_staged`. Raises what `write_batch` raises
        (after a rollback: nothing of the batch stays)."""
        conn = self.conn
        rows = batch.rows
        settled: set[str] = set()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
                inserted = insert_rows(conn, INSERT_EVENT, rows)
                if inserted:
                    unsettled = set(map(_SESSION_OF, rows)) - self._settled_sessions
                    unsettled.discard(None)
                    if batch.director or batch.stills or batch.state or unsettled:
                        self._project(batch, before, inserted, unsettled)  # type: ignore[arg-type]
                    if unsettled:
                        settled = self._settled(unsettled)  # type: ignore[arg-type]
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except (sqlite3.IntegrityError, OverflowError) as exc:
            raise BatchRefused(f"the ledger refused an event of the batch: {exc}") from exc
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc
        return StagedBatch(batch=batch, before=before, inserted=inserted, settled=settled)

    def commit_staged(self, staged: StagedBatch) -> None:
        """COMMIT the transaction `stage` left open (the WAL is fsync'ed, and SQLite may
        checkpoint). Holds no Python state, so it may run on another thread while the caller
        makes no other call on this ledger (`mmx.ledger.ingest.push_stream` reads the next
        batch meanwhile). Raises TemporaryFailure / LedgerError after a rollback."""
        conn = self.conn
        try:
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._write_error(exc) from exc

    def finish(self, staged: StagedBatch) -> BatchResult:
        """The last step of `write_batch`, after `commit_staged` returned: the result of the
        committed batch, handed to each commit hook in order."""
        self._settled_sessions |= staged.settled
        before, inserted = staged.before, staged.inserted
        # New rows took seq before+1 … before+inserted: the write lock was held throughout
        # and seq is an INTEGER PRIMARY KEY of a table whose rows are never deleted.
        result = BatchResult(rows=staged.batch.rows, inserted=inserted, first_seq=before + 1 if inserted else None,
                             last_seq=before + inserted if inserted else None)  # fmt: skip
        for hook in self.commit_hooks:
            hook(result)
        return result

    def _write_error(self, exc: sqlite3.Error) -> TemporaryFailure | LedgerError:
        """The error to raise for a failed write: TemporaryFailure when the lock was busy."""
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            return TemporaryFailure(f"ledger {self.path} is locked by another writer: {exc}",
                                    hint="try again; another process held the ledger too long")  # fmt: skip
        return LedgerError(f"cannot write ledger {self.path}: {exc}")

    def _settled(self, sessions: set[str]) -> set[str]:
        """Those of ``sessions`` that have a real start or end (inside the transaction)."""
        found: set[str] = set()
        names = list(sessions)
        for i in range(0, len(names), 500):
            part = names[i : i + 500]
            found.update(row[0] for row in self.conn.execute(
                f"SELECT id FROM production_sessions WHERE id IN ({','.join('?' * len(part))})"
                " AND (inferred = 0 OR ended_event IS NOT NULL)", part))  # fmt: skip
        return found

    def _project(self, batch: Batch, before: int, inserted: int, sessions: set[str]) -> None:
        """Project the batch's new events (inside the transaction); ``sessions``: those not
        yet settled (see `mmx.ledger.projections.apply_projections`)."""
        rows = batch.rows
        if inserted == len(rows):  # every row was new, so row i took seq before + 1 + i
            apply_projections(self.conn, batch, first_seq=before + 1, sessions=sessions)
            return
        new = dict(self.conn.execute("SELECT id, seq FROM events WHERE seq > ?", (before,)))
        first: dict[str, int] = {}  # an id twice in one batch: only its first row was new
        for i, row in enumerate(rows):
            first.setdefault(row[0], i)
        apply_projections(self.conn, batch, lambda i: new.get(rows[i][0]) if first[rows[i][0]] == i else None,
                          sessions=sessions)  # fmt: skip

    def write(self, events: Iterable[Event]) -> BatchResult:
        """Store a batch of `Event` objects in one transaction (see `write_batch`)."""
        batch = Batch()
        for event in events:
            batch.add(event_row(event), event.data)
        return self.write_batch(batch)

    def push(
        self,
        events: Iterable[Event],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_commit: CommitHook | None = None,
    ) -> PushStats:
        """Store an iterable of events in batches of ``batch_size``; returns the totals.

        For a live source whose events arrive slowly use `mmx.ledger.ingest.push_stream`,
        which also commits T ms after the first pending event. ``on_commit`` runs after each
        committed batch (after the ledger's own commit hooks).
        """
        stats = PushStats()
        pending = Batch()
        for event in events:
            pending.add(event_row(event), event.data)
            if len(pending) >= batch_size:
                self._commit(pending, stats, on_commit)
                pending = Batch()
        if pending.rows:
            self._commit(pending, stats, on_commit)
        return stats

    def _commit(self, batch: Batch, stats: PushStats, on_commit: CommitHook | None) -> None:
        result = self.write_batch(batch)
        stats.add(result)
        if on_commit is not None:
            on_commit(result)

    # -- reading -------------------------------------------------------------------------

    def last_seq(self) -> int:
        """The highest local seq (0 for an empty ledger)."""
        return self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]

    def count(self) -> int:
        """How many events the ledger holds."""
        return self.conn.execute("SELECT count(*) FROM events").fetchone()[0]

    def events_after(
        self,
        seq: int = 0,
        limit: int | None = 1000,
        *,
        session: str | None = None,
        types: Sequence[str] = (),
    ) -> list[StoredEvent]:
        """Events with local seq > ``seq``, ordered by seq, at most ``limit`` (None: all).

        ``session`` keeps one session's events; ``types`` keeps events whose type matches one
        of the glob patterns (``director.*``). This is the resume point of the Convex sync
        and of ``mmx ledger tail``.
        """
        where, params = _event_filter(session, types)
        sql = f"SELECT seq, id, type, session, ts, src, raw FROM events WHERE seq > ?{where} ORDER BY seq"
        params.insert(0, seq)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [StoredEvent(*row) for row in self.conn.execute(sql, params)]

    def seq_before_last(self, n: int, *, session: str | None = None, types: Sequence[str] = ()) -> int:
        """The seq to read after so that the last ``n`` matching events come next (0 if fewer)."""
        where, params = _event_filter(session, types)
        sql = f"SELECT seq FROM events WHERE 1{where} ORDER BY seq DESC LIMIT 1 OFFSET ?"
        row = self.conn.execute(sql, [*params, max(n - 1, 0)]).fetchone()
        return row[0] - 1 if row else 0

    def iter_events(self, seq: int = 0, *, page: int = 5000, **filters: Any) -> Iterator[StoredEvent]:
        """All events after ``seq`` in seq order, fetched ``page`` at a time (bounded memory)."""
        while True:
            chunk = self.events_after(seq, page, **filters)
            yield from chunk
            if len(chunk) < page:
                return
            seq = chunk[-1].seq

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes when another connection commits."""
        return self.conn.execute("PRAGMA data_version").fetchone()[0]

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``'s first answer (``ok`` for a sound file)."""
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    def table_exists(self, name: str) -> bool:
        return self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone() is not None


def _journal_mode_wal(conn: sqlite3.Connection, timeout_s: float) -> str:
    """Put ``conn``'s file in WAL mode; the journal mode it then has.

    SQLite may answer "database is locked" to this without waiting out the busy timeout (two
    processes opening one new file at once; seen in CI), so it is asked again every 10 ms
    until ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _event_filter(session: str | None, types: Sequence[str]) -> tuple[str, list[Any]]:
    """The ``AND …`` clauses (and their parameters) keeping one session and glob-matched types."""
    sql, params = "", []
    if session is not None:
        sql += " AND session = ?"
        params.append(session)
    if types:
        sql += " AND (" + " OR ".join("type GLOB ?" for _ in types) + ")"
        params.extend(types)
    return sql, params
