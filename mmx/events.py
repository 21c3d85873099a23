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

JSON Lines reading (`read_events`) is lazy and line-numbered: a blank line is skipped,
CRLF line ends are accepted, and a bad line is reported as ``line N: <reason>`` through a
callback while the rest of the stream goes on.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import orjson
from ulid import ULID

from mmx.errors import EventError

SCHEMA_VERSION = 1
MAX_ID_LENGTH = 128
#: Longest accepted line in bytes; longer lines are reported and skipped without being
#: held in memory whole (a 10 MB line costs one 1 MiB read buffer at a time).
MAX_LINE_BYTES = 1 << 20

#: The 19 joint names of Apple Vision's human body pose, in DESIGN.md order. Each joint is
#: ``[x, y, confidence]`` in normalized image coordinates, origin top-left.
JOINT_NAMES: tuple[str, ...] = (
    "nose", "leftEye", "rightEye", "leftEar", "rightEar", "neck",
    "leftShoulder", "rightShoulder", "leftElbow", "rightElbow", "leftWrist", "rightWrist",
    "root", "leftHip", "rightHip", "leftKnee", "rightKnee", "leftAnkle", "rightAnkle",
)  # fmt: skip

#: Placement fields (all optional): free-text label and geometry around the subject.
PLACEMENT_FIELDS: dict[str, tuple[type, ...]] = {
    "label": (str,),
    "azimuth_deg": (int, float),  # 0 = facing the subject head-on, positive clockwise from above
    "elevation_deg": (int, float),
    "distance_m": (int, float),
    "height_m": (int, float),
}

_NONE = type(None)
_STR = (str,)
_OPT_STR = (str, _NONE)
_NUM = (int, float)
_OPT_NUM = (int, float, _NONE)
_BOOL = (bool,)
_DICT = (dict,)
_OPT_DICT = (dict, _NONE)
_LIST = (list,)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One ``data`` field of a known event type: accepted JSON types and whether required."""

    types: tuple[type, ...]
    required: bool = False


def _spec(required: dict[str, tuple[type, ...]] | None = None, **optional: tuple[type, ...]) -> dict[str, FieldSpec]:
    out = {name: FieldSpec(types, True) for name, types in (required or {}).items()}
    out.update({name.rstrip("_"): FieldSpec(types) for name, types in optional.items()})
    return out


_CAMERA = {"camera": _STR}

#: The vocabulary of DESIGN.md: event type → the fields of ``data`` that are checked.
#: Fields not named here are carried untouched; so are event types not named here.
VOCABULARY: dict[str, dict[str, FieldSpec]] = {
    "session.started": _spec(kind=_OPT_STR, title=_OPT_STR, notes=_OPT_STR, mode=_OPT_STR),
    "session.ended": _spec(reason=_OPT_STR, state=_OPT_DICT),
    "camera.joined": _spec(
        _CAMERA, device=_OPT_STR, name=_OPT_STR, model=_OPT_STR, role=_OPT_STR,
        facing=_OPT_STR, zoom=_OPT_NUM, lenses=(list, dict, _NONE), placement=_OPT_DICT,
    ),
    "camera.left": _spec(_CAMERA, device=_OPT_STR, reason=_OPT_STR),
    "camera.changed": _spec(
        _CAMERA, facing=_OPT_STR, zoom=_OPT_NUM, placement=_OPT_DICT, role=_OPT_STR,
    ),
    "camera.command": _spec(_CAMERA, command_id=_STR, command=_STR, args=_OPT_DICT),
    "camera.ack": _spec(_CAMERA, command_id=_STR, ok=_BOOL, error=_OPT_STR, latency_ms=_OPT_NUM),
    "director.cut": _spec({"to": _OPT_STR}, from_=_OPT_STR, by=_OPT_STR, proposal=_OPT_STR),
    "director.hold": _spec(camera=_OPT_STR, by=_OPT_STR),
    "director.release": _spec(camera=_OPT_STR, by=_OPT_STR),
    "director.mode": _spec({"mode": _STR}, previous=_OPT_STR),
    "still.captured": _spec(
        {"still": _STR, "camera": _STR}, path=_OPT_STR, sha256=_OPT_STR,
        bytes=_OPT_NUM, width=_OPT_NUM, height=_OPT_NUM,
    ),
    "still.marker": _spec(label=_OPT_STR, camera=_OPT_STR),
    "ghost.proposed": _spec(
        {"proposal": _STR, "to": _STR}, from_=_OPT_STR, score=_OPT_NUM,
        reasons=(list, dict, _NONE), cut_at=_OPT_NUM, expires_at=_OPT_NUM,
    ),
    "ghost.accepted": _spec({"proposal": _STR}, by=_OPT_STR),
    "ghost.vetoed": _spec({"proposal": _STR}, by=_OPT_STR),
    "ghost.expired": _spec({"proposal": _STR}, by=_OPT_STR),
    "ghost.held": _spec(camera=_OPT_STR, reasons=(list, dict, _NONE)),
    "pose.sample": _spec({"camera": _STR, "t": _NUM}, joints=_OPT_DICT),
    "music.cue": _spec(
        {"track": _STR}, title=_OPT_STR, path=_OPT_STR, started_at=_OPT_NUM, offset_s=_OPT_NUM,
    ),
    # recordings of the shoot: `camera` is a camera id or "program" (the hero)
    "recording.started": _spec(
        {"camera": _STR}, path=_OPT_STR, codec=_OPT_STR, kind=_OPT_STR, started_at=_OPT_NUM,
        first_frame_ts=_OPT_NUM, start_s=_OPT_NUM, origin_ts=_OPT_NUM, take=_OPT_STR,
    ),
    "recording.stopped": _spec(
        {"camera": _STR}, path=_OPT_STR, codec=_OPT_STR, kind=_OPT_STR, bytes=_OPT_NUM,
        duration_s=_OPT_NUM, frames=_OPT_NUM, dropped=_OPT_NUM, sha256=_OPT_STR, reason=_OPT_STR,
        first_frame_ts=_OPT_NUM, start_s=_OPT_NUM, end_s=_OPT_NUM, origin_ts=_OPT_NUM, take=_OPT_STR,
    ),
    # a take of recording armed / disarmed by mmx serve (mmx.serve.recording); the writers
    # (serve's proxies, the relay's ISOs and program) follow it
    "recording.armed": _spec(
        {"take": _STR}, session=_OPT_STR, path=_OPT_STR, dir=_OPT_STR, origin_ts=_OPT_NUM, reason=_OPT_STR,
    ),
    "recording.disarmed": _spec({"take": _STR}, reason=_OPT_STR),
    "recording.disk_low": _spec(free_bytes=_OPT_NUM, rate_bytes_s=_OPT_NUM, minutes_left=_OPT_NUM),
    "relay.stalled": _spec(_CAMERA),
    "relay.resumed": _spec(_CAMERA),
}  # fmt: skip

#: Types whose data carries a placement object to check field by field.
_PLACEMENT_TYPES = frozenset({"camera.joined", "camera.changed"})

_JSON_NAMES = {
    str: "a string", int: "a number", float: "a number", bool: "a boolean", dict: "an object",
    list: "an array", _NONE: "null",
}


def _json_type(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _accepts(types: tuple[type, ...], value: Any) -> bool:
    # bool is an int in Python but not a number in JSON
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def new_id() -> str:
    """A new ULID as its 26-character Crockford base32 string (sortable by creation time)."""
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


def _check_envelope(obj: Any) -> None:
    if not isinstance(obj, dict):
        raise EventError(f"expected a JSON object, got {_json_type(obj)}")
    etype = obj.get("type")
    if etype is None:
        raise EventError("missing field 'type'")
    if not isinstance(etype, str) or not etype:
        raise EventError(f"field 'type' must be a non-empty string, got {_json_type(etype)}")
    eid = obj.get("id")
    if eid is None:
        raise EventError("missing field 'id'")
    if not isinstance(eid, str) or not eid or len(eid) > MAX_ID_LENGTH:
        raise EventError(f"field 'id' must be a string of 1 to {MAX_ID_LENGTH} characters")
    ts = obj.get("ts")
    if ts is None:
        raise EventError("missing field 'ts'")
    if not _accepts(_NUM, ts) or not math.isfinite(ts):
        raise EventError(f"field 'ts' must be a finite number of Unix seconds, got {_json_type(ts)}")
    for name, types in (("v", (int,)), ("seq", (int, _NONE)), ("session", _OPT_STR), ("src", _STR), ("data", _DICT)):
        if name in obj and not _accepts(types, obj[name]):
            raise EventError(f"field '{name}' must be {_JSON_NAMES[types[0]]}, got {_json_type(obj[name])}")
    seq = obj.get("seq")
    if seq is not None and seq < 0:
        raise EventError("field 'seq' must not be negative")


def _check_data(etype: str, data: dict[str, Any]) -> None:
    spec = VOCABULARY.get(etype)
    if spec is None:
        return
    for name, fspec in spec.items():
        if name not in data:
            if fspec.required:
                raise EventError(f"{etype}: missing data field '{name}'")
            continue
        value = data[name]
        if not _accepts(fspec.types, value):
            raise EventError(
                f"{etype}: data field '{name}' must be {_JSON_NAMES[fspec.types[0]]}, got {_json_type(value)}"
            )
    placement = data.get("placement")
    if etype in _PLACEMENT_TYPES and placement:
        check_placement(placement)


def check_placement(placement: dict[str, Any]) -> None:
    """Check a placement object's known fields (see `PLACEMENT_FIELDS`).

    Raises EventError naming the first field of the wrong type or a non-finite number.
    """
    for name, types in PLACEMENT_FIELDS.items():
        if name in placement and placement[name] is not None:
            value = placement[name]
            if not _accepts(types, value) or (isinstance(value, float) and not math.isfinite(value)):
                raise EventError(f"placement field '{name}' must be {_JSON_NAMES[types[0]]}, got {_json_type(value)}")


def from_dict(obj: Any, *, raw: bytes | None = None) -> Event:
    """Validate a decoded JSON value as an event envelope and make it an `Event`.

    Raises EventError (without a line number) when ``obj`` is not an object with a
    non-empty string ``type``, a usable ``id`` and a finite ``ts``, when an envelope field
    has the wrong JSON type, or when the data of a known type has a field of the wrong type.
    """
    _check_envelope(obj)
    data = obj.get("data")
    if data is None:
        data = {}
    _check_data(obj["type"], data)
    return Event(
        type=obj["type"], data=data, id=obj["id"], ts=float(obj["ts"]), seq=obj.get("seq"),
        session=obj.get("session"), src=obj.get("src", ""), v=obj.get("v", SCHEMA_VERSION), raw=raw,
    )  # fmt: skip


def decode(line: bytes | str, *, line_no: int | None = None) -> Event:
    """Decode one JSON Lines record into an `Event` (surrounding white space ignored).

    Raises EventError with ``line_no`` when the line is not valid UTF-8 JSON or not a valid
    envelope (see `from_dict`).
    """
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogateescape")
    raw = line.strip()
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            reason = "not valid UTF-8"
        raise EventError(f"not JSON: {reason}", line=line_no) from None
    try:
        return from_dict(obj, raw=raw)
    except EventError as exc:
        raise EventError(exc.reason, line=line_no) from None


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
