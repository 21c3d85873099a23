"""Read the ledger: sessions, one session's summary, the cut list as shots.

Definitions (all times Unix seconds; ``*_s`` are seconds relative to the session start):

- A **shot** is the time one camera is on program: it starts at a ``director.cut`` to that
  camera and ends at the next cut to another camera, or at the program end. A cut to the
  camera already on program does not start a new shot. A cut to ``null`` starts a shot with
  camera None (black).
- **Program start** is the session start when the first cut names the camera it cut
  ``from`` (that camera was on program since the start), else the first cut.
- **Program end** is ``completed_at`` for a completed session, else the session's last event.
- **Program time** ``program_time_s`` = program end − program start = the sum of the shot
  durations (exactly, by construction).
- A **hold** runs from ``director.hold`` to the next ``director.release`` (or the program
  end while still held).
- A ghost **proposal**'s outcome is the first of ``ghost.accepted`` / ``ghost.vetoed`` /
  ``ghost.expired`` naming it, else ``pending``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import orjson

from mmx.errors import DataError, InputMissingError
from mmx.events import TS_MAX, TS_MIN
from mmx.ledger.text import clip_depth, compact, in_range

#: Extra per-session fields for `list_sessions`, by name: ``fn(conn, session_ids) ->
#: {session_id: value}``. The Convex sync registers its sync state here; the ``sessions``
#: command shows one column per registered name.
SESSION_FIELDS: dict[str, Callable[[sqlite3.Connection, list[str]], dict[str, Any]]] = {}

_SESSION_COLUMNS = (
    "id, kind, status, inferred, title, notes, mode, started_at, last_started_at, completed_at, "
    "end_reason, final_state, first_seq, started_event, ended_event"
)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return clip_depth(orjson.loads(text))
    except orjson.JSONDecodeError:
        return text


def _text(value: Any) -> str | None:
    """A data field meant to be text (a marker's label): other JSON shown compactly."""
    return value if value is None or isinstance(value, str) else compact(value, 200)


def _data(raw: str) -> dict[str, Any]:
    """An event's data from its stored JSON, nesting clipped to the contract's depth."""
    try:
        data = orjson.loads(raw).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return {}
    return clip_depth(data) if isinstance(data, dict) else {}


#: SQL condition keeping the events whose ``ts`` the contract accepts (a ledger written by an
#: older mmx may hold others: they are counted, never used for times).
_TS_OK = f"ts BETWEEN {TS_MIN!r} AND {TS_MAX!r}"
_CAPTURED_OK = f"captured_at BETWEEN {TS_MIN!r} AND {TS_MAX!r}"


def _session_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    (sid, kind, status, inferred, title, notes, mode, started_at, last_started_at, completed_at,
     end_reason, final_state, first_seq, started_event, ended_event) = row  # fmt: skip
    return {
        "session": sid, "kind": kind, "status": status, "inferred": bool(inferred), "title": title,
        "notes": notes, "mode": mode, "started_at": started_at, "last_started_at": last_started_at,
        "completed_at": completed_at, "end_reason": end_reason, "final_state": _json(final_state),
        "first_seq": first_seq, "started_event": started_event, "ended_event": ended_event,
    }  # fmt: skip


def resolve_session(conn: sqlite3.Connection, ref: str | None = None, *, last: bool = False) -> str:
    """The session id for ``ref`` (an id or a unique prefix of one), or the last session.

    The last session is the one started (or resumed) most recently. Raises
    InputMissingError when there is no such session (or none at all), DataError when a
    prefix names several.
    """
    if last or ref is None:
        row = conn.execute(
            "SELECT id FROM production_sessions ORDER BY coalesce(last_started_at, started_at) DESC, first_seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise InputMissingError("the ledger has no sessions yet", hint="store events first: mmx ledger push FILE")
        return row[0]
    if conn.execute("SELECT 1 FROM production_sessions WHERE id = ?", (ref,)).fetchone():
        return ref
    like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = conn.execute("SELECT id FROM production_sessions WHERE id LIKE ? ESCAPE '\\' LIMIT 3", (like,)).fetchall()
    if not rows:
        raise InputMissingError(f"no session {ref} in the ledger", hint="list them with: mmx ledger sessions")
    if len(rows) > 1:
        raise DataError(f"session prefix {ref} is ambiguous ({', '.join(r[0] for r in rows[:2])}, …)",
                        hint="give more characters of the session id")  # fmt: skip
    return rows[0][0]


def list_sessions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every session, oldest first, with counts: ``events``, ``cameras``, ``cuts``, ``stills``.

    Each dict has the production_sessions columns (``session``, ``kind``, ``status``,
    ``inferred``, ``title``, ``started_at``, ``completed_at``, …), ``last_event_at`` and
    ``duration_s`` (program end − start), plus one key per `SESSION_FIELDS` entry.
    """
    sessions = [_session_dict(r) for r in conn.execute(
        f"SELECT {_SESSION_COLUMNS} FROM production_sessions ORDER BY coalesce(started_at, 0), first_seq")]  # fmt: skip
    counts: dict[str, dict[str, Any]] = {s["session"]: {} for s in sessions}
    for sid, n, last_ts in conn.execute(
        f"SELECT session, count(*), max(ts) FILTER (WHERE {_TS_OK}) FROM events WHERE session IS NOT NULL GROUP BY session"
    ):
        if sid in counts:
            counts[sid].update(events=n, last_event_at=last_ts)
    for sid, n in conn.execute("SELECT session, count(*) FROM production_cameras GROUP BY session"):
        if sid in counts:
            counts[sid]["cameras"] = n
    for sid, n in conn.execute(
        "SELECT session, count(*) FROM production_director_events WHERE kind = 'cut' GROUP BY session"
    ):
        if sid in counts:
            counts[sid]["cuts"] = n
    for sid, n in conn.execute("SELECT session, count(*) FROM production_stills GROUP BY session"):
        if sid in counts:
            counts[sid]["stills"] = n
    ids = [s["session"] for s in sessions]
    extras = {name: fn(conn, ids) for name, fn in SESSION_FIELDS.items()}
    for s in sessions:
        c = counts[s["session"]]
        s["events"] = c.get("events", 0)
        s["cameras"] = c.get("cameras", 0)
        s["cuts"] = c.get("cuts", 0)
        s["stills"] = c.get("stills", 0)
        s["last_event_at"] = c.get("last_event_at")
        end = s["completed_at"] if s["status"] == "completed" else s["last_event_at"]
        ok = in_range(end) and in_range(s["started_at"])
        s["duration_s"] = end - s["started_at"] if ok else None
        for name, values in extras.items():
            s[name] = values.get(s["session"])
    return sessions


def get_session(conn: sqlite3.Connection, session: str) -> dict[str, Any]:
    """One production_sessions row as a dict. Raises InputMissingError when absent."""
    row = conn.execute(f"SELECT {_SESSION_COLUMNS} FROM production_sessions WHERE id = ?", (session,)).fetchone()
    if row is None:
        raise InputMissingError(f"no session {session} in the ledger", hint="list them with: mmx ledger sessions")
    return _session_dict(row)


def _director_events(conn: sqlite3.Connection, session: str) -> list[dict[str, Any]]:
    """The session's director events in time order, each with its event id and data."""
    out = []
    for seq, ts, kind, camera, from_camera, by, proposal, mode, eid, raw in conn.execute(
        "SELECT d.event_seq, d.ts, d.kind, d.camera, d.from_camera, d.by, d.proposal, d.mode, e.id, e.raw"
        " FROM production_director_events d JOIN events e ON e.seq = d.event_seq"
        f" WHERE d.session = ? AND d.{_TS_OK} ORDER BY d.ts, d.event_seq",
        (session,),
    ):
        data = _data(raw)
        out.append({"seq": seq, "event": eid, "ts": ts, "kind": kind, "camera": camera, "from": from_camera,
                    "by": by, "proposal": proposal, "mode": mode, "data": data})  # fmt: skip
    return out


def compute_shots(
    cuts: list[dict[str, Any]], *, session_start: float | None, program_end: float
) -> tuple[list[dict[str, Any]], float | None, float]:
    """Shots from cuts (time-ordered dicts with ``ts``, ``camera``, ``from``, ``by``,
    ``proposal``, ``event``); returns ``(shots, program_start, program_time_s)``.

    Each shot: ``shot`` (1-based), ``camera``, ``start``/``end`` (Unix s), ``start_s``/
    ``end_s`` (s from ``session_start``, or from the program start when unknown),
    ``duration_s``, ``by``, ``proposal``, ``cut_event`` (None for a leading shot that
    began with the session). The durations sum to ``program_time_s``.
    """
    if not cuts:
        return [], None, 0.0
    first = cuts[0]
    starts: list[tuple[float, str | None, dict[str, Any] | None]] = []
    if first.get("from") is not None and session_start is not None and session_start <= first["ts"]:
        program_start = session_start
        starts.append((session_start, first["from"], None))
    else:
        program_start = first["ts"]
    for cut in cuts:
        if starts and starts[-1][1] == cut["camera"]:
            continue  # a cut to the camera already on program is not a new shot
        starts.append((cut["ts"], cut["camera"], cut))
    program_end = max(program_end, starts[-1][0])
    origin = session_start if session_start is not None else program_start
    shots = []
    for i, (start, camera, cut) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else program_end
        shots.append({
            "shot": i + 1, "camera": camera, "start": start, "end": end,
            "start_s": start - origin, "end_s": end - origin, "duration_s": end - start,
            "by": cut["by"] if cut else None, "proposal": cut["proposal"] if cut else None,
            "cut_event": cut["event"] if cut else None,
        })  # fmt: skip
    return shots, program_start, program_end - program_start


def session_summary(conn: sqlite3.Connection, session: str) -> dict[str, Any]:
    """One session's production summary, JSON-ready.

    Keys: ``session`` (the production_sessions row), ``cameras`` (with ``placement``),
    ``shots`` (see `compute_shots`), ``program_start``, ``program_end``, ``program_time_s``,
    ``holds``, ``modes``, ``markers``, ``stills``, ``recordings`` (see `session_recordings`),
    ``proposals`` (each with ``outcome``,
    ``decided_by``, ``decided_at``, ``cut``), ``proposal_counts`` and ``counts``.
    Raises InputMissingError for an unknown session.
    """
    info = get_session(conn, session)
    last_event_at, n_events, n_ok = conn.execute(
        f"SELECT max(ts) FILTER (WHERE {_TS_OK}), count(*), count(*) FILTER (WHERE {_TS_OK}) FROM events WHERE session = ?",
        (session,),
    ).fetchone()
    # times outside the contract's range (stored by an older mmx) are unknown times here
    started_at = info["started_at"] if in_range(info["started_at"]) else None
    completed_at = info["completed_at"] if in_range(info["completed_at"]) else None
    program_end = completed_at if info["status"] == "completed" and completed_at else last_event_at
    program_end = program_end if program_end is not None else started_at or 0.0

    cameras = []
    for row in conn.execute(
        "SELECT camera, device, name, model, role, facing, zoom, lenses, placement, status, inferred,"
        " joined_at, left_at, left_reason, src FROM production_cameras WHERE session = ? ORDER BY joined_at, camera",
        (session,),
    ):
        (camera, device, name, model, role, facing, zoom, lenses, placement, status, inferred,
         joined_at, left_at, left_reason, src) = row  # fmt: skip
        cameras.append({
            "camera": camera, "device": device, "name": name, "model": model, "role": role,
            "facing": facing, "zoom": zoom, "lenses": _json(lenses), "placement": _json(placement),
            "status": status, "inferred": bool(inferred), "joined_at": joined_at, "left_at": left_at,
            "left_reason": left_reason, "src": src,
        })  # fmt: skip

    director = _director_events(conn, session)
    cuts = [d for d in director if d["kind"] == "cut"]
    shots, program_start, program_time_s = compute_shots(cuts, session_start=started_at, program_end=program_end)
    total = {}
    for shot in shots:
        total[shot["camera"]] = total.get(shot["camera"], 0.0) + shot["duration_s"]

    holds: list[dict[str, Any]] = []
    for d in director:
        if d["kind"] == "hold":
            holds.append({"camera": d["camera"], "by": d["by"], "start": d["ts"], "end": None, "duration_s": None,
                          "released_by": None})  # fmt: skip
        elif d["kind"] == "release" and holds and holds[-1]["end"] is None:
            holds[-1].update(end=d["ts"], duration_s=d["ts"] - holds[-1]["start"], released_by=d["by"])
    for hold in holds:
        if hold["end"] is None:
            hold["open"] = True
            hold["duration_s"] = max(program_end - hold["start"], 0.0)

    modes = [{"ts": d["ts"], "mode": d["mode"], "previous": d["data"].get("previous"), "by": d["by"]}
             for d in director if d["kind"] == "mode"]  # fmt: skip
    markers = [{"ts": d["ts"], "label": _text(d["data"].get("label")), "camera": d["camera"], "event": d["event"]}
               for d in director if d["kind"] == "marker"]  # fmt: skip

    proposals: dict[str, dict[str, Any]] = {}
    decisions: list[dict[str, Any]] = []
    for d in director:
        if d["kind"] == "proposed" and d["proposal"]:
            data = d["data"]
            proposals.setdefault(d["proposal"], {
                "proposal": d["proposal"], "ts": d["ts"], "from": d["from"], "to": d["camera"],
                "score": data.get("score"), "reasons": data.get("reasons"), "cut_at": data.get("cut_at"),
                "expires_at": data.get("expires_at"), "outcome": "pending", "decided_by": None,
                "decided_at": None, "cut": None,
            })  # fmt: skip
        elif d["kind"] in ("accepted", "vetoed", "expired"):
            decisions.append(d)
    for d in decisions:
        p = proposals.get(d["proposal"] or "")
        if p is not None and p["outcome"] == "pending":
            p.update(outcome=d["kind"], decided_by=d["by"], decided_at=d["ts"])
    for cut in cuts:
        p = proposals.get(cut["proposal"] or "")
        if p is not None and p["cut"] is None:
            p["cut"] = cut["event"]
    proposal_counts = {"proposed": len(proposals), "accepted": 0, "vetoed": 0, "expired": 0, "pending": 0}
    for p in proposals.values():
        proposal_counts[p["outcome"]] += 1

    stills = [
        {"still": still, "camera": camera, "path": path, "sha256": sha256, "bytes": nbytes, "width": width,
         "height": height, "captured_at": captured_at, "event": eid}
        for still, camera, path, sha256, nbytes, width, height, captured_at, eid in conn.execute(
            "SELECT s.still, s.camera, s.path, s.sha256, s.bytes, s.width, s.height, s.captured_at, e.id"
            " FROM production_stills s JOIN events e ON e.seq = s.event_seq"
            f" WHERE s.session = ? AND s.{_CAPTURED_OK} ORDER BY s.captured_at",
            (session,),
        )
    ]  # fmt: skip

    recordings = session_recordings(conn, session)

    return {
        "session": info,
        "cameras": cameras,
        "recordings": recordings,
        "shots": shots,
        "program_start": program_start,
        "program_end": program_end,
        "program_time_s": program_time_s,
        "program_by_camera_s": {str(k): v for k, v in total.items()},
        "holds": holds,
        "modes": modes,
        "markers": markers,
        "stills": stills,
        "proposals": list(proposals.values()),
        "proposal_counts": proposal_counts,
        "counts": {
            "events": n_events, "cameras": len(cameras), "cuts": len(cuts), "shots": len(shots),
            "holds": len(holds), "stills": len(stills), "markers": len(markers), "recordings": len(recordings),
            # events whose ts lies outside 2000-2100 (TS_MIN..TS_MAX): kept, but no time of theirs is used
            "out_of_range_ts": n_events - n_ok,
        },  # fmt: skip
    }


_RECORDING_COLUMNS = (
    "camera", "kind", "path", "codec", "src", "take", "status", "first_frame_ts", "start_s", "end_s", "origin_ts",
    "width", "height", "stopped_at", "bytes", "duration_s", "frames", "dropped", "sha256", "reason",
    "started_event", "stopped_event",
)  # fmt: skip


def session_recordings(conn: sqlite3.Connection, session: str) -> list[dict[str, Any]]:
    """The session's recorded files (production_recordings), by camera then first frame.

    Each dict: ``camera`` (a camera id or ``program``), ``kind`` (``iso``, ``program``,
    ``proxy``), ``path``, ``codec``, ``src`` (the writer), ``take``, ``status``
    (``recording`` until a ``recording.stopped`` arrives, then ``stopped``),
    ``first_frame_ts`` (Unix s), ``start_s``/``end_s`` (the session clock, s), ``origin_ts``,
    ``width``, ``height``, ``stopped_at``, ``bytes``, ``duration_s``, ``frames``, ``dropped``,
    ``sha256``, ``reason``, and the two event ids.
    """
    rows = conn.execute(
        f"SELECT {', '.join(_RECORDING_COLUMNS)} FROM production_recordings WHERE session = ? AND path IS NOT NULL"
        " ORDER BY camera = 'program', camera, coalesce(start_s, 0), path",
        (session,),
    ).fetchall()
    return [dict(zip(_RECORDING_COLUMNS, row)) for row in rows]
