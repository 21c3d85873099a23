"""The production projections, computed in Python from the already-decoded events.

Five tables mirror the Convex production tables (see `mmx.ledger.schema`):

- ``production_sessions``, ``production_cameras`` and ``production_recordings`` — state: a
  few rare event types (`STATE_SQL`) upsert one row each, in event order;
- ``production_director_events`` and ``production_stills`` — append-only: one row per event
  of a high-volume type (cuts, ghost proposals and decisions, holds, modes, markers,
  stills).

`Batch` carries, next to the ``events`` rows, what each projected event contributes, taken
from the dict orjson already decoded (no re-parse of the raw JSON in SQL, no trigger run
for every inserted row). `apply_projections` runs inside the transaction that inserted the
events and only for the events that were new, so a duplicate id changes nothing. All rows
go in through `insert_rows` (multi-row ``VALUES`` statements). Measured and rejected
(SQLite 3.40, 200k bench events): binding a batch as one JSON array and extracting the
columns with ``json_each``/``json_extract`` costs 11.5–12.8 µs per event against 5.9 for
multi-row ``VALUES`` (SQLite's JSON parser is slower than orjson, and the raw line must
be re-extracted); a reader thread beside the writer gains no wall time (the GIL is held
for all but SQLite's own step). Sessions
named by events before any ``session.started`` are created marked ``inferred = 1`` and
start at their earliest event (`project_sessions`, event by event for the sessions not yet
started or ended, so the rows do not depend on the batching). `rebuild_projections` recomputes everything from the ``events`` table (a
migration that adds or changes a projection calls it).

Session semantics: ``session.started`` creates or resumes a ``photoshoot_performance``
session with status ``active``; ``session.ended`` sets ``completed``, ``completed_at`` and the
final state. Out-of-order arrival (two pushes racing) is handled by comparing event times:
an end older than the latest start does not complete a resumed session, and a start older
than the recorded end does not reopen it; a camera change older than the row's last update
is not applied.
"""

from __future__ import annotations

import re
import sqlite3
from itertools import chain
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

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

#: The state projections: per event type one upsert, with ``:_session``, ``:_ts``,
#: ``:_seq``, ``:_id``, ``:_src`` from the envelope, ``:<field>`` from ``data`` (objects and
#: arrays as JSON text) and ``:data_json`` (the whole data object). Applied only to events
#: that have a session.
STATE_SQL: dict[str, str] = {
    "session.started": """
INSERT INTO production_sessions
    (id, kind, status, inferred, title, notes, mode, started_at, last_started_at, first_seq, started_event)
VALUES (:_session,
        coalesce(:kind, 'photoshoot_performance'), 'active', 0,
        :title, :notes,
        :mode, :_ts, :_ts, :_seq, :_id)
ON CONFLICT (id) DO UPDATE SET
    kind = excluded.kind,
    title = coalesce(excluded.title, title),
    notes = coalesce(excluded.notes, notes),
    mode = coalesce(excluded.mode, mode),
    inferred = 0,
    started_event = coalesce(started_event, excluded.started_event),
    started_at = CASE WHEN inferred = 1 OR started_at IS NULL THEN excluded.started_at
                      ELSE min(started_at, excluded.started_at) END,
    -- a row inferred from ordinary events had no real start: its first real one is the latest
    last_started_at = CASE WHEN inferred = 1 AND ended_event IS NULL THEN excluded.started_at
                           ELSE max(coalesce(last_started_at, excluded.started_at), excluded.started_at) END,
    -- a start newer than the recorded end resumes the session; an older one does not
    status = CASE WHEN completed_at IS NOT NULL AND excluded.started_at <= completed_at
                  THEN status ELSE 'active' END,
    completed_at = CASE WHEN completed_at IS NOT NULL AND excluded.started_at <= completed_at
                        THEN completed_at ELSE NULL END
""",
    "session.ended": """
INSERT INTO production_sessions
    (id, status, inferred, started_at, last_started_at, completed_at, end_reason, final_state, first_seq, ended_event)
VALUES (:_session, 'completed', 1, :_ts, :_ts, :_ts, :reason,
        coalesce(:state, :data_json), :_seq, :_id)
ON CONFLICT (id) DO UPDATE SET
    status = CASE WHEN excluded.completed_at >= coalesce(last_started_at, excluded.completed_at)
                  THEN 'completed' ELSE status END,
    completed_at = CASE WHEN excluded.completed_at >= coalesce(last_started_at, excluded.completed_at)
                        THEN excluded.completed_at ELSE completed_at END,
    end_reason = CASE WHEN excluded.completed_at >= coalesce(last_started_at, excluded.completed_at)
                      THEN excluded.end_reason ELSE end_reason END,
    final_state = CASE WHEN excluded.completed_at >= coalesce(last_started_at, excluded.completed_at)
                       THEN excluded.final_state ELSE final_state END,
    ended_event = CASE WHEN excluded.completed_at >= coalesce(last_started_at, excluded.completed_at)
                       THEN excluded.ended_event ELSE ended_event END
""",
    "camera.joined": """
INSERT INTO production_cameras
    (session, camera, device, name, model, role, facing, zoom, lenses, placement, status,
     inferred, joined_at, updated_at, src)
VALUES (:_session, :camera, :device,
        :name, :model,
        :role, :facing,
        :zoom, :lenses,
        :placement, 'joined', 0, :_ts, :_ts, :_src)
ON CONFLICT (session, camera) DO UPDATE SET
    device = coalesce(excluded.device, device), name = coalesce(excluded.name, name),
    model = coalesce(excluded.model, model), role = coalesce(excluded.role, role),
    facing = coalesce(excluded.facing, facing), zoom = coalesce(excluded.zoom, zoom),
    lenses = coalesce(excluded.lenses, lenses), placement = coalesce(excluded.placement, placement),
    status = CASE WHEN left_at IS NOT NULL AND left_at > excluded.joined_at THEN status ELSE 'joined' END,
    inferred = 0,
    joined_at = coalesce(min(joined_at, excluded.joined_at), excluded.joined_at),
    updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at),
    src = coalesce(src, excluded.src)
""",
    "camera.changed": """
INSERT INTO production_cameras
    (session, camera, role, facing, zoom, placement, status, inferred, joined_at, updated_at, src)
VALUES (:_session, :camera, :role,
        :facing, :zoom,
        :placement, 'joined', 1, :_ts, :_ts, :_src)
ON CONFLICT (session, camera) DO UPDATE SET
    -- only a change newer than what the row shows is applied
    role = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.role, role) ELSE role END,
    facing = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.facing, facing) ELSE facing END,
    zoom = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.zoom, zoom) ELSE zoom END,
    placement = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0)
                     THEN coalesce(excluded.placement, placement) ELSE placement END,
    updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at)
""",
    "camera.left": """
INSERT INTO production_cameras (session, camera, device, status, inferred, left_at, left_reason, updated_at, src)
VALUES (:_session, :camera, :device,
        'left', 1, :_ts, :reason, :_ts, :_src)
ON CONFLICT (session, camera) DO UPDATE SET
    status = CASE WHEN excluded.left_at >= coalesce(joined_at, excluded.left_at) THEN 'left' ELSE status END,
    left_at = max(coalesce(left_at, excluded.left_at), excluded.left_at),
    left_reason = excluded.left_reason,
    updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at)
""",
    # one row per file (session, path); a start fills what a stop did not; the newest stop wins
    "recording.started": """
INSERT INTO production_recordings
    (session, path, camera, kind, codec, src, take, status, first_frame_ts, start_s, origin_ts, width, height,
     started_event)
VALUES (:_session, :path, :camera, :kind, :codec, :_src, :take, 'recording',
        coalesce(:first_frame_ts, :started_at, :_ts), :start_s, :origin_ts, :width, :height, :_id)
ON CONFLICT (session, path) DO UPDATE SET
    camera = coalesce(camera, excluded.camera), kind = coalesce(kind, excluded.kind),
    codec = coalesce(codec, excluded.codec), take = coalesce(take, excluded.take),
    first_frame_ts = coalesce(first_frame_ts, excluded.first_frame_ts),
    start_s = coalesce(start_s, excluded.start_s), origin_ts = coalesce(origin_ts, excluded.origin_ts),
    width = coalesce(width, excluded.width), height = coalesce(height, excluded.height),
    src = excluded.src, started_event = coalesce(started_event, excluded.started_event)
""",
    "recording.stopped": """
INSERT INTO production_recordings
    (session, path, camera, kind, codec, src, take, status, first_frame_ts, start_s, end_s, origin_ts, width, height,
     stopped_at, bytes, duration_s, frames, dropped, sha256, reason, stopped_event)
VALUES (:_session, :path, :camera, :kind, :codec, :_src, :take, 'stopped', :first_frame_ts, :start_s, :end_s,
        :origin_ts, :width, :height, :_ts, :bytes, :duration_s, :frames, :dropped, :sha256, :reason, :_id)
ON CONFLICT (session, path) DO UPDATE SET
    status = 'stopped',
    camera = coalesce(camera, excluded.camera), kind = coalesce(kind, excluded.kind),
    codec = coalesce(codec, excluded.codec), take = coalesce(take, excluded.take),
    first_frame_ts = coalesce(first_frame_ts, excluded.first_frame_ts),
    start_s = coalesce(start_s, excluded.start_s), origin_ts = coalesce(origin_ts, excluded.origin_ts),
    width = coalesce(width, excluded.width), height = coalesce(height, excluded.height),
    end_s = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.end_s ELSE end_s END,
    bytes = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.bytes ELSE bytes END,
    duration_s = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at
                      THEN excluded.duration_s ELSE duration_s END,
    frames = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.frames ELSE frames END,
    dropped = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.dropped ELSE dropped END,
    sha256 = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.sha256 ELSE sha256 END,
    reason = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at THEN excluded.reason ELSE reason END,
    stopped_event = CASE WHEN stopped_at IS NULL OR excluded.stopped_at >= stopped_at
                         THEN excluded.stopped_event ELSE stopped_event END,
    stopped_at = max(coalesce(stopped_at, excluded.stopped_at), excluded.stopped_at)
""",
}

#: State types keyed by ``data.camera`` (production_cameras' NOT NULL ``camera``).
_CAMERA_KEYED = frozenset({"camera.joined", "camera.changed", "camera.left"})

_PARAM = re.compile(r":([A-Za-z_]\w*)")


def _positional(sql: str) -> tuple[str, str, str, tuple[str, ...]]:
    """Split a `STATE_SQL` upsert into ``(head, values_row, tail, names)``: the text before
    ``VALUES``, its one row with each ``:name`` made a ``?``, the ``ON CONFLICT`` clause, and
    the parameter names in the order of the ``?`` (for `insert_rows`)."""
    head, _, rest = sql.partition("VALUES")
    values, on, tail = rest.partition("ON CONFLICT")
    names = tuple(_PARAM.findall(values))
    return head, _PARAM.sub("?", values.strip()), on + tail, names


_STATE_POSITIONAL = {etype: _positional(sql) for etype, sql in STATE_SQL.items()}

_INFER_SESSION = """
INSERT OR IGNORE INTO production_sessions (id, status, inferred, started_at, last_started_at, first_seq)
SELECT session, 'active', 1, min(ts), min(ts), min(seq) FROM events WHERE session = ?
"""

#: An ordinary event (not ``session.*``) of a session: creates it inferred when unknown; a
#: session inferred from ordinary events (no start, no end yet) starts at its earliest event,
#: whatever the arrival order (the Convex mutation's ``applySession`` does the same).
_TOUCH_SESSION = """
INSERT INTO production_sessions (id, status, inferred, started_at, last_started_at, first_seq)
VALUES (?, 'active', 1, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, last_started_at = excluded.started_at
WHERE inferred = 1 AND ended_event IS NULL AND excluded.started_at < started_at
"""
_SESSION_TYPES = frozenset({"session.started", "session.ended"})

#: The projection tables `rebuild_projections` clears and fills.
PROJECTION_TABLES = ("production_sessions", "production_cameras", "production_director_events", "production_stills",
                     "production_recordings")


#: Most rows bound to one multi-row ``INSERT … VALUES (…), (…), …`` by `insert_rows`
#: (a prepared statement's size grows with it; beyond a few hundred rows the per-statement
#: overhead is already negligible).
MAX_ROWS_PER_INSERT = 256


def insert_rows(
    conn: sqlite3.Connection, insert: str, rows: Sequence[Sequence[Any]], *, offset: int | None = None, tail: str = ""
) -> int:
    """Run ``insert`` (``INSERT … (columns) VALUES (?, …)``, one row) for every row; returns
    how many rows it changed (``INSERT OR IGNORE`` skips count as 0).

    Python's ``executemany`` costs about 3 µs per row in binding and step/reset round trips,
    more than SQLite's own insert, so rows go in as multi-row ``VALUES`` lists instead: one
    statement per up to `MAX_ROWS_PER_INSERT` rows, the remainder split in powers of two so
    only a dozen distinct statements exist per table and all of them stay in the
    connection's statement cache. Rows are inserted in order, so rowids are given in order.

    With ``offset`` the first column stored is ``offset + row[0]`` (SQLite adds it: the
    projection rows of a batch carry the event's index in the batch, and its seq is the
    batch's first seq plus that index), which saves building a new tuple per row. ``tail``
    follows the ``VALUES`` list (an upsert's ``ON CONFLICT`` clause).
    """
    if not rows:
        return 0
    head, _, one = insert.rpartition("VALUES")
    one = one.strip()
    width = one.count("?")
    params_head: list[Any] = []
    if offset is not None:
        one = one.replace("?", "?1 + ?", 1)  # ?1 is the offset; the plain ? after it number on from 2
        params_head = [offset]
    limit = (conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - len(params_head)) // width
    size = MAX_ROWS_PER_INSERT
    while size > limit:
        size //= 2
    changed = 0
    start, total = 0, len(rows)
    while start < total:
        while size > total - start:
            size //= 2
        sql = f"{head}VALUES {','.join([one] * size)}{tail}"
        params = params_head + list(chain.from_iterable(rows[start : start + size]))
        changed += conn.execute(sql, params).rowcount
        start += size
    return changed


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _num(value: Any) -> int | float | None:
    if type(value) is int and not -_MAX_INT <= value <= _MAX_INT:
        return float(value)
    return value if type(value) in (int, float) else None


_MAX_INT = (1 << 63) - 1  # SQLite's INTEGER


def _sql_value(value: Any) -> Any:
    """A data field as SQLite stores it (as json_extract would give it); an integer beyond
    SQLite's 64 bits (stored before the contract refused it) as a float."""
    if type(value) is int:
        return value if -_MAX_INT <= value <= _MAX_INT else float(value)
    if value is None or type(value) in (str, float):
        return value
    if type(value) is bool:
        return int(value)
    return _dumps(value)


def _dumps(value: Any) -> str:
    """JSON text of a data value; nesting beyond what orjson encodes (stored before the
    contract's MAX_DEPTH, or written in process) is clipped rather than failing the batch."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        from mmx.ledger.text import clip_depth

        return orjson.dumps(clip_depth(value), default=str).decode()


def director_row(index: int, session: str | None, ts: float, etype: str, data: dict[str, Any]) -> tuple[Any, ...]:
    """The production_director_events row of a director-type event, with its ``index`` in
    the batch in place of ``event_seq``:
    ``(index, session, ts, kind, camera, from_camera, by, proposal, mode)``.

    Fields of the wrong JSON type (possible for fields the vocabulary does not check) are
    stored as NULL rather than failing the batch. (Runs for most events of a push, hence
    the inline type tests instead of `_str` calls.)
    """
    get = data.get
    camera = get("to") if etype in _TO_TYPES else get("camera")
    from_camera, by, proposal, mode = get("from"), get("by"), get("proposal"), get("mode")
    return (
        index, session, ts,
        DIRECTOR_KINDS[etype],
        camera if type(camera) is str else None,
        from_camera if type(from_camera) is str else None,
        by if type(by) is str else None,
        proposal if type(proposal) is str else None,
        mode if type(mode) is str else None,
    )  # fmt: skip


def still_row(index: int, session: str | None, ts: float, data: dict[str, Any]) -> tuple[Any, ...]:
    """The production_stills row of a ``still.captured``, with its ``index`` in the batch in
    place of ``event_seq``:
    ``(index, session, still, camera, path, sha256, bytes, width, height, captured_at)``."""
    get = data.get
    return (
        index, session,
        _str(get("still")), _str(get("camera")), _str(get("path")), _str(get("sha256")),
        _num(get("bytes")), _num(get("width")), _num(get("height")),
        ts,
    )  # fmt: skip


@dataclass(slots=True)
class Batch:
    """Rows to commit together: ``rows`` for ``events`` (`mmx.ledger.store.Row`:
    ``(id, type, session, ts, src, producer_seq, raw)``) and, per projected event, what it
    contributes, each entry starting with the event's index ``i`` in ``rows``: ``director``
    `director_row` tuples, ``stills`` `still_row` tuples (their projection rows with ``i`` in
    place of the seq), ``state`` ``(i, data)``. ``lines`` holds each row's input line number
    when the batch was read from a stream (empty otherwise), to report a row the store
    refused."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    director: list[tuple[Any, ...]] = field(default_factory=list)
    stills: list[tuple[Any, ...]] = field(default_factory=list)
    state: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def line_of(self, index: int) -> int | None:
        """The input line number of ``rows[index]``, when known."""
        return self.lines[index] if index < len(self.lines) else None

    def slice(self, start: int, stop: int) -> Batch:
        """The rows ``start:stop`` as a batch of their own (projection entries re-indexed)."""
        def part(entries: list[Any]) -> list[Any]:
            return [(entry[0] - start, *entry[1:]) for entry in entries if start <= entry[0] < stop]

        return Batch(rows=self.rows[start:stop], director=part(self.director), stills=part(self.stills),
                     state=part(self.state), lines=self.lines[start:stop])  # fmt: skip

    def add(self, row: tuple[Any, ...], data: dict[str, Any] | None) -> None:
        """Append one event row and what its type projects."""
        etype = row[1]
        data = data or {}
        if etype in DIRECTOR_KINDS:
            self.director.append(director_row(len(self.rows), row[2], row[3], etype, data))
        elif etype == "still.captured":
            self.stills.append(still_row(len(self.rows), row[2], row[3], data))
        elif etype in STATE_SQL and row[2] is not None:
            self.state.append((len(self.rows), data))
        self.rows.append(row)


def apply_projections(
    conn: sqlite3.Connection,
    batch: Batch,
    seq_of: Callable[[int], int | None] | None = None,
    *,
    first_seq: int | None = None,
    sessions: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Project the batch's new events, inside the caller's transaction.

    Either ``first_seq``: every event of the batch was new and ``batch.rows[i]`` was stored
    under seq ``first_seq + i`` (the common case, projected without a Python loop over the
    rows); or ``seq_of(i)``: the local seq the event ``batch.rows[i]`` was stored under, or
    None when it was not new (a duplicate id) — those are skipped.

    ``sessions``: the sessions whose row may still be missing or inferred from ordinary
    events; their ``production_sessions`` row is computed event by event in input order
    (`project_sessions`), so it does not depend on where batches begin and end. Every other
    session has a real start or end already, on which ordinary events have no effect.
    """
    if first_seq is not None:
        insert_rows(conn, INSERT_DIRECTOR, batch.director, offset=first_seq)
        insert_rows(conn, INSERT_STILL, batch.stills, offset=first_seq)
        seq_of = first_seq.__add__
    else:
        assert seq_of is not None
        for entries, insert in ((batch.director, INSERT_DIRECTOR), (batch.stills, INSERT_STILL)):
            new = [(seq, *entry[1:]) for entry in entries if (seq := seq_of(entry[0])) is not None]
            insert_rows(conn, insert, new, offset=0)
    rows = batch.rows
    # in event order (a join before its change): a run of one type goes in with one
    # multi-row upsert (SQLite resolves each row's conflict in order, against the rows
    # before it too, exactly as one statement per event would)
    run_type: str | None = None
    run: list[list[Any]] = []
    for index, data in batch.state:
        seq = seq_of(index)
        if seq is None:
            continue
        row = rows[index]
        etype = row[1]
        if etype in _CAMERA_KEYED and type(data.get("camera")) is not str:
            continue  # stored before the contract required it (issue 17 item 1): no camera row to update
        if sessions and etype in _SESSION_TYPES and row[2] in sessions:
            continue  # project_sessions applies it, in order with the session's other events
        if etype != run_type:
            _upsert(conn, run_type, run)
            run_type, run = etype, []
        run.append(_state_values(row, seq, data))
    _upsert(conn, run_type, run)
    if sessions:
        project_sessions(conn, batch, sessions, seq_of)


def _state_values(row: tuple[Any, ...], seq: int, data: dict[str, Any]) -> list[Any]:
    """The positional parameters of the `STATE_SQL` upsert of one event row."""
    eid, etype, session, ts, src = row[:5]
    envelope = {"_session": session, "_ts": ts, "_seq": seq, "_id": eid, "_src": src}
    if etype == "session.ended":
        envelope["data_json"] = _dumps(data)
    return [envelope[name] if name in envelope else _sql_value(data.get(name)) for name in _STATE_POSITIONAL[etype][3]]


def project_sessions(
    conn: sqlite3.Connection, batch: Batch, sessions: set[str] | frozenset[str], seq_of: Callable[[int], int | None]
) -> None:
    """The ``production_sessions`` rows of ``sessions``, event by event in input order.

    A ``session.started``/``session.ended`` runs its upsert (`STATE_SQL`); a run of ordinary
    events of one session in between counts as one event at their earliest ``ts``
    (`_TOUCH_SESSION` keeps the minimum, so it commutes within the run). The result is
    that of one event per transaction, whatever the batching (tests/test_properties.py).
    """
    state = dict(batch.state)
    touched: dict[str, list[Any]] = {}  # session -> [earliest ts, first seq] of the run so far

    def flush(session: str) -> None:
        run = touched.pop(session, None)
        if run is not None:
            conn.execute(_TOUCH_SESSION, (session, run[0], run[0], run[1]))

    for index, row in enumerate(batch.rows):
        session = row[2]
        if session not in sessions or (seq := seq_of(index)) is None:
            continue
        etype = row[1]
        if etype in _SESSION_TYPES:
            flush(session)
            _upsert(conn, etype, [_state_values(row, seq, state.get(index) or {})])
            continue
        run = touched.get(session)
        if run is None:
            touched[session] = [row[3], seq]
        elif row[3] < run[0]:
            run[0] = row[3]
    for session in list(touched):
        flush(session)


def _upsert(conn: sqlite3.Connection, etype: str | None, rows: list[list[Any]]) -> None:
    """Upsert consecutive state events of one type (positional parameter rows)."""
    if rows:
        head, values, tail, _ = _STATE_POSITIONAL[etype]  # type: ignore[index]
        insert_rows(conn, f"{head}VALUES {values}", rows, tail=f"\n{tail}")


def infer_sessions(conn: sqlite3.Connection, sessions: Iterable[str] | None = None) -> None:
    """Create the sessions that have events but no row yet, marked ``inferred = 1``.

    ``started_at`` is their first event's time. ``sessions`` limits the work to those ids
    (the ledger passes each batch's new sessions); None checks every session in ``events``.
    Run inside the transaction that inserted the events; rows that exist are left alone.
    """
    if sessions is None:
        sessions = [row[0] for row in conn.execute("SELECT DISTINCT session FROM events WHERE session IS NOT NULL")]
    conn.executemany(_INFER_SESSION, ((s,) for s in sessions))


def rebuild_projections(conn: sqlite3.Connection, *, page: int = 5000) -> int:
    """Clear the projection tables and recompute them from ``events`` (in seq order),
    inside the caller's transaction. Returns the number of events read."""
    existing = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in PROJECTION_TABLES:
        if table in existing:  # a migration list cut short (tests, an older schema) lacks the later ones
            conn.execute(f"DELETE FROM {table}")
    count = 0
    last = 0
    while True:
        rows = conn.execute(
            "SELECT seq, id, type, session, ts, src, raw FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, page)
        ).fetchall()
        if not rows:
            break
        batch = Batch()
        seqs = []
        for seq, eid, etype, session, ts, src, raw in rows:
            data = orjson.loads(raw).get("data") if etype in DIRECTOR_KINDS or etype in STATE_SQL or etype == "still.captured" else None
            batch.add((eid, etype, session, ts, src, None, raw), data)
            seqs.append(seq)
        sessions = {row[3] for row in rows if row[3] is not None}
        apply_projections(conn, batch, seqs.__getitem__, sessions=sessions)
        count += len(rows)
        last = rows[-1][0]
    return count
