"""The ledger library: storage, idempotency, projections, bad input, migrations, export, follow."""

from __future__ import annotations

import io
import sqlite3
import threading
import time

import opentimelineio as otio
import orjson
import pytest

from mmx.errors import DataError, EventError, InputMissingError, LedgerError
from mmx.events import VOCABULARY, Event, Producer, decode, encode, from_dict
from mmx.ledger import Ledger, push_stream, queries
from mmx.ledger.export import export_session, to_timeline
from mmx.ledger.follow import ChangeWaiter, follow
from mmx.ledger.ingest import BatchReader, fast_row
from mmx.ledger.schema import MIGRATIONS, schema_version

SESSION = "01JD3J0000000000000000SESS"

#: One valid data object per DESIGN.md event type.
DATA = {
    "session.started": {"kind": "photoshoot_performance", "title": "t", "notes": "n", "mode": "manual"},
    "session.ended": {"reason": "operator", "state": {"program": "cam-1"}},
    "camera.joined": {"camera": "cam-1", "device": "D1", "name": "Front", "model": "iPhone 15 Pro", "role": "wide",
                      "facing": "back", "zoom": 1.0, "lenses": [0.5, 1.0],
                      "placement": {"label": "front", "azimuth_deg": 0, "elevation_deg": 5.5, "distance_m": 3,
                                    "height_m": 1.5}},
    "camera.left": {"camera": "cam-1", "device": "D1", "reason": "lost"},
    "camera.changed": {"camera": "cam-1", "zoom": 0.5, "facing": "front", "role": "close",
                       "placement": {"label": "left", "azimuth_deg": -45}},
    "camera.command": {"camera": "cam-1", "command_id": "c1", "command": "zoom", "args": {"zoom": 0.5}},
    "camera.ack": {"camera": "cam-1", "command_id": "c1", "ok": True, "error": None, "latency_ms": 42.5},
    "director.cut": {"from": "cam-1", "to": "cam-2", "by": "ghost", "proposal": "p1"},
    "director.hold": {"camera": "cam-2", "by": "operator"},
    "director.release": {"camera": "cam-2", "by": "operator"},
    "director.mode": {"mode": "ghost", "previous": "manual"},
    "still.captured": {"still": "s1", "camera": "cam-2", "path": "stills/cam-2/s1.jpg", "sha256": "ab" * 32,
                       "bytes": 1234, "width": 4032, "height": 3024},
    "still.marker": {"label": "hero look", "camera": "cam-2"},
    "ghost.proposed": {"proposal": "p1", "from": "cam-1", "to": "cam-2", "score": 0.9, "reasons": {"beat": 0.5},
                       "cut_at": 1795264001.0, "expires_at": 1795264003.0},
    "ghost.accepted": {"proposal": "p1", "by": "operator"},
    "ghost.vetoed": {"proposal": "p2", "by": "operator"},
    "ghost.expired": {"proposal": "p3", "by": "ghost"},
    "pose.sample": {"camera": "cam-1", "t": 1795264000.5, "joints": {"nose": [0.5, 0.4, 0.9]}},
    "music.cue": {"track": "cd" * 32, "title": "Loop", "path": "music/loop.flac", "started_at": 1795264000.0,
                  "offset_s": 1.5},
    "ghost.held": {"camera": "cam-2", "reasons": [{"rule": "max_shot", "text": "no other camera sees the subject"}]},
    "recording.started": {"camera": "cam-1", "path": "video/cam-1.mkv", "codec": "vp8", "kind": "iso",
                          "started_at": 1795264000.0},
    "recording.stopped": {"camera": "cam-1", "path": "video/cam-1.mkv", "codec": "vp8", "kind": "iso",
                          "bytes": 4096, "duration_s": 12.5, "frames": 375, "dropped": 1, "sha256": "ef" * 32,
                          "reason": "session"},
    "recording.armed": {"take": "t1", "session": SESSION, "path": "/data/sessions/x/video", "dir": "sessions/x/video",
                        "origin_ts": 1795264000.0, "reason": "session"},
    "recording.disarmed": {"take": "t1", "reason": "session_ended"},
    "recording.disk_low": {"free_bytes": 1 << 30, "rate_bytes_s": 2.5e6, "minutes_left": 7.2},
    "relay.stalled": {"camera": "cam-1"},
    "relay.resumed": {"camera": "cam-1"},
}  # fmt: skip


def test_the_fixture_covers_every_design_type():
    assert set(DATA) == set(VOCABULARY)


def every_type_events(session: str = SESSION) -> list[Event]:
    producer = Producer("serve", session=session, clock=iter(range(1795264000, 1795265000)).__next__)
    events = [producer.make(etype, data) for etype, data in DATA.items()]
    events.append(producer.make("future.thing", {"anything": [1, {"x": None}]}))  # unknown types are kept
    return events


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "deep" / "dir" / "ledger.sqlite") as store:
        yield store


def dump(store: Ledger) -> dict[str, list]:
    tables = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in tables if t != "schema_migrations"}


def test_open_creates_parent_dirs_wal_and_synchronous_full(ledger):
    assert ledger.path.exists()
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert ledger.conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert ledger.schema_version == MIGRATIONS[-1][0]


def test_every_event_type_round_trips_byte_exact(ledger):
    events = every_type_events()
    data = b"".join(encode(e) for e in events)
    stats = push_stream(ledger, io.BytesIO(data))
    assert (stats.events, stats.inserted, stats.bad_lines) == (len(events), len(events), 0)
    stored = ledger.events_after(0, None)
    assert [s.seq for s in stored] == list(range(1, len(events) + 1))
    assert b"".join(s.raw.encode() + b"\n" for s in stored) == data
    for original, row in zip(events, stored, strict=True):
        back = row.event()
        assert back.to_dict() == original.to_dict()
        assert (row.id, row.type, row.session, row.ts, row.src) == (
            original.id, original.type, original.session, original.ts, original.src)  # fmt: skip


def test_library_push_of_event_objects_round_trips(ledger):
    events = every_type_events()
    stats = ledger.push(iter(events), batch_size=7)
    assert stats.inserted == len(events) and stats.batches == -(-len(events) // 7)
    assert [s.event().to_dict() for s in ledger.events_after(0, None)] == [e.to_dict() for e in events]


def test_pushing_twice_changes_nothing(ledger):
    data = b"".join(encode(e) for e in every_type_events())
    push_stream(ledger, io.BytesIO(data), batch_size=5)
    before = dump(ledger)
    stats = push_stream(ledger, io.BytesIO(data), batch_size=3)
    assert (stats.inserted, stats.duplicates) == (0, len(every_type_events()))
    assert dump(ledger) == before


def test_duplicates_inside_a_batch_and_mixed_with_new_events_project_once(ledger):
    producer = Producer("serve", session=SESSION)
    cut1 = producer.make("director.cut", {"from": None, "to": "cam-1"})
    cut2 = producer.make("director.cut", {"from": "cam-1", "to": "cam-2"})
    still = producer.make("still.captured", {"still": "s9", "camera": "cam-2"})
    ledger.write([cut1])
    result = ledger.write([cut1, cut2, cut2, still, cut1])
    assert (result.inserted, result.first_seq, result.last_seq) == (2, 2, 3)
    rows = ledger.conn.execute("SELECT event_seq, camera FROM production_director_events ORDER BY event_seq").fetchall()
    assert rows == [(1, "cam-1"), (2, "cam-2")]
    assert ledger.conn.execute("SELECT event_seq, still FROM production_stills").fetchall() == [(3, "s9")]


def test_session_lifecycle_projection(ledger):
    p = Producer("serve", session=SESSION, clock=iter([100.0, 101.0, 102.0, 150.0]).__next__)
    ledger.write([p.make("session.started", {"title": "Shoot", "mode": "manual"}),
                  p.make("camera.joined", {"camera": "cam-1", "placement": {"label": "front", "azimuth_deg": 10}}),
                  p.make("director.cut", {"from": None, "to": "cam-1", "by": "operator"})])  # fmt: skip
    s = queries.get_session(ledger.conn, SESSION)
    assert (s["kind"], s["status"], s["inferred"], s["title"], s["started_at"], s["completed_at"]) == (
        "photoshoot_performance", "active", False, "Shoot", 100.0, None)  # fmt: skip
    ledger.write([p.make("session.ended", {"reason": "operator", "state": {"program": "cam-1"}})])
    s = queries.get_session(ledger.conn, SESSION)
    assert (s["status"], s["completed_at"], s["end_reason"], s["final_state"]) == (
        "completed", 150.0, "operator", {"program": "cam-1"})  # fmt: skip
    cam = queries.session_summary(ledger.conn, SESSION)["cameras"][0]
    assert cam["placement"] == {"label": "front", "azimuth_deg": 10} and cam["status"] == "joined"


def test_resume_after_end_and_an_out_of_order_end(ledger):
    p = Producer("serve", session=SESSION)
    start, end, restart = (p.make(t, {}, ts=ts) for t, ts in
                           (("session.started", 10.0), ("session.ended", 20.0), ("session.started", 30.0)))  # fmt: skip
    ledger.write([start, end, restart])
    s = queries.get_session(ledger.conn, SESSION)
    assert (s["status"], s["completed_at"], s["started_at"]) == ("active", None, 10.0)
    # an end older than the resume (a racing push) does not complete the session
    ledger.write([p.make("session.ended", {"reason": "recovered"}, ts=25.0)])
    assert queries.get_session(ledger.conn, SESSION)["status"] == "active"
    ledger.write([p.make("session.ended", {"reason": "operator"}, ts=40.0)])
    s = queries.get_session(ledger.conn, SESSION)
    assert (s["status"], s["completed_at"], s["end_reason"]) == ("completed", 40.0, "operator")


def test_events_of_a_session_that_never_started_create_it_inferred(ledger):
    ghost = Producer("ghost", session="S-orphan")
    ledger.write([ghost.make("ghost.proposed", {"proposal": "p1", "to": "cam-2"}, ts=5.0),
                  ghost.make("ghost.expired", {"proposal": "p1"}, ts=8.0)])  # fmt: skip
    s = queries.get_session(ledger.conn, "S-orphan")
    assert (s["status"], s["inferred"], s["started_at"], s["first_seq"]) == ("active", True, 5.0, 1)
    assert ledger.count() == 2  # kept, never dropped
    # the late session.started makes it a real session
    ledger.write([Producer("serve", session="S-orphan").make("session.started", {"title": "late"}, ts=4.0)])
    s = queries.get_session(ledger.conn, "S-orphan")
    assert (s["inferred"], s["title"], s["started_at"]) == (False, "late", 4.0)


def test_camera_changes_apply_in_time_order(ledger):
    p = Producer("serve", session=SESSION)
    ledger.write([p.make("camera.joined", {"camera": "c", "zoom": 1.0}, ts=1.0),
                  p.make("camera.changed", {"camera": "c", "zoom": 0.5}, ts=3.0),
                  p.make("camera.changed", {"camera": "c", "zoom": 2.0}, ts=2.0),  # older: ignored
                  p.make("camera.left", {"camera": "c", "reason": "lost"}, ts=4.0)])  # fmt: skip
    cam = queries.session_summary(ledger.conn, SESSION)["cameras"][0]
    assert (cam["zoom"], cam["status"], cam["left_reason"]) == (0.5, "left", "lost")


# -- bad input ----------------------------------------------------------------------------

BAD_LINES = [
    (b"this is not json", "not JSON"),
    (b"[1, 2, 3]", "expected a JSON object, got an array"),
    (b'{"id": "x1", "ts":1795264001.0, "data": {}}', "missing field 'type'"),
    (b'{"type": "director.cut", "id": "x2", "ts":1795264001.0, "data": {"to": 7}}',
     "director.cut: data field 'to' must be a string, got a number"),
    (b'{"type": "director.cut", "id": "x3", "ts": "soon", "data": {"to": "cam-1"}}', "field 'ts' must be"),
    (b'{"type": "still.marker", "id": "\xff\xfe", "ts":1795264001.0}', "not valid UTF-8"),
]  # fmt: skip


def test_malformed_lines_are_reported_with_line_numbers_and_the_rest_is_stored(ledger):
    events = every_type_events()
    good = [encode(e) for e in events]
    lines = []
    expected = {}
    for i, (bad, reason) in enumerate(BAD_LINES):
        lines.append(good[i])
        lines.append(bad + b"\n")
        expected[len(lines)] = reason
    lines.append(b"   \r\n")  # blank lines are skipped, not errors
    lines.append(b'{"type":"x","id":"big","ts":1795264001,"data":{"blob":"' + b"a" * (10 * 1024 * 1024) + b'"}}\n')
    expected[len(lines)] = "line longer than 1048576 bytes"
    lines.extend(good[len(BAD_LINES):])
    errors: list[EventError] = []
    stats = push_stream(ledger, io.BytesIO(b"".join(lines)), on_error=errors.append, batch_size=4)
    assert {e.line: e.reason for e in errors}.keys() == expected.keys()
    for error in errors:
        assert expected[error.line] in error.message
        assert error.message.startswith(f"line {error.line}: ")
    assert stats.bad_lines == len(expected)
    assert [s.id for s in ledger.events_after(0, None)] == [e.id for e in events]


def test_strict_stops_at_the_first_bad_line_after_committing_what_came_before(ledger):
    events = every_type_events()
    data = encode(events[0]) + encode(events[1]) + b"nope\n" + encode(events[2])
    with pytest.raises(DataError, match="stopped at the first bad line"):
        push_stream(ledger, io.BytesIO(data), strict=True)
    assert [s.id for s in ledger.events_after(0, None)] == [events[0].id, events[1].id]


def test_last_line_without_newline_and_crlf(ledger):
    a, b = every_type_events()[:2]
    push_stream(ledger, io.BytesIO(encode(a).replace(b"\n", b"\r\n") + encode(b).rstrip(b"\n")))
    assert [s.raw for s in ledger.events_after(0, None)] == [a.encode().decode(), b.encode().decode()]


TRICKY = [
    {"type": "t", "id": "i", "ts":1795264001},
    {"type": "t", "id": "i", "ts": True},
    {"type": "t", "id": "i", "ts":1795264001, "seq": -1},
    {"type": "t", "id": "i", "ts":1795264001, "seq": 1.5},
    {"type": "t", "id": "i", "ts":1795264001, "v": "1"},
    {"type": "t", "id": "i", "ts":1795264001, "data": None},
    {"type": "t", "id": "i", "ts":1795264001, "data": []},
    {"type": "t", "id": "i", "ts":1795264001, "src": None},
    {"type": "t", "id": "i", "ts":1795264001, "session": 5},
    {"type": "t", "id": "", "ts":1795264001},
    {"type": "t", "id": "x" * 129, "ts":1795264001},
    {"type": "", "id": "i", "ts":1795264001},
    {"type": "camera.ack", "id": "i", "ts":1795264001, "data": {"camera": "c", "command_id": "k", "ok": 1}},
    {"type": "camera.ack", "id": "i", "ts":1795264001, "data": {"camera": "c", "command_id": "k", "ok": True}},
    {"type": "director.cut", "id": "i", "ts":1795264001, "data": {"from": "a"}},
    {"type": "director.cut", "id": "i", "ts":1795264001, "data": {"to": None}},
    {"type": "camera.joined", "id": "i", "ts":1795264001, "data": {"camera": "c", "placement": {"azimuth_deg": "x"}}},
    {"type": "camera.joined", "id": "i", "ts":1795264001, "data": {"camera": "c", "placement": {"azimuth_deg": 3}}},
    {"type": "camera.joined", "id": "i", "ts":1795264001, "data": {"camera": "c", "zoom": True}},
    {"type": "pose.sample", "id": "i", "ts":1795264001, "data": {"camera": "c", "t": 2.5, "joints": None}},
    {"type": "still.captured", "id": "i", "ts":1795264001, "data": {"still": "s"}},
    {"type": "ghost.proposed", "id": "i", "ts":1795264001, "data": {"proposal": "p", "to": "c", "score": "high"}},
    {"type": "ghost.proposed", "id": "i", "ts":1795264001, "data": {"proposal": "p", "to": "c", "reasons": [1]}},
    {"type": "camera.ack", "id": "i", "ts":1795264001.5, "seq": 0, "session": None, "src": "s", "v": 2,
     "data": {"camera": "c", "command_id": "k", "ok": False, "latency_ms": None, "extra": {"x": 1}}},
    [],
    "str",
]  # fmt: skip


@pytest.mark.parametrize("obj", TRICKY, ids=lambda o: orjson.dumps(o).decode()[:60])
def test_fast_acceptance_never_accepts_what_the_event_contract_rejects(obj):
    try:
        from_dict(obj)
        valid = True
    except EventError:
        valid = False
    if fast_row(obj, orjson.dumps(obj)) is not None:
        assert valid
    # and the reader's verdict matches the contract either way
    errors: list[EventError] = []
    batches = list(BatchReader(io.BytesIO(orjson.dumps(obj) + b"\n"), on_error=errors.append))
    assert (sum(len(b) for b in batches), len(errors)) == ((1, 0) if valid else (0, 1))



def test_fast_row_takes_every_vocabulary_type_and_matches_the_contract_row():
    # the fast path must not silently fall back for well-formed events (speed), and its
    # row must be the one the contract path (decode + event_row) gives
    from mmx.ledger.store import event_row

    for event in every_type_events():
        if event.type in ("camera.joined", "camera.changed"):
            continue  # placement objects always take the full check
        line = encode(event).rstrip(b"\n")
        assert fast_row(orjson.loads(line), line) == event_row(decode(line)), event.type

def test_reader_commits_a_slow_stream_within_the_interval_without_more_input(tmp_path):
    import os

    read_fd, write_fd = os.pipe()
    event = every_type_events()[0]
    with open(read_fd, "rb", buffering=0) as fp:
        reader = iter(BatchReader(fp, batch_size=1000, interval_ms=50))
        got: list = []
        thread = threading.Thread(target=lambda: got.append(next(reader)))
        thread.start()
        os.write(write_fd, encode(event))
        thread.join(timeout=5)  # the pipe stays open: only the interval can end the batch
        assert got and [row[0] for row in got[0].rows] == [event.id]
        os.close(write_fd)
        assert list(reader) == []


# -- migrations -----------------------------------------------------------------------------


def test_opening_an_old_version_ledger_upgrades_it_and_builds_projections(tmp_path):
    path = tmp_path / "old.sqlite"
    with Ledger.open(path, migrations=MIGRATIONS[:1]) as old:  # a ledger from before the projections
        assert old.schema_version == 1 and not old.table_exists("production_sessions")
        events = every_type_events()
        old.conn.executemany(
            "INSERT INTO events (id, type, session, ts, src, producer_seq, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(e.id, e.type, e.session, e.ts, e.src, e.seq, e.encode().decode()) for e in events],
        )
    with Ledger.open(path) as new:
        assert new.schema_version == MIGRATIONS[-1][0]
        versions = new.conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        assert versions == [(v, n) for v, n, _ in MIGRATIONS]
        assert [s.id for s in new.events_after(0, None)] == [e.id for e in events]
        summary = queries.session_summary(new.conn, SESSION)
        assert summary["session"]["status"] == "completed"
        assert summary["counts"]["cuts"] == 1 and summary["counts"]["stills"] == 1
        assert summary["proposal_counts"]["accepted"] == 1
    with Ledger.open(path) as again:  # opening once more applies nothing
        assert again.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == len(MIGRATIONS)


def test_a_ledger_from_a_newer_mmx_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    Ledger.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="newer than this mmx knows"):
        Ledger.open(path)


def test_not_a_sqlite_file_is_a_ledger_error(tmp_path):
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger.open(path)


def test_read_commands_do_not_create_a_missing_ledger(tmp_path):
    with pytest.raises(InputMissingError, match="no ledger at"):
        Ledger.open(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


# -- queries and export ---------------------------------------------------------------------


def shoot_with_cuts(store: Ledger, n_cuts: int = 20, session: str = SESSION) -> list[Event]:
    serve = Producer("serve", session=session)
    ghost = Producer("ghost", session=session)
    cams = ["cam-1", "cam-2", "cam-3"]
    t = 1_795_264_000.0
    events = [serve.make("session.started", {"title": "Twenty cuts"}, ts=t)]
    for i, cam in enumerate(cams):
        events.append(serve.make("camera.joined", {"camera": cam, "placement": {"azimuth_deg": -60 + 60 * i}},
                                 ts=t + 0.5 + i))  # fmt: skip
    program = "cam-1"
    t = 1_795_264_010.0
    for i in range(n_cuts):
        to = cams[(cams.index(program) + 1 + (i // 3) % 2) % 3]
        t += 3.0 + (i % 5) * 1.37
        proposal = f"p{i}"
        events.append(ghost.make("ghost.proposed", {"proposal": proposal, "from": program, "to": to}, ts=t - 1))
        events.append(ghost.make("ghost.accepted", {"proposal": proposal, "by": "operator"}, ts=t - 0.5))
        events.append(serve.make("director.cut", {"from": program, "to": to, "by": "ghost", "proposal": proposal},
                                 ts=t))  # fmt: skip
        program = to
    events.append(ghost.make("ghost.proposed", {"proposal": "pv", "to": "cam-1"}, ts=t + 1))
    events.append(ghost.make("ghost.vetoed", {"proposal": "pv", "by": "operator"}, ts=t + 1.5))
    events.append(ghost.make("ghost.proposed", {"proposal": "px", "to": "cam-2"}, ts=t + 2))
    events.append(ghost.make("ghost.expired", {"proposal": "px"}, ts=t + 4))
    events.append(serve.make("director.hold", {"camera": program, "by": "operator"}, ts=t + 5))
    events.append(serve.make("director.release", {"camera": program, "by": "operator"}, ts=t + 7.25))
    events.append(serve.make("session.ended", {"reason": "operator"}, ts=t + 9.0))
    store.push(events)
    return events


def test_summary_of_a_shoot(ledger):
    shoot_with_cuts(ledger)
    s = queries.session_summary(ledger.conn, SESSION)
    assert s["counts"]["cameras"] == 3 and s["counts"]["cuts"] == 20 and len(s["shots"]) == 21
    assert s["shots"][0]["camera"] == "cam-1" and s["shots"][0]["cut_event"] is None  # on program from the start
    assert s["program_start"] == 1_795_264_000.0 and s["program_end"] == s["session"]["completed_at"]
    assert sum(shot["duration_s"] for shot in s["shots"]) == pytest.approx(s["program_time_s"], abs=1e-9)
    assert s["proposal_counts"] == {"proposed": 22, "accepted": 20, "vetoed": 1, "expired": 1, "pending": 0}
    assert s["holds"] == [{"camera": s["shots"][-1]["camera"], "by": "operator", "start": s["holds"][0]["start"],
                           "end": s["holds"][0]["start"] + 2.25, "duration_s": 2.25, "released_by": "operator"}]  # fmt: skip


def test_export_of_3_cameras_and_20_cuts_sums_to_the_program_time(ledger):
    shoot_with_cuts(ledger)
    summary = queries.session_summary(ledger.conn, SESSION)
    timeline = to_timeline(summary, fps=30)
    (track,) = timeline.tracks
    clips = list(track.find_clips())
    assert len(clips) == 21 and {c.name for c in clips} == {"cam-1", "cam-2", "cam-3"}
    assert [c.name for c in clips] == [shot["camera"] for shot in summary["shots"]]
    total = sum((c.duration() for c in clips), otio.opentime.RationalTime(0, 30))
    assert total == timeline.duration()
    assert abs(total.to_seconds() - summary["program_time_s"]) <= 1 / 30
    # the OTIO file reads back the same
    back = otio.adapters.read_from_string(export_session(summary, "otio").decode(), "otio_json")
    assert [c.name for c in back.find_clips()] == [c.name for c in clips]
    # the EDL has one event per shot, reels named after the cameras
    edl = export_session(summary, "edl").decode()
    events = [ln for ln in edl.splitlines() if ln[:3].isdigit()]
    assert len(events) == 21 and {ln.split()[1] for ln in events} == {"CAM1", "CAM2", "CAM3"}
    read = otio.adapters.read_from_string(edl, "cmx_3600", rate=30)
    assert abs(read.duration().to_seconds() - summary["program_time_s"]) <= 1 / 30
    # jsonl durations are exact
    shots = [orjson.loads(ln) for ln in export_session(summary, "jsonl").splitlines()]
    assert sum(s["duration_s"] for s in shots) == pytest.approx(summary["program_time_s"], abs=1e-9)


def test_resolve_session_by_prefix_and_last(ledger):
    shoot_with_cuts(ledger, 2, session="01AAAA-first")
    shoot_with_cuts(ledger, 2, session="01AABB-second")
    assert queries.resolve_session(ledger.conn, "01AAAA") == "01AAAA-first"
    with pytest.raises(DataError, match="ambiguous"):
        queries.resolve_session(ledger.conn, "01AA")
    with pytest.raises(InputMissingError, match="no session zz"):
        queries.resolve_session(ledger.conn, "zz")
    assert [s["session"] for s in queries.list_sessions(ledger.conn)] == ["01AAAA-first", "01AABB-second"]


# -- follow ---------------------------------------------------------------------------------


def test_follow_sees_a_commit_made_by_another_connection(ledger):
    events = every_type_events()
    ledger.write(events[:2])
    other = Ledger.open(ledger.path)
    seen = []
    done = threading.Event()

    def writer():
        time.sleep(0.2)
        other.write(events[2:3])

    thread = threading.Thread(target=writer)
    thread.start()
    for stored in follow(ledger, 0, follow=True, idle_s=5.0, stop=done.is_set):
        seen.append(stored.id)
        if len(seen) == 3:
            done.set()
            break
    thread.join()
    other.close()
    assert seen == [e.id for e in events[:3]]


def test_change_waiter_blocks_until_a_write(ledger):
    with ChangeWaiter(ledger.path) as waiter:
        assert waiter.mechanism == "inotify"
        assert waiter.wait(0.05) is False  # nothing written: it times out
        (ledger.path.parent / "other.txt").write_text("not the ledger")
        assert waiter.wait(0.1) is False  # another file of the directory does not wake it
        other = Ledger.open(ledger.path)
        other.write(every_type_events()[:1])
        other.close()
        assert waiter.wait(2.0) is True


def test_events_after_filters(ledger):
    ledger.write(every_type_events())
    directors = ledger.events_after(0, None, types=("director.*",))
    assert [e.type for e in directors] == ["director.cut", "director.hold", "director.release", "director.mode"]
    assert len(ledger.events_after(3, 2)) == 2 and ledger.events_after(3, 2)[0].seq == 4
    assert ledger.events_after(0, None, session="nope") == []
    assert ledger.seq_before_last(2) == ledger.last_seq() - 2


def test_decode_of_stored_raw_is_the_event(ledger):
    event = every_type_events()[7]
    ledger.write([event])
    assert decode(ledger.events_after(0, 1)[0].raw) == decode(encode(event))


def test_a_new_ledger_uses_large_pages_and_an_old_file_keeps_its_own(tmp_path):
    from mmx.ledger.store import PAGE_SIZE

    with Ledger.open(tmp_path / "new.sqlite") as new:
        assert new.conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert new.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    old = sqlite3.connect(tmp_path / "old.sqlite")
    old.execute("PRAGMA page_size = 4096")
    old.execute("CREATE TABLE unrelated (x)")
    old.close()
    with Ledger.open(tmp_path / "old.sqlite") as ledger:
        ledger.write(every_type_events())
        assert ledger.conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert ledger.integrity_check() == "ok"


def mixed_stream(n: int = 3000, seed: int = 3) -> list[Event]:
    """A shoot-like stream: two sessions (one never started), joins, out-of-order camera
    changes, cuts, ghost proposals and decisions, holds, stills, mode changes, ends."""
    import random

    rng = random.Random(seed)
    clock = iter(range(1795264000, 1795264000 + 10 * n)).__next__
    serve = Producer("serve", session=SESSION, clock=clock)
    orphan = Producer("ghost", session="01JD3J00000000000000ORPHAN", clock=clock)
    cams = ["cam-1", "cam-2", "cam-3"]
    events = [serve.make("session.started", {"title": "mix", "mode": "ghost"})]
    events += [serve.make("camera.joined", {"camera": c, "device": f"D{i}", "zoom": 1.0}) for i, c in enumerate(cams)]
    for i in range(n):
        r = rng.random()
        producer = orphan if r < 0.1 else serve
        if r < 0.35:
            event = producer.make("director.cut", {"from": rng.choice(cams), "to": rng.choice(cams), "by": "ghost"})
        elif r < 0.5:
            event = producer.make("ghost.proposed", {"proposal": f"p{i}", "to": rng.choice(cams), "score": 0.5})
        elif r < 0.6:
            event = producer.make(rng.choice(["ghost.accepted", "ghost.vetoed", "ghost.expired"]), {"proposal": f"p{i}"})
        elif r < 0.75:
            event = producer.make("camera.changed", {"camera": rng.choice(cams + ["cam-9"]), "zoom": rng.choice([0.5, 2]),
                                                     "role": rng.choice(["wide", None])})  # fmt: skip
            if rng.random() < 0.2:
                event.ts -= 50  # arrives late: older than what the row shows
        elif r < 0.85:
            event = producer.make("still.captured", {"still": f"s{i}", "camera": rng.choice(cams), "bytes": i})
        elif r < 0.9:
            event = producer.make(rng.choice(["director.hold", "director.release", "still.marker"]), {"camera": "cam-2"})
        elif r < 0.95:
            event = producer.make("director.mode", {"mode": rng.choice(["manual", "ghost"])})
        elif r < 0.97:
            event = producer.make(rng.choice(["camera.left", "camera.joined"]), {"camera": rng.choice(cams)})
        else:
            event = producer.make(rng.choice(["session.ended", "session.started"]), {"reason": "operator"})
        events.append(event)
    # recordings: a stop before its start, a second stop newer than the first, a start alone
    for cam in cams:
        path = f"video/{cam}.mkv"
        events.append(serve.make("recording.stopped", {"camera": cam, "path": path, "bytes": 10, "reason": "writer_lost"}))
        events.append(serve.make("recording.started", {"camera": cam, "path": path, "codec": "vp8", "kind": "iso"}))
        events.append(serve.make("recording.stopped", {"camera": cam, "path": path, "bytes": 99, "sha256": "ab" * 32,
                                                       "reason": "session_ended"}))  # fmt: skip
    events.append(serve.make("recording.started", {"camera": "program", "path": "video/program.mkv", "kind": "program"}))
    return events


def projections(store: Ledger) -> dict[str, list]:
    return {t: v for t, v in dump(store).items() if t.startswith("production_")}


def test_projections_do_not_depend_on_batching_and_duplicates_change_nothing(tmp_path):
    from mmx.ledger.projections import rebuild_projections

    events = mixed_stream()
    lines = b"".join(encode(e) for e in events)
    with Ledger.open(tmp_path / "one.sqlite") as one:
        push_stream(one, io.BytesIO(lines), batch_size=100_000)
        expected = projections(one)
        assert all(expected[t] for t in expected), "every projection table gets rows"
        one.conn.execute("BEGIN IMMEDIATE")
        rebuild_projections(one.conn)
        one.conn.execute("COMMIT")
        assert projections(one) == expected
    with Ledger.open(tmp_path / "each.sqlite") as each:  # one event per transaction
        push_stream(each, io.BytesIO(lines), batch_size=1)
        assert projections(each) == expected
    # the first half, then everything with each line twice, in odd-sized batches: the
    # duplicates (in the ledger already, or twice in one batch) must change nothing
    half = b"".join(encode(e) for e in events[: len(events) // 2])
    doubled = b"".join(encode(e) * 2 for e in events)
    with Ledger.open(tmp_path / "dup.sqlite") as dup:
        push_stream(dup, io.BytesIO(half), batch_size=37)
        stats = push_stream(dup, io.BytesIO(doubled), batch_size=113)
        assert stats.inserted == len(events) - len(events) // 2
        assert projections(dup) == expected
        assert dup.integrity_check() == "ok"


def test_issue17_item1_projections_skip_camera_events_stored_without_a_camera(ledger):
    # what a ledger holds when an older mmx let them in: neither a write nor a rebuild fails
    p = Producer("serve", session="S-old")
    ledger.write([p.make("session.started", {}), Event("camera.joined", session="S-old", src="serve"),
                  Event("camera.changed", session="S-old", data={"camera": 7}), p.make("camera.joined", {"camera": "c"})])  # fmt: skip
    assert [row[1] for row in ledger.conn.execute("SELECT session, camera FROM production_cameras")] == ["c"]
    from mmx.ledger.projections import rebuild_projections

    ledger.conn.execute("BEGIN")
    assert rebuild_projections(ledger.conn) == 4
    ledger.conn.execute("COMMIT")
    assert ledger.conn.execute("SELECT count(*) FROM production_cameras").fetchone()[0] == 1


def test_issue17_item1_a_refused_batch_is_split_and_only_the_refused_row_is_reported(ledger):
    from mmx.ledger.ingest import write_splitting
    from mmx.ledger.projections import Batch
    from mmx.ledger.store import event_row

    p = Producer("serve", session="S")
    batch = Batch()
    for i, event in enumerate([p.make("director.cut", {"to": f"cam-{i}"}) for i in range(9)]):
        batch.add(event_row(event), event.data)
        batch.lines.append(i + 1)
    batch.rows[4] = (*batch.rows[4][:5], 1 << 64, batch.rows[4][6])  # a producer seq SQLite cannot hold
    refused: list[EventError] = []
    results = list(write_splitting(ledger, batch, refused.append))
    assert [e.line for e in refused] == [5] and "integer" in refused[0].message.lower()
    assert sum(r.inserted for r in results) == 8 == ledger.count()
    cams = [r[0] for r in ledger.conn.execute("SELECT camera FROM production_director_events ORDER BY event_seq")]
    assert cams == [f"cam-{i}" for i in range(9) if i != 4]
