"""The append-only projections, computed in Python from the already-decoded event.

The ledger has two kinds of projection (see `mmx.ledger.schema`):

- state projections (``production_sessions``, ``production_cameras``): a few rare event
  types update one row each; SQL triggers do it, since they only fire for rows really
  inserted;
- append-only projections (``production_director_events``, ``production_stills``): one row
  per event of a high-volume type (cuts, ghost proposals and decisions). Building their rows
  here, from the dict orjson already decoded, costs a fraction of a trigger re-parsing the
  raw JSON with ``json_extract`` for every cut; `Batch` carries them next to the event rows
  and `Ledger.write_batch` inserts them in the same transaction, keyed by the event's
  local seq, only for events that were new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Director-event types and their ``kind`` in production_director_events.
DIRECTOR_KINDS: dict[str, str] = {
    "director.cut": "cut",
    "director.hold": "hold",
    "director.release": "release",
    "director.mode": "mode",
    "still.marker": "marker",
    "ghost.proposed": "proposed",
    "ghost.accepted": "accepted",
    "ghost.vetoed": "vetoed",
    "ghost.expired": "expired",
}
#: Types whose ``camera`` column is ``data.to`` (the camera cut or proposed to).
_TO_TYPES = frozenset({"director.cut", "ghost.proposed"})

INSERT_DIRECTOR = (
    "INSERT OR IGNORE INTO production_director_events"
    " (event_seq, session, ts, kind, camera, from_camera, by, proposal, mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_STILL = (
    "INSERT OR IGNORE INTO production_stills"
    " (event_seq, session, still, camera, path, sha256, bytes, width, height, captured_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _num(value: Any) -> int | float | None:
    return value if type(value) in (int, float) else None


def director_fields(etype: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """``(kind, camera, from_camera, by, proposal, mode)`` of a director-type event.

    Fields of the wrong JSON type (possible for fields the vocabulary does not check) are
    stored as NULL rather than failing the batch.
    """
    get = data.get
    return (
        DIRECTOR_KINDS[etype],
        _str(get("to") if etype in _TO_TYPES else get("camera")),
        _str(get("from")),
        _str(get("by")),
        _str(get("proposal")),
        _str(get("mode")),
    )


def still_fields(data: dict[str, Any]) -> tuple[Any, ...]:
    """``(still, camera, path, sha256, bytes, width, height)`` of a ``still.captured``."""
    get = data.get
    return (
        _str(get("still")), _str(get("camera")), _str(get("path")), _str(get("sha256")),
        _num(get("bytes")), _num(get("width")), _num(get("height")),
    )  # fmt: skip


@dataclass(slots=True)
class Batch:
    """Rows to commit together: ``rows`` for ``events`` (`mmx.ledger.store.Row`), and the
    append-only projection parts, each ``(index into rows, *fields)``."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    director: list[tuple[Any, ...]] = field(default_factory=list)
    stills: list[tuple[Any, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: tuple[Any, ...], data: dict[str, Any] | None) -> None:
        """Append one event row and, for a projected type, its projection fields."""
        etype = row[1]
        if etype in DIRECTOR_KINDS:
            self.director.append((len(self.rows), *director_fields(etype, data or {})))
        elif etype == "still.captured":
            self.stills.append((len(self.rows), *still_fields(data or {})))
        self.rows.append(row)
