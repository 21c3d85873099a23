"""The server's event stream: one `seq` order, fan-out to sinks and live subscribers, resume.

Every event the server makes or accepts passes `EventHub.publish`: it gets the server's next
``seq``, lands in a bounded in-memory ring, is written to every sink (stdout, the session's
``events.jsonl``) and offered to each live subscriber (``GET /v1/events``). A subscriber
that cannot keep up is marked *lagged* instead of growing a queue without bound; its stream
then catches up from the history (`EventHub.history`), which reads the ring first and the
capture files of earlier sessions for anything older.

``pose.sample`` events have their own, smaller ring so a flood of pose samples never pushes
cuts and holds out of the history.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mmx.errors import EventError
from mmx.events import Event, check_event, new_id, read_events

POSE_TYPE = "pose.sample"

Sink = Callable[[Event, bytes], None]


class TypeFilter:
    """A ``types=`` filter: comma-separated exact types and ``prefix.*`` patterns.

    An empty filter or ``*`` passes every type except ``pose.sample``, which passes only when
    named explicitly (``pose.sample`` or ``pose.*``): pose is high volume and off by default.
    """

    def __init__(self, spec: str | None = None) -> None:
        patterns = [p.strip() for p in (spec or "").split(",") if p.strip()]
        self.spec = ",".join(patterns)
        self.all = not patterns or "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*") and p != "*")
        self.pose = POSE_TYPE in self.exact or "pose." in self.prefixes

    def matches(self, etype: str) -> bool:
        if etype == POSE_TYPE:
            return self.pose
        return self.all or etype in self.exact or any(etype.startswith(p) for p in self.prefixes)


class Subscription:
    """One live reader of the stream: a bounded queue plus a *lagged* flag set on overflow."""

    def __init__(self, type_filter: TypeFilter, maxsize: int = 4096) -> None:
        self.filter = type_filter
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.lagged = False

    def offer(self, event: Event) -> None:
        # once lagged, queue nothing more: the queue must never hold events after a gap, so
        # the reader writes what it has, then fills the gap from the history
        if self.lagged or not self.filter.matches(event.type):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True


class EventHub:
    """Assigns ``seq``, keeps the history and fans events out.

    ``start_seq`` is the last ``seq`` of the previous run, so numbering continues across
    restarts and ``since=`` stays meaningful. ``archive`` is the directory holding
    ``<session>/events.jsonl`` capture files, read for history older than the rings.
    """

    def __init__(self, *, start_seq: int = 0, ring_size: int = 10_000, pose_ring_size: int = 2_000,
                 archive: Path | None = None, clock: Callable[[], float] | None = None) -> None:  # fmt: skip
        import time

        self.seq = start_seq
        self.first_seq = start_seq + 1
        self.session: str | None = None
        self._clock = clock or time.time
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._pose_ring: deque[Event] = deque(maxlen=pose_ring_size)
        self._subs: set[Subscription] = set()
        self._sinks: list[Sink] = []
        self._archive = archive
        self.counts: dict[str, int] = {}
        #: how often a live reader fell behind and caught up from the history
        self.lag_recoveries = 0

    # -- producing -------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        """Call ``sink(event, line)`` for every published event (``line`` ends with ``\\n``)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def emit(self, etype: str, data: dict[str, Any] | None = None, *, session: str | None = ...) -> Event:  # type: ignore[assignment]
        """Make a server event (``src`` ``serve``) and publish it."""
        event = Event(type=etype, data=data or {}, id=new_id(), ts=self._clock(), src="serve",
                      session=self.session if session is ... else session)  # fmt: skip
        return self.publish(event)

    def accept(self, event: Event) -> Event:
        """Publish an event from another producer, keeping its ``id``, ``ts``, ``src``, ``data``.

        A null ``session`` becomes the active session; ``seq`` becomes the server's own.
        """
        copy = Event(type=event.type, data=event.data, id=event.id, ts=event.ts, src=event.src or "operator",
                     session=event.session if event.session is not None else self.session, v=event.v)  # fmt: skip
        return self.publish(copy)

    def publish(self, event: Event) -> Event:
        """Give ``event`` the next ``seq`` and send it to the ring, sinks and subscribers.

        Every event leaving the server meets the one validation contract (`check_event`):
        raises EventError, with nothing published and ``seq`` unchanged, for an event the
        ledger would refuse (the doors refuse such input earlier, with the field named).
        """
        event.seq = self.seq + 1
        try:
            line = check_event(event) + b"\n"
        except EventError:
            event.seq = None
            raise
        self.seq += 1
        (self._pose_ring if event.type == POSE_TYPE else self._ring).append(event)
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        for sink in list(self._sinks):
            sink(event, line)
        for sub in list(self._subs):
            sub.offer(event)
        return event

    # -- reading ---------------------------------------------------------------------------

    def subscribe(self, type_filter: TypeFilter, maxsize: int = 4096) -> Subscription:
        sub = Subscription(type_filter, maxsize)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def _ring_start(self, ring: deque[Event]) -> int:
        """The lowest seq this ring can vouch for: anything below may have been evicted."""
        if ring.maxlen is not None and len(ring) == ring.maxlen:
            return ring[0].seq or self.first_seq
        return self.first_seq

    def history(self, since: int, type_filter: TypeFilter) -> list[Event]:
        """Every kept event with ``seq > since`` passing ``type_filter``, in ``seq`` order.

        Events newer than the rings' start come from memory; older ones are read from the
        capture files (``<archive>/*/events.jsonl``). Events made outside any session that have
        left the rings are gone.
        """
        start = self._ring_start(self._ring)
        pose_start = self._ring_start(self._pose_ring) if type_filter.pose else start
        parts: list[Iterable[Event]] = []
        if since + 1 < max(start, pose_start) and self._archive is not None:
            def older(ev: Event) -> bool:
                limit = pose_start if ev.type == POSE_TYPE else start
                return ev.seq is not None and since < ev.seq < limit and type_filter.matches(ev.type)

            parts.append(sorted((ev for ev in self._read_archive(since, max(start, pose_start)) if older(ev)),
                                key=lambda ev: ev.seq or 0))  # fmt: skip
        parts.append([ev for ev in self._ring if (ev.seq or 0) > since and type_filter.matches(ev.type)])
        if type_filter.pose:
            parts.append([ev for ev in self._pose_ring if (ev.seq or 0) > since])
        seen: set[int] = set()
        out: list[Event] = []
        for ev in heapq.merge(*parts, key=lambda ev: ev.seq or 0):
            if ev.seq not in seen:
                seen.add(ev.seq or 0)
                out.append(ev)
        return out

    def _read_archive(self, since: int, before: int) -> Iterator[Event]:
        """Events of the capture files with ``since < seq < before`` (files in session-id order)."""
        if self._archive is None or not self._archive.is_dir():
            return
        for path in sorted(self._archive.glob("*/events.jsonl")):
            if last_seq_in(path) <= since:
                continue  # everything in it is already known to the reader
            try:
                fp = open(path, "rb")
            except OSError:
                continue
            with fp:
                for ev in read_events(fp, on_error=_ignore):
                    if ev.seq is None:
                        continue
                    if ev.seq >= before:
                        break  # seq only grows within a file
                    if ev.seq > since:
                        ev.raw = None
                        yield ev


def _ignore(_error: EventError) -> None:
    # a torn last line of a crashed run is not worth failing a resume for
    return None


def last_seq_in(path: Path) -> int:
    """The largest ``seq`` in the last few KiB of a JSON Lines file (0 when none)."""
    try:
        with open(path, "rb") as fp:
            fp.seek(0, 2)
            size = fp.tell()
            fp.seek(max(0, size - 65536))
            tail = fp.read()
    except OSError:
        return 0
    best = 0
    import orjson

    for line in tail.splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("seq"), int):
            best = max(best, obj["seq"])
    return best
