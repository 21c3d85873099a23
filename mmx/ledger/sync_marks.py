"""The Convex sync marks: per deployment URL, the highest local seq it has acknowledged.

The ``convex_sync`` table (migration 3 in `mmx.ledger.schema`) is the whole outbox state of
`mmx.ledger.convex`: batches go in ledger order, so the outbox of a target is
``events WHERE seq > acked_seq``. These are the only rows the sync writes; `mmx.ledger.convex`
re-exports every function here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mmx.errors import LedgerError, ServiceUnavailableError


def normalize_url(url: str) -> str:
    """The deployment URL as a target key: scheme and host lowercased, no trailing slash.

    Raises ServiceUnavailableError when ``url`` is not an http(s) URL with a host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ServiceUnavailableError(
            f"not a Convex deployment URL: {url!r}",
            hint="give the deployment URL from the Convex dashboard, e.g. https://happy-otter-123.convex.cloud",
        )
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


@dataclass(frozen=True, slots=True)
class SyncState:
    """One target's sync marks (``convex_sync`` row); ``acked_seq`` 0 when never synced."""

    target: str
    acked_seq: int = 0
    acked_at: float | None = None
    events_acked: int = 0
    last_error: str | None = None
    last_error_at: float | None = None


def _has_table(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'convex_sync'").fetchone() is not None


def read_state(conn: sqlite3.Connection, target: str) -> SyncState:
    """The sync marks of ``target`` (a normalized URL)."""
    if not _has_table(conn):
        return SyncState(target)
    row = conn.execute(
        "SELECT target, acked_seq, acked_at, events_acked, last_error, last_error_at FROM convex_sync WHERE target = ?",
        (target,),
    ).fetchone()
    return SyncState(*row) if row else SyncState(target)


def sync_states(conn: sqlite3.Connection) -> list[SyncState]:
    """Every target's sync marks, by target URL (empty when nothing was ever synced)."""
    if not _has_table(conn):
        return []
    rows = conn.execute(
        "SELECT target, acked_seq, acked_at, events_acked, last_error, last_error_at FROM convex_sync ORDER BY target"
    ).fetchall()
    return [SyncState(*row) for row in rows]


def session_sync(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Per session, per target: how many of the session's events Convex has not acknowledged.

    ``{session_id: {target_url: unsynced_events}}``; a session with 0 everywhere is fully
    synced. Empty when no target was ever synced. Reads only.
    """
    out: dict[str, dict[str, int]] = {}
    for state in sync_states(conn):
        rows = conn.execute(
            "SELECT session, sum(seq > ?) FROM events WHERE session IS NOT NULL GROUP BY session", (state.acked_seq,)
        )
        for session, unsynced in rows:
            out.setdefault(session, {})[state.target] = int(unsynced or 0)
    return out


def session_sync_summary(conn: sqlite3.Connection, session_ids: Sequence[str]) -> dict[str, str]:
    """Per session, one line of sync state for ``mmx ledger sessions``.

    ``never synced`` when no deployment was ever synced; otherwise per target ``synced`` or
    ``N to sync`` (plus ``, failing`` while the target's last call failed), targets joined
    by ``; `` and named by host when there are several.
    """
    states = sync_states(conn)
    if not states:
        return {sid: "never synced" for sid in session_ids}
    per_session = session_sync(conn)
    out: dict[str, str] = {}
    for sid in session_ids:
        parts = []
        for state in states:
            left = per_session.get(sid, {}).get(state.target, 0)
            text = "synced" if left == 0 else f"{left} to sync" + (", failing" if state.last_error else "")
            parts.append(text if len(states) == 1 else f"{urlsplit(state.target).netloc}: {text}")
        out[sid] = "; ".join(parts)
    return out


def _write(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot record Convex sync state in the ledger: {exc}") from exc


def mark_acked(conn: sqlite3.Connection, target: str, seq: int, count: int, at: float) -> None:
    """Record that Convex acknowledged every event up to local ``seq`` (never moves back)."""
    _write(
        conn,
        "INSERT INTO convex_sync (target, acked_seq, acked_at, events_acked) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (target) DO UPDATE SET acked_seq = max(acked_seq, excluded.acked_seq), "
        "acked_at = excluded.acked_at, events_acked = events_acked + excluded.events_acked, "
        "last_error = NULL, last_error_at = NULL",
        (target, seq, at, count),
    )


def mark_error(conn: sqlite3.Connection, target: str, message: str, at: float) -> None:
    """Record the last failure for ``target`` (shown by ``mmx ledger sessions``)."""
    _write(
        conn,
        "INSERT INTO convex_sync (target, last_error, last_error_at) VALUES (?, ?, ?) "
        "ON CONFLICT (target) DO UPDATE SET last_error = excluded.last_error, last_error_at = excluded.last_error_at",
        (target, message[:2000], at),
    )
