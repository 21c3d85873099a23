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
- Projections, mirroring the Convex production tables: ``production_sessions``,
  ``production_cameras``, ``production_director_events``, ``production_stills``,
  ``production_recordings`` (one row per recorded file). They are
  written by `mmx.ledger.projections` in the same transaction as the event rows, only for
  rows really inserted (a duplicate id is ignored by ``INSERT OR IGNORE``, which makes
  replays idempotent); a migration listed in `REBUILD_AFTER` recomputes them from
  ``events``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from mmx.errors import LedgerError
from mmx.ledger.projections import rebuild_projections

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

# The recordings of a session (mmx.serve.recording, mmx.relay.record): one row per file,
# from its recording.started and recording.stopped (in either order; the newest stop wins).
_RECORDINGS = """
CREATE TABLE production_recordings (
    session        TEXT NOT NULL,
    path           TEXT,                              -- the file as its writer named it
    camera         TEXT,                              -- camera id, or 'program'
    kind           TEXT,                              -- iso, program, proxy
    codec          TEXT,                              -- vp8, h264, mjpeg
    src            TEXT,                              -- the writer: serve, relay
    take           TEXT,
    status         TEXT NOT NULL DEFAULT 'recording' CHECK (status IN ('recording', 'stopped')),
    first_frame_ts REAL,                              -- wall time of the file's first frame (Unix s)
    start_s        REAL,                              -- that frame on the session clock (s)
    end_s          REAL,
    origin_ts      REAL,                              -- the session clock's zero (Unix s)
    width          INTEGER,
    height         INTEGER,
    stopped_at     REAL,                              -- ts of the newest recording.stopped
    bytes          INTEGER,
    duration_s     REAL,
    frames         INTEGER,
    dropped        INTEGER,
    sha256         TEXT,
    reason         TEXT,
    started_event  TEXT,
    stopped_event  TEXT,
    UNIQUE (session, path)
);
CREATE INDEX production_recordings_session ON production_recordings (session, camera);
"""

#: The migrations, in order. Append new ones; never edit one that has shipped.
MIGRATIONS: list[Migration] = [
    (1, "events", _EVENTS),
    (2, "projections", _PROJECTIONS),  # filled from events by mmx.ledger.projections
    (3, "convex_sync", _CONVEX_SYNC),  # mmx.ledger.convex: the sync marks
    (4, "recordings", _RECORDINGS),  # production_recordings, filled from the recording.* events
]

#: Migrations after which the projections are recomputed from the events
#: (`mmx.ledger.projections.rebuild_projections`): they did not exist, or their logic changed.
REBUILD_AFTER: set[int] = {2, 4}

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""


def split_statements(sql: str) -> list[str]:
    """Split a script into complete SQL statements (trigger bodies would stay whole).

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
    # one rebuild, after the last pending migration that asks for one: an earlier rebuild
    # would meet projection tables that a later migration only creates
    applied = set(applied_versions(conn))
    rebuild_at = max((v for v in versions if v in REBUILD_AFTER and v not in applied), default=None)
    for version, name, sql in migrations:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_MIGRATIONS_TABLE)
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (version,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in split_statements(sql):
                conn.execute(statement)
            if version == rebuild_at:
                rebuild_projections(conn)
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
