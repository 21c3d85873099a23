"""The event envelope of DESIGN.md: typed records, ULID ids, JSON Lines in and out.

Every mmx component talks in events::

    {"v":1,"id":"01JD3K...","seq":42,"ts":1795264000.125,"type":"director.cut",
     "session":"01JD3J...","src":"serve","data":{"from":"cam-2","to":"cam-3","by":"ghost"}}

- ``id`` is the idempotency key everywhere: mmx producers make ULIDs, consumers accept any
  non-empty string of at most 128 characters (e.g. UUIDs from the phone app).
- ``seq`` is the producer's monotonic sequence number (`Producer` assigns it).
- ``ts`` is Unix seconds (UTC, float) at the producer.
- Unknown event types are carried untouched. The data of the known types in `VOCABULARY`
  is checked for field types, so a consumer never stores a cut whose ``to`` is a number.

The validation contract (DESIGN.md "Limits at every door") lives in `mmx.contract` and is
re-exported here: `validate` (a decoded JSON value), `decode` (one line) and `check_event`
(an `Event` made in process, before it is sent on) apply it; `certainly_valid` is its fast
acceptance test, which `decode` runs first.

JSON Lines reading (`read_events`) is lazy and line-numbered: a blank line is skipped,
CRLF line ends are accepted, and a bad line is reported as ``line N: <reason>`` through a
callback while the rest of the stream goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO

import orjson
from mmx.contract import (  # re-exported: the contract is part of the envelope's API
    JOINT_NAMES,
    MAX_DEPTH,
    MAX_ID_LENGTH,
    MAX_INT,
    MAX_LINE_BYTES,
    MAX_NAME_LENGTH,
    MAX_STRING_LENGTH,
    PLACEMENT_FIELDS,
    TS_MAX,
    TS_MIN,
    VOCABULARY,
    FieldSpec,
    certainly_valid,
    check_placement,
    validate,
)
from mmx.errors import EventError

if TYPE_CHECKING:  # asyncio and ulid cost ~25 ms at import: loaded where used
    import asyncio

SCHEMA_VERSION = 1

__all__ = [
    "JOINT_NAMES", "MAX_DEPTH", "MAX_ID_LENGTH", "MAX_INT", "MAX_LINE_BYTES", "MAX_NAME_LENGTH", "MAX_STRING_LENGTH",
    "PLACEMENT_FIELDS", "SCHEMA_VERSION", "TS_MAX", "TS_MIN", "VOCABULARY", "Event", "EventWriter", "FieldSpec",
    "Producer", "aread_events", "certainly_valid", "check_event", "check_placement", "decode", "encode", "from_dict",
    "iter_lines", "new_id", "read_events", "stdin_reader", "validate",
]  # fmt: skip


def new_id() -> str:
    """A new ULID as its 26-character Crockford base32 string (sortable by creation time)."""
    from ulid import ULID

    return str(ULID())


@dataclass(slots=True)
class Event:
    """One event of the envelope of DESIGN.md.

    ``raw`` holds the exact JSON bytes the event was decoded from (no line end), so a
    store can keep every event as received; it is None for events made in-process.
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    ts: float = field(default_factory=time.time)
    seq: int | None = None
    session: str | None = None
    src: str = ""
    v: int = SCHEMA_VERSION
    raw: bytes | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The envelope as a plain dict, in the canonical key order."""
        return {
            "v": self.v, "id": self.id, "seq": self.seq, "ts": self.ts, "type": self.type,
            "session": self.session, "src": self.src, "data": self.data,
        }  # fmt: skip

    def encode(self) -> bytes:
        """Compact UTF-8 JSON of this event, without a line end.

        An event decoded from a line encodes to exactly that line's bytes (``raw``), so
        unknown envelope fields pass through untouched.
        """
        if self.raw is not None:
            return self.raw
        return orjson.dumps(self.to_dict())


def encode(event: Event) -> bytes:
    """``event`` as one JSON Lines record: compact JSON plus ``\\n``."""
    return event.encode() + b"\n"


def _event(obj: dict[str, Any], raw: bytes | None) -> Event:
    data = obj.get("data")
    return Event(
        type=obj["type"], data=data if data is not None else {}, id=obj["id"], ts=float(obj["ts"]),
        seq=obj.get("seq"), session=obj.get("session"), src=obj.get("src", ""), v=obj.get("v", SCHEMA_VERSION),
        raw=raw,
    )  # fmt: skip


def from_dict(obj: Any, *, raw: bytes | None = None) -> Event:
    """Validate a decoded JSON value (`validate`) and make it an `Event`.

    Raises EventError (without a line number) naming the first violation of the contract.
    """
    validate(obj)
    return _event(obj, raw)


def decode(line: bytes | str, *, line_no: int | None = None) -> Event:
    """Decode one JSON Lines record into an `Event` (surrounding white space ignored).

    Raises EventError with ``line_no`` when the line is longer than `MAX_LINE_BYTES`, not
    valid UTF-8 JSON, or breaks the contract (`validate`).
    """
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogateescape")
    raw = line.strip()
    if len(raw) > MAX_LINE_BYTES:
        raise EventError(f"line longer than {MAX_LINE_BYTES} bytes", line=line_no)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            reason = "not valid UTF-8"
        raise EventError(f"not JSON: {reason}", line=line_no) from None
    if certainly_valid(obj, raw):
        return _event(obj, raw)
    try:
        validate(obj)
    except EventError as exc:
        raise EventError(exc.reason, line=line_no) from None
    return _event(obj, raw)


def check_event(event: Event) -> bytes:
    """Check an event made in process against the contract before it is sent on; returns
    its encoding (compact JSON, no line end).

    For producers that build events from what others sent (serve from a device's hello or a
    POSTed body). Raises EventError naming the first violation, or when the encoding is
    longer than `MAX_LINE_BYTES`.
    """
    line = event.encode()
    obj = event.to_dict() if event.raw is None else orjson.loads(event.raw)
    if not certainly_valid(obj, line):
        validate(obj)
    if len(line) > MAX_LINE_BYTES:
        raise EventError(f"event longer than {MAX_LINE_BYTES} bytes encoded ({len(line)})")
    return line


ErrorHandler = Callable[[EventError], None]


def _raise(error: EventError) -> None:
    raise error


def iter_lines(fp: BinaryIO, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line_no, line)`` for each line of a binary stream, lazily.

    Blank lines are skipped; ``\\r\\n`` ends are accepted. A line longer than
    ``max_line_bytes`` is consumed in chunks and yielded as ``(line_no, None)`` so the caller
    can report it without it ever being held in memory.
    """
    line_no = 0
    while True:
        chunk = fp.readline(max_line_bytes + 1)
        if not chunk:
            return
        line_no += 1
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            while chunk and not chunk.endswith(b"\n"):
                chunk = fp.readline(max_line_bytes + 1)
            yield line_no, None
            continue
        if chunk.strip():
            yield line_no, chunk


def read_events(
    fp: BinaryIO, *, on_error: ErrorHandler | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[Event]:
    """Lazily decode JSON Lines events from a binary stream.

    Each bad line (not UTF-8, not JSON, not an event envelope, longer than
    ``max_line_bytes``) becomes an EventError carrying its 1-based line number; it is passed
    to ``on_error`` and reading goes on. Without ``on_error`` the first bad line raises.
    """
    report = on_error or _raise
    for line_no, line in iter_lines(fp, max_line_bytes=max_line_bytes):
        if line is None:
            report(EventError(f"line longer than {max_line_bytes} bytes", line=line_no))
            continue
        try:
            yield decode(line, line_no=line_no)
        except EventError as exc:
            report(exc)


async def aread_events(
    reader: asyncio.StreamReader, *, on_error: ErrorHandler | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> AsyncIterator[Event]:
    """The asyncio twin of `read_events` for a `asyncio.StreamReader` (e.g. `stdin_reader`)."""
    import asyncio

    report = on_error or _raise
    line_no = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
            if not line:
                return
        except asyncio.LimitOverrunError as exc:
            line_no += 1
            # drop the over-long line in pieces, up to and including its line end
            consumed = exc.consumed
            while True:
                await reader.readexactly(consumed) if consumed else None
                try:
                    await reader.readuntil(b"\n")
                    break
                except asyncio.LimitOverrunError as more:
                    consumed = more.consumed
                except asyncio.IncompleteReadError:
                    break
            report(EventError(f"line longer than {max_line_bytes} bytes", line=line_no))
            continue
        line_no += 1
        if len(line) > max_line_bytes:
            report(EventError(f"line longer than {max_line_bytes} bytes", line=line_no))
            continue
        if not line.strip():
            continue
        try:
            yield decode(line, line_no=line_no)
        except EventError as exc:
            report(exc)


async def stdin_reader(limit: int = MAX_LINE_BYTES + 1) -> asyncio.StreamReader:
    """An asyncio StreamReader on this process's stdin (via ``loop.connect_read_pipe``)."""
    import asyncio

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    return reader


class EventWriter:
    """Writes events as JSON Lines to a binary stream, flushing after every record."""

    def __init__(self, fp: IO[bytes]) -> None:
        self._fp = fp

    def write(self, event: Event) -> None:
        """Write one event and flush. Raises BrokenPipeError when the reader went away."""
        self._fp.write(encode(event))
        self._fp.flush()

    def write_all(self, events: Iterable[Event]) -> int:
        """Write each event in turn (flushing each); returns how many were written."""
        count = 0
        for event in events:
            self.write(event)
            count += 1
        return count


class Producer:
    """Makes events for one producer (``src``): fresh ULID ids, ``ts`` now, ``seq`` +1 each.

    ``seq`` starts after ``start_seq`` so a restarted producer can continue its numbering.
    """

    def __init__(self, src: str, *, session: str | None = None, start_seq: int = 0,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.src = src
        self.session = session
        self.seq = start_seq
        self._clock = clock

    def make(self, type: str, data: dict[str, Any] | None = None, *, session: str | None = ...,  # type: ignore[assignment]
             ts: float | None = None) -> Event:  # fmt: skip
        """A new event of ``type`` with the next ``seq``; ``session`` defaults to the producer's."""
        self.seq += 1
        return Event(
            type=type, data=data or {}, id=new_id(), ts=self._clock() if ts is None else ts,
            seq=self.seq, session=self.session if session is ... else session, src=self.src,
        )  # fmt: skip
