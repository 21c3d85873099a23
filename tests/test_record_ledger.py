"""production_recordings: one row per file from recording.started / recording.stopped, in any order."""

from __future__ import annotations

import sqlite3

from mmx.events import Producer
from mmx.ledger import queries
from mmx.ledger.schema import MIGRATIONS, migrate, schema_version
from mmx.ledger.store import Ledger

SESSION = "01JRECLEDGER00000000000SES"
ISO = "/data/sessions/x/video/cam-1.mkv"


def test_a_stop_before_its_start_and_the_newest_of_two_stops_win(tmp_path):
    serve, relay = Producer("serve", session=SESSION), Producer("relay", session=SESSION)
    events = [
        serve.make("session.started", {}, ts=100.0),
        serve.make("recording.stopped", {"camera": "cam-1", "path": ISO, "reason": "writer_lost", "bytes": 10}, ts=160.0),
        relay.make("recording.started", {"camera": "cam-1", "path": ISO, "codec": "vp8", "kind": "iso",
                                         "first_frame_ts": 100.5, "start_s": 0.5, "width": 640, "height": 360}, ts=101.0),
        relay.make("recording.stopped", {"camera": "cam-1", "path": ISO, "reason": "session_ended", "bytes": 9000,
                                         "frames": 1800, "dropped": 1, "duration_s": 60.0, "sha256": "ab" * 32}, ts=161.0),
        serve.make("recording.stopped", {"camera": "cam-1", "path": ISO, "reason": "stale", "bytes": 1}, ts=150.0),
        relay.make("recording.started", {"camera": "program", "path": "/data/program.mkv", "kind": "program"}, ts=102.0),
        serve.make("recording.started", {"camera": "cam-2", "path": None}, ts=103.0),  # no file: not a recording
    ]  # fmt: skip
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.push(events)
        led.push(events)  # a replay changes nothing
        recs = {r["path"]: r for r in queries.session_recordings(led.conn, SESSION)}
        summary = queries.session_summary(led.conn, SESSION)
    assert set(recs) == {ISO, "/data/program.mkv"}
    iso = recs[ISO]
    assert (iso["status"], iso["src"], iso["codec"], iso["first_frame_ts"], iso["start_s"]) == ("stopped", "relay", "vp8", 100.5, 0.5)
    assert (iso["reason"], iso["bytes"], iso["frames"], iso["dropped"], iso["stopped_at"]) == ("session_ended", 9000, 1800, 1, 161.0)
    assert recs["/data/program.mkv"]["status"] == "recording" and recs["/data/program.mkv"]["first_frame_ts"] == 102.0
    assert summary["counts"]["recordings"] == 2 and summary["recordings"][0]["camera"] == "cam-1"


def test_an_older_ledger_is_upgraded_and_its_recording_events_projected(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:3])  # a ledger written before the recordings projection
    conn.close()
    with Ledger.open(path) as led:
        assert schema_version(led.conn) == MIGRATIONS[-1][0]
    # events stored by the old code are projected when the new migration rebuilds
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM schema_migrations WHERE version = 4")
    conn.execute("DROP TABLE production_recordings")
    conn.close()
    serve = Producer("serve", session=SESSION)
    with Ledger.open(path) as led:
        led.push([serve.make("session.started", {}, ts=1.0)])
    raw = serve.make("recording.started", {"camera": "cam-1", "path": ISO, "kind": "proxy"}, ts=2.0)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DELETE FROM schema_migrations WHERE version = 4")
    conn.execute("DROP TABLE production_recordings")
    conn.execute("INSERT INTO events (id, type, session, ts, src, raw) VALUES (?, ?, ?, ?, ?, ?)",
                 (raw.id, raw.type, raw.session, raw.ts, raw.src, raw.encode().decode()))  # fmt: skip
    conn.close()
    with Ledger.open(path) as led:
        (rec,) = queries.session_recordings(led.conn, SESSION)
    assert (rec["path"], rec["kind"], rec["first_frame_ts"]) == (ISO, "proxy", 2.0)
