"""The ledger's SQLite schema as versioned migrations.

`MIGRATIONS` is an ordered list of ``(version, name, sql)``. `migrate` applies the ones a
ledger file has not seen yet, each inside one ``BEGIN IMMEDIATE`` transaction together with
its row in ``schema_migrations(version, name, applied_at)``, so a file is never left half
upgraded and two processes opening the same new file do not both apply a migration. Later
code APPENDS migrations (never edits an applied one): an old ledger file opened by a newer
mmx is upgraded in place.

Tables (DESIGN.md "The ledger"):

- ``events`` — the source of truth: every event as received (``raw``, the exact JSON text of
  its line), unique ``id`` (the idempotency key), local ``seq`` (INTEGER PRIMARY KEY; rows are
  never deleted, so it only grows and is never reused).
- Projections, mirroring the Convex production tables, updated in the same transaction as
  the event rows and only for rows really inserted (a duplicate id is ignored by
  ``INSERT OR IGNORE``, which makes replays idempotent). The state projections
  ``production_sessions`` and ``production_cameras`` are maintained by ``AFTER INSERT ON
  events`` triggers (rare types; a trigger only fires for an inserted row). The append-only
  ``production_director_events`` and ``production_stills`` get one row per event of a
  high-volume type; `mmx.ledger.projections` builds those in Python from the decoded event.

Session semantics: ``session.started`` creates or resumes a ``photoshoot_performance``
session with status ``active``; ``session.ended`` sets ``completed``, ``completed_at`` and the
final state. An event naming a session that never started creates it with ``inferred = 1``
(`infer_sessions`, run by the ledger after each batch's insert, in the same transaction:
cheaper than a trigger firing for every event).
Out-of-order arrival (two pushes racing) is handled by comparing event times: an end older
than the latest start does not complete a resumed session, and a start older than the
recorded end does not reopen it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

import orjson

from mmx.errors import LedgerError
from mmx.ledger.projections import DIRECTOR_KINDS, INSERT_DIRECTOR, INSERT_STILL, director_fields, still_fields

Migration = tuple[int, str, str]

_EVENTS = """
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,           -- local order; rows are never deleted
    id           TEXT NOT NULL UNIQUE,          -- the event id, idempotency key
    type         TEXT NOT NULL,
    session      TEXT,
    ts           REAL NOT NULL,                 -- producer's Unix seconds
    src          TEXT NOT NULL DEFAULT '',
    producer_seq INTEGER,                       -- the event's own seq (per producer)
    received_at  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    raw          TEXT NOT NULL                  -- the event's JSON exactly as received
);
CREATE INDEX events_session_seq ON events (session, seq) WHERE session IS NOT NULL;
"""

# The projections. Every json_extract reads the event's raw JSON; SQLite caches the parse
# of one value within a statement, so several extracts cost about one parse.
_PROJECTIONS = """
CREATE TABLE production_sessions (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL DEFAULT 'photoshoot_performance',
    status          TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'completed')),
    inferred        INTEGER NOT NULL DEFAULT 0,   -- 1: events arrived but no session.started
    title           TEXT,
    notes           TEXT,
    mode            TEXT,
    started_at      REAL,
    last_started_at REAL,                         -- the latest (re)start, for resumes
    completed_at    REAL,
    end_reason      TEXT,
    final_state     TEXT,                         -- JSON: session.ended data.state (or data)
    first_seq       INTEGER,
    started_event   TEXT,
    ended_event     TEXT
);

CREATE TABLE production_cameras (
    session     TEXT NOT NULL,
    camera      TEXT NOT NULL,
    device      TEXT,
    name        TEXT,
    model       TEXT,
    role        TEXT,
    facing      TEXT,
    zoom        REAL,
    lenses      TEXT,                              -- JSON
    placement   TEXT,                              -- JSON placement object
    status      TEXT NOT NULL DEFAULT 'joined' CHECK (status IN ('joined', 'left')),
    inferred    INTEGER NOT NULL DEFAULT 0,        -- 1: seen without camera.joined
    joined_at   REAL,
    left_at     REAL,
    left_reason TEXT,
    updated_at  REAL,                              -- ts of the last applied camera event
    src         TEXT,                              -- source identity of the joining event
    PRIMARY KEY (session, camera)
);

CREATE TABLE production_director_events (
    event_seq   INTEGER PRIMARY KEY,               -- events.seq (join events for id, raw and data)
    session     TEXT,
    ts          REAL NOT NULL,
    kind        TEXT NOT NULL,                     -- cut, hold, release, mode, marker, proposed, accepted, vetoed, expired
    camera      TEXT,                              -- cut/proposed: data.to; others: data.camera
    from_camera TEXT,
    by          TEXT,
    proposal    TEXT,
    mode        TEXT
);
CREATE INDEX production_director_events_session ON production_director_events (session, event_seq);

CREATE TABLE production_stills (
    event_seq   INTEGER PRIMARY KEY,               -- events.seq (join events for the event id)
    session     TEXT,
    still       TEXT NOT NULL,
    camera      TEXT NOT NULL,
    path        TEXT,
    sha256      TEXT,
    bytes       INTEGER,
    width       INTEGER,
    height      INTEGER,
    captured_at REAL NOT NULL
);
CREATE INDEX production_stills_session ON production_stills (session, event_seq);

CREATE TRIGGER events_session_started AFTER INSERT ON events
WHEN NEW.type = 'session.started' AND NEW.session IS NOT NULL
BEGIN
    INSERT INTO production_sessions
        (id, kind, status, inferred, title, notes, mode, started_at, last_started_at, first_seq, started_event)
    VALUES (NEW.session,
            coalesce(json_extract(NEW.raw, '$.data.kind'), 'photoshoot_performance'), 'active', 0,
            json_extract(NEW.raw, '$.data.title'), json_extract(NEW.raw, '$.data.notes'),
            json_extract(NEW.raw, '$.data.mode'), NEW.ts, NEW.ts, NEW.seq, NEW.id)
    ON CONFLICT (id) DO UPDATE SET
        kind = excluded.kind,
        title = coalesce(excluded.title, title),
        notes = coalesce(excluded.notes, notes),
        mode = coalesce(excluded.mode, mode),
        inferred = 0,
        started_event = coalesce(started_event, excluded.started_event),
        started_at = CASE WHEN inferred = 1 OR started_at IS NULL THEN excluded.started_at
                          ELSE min(started_at, excluded.started_at) END,
        last_started_at = max(coalesce(last_started_at, excluded.started_at), excluded.started_at),
        -- a start newer than the recorded end resumes the session; an older one does not
        status = CASE WHEN completed_at IS NOT NULL AND excluded.started_at <= completed_at
                      THEN status ELSE 'active' END,
        completed_at = CASE WHEN completed_at IS NOT NULL AND excluded.started_at <= completed_at
                            THEN completed_at ELSE NULL END;
END;

CREATE TRIGGER events_session_ended AFTER INSERT ON events
WHEN NEW.type = 'session.ended' AND NEW.session IS NOT NULL
BEGIN
    INSERT INTO production_sessions
        (id, status, inferred, started_at, last_started_at, completed_at, end_reason, final_state, first_seq, ended_event)
    VALUES (NEW.session, 'completed', 1, NEW.ts, NEW.ts, NEW.ts, json_extract(NEW.raw, '$.data.reason'),
            coalesce(json_extract(NEW.raw, '$.data.state'), json_extract(NEW.raw, '$.data')), NEW.seq, NEW.id)
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
                           THEN excluded.ended_event ELSE ended_event END;
END;

CREATE TRIGGER events_camera_joined AFTER INSERT ON events
WHEN NEW.type = 'camera.joined' AND NEW.session IS NOT NULL
BEGIN
    INSERT INTO production_cameras
        (session, camera, device, name, model, role, facing, zoom, lenses, placement, status,
         inferred, joined_at, updated_at, src)
    VALUES (NEW.session, json_extract(NEW.raw, '$.data.camera'), json_extract(NEW.raw, '$.data.device'),
            json_extract(NEW.raw, '$.data.name'), json_extract(NEW.raw, '$.data.model'),
            json_extract(NEW.raw, '$.data.role'), json_extract(NEW.raw, '$.data.facing'),
            json_extract(NEW.raw, '$.data.zoom'), json_extract(NEW.raw, '$.data.lenses'),
            json_extract(NEW.raw, '$.data.placement'), 'joined', 0, NEW.ts, NEW.ts, NEW.src)
    ON CONFLICT (session, camera) DO UPDATE SET
        device = coalesce(excluded.device, device), name = coalesce(excluded.name, name),
        model = coalesce(excluded.model, model), role = coalesce(excluded.role, role),
        facing = coalesce(excluded.facing, facing), zoom = coalesce(excluded.zoom, zoom),
        lenses = coalesce(excluded.lenses, lenses), placement = coalesce(excluded.placement, placement),
        status = CASE WHEN left_at IS NOT NULL AND left_at > excluded.joined_at THEN status ELSE 'joined' END,
        inferred = 0,
        joined_at = coalesce(min(joined_at, excluded.joined_at), excluded.joined_at),
        updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at),
        src = coalesce(src, excluded.src);
END;

CREATE TRIGGER events_camera_changed AFTER INSERT ON events
WHEN NEW.type = 'camera.changed' AND NEW.session IS NOT NULL
BEGIN
    INSERT INTO production_cameras
        (session, camera, role, facing, zoom, placement, status, inferred, joined_at, updated_at, src)
    VALUES (NEW.session, json_extract(NEW.raw, '$.data.camera'), json_extract(NEW.raw, '$.data.role'),
            json_extract(NEW.raw, '$.data.facing'), json_extract(NEW.raw, '$.data.zoom'),
            json_extract(NEW.raw, '$.data.placement'), 'joined', 1, NEW.ts, NEW.ts, NEW.src)
    ON CONFLICT (session, camera) DO UPDATE SET
        -- only a change newer than what the row shows is applied
        role = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.role, role) ELSE role END,
        facing = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.facing, facing) ELSE facing END,
        zoom = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0) THEN coalesce(excluded.zoom, zoom) ELSE zoom END,
        placement = CASE WHEN excluded.updated_at >= coalesce(updated_at, 0)
                         THEN coalesce(excluded.placement, placement) ELSE placement END,
        updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at);
END;

CREATE TRIGGER events_camera_left AFTER INSERT ON events
WHEN NEW.type = 'camera.left' AND NEW.session IS NOT NULL
BEGIN
    INSERT INTO production_cameras (session, camera, device, status, inferred, left_at, left_reason, updated_at, src)
    VALUES (NEW.session, json_extract(NEW.raw, '$.data.camera'), json_extract(NEW.raw, '$.data.device'),
            'left', 1, NEW.ts, json_extract(NEW.raw, '$.data.reason'), NEW.ts, NEW.src)
    ON CONFLICT (session, camera) DO UPDATE SET
        status = CASE WHEN excluded.left_at >= coalesce(joined_at, excluded.left_at) THEN 'left' ELSE status END,
        left_at = max(coalesce(left_at, excluded.left_at), excluded.left_at),
        left_reason = excluded.left_reason,
        updated_at = max(coalesce(updated_at, excluded.updated_at), excluded.updated_at);
END;

"""

# The Convex sync marks (mmx.ledger.convex): per deployment URL, the highest local seq the
# deployment acknowledged; events are sent in seq order, so that mark is the whole outbox state.
_CONVEX_SYNC = """
CREATE TABLE convex_sync (
    target         TEXT PRIMARY KEY,             -- the deployment URL, normalized
    acked_seq      INTEGER NOT NULL DEFAULT 0,   -- highest local seq Convex acknowledged
    acked_at       REAL,                         -- Unix seconds of that acknowledgement
    events_acked   INTEGER NOT NULL DEFAULT 0,   -- events acknowledged over all runs
    last_error     TEXT,                         -- the last failure, cleared by a success
    last_error_at  REAL
);
"""

#: The projection tables that `replay_projections` clears and rebuilds.
PROJECTION_TABLES = ("production_sessions", "production_cameras", "production_director_events", "production_stills")

#: The migrations, in order. Append new ones; never edit one that has shipped.
MIGRATIONS: list[Migration] = [
    (1, "events", _EVENTS),
    (2, "projections", _PROJECTIONS + "\n-- replay: mmx.ledger.schema.replay_projections\n"),
    (3, "convex_sync", _CONVEX_SYNC),  # mmx.ledger.convex: the sync marks
]

#: Migrations whose application must be followed by a replay of the events through the
#: projection triggers (the projections did not exist, or their logic changed).
REPLAY_AFTER: set[int] = {2}

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


def split_statements(sql: str) -> list[str]:
    """Split a script into complete SQL statements (trigger bodies stay whole).

    Uses `sqlite3.complete_statement`, SQLite's own tokenizer, so ``;`` inside
    ``CREATE TRIGGER … BEGIN … END`` or string literals does not split.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            if text.strip() and not all(
                ln.strip().startswith("--") or not ln.strip() for ln in text.splitlines()
            ):
                statements.append(text.strip())
            current = []
    rest = "".join(current).strip()
    if rest and not all(ln.strip().startswith("--") or not ln.strip() for ln in rest.splitlines()):
        raise ValueError(f"incomplete SQL statement: {rest[:80]!r}")
    return statements


def applied_versions(conn: sqlite3.Connection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty for a new file)."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").fetchone()
    if not exists:
        return []
    return [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration version (0 for a new file)."""
    versions = applied_versions(conn)
    return versions[-1] if versions else 0


_INFER_SESSION = """
INSERT OR IGNORE INTO production_sessions (id, status, inferred, started_at, last_started_at, first_seq)
SELECT session, 'active', 1, min(ts), min(ts), min(seq) FROM events WHERE session = ?
"""


def infer_sessions(conn: sqlite3.Connection, sessions: Iterable[str] | None = None) -> None:
    """Create the sessions that have events but no row yet, marked ``inferred = 1``.

    ``started_at`` is their first event's time. ``sessions`` limits the work to those ids
    (the ledger passes each batch's new sessions); None checks every session in ``events``.
    Run inside the transaction that inserted the events; rows that exist are left alone.
    """
    if sessions is None:
        sessions = [row[0] for row in conn.execute(
            "SELECT DISTINCT session FROM events WHERE session IS NOT NULL")]  # fmt: skip
    conn.executemany(_INFER_SESSION, ((s,) for s in sessions))


def replay_projections(conn: sqlite3.Connection) -> int:
    """Rebuild every projection from the ``events`` table, inside the caller's transaction.

    The events are moved to a temporary table and inserted back in ``seq`` order (same
    seq, id and raw), so the ``AFTER INSERT`` triggers run for each of them exactly as during
    a push. Returns the number of events replayed.
    """
    for table in PROJECTION_TABLES:
        conn.execute(f"DELETE FROM {table}")
    conn.execute("CREATE TEMP TABLE _replay AS SELECT * FROM events")
    conn.execute("DELETE FROM events")
    cur = conn.execute("INSERT INTO events SELECT * FROM _replay ORDER BY seq")
    count = cur.rowcount
    conn.execute("DROP TABLE temp._replay")
    infer_sessions(conn)
    _replay_append_projections(conn)
    return count


def _replay_append_projections(conn: sqlite3.Connection) -> None:
    """Rebuild production_director_events and production_stills from the events' raw JSON."""
    types = (*DIRECTOR_KINDS, "still.captured")
    marks = ", ".join("?" for _ in types)
    cursor = conn.execute(f"SELECT seq, type, session, ts, raw FROM events WHERE type IN ({marks}) ORDER BY seq", types)
    while rows := cursor.fetchmany(5000):
        director, stills = [], []
        for seq, etype, session, ts, raw in rows:
            data = orjson.loads(raw).get("data") or {}
            if etype == "still.captured":
                stills.append((seq, session, *still_fields(data), ts))
            else:
                director.append((seq, session, ts, *director_fields(etype, data)))
        conn.executemany(INSERT_DIRECTOR, director)
        conn.executemany(INSERT_STILL, stills)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations ``conn``'s file has not seen; returns the versions applied.

    Each migration runs in its own ``BEGIN IMMEDIATE`` transaction (the write lock is taken
    before the applied versions are read, so concurrent openers serialize). ``conn`` must be
    in autocommit mode (``isolation_level=None``). Raises LedgerError when the file was
    written by a newer mmx (it has versions this code does not know) or a migration fails.
    """
    known = {version for version, _, _ in migrations}
    versions = [version for version, _, _ in migrations]
    if versions != sorted(versions) or len(known) != len(versions):
        raise LedgerError("internal: ledger migrations are not in strictly increasing order")
    done: list[int] = []
    if applied_versions(conn) and set(applied_versions(conn)) >= known:
        _check_newer(conn, known)
        return done
    for version, name, sql in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_MIGRATIONS_TABLE)
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in split_statements(sql):
                conn.execute(statement)
            if version in REPLAY_AFTER:
                replay_projections(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise LedgerError(f"ledger migration {version} ({name}) failed: {exc}") from exc
        done.append(version)
    _check_newer(conn, known)
    return done


def _check_newer(conn: sqlite3.Connection, known: set[int]) -> None:
    newer = [v for v in applied_versions(conn) if v not in known]
    if newer:
        raise LedgerError(
            f"the ledger has schema version {max(newer)}, newer than this mmx knows ({max(known)})",
            hint="upgrade mmx to open this ledger",
        )
