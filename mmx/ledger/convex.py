"""Sync the ledger to a Convex deployment over its documented HTTP API.

The studio's production history lives in Convex (`examples/convex/`: the schema and the
``production:ingestEvents`` mutation a studio deploys). This module sends the ledger's events
there in ledger order (local ``seq``) and keeps, per target URL, the highest local seq Convex
has acknowledged (the ``convex_sync`` table of migration 3 in `mmx.ledger.schema`, the only rows this
module writes):

- Wire protocol (docs.convex.dev/http-api): ``POST {url}/api/mutation`` with JSON
  ``{"path": "production:ingestEvents", "args": {"events": [...]}, "format": "json"}`` and
  header ``Authorization: Convex <deploy key>``. ``{"status": "success", "value": ...}`` is an
  acknowledgement; ``{"status": "error", "errorMessage": ...}`` (HTTP 200, or 560 as the Convex
  backend and its npm client's ``STATUS_CODE_UDF_FAILED`` use) is a function error.
- Exactly once: the mutation skips ids it already stores, so a batch resent after a lost
  answer is harmless; a batch is marked synced only after its success answer. Because
  batches go in ledger order, a high-water mark (``acked_seq``) is the whole outbox state:
  the outbox is ``events WHERE seq > acked_seq``.
- Network errors, timeouts, HTTP 408/429 and 5xx (other than 560) are retried with
  exponential backoff and jitter, up to ``retry_for_s`` seconds per batch
  (`TemporaryFailure`, exit 75, when exhausted). A function error is not retried: it raises
  `ConvexFunctionError` (exit 65) naming the batch's seq range. HTTP 401/403 (a wrong deploy
  key), 404 (the function is not deployed) and other 4xx raise `ServiceUnavailableError`
  (exit 69). HTTP 413 halves the batch.
- Limits: at most `MAX_BATCH_EVENTS` (500) events and `DEFAULT_MAX_BATCH_BYTES` (4 MiB) of
  JSON per call, well under Convex's 16 MiB argument limit; larger runs are split by bytes.

The sync loop is here; one call on the wire is `mmx.ledger.convex_client`, the marks
`mmx.ledger.sync_marks`; this module re-exports both.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmx.errors import ServiceUnavailableError, TemporaryFailure
from mmx.ledger.convex_client import (  # re-exported: the wire is part of this module's API
    DEFAULT_MAX_BATCH_BYTES,
    ENVELOPE_FIELDS,
    INGEST_PATH,
    MAX_BATCH_EVENTS,
    STATUS_UDF_FAILED,
    ConvexClient,
    ConvexFunctionError,
    RetryPolicy,
    _Retryable,
    _TooLarge,
    event_json,
    request_body,
)
from mmx.ledger.store import Ledger, StoredEvent
from mmx.ledger.sync_marks import (  # re-exported, as are the sync marks
    SyncState,
    mark_acked,
    mark_error,
    normalize_url,
    read_state,
    session_sync,
    session_sync_summary,
    sync_states,
)


__all__ = [
    "DEFAULT_MAX_BATCH_BYTES", "ENVELOPE_FIELDS", "INGEST_PATH", "MAX_BATCH_EVENTS", "STATUS_UDF_FAILED", "batches",
    "check_deployment", "ConvexClient", "ConvexFunctionError", "event_json", "LedgerWaiter", "mark_acked",
    "mark_error", "normalize_url", "read_state", "request_body", "RetryPolicy", "session_sync",
    "session_sync_summary", "sync", "sync_states", "SyncProgress", "SyncState", "SyncThread",
]  # fmt: skip


@dataclass
class SyncProgress:
    """Where a sync stands: sent this run, acknowledged high-water mark, lag.

    ``behind_events``: local events not yet acknowledged; ``behind_s``: age in seconds of the
    oldest of them (0 when caught up); ``retrying``: the last call failed and will be retried.
    """

    target: str
    acked_seq: int = 0
    sent: int = 0
    batches: int = 0
    behind_events: int = 0
    behind_s: float = 0.0
    retries: int = 0
    retrying: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        """Events acknowledged per second this run."""
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "acked_seq": self.acked_seq, "sent": self.sent, "batches": self.batches,
            "behind_events": self.behind_events, "behind_s": round(self.behind_s, 3), "retries": self.retries,
        }  # fmt: skip


ProgressHook = Callable[[SyncProgress], None]
#: ``wait(timeout_s) -> bool``: block until the ledger may have new events (True) or the
#: timeout passed (False). `sync` uses it in follow mode between drains.
Waiter = Callable[[float], bool]


def batches(
    events: Sequence[StoredEvent], *, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = DEFAULT_MAX_BATCH_BYTES
) -> Iterator[tuple[list[StoredEvent], list[bytes]]]:
    """Split events (in order) into batches of at most ``max_events`` and ``max_bytes`` of JSON."""
    current: list[StoredEvent] = []
    encoded: list[bytes] = []
    size = 0
    for stored in events:
        blob = event_json(stored)
        if current and (len(current) >= max_events or size + len(blob) + 1 > max_bytes):
            yield current, encoded
            current, encoded, size = [], [], 0
        current.append(stored)
        encoded.append(blob)
        size += len(blob) + 1
    if current:
        yield current, encoded


def _lag(conn: sqlite3.Connection, acked_seq: int) -> tuple[int, float]:
    # seqs are contiguous (rows are never deleted, a duplicate takes none), so the count of
    # unacknowledged events is a difference, and the oldest of them one index lookup
    newest = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    row = conn.execute("SELECT received_at FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (acked_seq,)).fetchone()
    return max(0, newest - acked_seq), (max(0.0, time.time() - row[0]) if row is not None else 0.0)


class LedgerWaiter:
    """A `Waiter` that wakes when a process commits to the ledger (`mmx.ledger.follow`'s
    kernel file notification, no polling), then lets the commit settle: if the notifying
    write is not visible yet it re-checks ``PRAGMA data_version`` a few bounded times.

    Create it before the first read of the ledger so no commit in between is missed.
    """

    def __init__(self, ledger: Ledger) -> None:
        from mmx.ledger.follow import ChangeWaiter

        self.ledger = ledger
        self._waiter = ChangeWaiter(ledger.path)

    def __call__(self, timeout_s: float) -> bool:
        from mmx.ledger.follow import SETTLE_DELAYS_S

        version = self.ledger.data_version()
        if not self._waiter.wait(timeout_s):
            return False
        for delay in SETTLE_DELAYS_S:
            if self.ledger.data_version() != version:
                break
            time.sleep(delay)
        return True

    def close(self) -> None:
        self._waiter.close()


def sync(
    ledger: Ledger,
    client: ConvexClient,
    *,
    batch_size: int = MAX_BATCH_EVENTS,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    retry: RetryPolicy | None = None,
    follow: bool = False,
    wait: Waiter | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressHook | None = None,
) -> SyncProgress:
    """Send every event the target has not acknowledged, in ledger order; returns the progress.

    Without ``follow`` it returns once the outbox is empty. With ``follow`` it then calls
    ``wait`` (the ledger's commit notification; required) and drains again, until ``stop`` is
    set. ``batch_size`` is clamped to 1..500. Only the ``convex_sync`` row of the target is
    written, and only after a success answer.

    While it runs, ``ledger.conn`` commits with ``PRAGMA synchronous = NORMAL`` (restored
    after): in WAL mode a power cut may then lose the last marks, never corrupt the file, and
    a lost mark only means its batch is sent again, which the mutation skips by id. This
    saves one fsync per batch.

    Raises ConvexFunctionError (the function refused a batch: exit 65),
    ServiceUnavailableError (wrong deploy key, function not deployed: exit 69),
    TemporaryFailure (still failing after ``retry.retry_for_s``: exit 75), LedgerError.
    """
    if follow and wait is None:
        raise ValueError("follow needs a wait function")
    retry = retry or RetryPolicy()
    stop = stop or threading.Event()
    batch_size = max(1, min(MAX_BATCH_EVENTS, int(batch_size)))
    conn = ledger.conn
    target = client.url
    state = read_state(conn, target)
    progress = SyncProgress(target=target, acked_seq=state.acked_seq)

    def report() -> None:
        progress.behind_events, progress.behind_s = _lag(conn, progress.acked_seq)
        if on_progress is not None:
            on_progress(progress)

    synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        _drain(ledger, client, batch_size, max_batch_bytes, retry, follow, wait, stop, progress, report)
    finally:
        conn.execute(f"PRAGMA synchronous = {int(synchronous)}")
    return progress


def _drain(
    ledger: Ledger,
    client: ConvexClient,
    batch_size: int,
    max_batch_bytes: int,
    retry: RetryPolicy,
    follow: bool,
    wait: Waiter | None,
    stop: threading.Event,
    progress: SyncProgress,
    report: Callable[[], None],
) -> None:
    conn = ledger.conn
    report()
    checked = False
    while not stop.is_set():
        pending = ledger.events_after(progress.acked_seq, limit=batch_size)
        if not pending:
            if not checked and progress.batches == 0:
                # nothing to send: the deploy key and the function are checked anyway, so a
                # wrong key fails now (exit 69) and not at the first event of a later run
                checked = True
                if not check_deployment(client, retry, stop, progress, report):
                    break
            if not follow:
                break
            assert wait is not None
            wait(0.5)  # wakes on a commit, or after 0.5 s to look at ``stop``
            continue
        for chunk, encoded in batches(pending, max_events=batch_size, max_bytes=max_batch_bytes):
            if stop.is_set() or not _send(client, conn, chunk, encoded, retry, stop, progress, report):
                break
            report()


def check_deployment(
    client: ConvexClient,
    retry: RetryPolicy,
    stop: threading.Event,
    progress: SyncProgress,
    report: Callable[[], None],
) -> bool:
    """Call ``production:ingestEvents`` with no events: a real call that stores nothing, to
    learn that the deploy key is accepted and the function deployed.

    Transient failures are retried as for a batch. Returns False when ``stop`` was set first.
    Raises ServiceUnavailableError (wrong deploy key, function not deployed: exit 69),
    ConvexFunctionError, TemporaryFailure (still failing after ``retry.retry_for_s``).
    """
    first_failure: float | None = None
    attempt = 0
    while True:
        try:
            client.ingest(request_body([]))
        except _Retryable as exc:
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            if retry.retry_for_s is not None and now - first_failure >= retry.retry_for_s:
                raise TemporaryFailure(
                    f"Convex at {client.url}: {exc} (still failing after {now - first_failure:.0f} s)",
                    hint="run mmx ledger sync again later",
                ) from None
            progress.retries += 1
            progress.retrying = str(exc)
            report()
            if stop.wait(retry.delay(attempt)):
                return False
            attempt += 1
            continue
        progress.retrying = None
        return True


def _send(
    client: ConvexClient,
    conn: sqlite3.Connection,
    chunk: list[StoredEvent],
    encoded: list[bytes],
    retry: RetryPolicy,
    stop: threading.Event,
    progress: SyncProgress,
    report: Callable[[], None],
) -> bool:
    """Deliver one batch (splitting on 413), retrying transient failures; mark it acked.

    Returns False when ``stop`` was set before the batch was acknowledged (nothing of it is
    marked then, so the high-water mark never passes an unacknowledged event).
    """
    target = client.url
    first_failure: float | None = None
    attempt = 0
    while True:
        try:
            client.ingest(request_body(encoded))
        except _TooLarge as exc:
            if len(chunk) == 1:
                raise ServiceUnavailableError(
                    f"Convex at {target} refused event seq {chunk[0].seq} as too large: {exc}"
                ) from None
            half = len(chunk) // 2
            if not _send(client, conn, chunk[:half], encoded[:half], retry, stop, progress, report):
                return False
            return _send(client, conn, chunk[half:], encoded[half:], retry, stop, progress, report)
        except _Retryable as exc:
            now = time.monotonic()
            first_failure = first_failure if first_failure is not None else now
            message = f"Convex at {target}: {exc}"
            mark_error(conn, target, message, time.time())
            if retry.retry_for_s is not None and now - first_failure >= retry.retry_for_s:
                raise TemporaryFailure(
                    f"{message} (still failing after {now - first_failure:.0f} s; "
                    f"events up to seq {progress.acked_seq} are synced)",
                    hint="run mmx ledger sync again later: it resumes after the last acknowledged event",
                ) from None
            progress.retries += 1
            progress.retrying = str(exc)
            report()
            if stop.wait(retry.delay(attempt)):
                return False
            attempt += 1
            continue
        except ConvexFunctionError as exc:
            message = (
                f"Convex function {INGEST_PATH} refused the batch of local seq {chunk[0].seq}–{chunk[-1].seq}: "
                f"{exc.error_message}"
            )
            mark_error(conn, target, message, time.time())
            raise ConvexFunctionError(
                message,
                error_message=exc.error_message,
                hint=f"nothing after seq {progress.acked_seq} is marked synced; is examples/convex deployed "
                "in its current version (npx convex deploy)? `mmx ledger tail` shows the events",
            ) from None
        except ServiceUnavailableError as exc:
            mark_error(conn, target, exc.message, time.time())
            raise
        break
    mark_acked(conn, target, chunk[-1].seq, len(chunk), time.time())
    progress.acked_seq = max(progress.acked_seq, chunk[-1].seq)
    progress.sent += len(chunk)
    progress.batches += 1
    progress.retrying = None
    return True


class SyncThread:
    """`sync` in a background thread beside a process that writes the same ledger file.

    The writer calls `notify` after each commit (e.g. as a `Ledger.commit_hooks` entry), which
    wakes the thread: no polling. The thread reads through its own connection to ``path``.
    `finish` stops following: with ``drain`` it first sends what is left, giving up when a
    batch keeps failing ``drain_retry_s`` seconds; without, it stops after the call in flight.
    A fatal error (ConvexFunctionError, ServiceUnavailableError, TemporaryFailure, LedgerError)
    ends the thread; it is passed to ``on_error`` at once and kept in `error`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        client: ConvexClient,
        *,
        on_progress: ProgressHook | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        drain_retry_s: float = 30.0,
    ) -> None:
        self.path = path
        self.client = client
        self.on_progress = on_progress
        self.on_error = on_error
        self.drain_retry_s = drain_retry_s
        self.retry = RetryPolicy(retry_for_s=None)  # while the writer runs: ride out outages
        self.progress: SyncProgress | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._draining = threading.Event()
        self._thread = threading.Thread(target=self._run, name="convex-sync", daemon=True)

    def notify(self, *_: object) -> None:
        """Wake the thread: the ledger has new commits."""
        self._wake.set()

    def _wait(self, timeout_s: float) -> bool:
        if self._draining.is_set():  # called with the outbox empty: nothing more will come
            self._stop.set()
            return False
        woke = self._wake.wait(timeout_s)
        self._wake.clear()
        return woke

    def _run(self) -> None:
        try:
            with Ledger.open(self.path) as own:
                self.progress = sync(own, self.client, retry=self.retry, follow=True, wait=self._wait,
                                     stop=self._stop, on_progress=self.on_progress)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - handed to the owner of the thread
            self.error = exc
            if self.on_error is not None:
                self.on_error(exc)

    def start(self) -> SyncThread:
        self._thread.start()
        return self

    def finish(self, *, drain: bool = True) -> SyncProgress | None:
        """Stop following (after draining the outbox when ``drain``) and join the thread."""
        if drain:
            self.retry.retry_for_s = self.drain_retry_s
            self._draining.set()
        else:
            self._stop.set()
        self._wake.set()
        self._thread.join()
        return self.progress
