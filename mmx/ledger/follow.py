"""Follow a ledger file: wait for other processes' commits without busy polling.

Why this design: SQLite has no cross-process "new data" notification, but every commit in
WAL mode ``write()``s frames to ``<ledger>-wal`` (or recreates it), which the kernel can
report. So `ChangeWaiter.wait` blocks in the kernel until the ledger's directory reports a
write to the ledger or its WAL — inotify on Linux (inotify_simple), kqueue on macOS/BSD
(stdlib) — and only then does `follow` query for new rows. While nothing is written the
process sleeps in one blocking call (up to ``idle_s``, a safety net, default 1 s).

One race remains: the last WAL ``write()`` of a commit happens before its fsync and before
the wal-index (``-shm``, memory-mapped, so invisible to inotify) is updated, so a reader
woken by it may not see the commit yet. After a change notification that shows no new
data, `follow` re-checks ``PRAGMA data_version`` a few times with doubling delays (2 ms …
128 ms, at most 8 checks, bounded and only after a write was reported) — a short settle
wait for a commit in flight, not a polling loop.

Where neither inotify nor kqueue exists the waiter falls back to sleeping ``fallback_s``
(100 ms) between checks, documented as the one place where mmx polls.
"""

from __future__ import annotations

import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mmx.ledger.store import Ledger, StoredEvent

#: Delays (s) of the settle re-checks after a write notification showed nothing new.
SETTLE_DELAYS_S = (0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.128)


class ChangeWaiter:
    """Blocks until a file of the ledger (the file, ``-wal``, ``-journal``) is written.

    ``mechanism`` is ``inotify``, ``kqueue`` or ``poll`` (fallback). Create it before the
    first read so no write between the read and the first `wait` is missed (the kernel
    queues the notification).
    """

    def __init__(self, path: str | os.PathLike[str], *, fallback_s: float = 0.1) -> None:
        self.path = Path(path).resolve()
        self.names = {self.path.name, self.path.name + "-wal", self.path.name + "-journal"}
        self.fallback_s = fallback_s
        self._inotify: Any = None
        self._kqueue: Any = None
        self._kq_fds: list[int] = []
        self.mechanism = "poll"
        if sys.platform.startswith("linux"):
            try:
                from inotify_simple import INotify, flags

                self._inotify = INotify()
                self._overflow = flags.Q_OVERFLOW
                self._inotify.add_watch(
                    str(self.path.parent), flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.CLOSE_WRITE
                )
                self.mechanism = "inotify"
            except (ImportError, OSError):
                self._inotify = None
        elif hasattr(select, "kqueue"):
            self._open_kqueue()

    def _open_kqueue(self) -> None:  # pragma: no cover - macOS/BSD only
        kq = select.kqueue()
        fds = []
        # the directory reports files created/removed (a new -wal); each file its writes
        for target in (self.path.parent, self.path, Path(str(self.path) + "-wal")):
            try:
                fds.append(os.open(target, os.O_RDONLY))
            except OSError:
                continue
        events = [
            select.kevent(fd, filter=select.KQ_FILTER_VNODE, flags=select.KQ_EV_ADD | select.KQ_EV_CLEAR,
                          fflags=select.KQ_NOTE_WRITE | select.KQ_NOTE_EXTEND)  # fmt: skip
            for fd in fds
        ]
        kq.control(events, 0, 0)
        self._kqueue, self._kq_fds, self.mechanism = kq, fds, "kqueue"

    def wait(self, timeout_s: float) -> bool:
        """Block until a ledger file is written or ``timeout_s`` passes; True if written."""
        if self._inotify is not None:
            deadline = time.monotonic() + timeout_s
            while True:
                left_ms = int((deadline - time.monotonic()) * 1000)
                events = self._inotify.read(timeout=max(left_ms, 0))
                if not events:
                    return False
                # another file of the directory: keep waiting; a full kernel queue: assume ours
                if any(e.name in self.names or e.mask & self._overflow for e in events):
                    while self._inotify.read(timeout=0):  # one commit wakes us once
                        pass
                    return True
        if self._kqueue is not None:  # pragma: no cover - macOS/BSD only
            changed = bool(self._kqueue.control(None, 8, timeout_s))
            if changed and len(self._kq_fds) < 3:  # the -wal appeared: watch it too
                for fd in self._kq_fds:
                    os.close(fd)
                self._kqueue.close()
                self._open_kqueue()
            return changed
        time.sleep(min(self.fallback_s, timeout_s))
        return True

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
        if self._kqueue is not None:  # pragma: no cover - macOS/BSD only
            for fd in self._kq_fds:
                os.close(fd)
            self._kqueue.close()

    def __enter__(self) -> ChangeWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def follow(
    ledger: Ledger,
    since: int = 0,
    *,
    session: str | None = None,
    types: tuple[str, ...] = (),
    follow: bool = True,
    idle_s: float = 1.0,
    stop: Callable[[], bool] | None = None,
) -> Iterator[StoredEvent]:
    """Events after local seq ``since`` (filtered by ``session`` and type globs), in order;
    with ``follow`` keep waiting for new commits (by any process) and yield them as they come.

    Ends when ``follow`` is False and the backlog is out, or when ``stop()`` returns True
    (checked after each wake-up, at least every ``idle_s`` seconds).
    """
    waiter = ChangeWaiter(ledger.path) if follow else None
    last = since
    try:
        while True:
            # read before the query: a commit after this changes data_version, and every
            # row up to `newest` is visible to the query (seqs are given under the write lock)
            version = ledger.data_version()
            newest = ledger.last_seq()
            for event in ledger.iter_events(last, session=session, types=types):
                last = event.seq
                yield event
            last = max(last, newest)  # rows of other sessions/types move the resume point too
            if waiter is None or (stop is not None and stop()):
                return
            if waiter.wait(idle_s):
                for delay in SETTLE_DELAYS_S:
                    if ledger.data_version() != version:
                        break
                    time.sleep(delay)
            if stop is not None and stop():
                return
    finally:
        if waiter is not None:
            waiter.close()
