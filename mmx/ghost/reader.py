"""Reading a recording for replay: a typed fast path for ``pose.sample`` lines.

Nine lines in ten of a recording are pose samples, and on them the general decoder
(orjson, then `mmx.events.from_dict` checks, an `Event`, then the signals' per-joint
checks) costs more than the policy's own work. A pose line that passes a raw-bytes
pre-filter (``"pose.sample"`` in it, ASCII only, no backslash escape) is decoded with
msgspec into a `PoseLine` whose schema is strictly narrower than what the general path
accepts: the envelope and data fields `from_dict` checks, no unknown field anywhere, every
known joint three numbers with coordinates within the frame (± ``coord_margin``) and a
confidence in ``[0, 1]``. Such a line means exactly what the general path would make of it;
its joints come out as `CheckedJoints` and skip the per-joint checks.

Any line the schema refuses — another event type, a bad or dropped joint, an extra field,
a value the general path would call an error — goes through `mmx.events.decode` as
before, so errors, their messages and line numbers are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Annotated, Any, BinaryIO, Literal

import msgspec

from mmx.errors import EventError
from mmx.events import JOINT_NAMES, MAX_ID_LENGTH, MAX_LINE_BYTES, SCHEMA_VERSION, Event, decode, iter_lines
from mmx.ghost.signals import CheckedJoints, SignalParams

_POSE_TAG = b'"pose.sample"'


class PoseLine(msgspec.Struct, forbid_unknown_fields=True):
    """A ``pose.sample`` envelope as the fast path decodes it (``data`` is a per-params
    struct with ``camera``, ``t``, ``joints`` and the server's ``device_ts`` and
    ``clock_offset_s``)."""

    type: Literal["pose.sample"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
    ts: float
    data: Any
    v: int = SCHEMA_VERSION
    seq: Annotated[int, msgspec.Meta(ge=0)] | None = None
    session: str | None = None
    src: str = ""

    def joints(self) -> CheckedJoints | None:
        """The joints in `JOINT_NAMES` order, each ``(x, y, confidence)`` or None."""
        j = self.data.joints
        return None if j is None else CheckedJoints(msgspec.structs.astuple(j))


@lru_cache(maxsize=8)
def pose_decoder(coord_margin: float = 0.0) -> msgspec.json.Decoder:
    """A msgspec decoder of `PoseLine` whose joints must be usable under ``coord_margin``
    (the signals' rule: coordinates within ``[-margin, 1 + margin]``, confidence ``[0, 1]``)."""
    coord = Annotated[float, msgspec.Meta(ge=-coord_margin, le=1.0 + coord_margin)]
    confidence = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    joint = tuple[coord, coord, confidence] | None
    joints = msgspec.defstruct("Joints", [(name, joint, None) for name in JOINT_NAMES], forbid_unknown_fields=True)
    data = msgspec.defstruct("PoseData", [("camera", str), ("t", float), ("joints", joints | None, None),
                                          ("device_ts", float | None, None), ("clock_offset_s", float | None, None)],
                             forbid_unknown_fields=True)  # fmt: skip
    line = msgspec.defstruct("PoseLineOf", [("data", data)], bases=(PoseLine,), forbid_unknown_fields=True)
    return msgspec.json.Decoder(line)


_REFUSED = (msgspec.ValidationError, msgspec.DecodeError)


def pose_from_line(line: bytes, params: SignalParams) -> PoseLine | None:
    """The fast path alone: a `PoseLine` for a ``pose.sample`` line it takes, else None
    (another type, or a line the general decoder must judge: pass it to `mmx.events.decode`)."""
    if _POSE_TAG in line and line.isascii() and b"\\" not in line:
        try:
            return pose_decoder(params.coord_margin).decode(line)
        except _REFUSED:
            pass
    return None


def read_replay(fp: BinaryIO, params: SignalParams, *, on_error: Callable[[EventError], None],
                max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Event | PoseLine]:  # fmt: skip
    """Lazily read a recording: a `PoseLine` for each pose line the fast path takes, an
    `Event` for every other good line; each bad line is passed to ``on_error`` (an
    EventError with its 1-based line number, as `mmx.events.read_events` reports it)."""
    for line_no, line in iter_lines(fp, max_line_bytes=max_line_bytes):
        if line is None:
            on_error(EventError(f"line longer than {max_line_bytes} bytes", line=line_no))
            continue
        pose = pose_from_line(line, params)
        if pose is not None:
            yield pose
            continue
        try:
            yield decode(line, line_no=line_no)
        except EventError as exc:
            on_error(exc)
