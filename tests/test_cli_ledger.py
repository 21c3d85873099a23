"""`mmx ledger push|tail|sessions|show|export` through the CLI (CliRunner) and real pipes."""

from __future__ import annotations

import csv
import io
import os
import selectors
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import opentimelineio as otio
import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.events import Producer, encode

from .conftest import MMX, ROOT

EXAMPLE = ROOT / "examples" / "events" / "shoot.jsonl"


def run(*args: str, input: bytes | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def jsonl(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def shoot(tmp_path) -> Path:
    path = tmp_path / "shoot.sqlite"
    result = run("ledger", "push", str(EXAMPLE), "--ledger", str(path))
    assert result.exit_code == 0, result.output
    return path


def test_the_example_file_is_what_the_generator_makes():
    made = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_example_events.py"), "-o", "-"],
                          capture_output=True, check=True)  # fmt: skip
    assert made.stdout == EXAMPLE.read_bytes()


def test_push_stores_the_example_and_summarizes_on_stderr(tmp_path):
    path = tmp_path / "a" / "shoot.sqlite"
    result = run("ledger", "push", str(EXAMPLE), "--ledger", str(path))
    assert result.exit_code == 0
    assert result.stdout == ""  # without --echo stdout stays empty
    assert f"80 new events stored in {path}, seq 1–80 (0 already there, 0 bad lines, 1 batch)" in result.stderr
    again = run("ledger", "push", str(EXAMPLE), "--ledger", str(path))
    assert again.exit_code == 0 and "0 new events stored" in again.stderr and "80 already there" in again.stderr


def test_push_defaults_to_mmx_home_and_stdin(mmx_home):
    result = run("ledger", "push", input=EXAMPLE.read_bytes())
    assert result.exit_code == 0, result.output
    assert (mmx_home / "ledger.sqlite").exists()
    sessions = jsonl(run("ledger", "sessions").stdout)
    assert len(sessions) == 1 and sessions[0]["cuts"] == 20


def test_echo_writes_exactly_the_stored_events(tmp_path):
    lines = EXAMPLE.read_bytes().splitlines(keepends=True)
    data = b"".join(lines[:5]) + b"garbage\n" + b"".join(lines[5:10])
    result = run("ledger", "push", "-", "--ledger", str(tmp_path / "l.sqlite"), "--echo", "--batch-size", "3",
                 input=data)  # fmt: skip
    assert result.exit_code == 65
    assert result.stdout.encode() == b"".join(lines[:10])
    assert "warning: line 6: not JSON" in result.stderr
    assert "Error: 1 bad line in - skipped" in result.stderr


def test_bad_lines_are_reported_stored_around_and_exit_65(tmp_path):
    p = Producer("serve", session="S")
    good = [encode(p.make("director.cut", {"to": f"cam-{i}"})) for i in range(4)]
    bad = [b"{nope\n", b'[{"type":"x"}]\n', b'{"id":"a","ts":1795264001}\n', b'{"type":"director.cut","id":"b","ts":1795264001,"data":{"to":1}}\n',
           b'{"type":"x","id":"\xc3\x28","ts":1795264001}\n', b'{"type":"x","id":"c","ts":1795264001,"d":"' + b"z" * (10 << 20) + b'"}\n']  # fmt: skip
    data = b"".join(x for pair in zip(good + [b""] * 2, bad, strict=True) for x in pair)
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(data)
    path = tmp_path / "l.sqlite"
    result = run("ledger", "push", str(src), "--ledger", str(path))
    assert result.exit_code == 65
    err = result.stderr
    for line_no, reason in [(2, "not JSON"), (4, "expected a JSON object, got an array"), (6, "missing field 'type'"),
                            (8, "director.cut: data field 'to' must be a string"), (9, "not JSON: not valid UTF-8"),
                            (10, "line longer than 1048576 bytes")]:  # fmt: skip
        assert f"warning: {src}: line {line_no}: {reason}" in err
    assert "6 bad lines" in err and "4 new events stored" in err
    assert sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0] == 4


def test_strict_stops_at_the_first_bad_line(tmp_path):
    lines = EXAMPLE.read_bytes().splitlines(keepends=True)
    data = b"".join(lines[:3]) + b"oops\n" + b"".join(lines[3:])
    path = tmp_path / "l.sqlite"
    result = run("ledger", "push", "--strict", "--ledger", str(path), input=data)
    assert result.exit_code == 65
    assert "line 4: not JSON" in result.stderr and "stopped at the first bad line" in result.stderr
    assert sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0] == 3


def test_missing_input_and_missing_ledger(tmp_path):
    result = run("ledger", "push", str(tmp_path / "nope.jsonl"), "--ledger", str(tmp_path / "l.sqlite"))
    assert result.exit_code == 66 and "Error: no such file" in result.stderr
    result = run("ledger", "show", "--last", "--ledger", str(tmp_path / "absent.sqlite"))
    assert result.exit_code == 66 and f"Error: no ledger at {tmp_path / 'absent.sqlite'}" in result.stderr


def test_sessions_and_show_json(shoot):
    (session,) = jsonl(run("ledger", "sessions", "--ledger", str(shoot)).stdout)
    assert (session["title"], session["status"], session["cameras"], session["cuts"], session["stills"],
            session["events"]) == ("Spring lookbook — studio B", "completed", 3, 20, 2, 80)  # fmt: skip
    result = run("ledger", "show", "--last", "--ledger", str(shoot))
    assert result.exit_code == 0
    summary = orjson.loads(result.stdout)
    assert summary["session"]["session"] == session["session"]
    assert [c["camera"] for c in summary["cameras"]] == ["cam-1", "cam-2", "cam-3"]
    assert summary["cameras"][1]["placement"]["label"] == "left profile"  # the camera was moved
    assert summary["counts"]["cuts"] == 20 and len(summary["stills"]) == 2 and len(summary["holds"]) == 1
    pc = summary["proposal_counts"]
    assert pc["accepted"] == 13 and pc["vetoed"] == 4 and pc["expired"] == 4 and pc["pending"] == 0
    assert sum(s["duration_s"] for s in summary["shots"]) == pytest.approx(summary["program_time_s"])
    by_prefix = run("ledger", "show", session["session"][:12], "--ledger", str(shoot))
    assert orjson.loads(by_prefix.stdout)["session"]["session"] == session["session"]
    assert run("ledger", "show", "--ledger", str(shoot)).exit_code == 2  # neither SESSION nor --last
    unknown = run("ledger", "show", "ZZZ", "--ledger", str(shoot))
    assert unknown.exit_code == 66 and "Error: no session ZZZ in the ledger" in unknown.stderr


def test_export_formats(shoot, tmp_path):
    summary = orjson.loads(run("ledger", "show", "--last", "--ledger", str(shoot)).stdout)
    shots = jsonl(run("ledger", "export", "--last", "--ledger", str(shoot)).stdout)
    assert [s["camera"] for s in shots] == [s["camera"] for s in summary["shots"]]
    rows = list(csv.DictReader(io.StringIO(run("ledger", "export", "--last", "-F", "csv", "--ledger", str(shoot)).stdout)))
    assert len(rows) == len(shots) and rows[0]["camera"] == shots[0]["camera"]
    out = tmp_path / "cut.otio"
    result = run("ledger", "export", "--last", "-o", str(out), "--ledger", str(shoot))  # format from the suffix
    assert result.exit_code == 0 and "written to" in result.stderr
    timeline = otio.adapters.read_from_file(str(out))
    assert [c.name for c in timeline.find_clips()] == [s["camera"] for s in shots]
    program_s = sum(c.duration().to_seconds() for c in timeline.find_clips())
    assert abs(program_s - summary["program_time_s"]) <= 1 / 30
    # the timeline starts at the session start: the program track waits for the first cut
    first = next(iter(timeline.find_clips()))
    start_s = summary["shots"][0]["start"] - summary["session"]["started_at"]
    assert abs(first.range_in_parent().start_time.to_seconds() - start_s) <= 1 / 60
    edl = run("ledger", "export", summary["session"]["session"], "--format", "edl", "--ledger", str(shoot)).stdout
    assert edl.startswith("TITLE: Spring lookbook") and "* FROM CLIP NAME:  cam-2" in edl
    bad = run("ledger", "export", "--last", "--format", "mov", "--ledger", str(shoot))
    assert bad.exit_code == 2


def test_tail_prints_raw_events_and_filters(shoot):
    lines = EXAMPLE.read_bytes().splitlines()
    result = run("ledger", "tail", "--since", "0", "--ledger", str(shoot))
    assert result.exit_code == 0 and result.stdout.encode().splitlines() == lines
    last10 = run("ledger", "tail", "--ledger", str(shoot)).stdout.encode().splitlines()
    assert last10 == lines[-10:]
    cuts = jsonl(run("ledger", "tail", "--since", "0", "--last", "-t", "director.c*", "--type", "still.*",
                     "--ledger", str(shoot)).stdout)  # fmt: skip
    assert {c["type"] for c in cuts} == {"director.cut", "still.captured", "still.marker"}
    assert sum(c["type"] == "director.cut" for c in cuts) == 20
    after = jsonl(run("ledger", "tail", "--since", "78", "--ledger", str(shoot)).stdout)
    assert [e["id"] for e in after] == [orjson.loads(x)["id"] for x in lines[78:]]


# -- real pipes -------------------------------------------------------------------------------


_BUFFERS: dict[int, bytearray] = {}


def read_line(proc: subprocess.Popen, timeout_s: float) -> bytes:
    """One line of a subprocess's stdout, or what came (maybe b"") when timeout_s passed."""
    buf = _BUFFERS.setdefault(proc.pid, bytearray())
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    end = buf.find(b"\n") + 1 or len(buf)
    line = bytes(buf[:end])
    del buf[:end]
    return line


def read_rest(proc: subprocess.Popen) -> bytes:
    """Everything still buffered or unread on a finished subprocess's stdout."""
    return bytes(_BUFFERS.pop(proc.pid, b"")) + proc.stdout.read()


def test_live_pipe_commits_within_the_interval_before_eof(tmp_path):
    path = tmp_path / "live.sqlite"
    lines = EXAMPLE.read_bytes().splitlines(keepends=True)
    proc = subprocess.Popen([*MMX, "ledger", "push", "--echo", "--interval-ms", "50", "--ledger", str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        for line in lines[:3]:
            proc.stdin.write(line)
            proc.stdin.flush()
            echoed = read_line(proc, 20.0)  # stdin stays open: only the interval commits it
            assert echoed == line
            conn = sqlite3.connect(path)
            assert conn.execute("SELECT raw FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0] == line.decode().strip()
            conn.close()
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        assert "3 new events stored" in proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()


def test_tail_follow_sees_an_event_pushed_by_another_process(tmp_path):
    path = tmp_path / "follow.sqlite"
    lines = EXAMPLE.read_bytes().splitlines(keepends=True)
    first = subprocess.run([*MMX, "ledger", "push", "--ledger", str(path)], input=lines[0], capture_output=True)
    assert first.returncode == 0, first.stderr
    tail = subprocess.Popen([*MMX, "ledger", "tail", "-f", "--json", "--ledger", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert read_line(tail, 20.0) == lines[0]  # the backlog
        push = subprocess.run([*MMX, "ledger", "push", "--ledger", str(path)], input=b"".join(lines[1:3]),
                              capture_output=True)  # fmt: skip
        assert push.returncode == 0, push.stderr
        assert read_line(tail, 20.0) == lines[1]
        assert read_line(tail, 20.0) == lines[2]
        assert tail.poll() is None  # still following
    finally:
        tail.kill()
        tail.wait()


def test_head_ends_a_piped_tail_quietly(shoot):
    proc = subprocess.run(f"{' '.join(MMX)} ledger tail --since 0 --ledger {shoot} | head -1", shell=True,
                          capture_output=True)  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == b""
    assert proc.stdout == EXAMPLE.read_bytes().splitlines(keepends=True)[0]


def test_human_views_on_a_terminal(shoot, monkeypatch):
    import mmx.commands.ledger as ledger_cmd

    monkeypatch.setattr(ledger_cmd, "wants_json", lambda flag: flag)  # as if stdout were a terminal
    show = run("ledger", "show", "--last", "--ledger", str(shoot))
    assert show.exit_code == 0 and show.stdout == ""  # humans get stderr; stdout stays data only
    for text in ("Spring lookbook — studio B", "program time 3:47.2 in 20 shots (20 cuts)", "left profile",
                 "13 accepted", "4 vetoed", "4 expired", "hold on cam-3 by operator", "manual → ghost",
                 "marker hero look", "cut list"):  # fmt: skip
        assert text in show.stderr, text
    sessions = run("ledger", "sessions", "--ledger", str(shoot))
    session = orjson.loads(run("ledger", "show", "--last", "--json", "--ledger", str(shoot)).stdout)["session"]
    assert "production sessions" in sessions.stderr and session["session"] in sessions.stderr
    assert "Spring" in sessions.stderr and sessions.stdout == ""
    tail = run("ledger", "tail", "--since", "78", "--ledger", str(shoot))
    lines = [ln for ln in tail.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and "director.cut" in lines[0] and "session.ended" in lines[1] and tail.stdout == ""


# -- issue 17: faults found by probing ---------------------------------------------------------


def _camera_lines(n_good: int = 50) -> tuple[list[bytes], int]:
    """Valid events with a session around one camera.joined that has a session and no data;
    returns the lines and the bad one's line number."""
    p = Producer("serve", session="01SESSIONITEM1")
    lines = [encode(p.make("session.started", {"title": "item 1"}))]
    lines += [encode(p.make("director.cut", {"to": f"cam-{i % 3}"})) for i in range(n_good)]
    bad_at = len(lines) + 1
    lines.append(b'{"v":1,"id":"cam-nodata","seq":999,"ts":1795264000.5,"type":"camera.joined","session":"01SESSIONITEM1","src":"serve"}\n')
    lines += [encode(p.make("camera.joined", {"camera": f"cam-{i}"})) for i in range(n_good)]
    return lines, bad_at


@pytest.mark.parametrize("etype", ["camera.joined", "camera.left", "camera.changed"])
def test_issue17_item1_camera_event_with_session_and_no_data_is_rejected_at_validation(tmp_path, etype):
    lines, bad_at = _camera_lines()
    lines[bad_at - 1] = lines[bad_at - 1].replace(b"camera.joined", etype.encode())
    path = tmp_path / "l.sqlite"
    # one batch holds all of it: before the fix the batch rolled back and the push exited 74
    result = run("ledger", "push", "-", "--ledger", str(path), "--batch-size", "20000", input=b"".join(lines))
    assert result.exit_code == 65, result.output
    assert f"warning: line {bad_at}: {etype}: missing data field 'camera'" in result.stderr
    assert f"{len(lines) - 1} new events stored" in result.stderr and "1 bad line" in result.stderr
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == len(lines) - 1
    assert db.execute("SELECT count(*) FROM events WHERE id = 'cam-nodata'").fetchone()[0] == 0


def test_issue17_item1_a_batch_the_store_refuses_does_not_lose_the_rest_of_the_input(tmp_path):
    lines, _ = _camera_lines()
    lines = [line for line in lines if b"cam-nodata" not in line]
    path = tmp_path / "l.sqlite"
    assert run("ledger", "push", str(EXAMPLE), "--ledger", str(path)).exit_code == 0
    # a row the store itself refuses (whatever the validator let through): the batch is split
    poison = orjson.loads(lines[20])["id"]
    db = sqlite3.connect(path)
    db.execute(f"CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.id = '{poison}' "
               "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END")  # fmt: skip
    db.commit()
    result = run("ledger", "push", "-", "--ledger", str(path), "--echo", input=b"".join(lines))
    assert result.exit_code == 65, result.output
    assert f"warning: line 21: the ledger refused event '{poison}': poisoned row" in result.stderr
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 80 + len(lines) - 1
    # every other line is stored, echoed once, and projected
    assert result.stdout.encode() == b"".join(line for i, line in enumerate(lines) if i != 20)
    assert db.execute("SELECT count(*) FROM production_cameras WHERE session = '01SESSIONITEM1'").fetchone()[0] == 50


def test_issue17_item2_the_fast_path_checks_missing_data_like_decode(tmp_path):
    path = tmp_path / "l.sqlite"
    lines = [b'{"v":1,"id":"c1","ts":1795264001,"type":"director.cut"}\n',
             b'{"v":1,"id":"c2","ts":1795264001,"type":"director.cut","data":{}}\n',
             b'{"v":1,"id":"c3","ts":1795264001,"type":"director.cut","data":{"to":"cam-1"}}\n']  # fmt: skip
    result = run("ledger", "push", "-", "--ledger", str(path), input=b"".join(lines))
    assert result.exit_code == 65
    assert "warning: line 1: director.cut: missing data field 'to'" in result.stderr
    assert "warning: line 2: director.cut: missing data field 'to'" in result.stderr
    assert [r[0] for r in sqlite3.connect(path).execute("SELECT id FROM events")] == ["c3"]


_DEEP = b"[" * 300 + b"]" * 300


def _extreme_lines() -> list[bytes]:
    """What an older mmx stored: ts of 1e20 and +-1e308, data nested 300 deep."""
    def line(i: int, etype: str, ts: str, data: bytes) -> bytes:
        return (b'{"v":1,"id":"x%d","seq":%d,"ts":%s,"type":"%s","session":"01EXTREME","src":"serve","data":%s}'
                % (i, i, ts.encode(), etype.encode(), data))  # fmt: skip

    return [
        line(1, "session.started", "1e20", b'{"title":"extreme"}'),
        line(2, "camera.joined", "1795264000.0", b'{"camera":"cam-1","placement":{"azimuth_deg":"left"}}'),
        line(3, "director.cut", "1e308", b'{"to":"cam-1"}'),
        line(4, "director.cut", "-1e308", b'{"to":"cam-2"}'),
        line(5, "director.cut", "1795264001.0", b'{"to":"cam-1","deep":' + _DEEP + b"}"),
        line(6, "still.marker", "1795264002.0", b'{"label":' + _DEEP + b"}"),
        line(7, "director.cut", "1795264003.0", b'{"to":"cam-2"}'),
        line(8, "session.ended", "1e20", b'{"reason":"operator","state":{"deep":' + _DEEP + b"}}"),
    ]


@pytest.fixture
def extreme(tmp_path) -> Path:
    from mmx.events import Event
    from mmx.ledger import Ledger

    path = tmp_path / "extreme.sqlite"
    with Ledger.open(path) as led:  # the library door takes events made in process as they are
        led.write([Event(type=orjson.loads(raw)["type"], id=orjson.loads(raw)["id"], ts=orjson.loads(raw)["ts"],
                         session="01EXTREME", src="serve", data=orjson.loads(raw)["data"], raw=raw)
                   for raw in _extreme_lines()])  # fmt: skip
    return path


def test_issue17_item3_the_door_refuses_extreme_ts_and_deep_data(tmp_path):
    lines = _extreme_lines()
    result = run("ledger", "push", "-", "--ledger", str(tmp_path / "l.sqlite"), input=b"\n".join(lines) + b"\n")
    assert result.exit_code == 65
    for n, shown in ((1, "1e+20"), (3, "1e+308"), (4, "-1e+308"), (8, "1e+20")):
        assert f"line {n}: field 'ts' must be Unix seconds from 946684800 to 4102444800 (years 2000 to 2100), got {shown}" in result.stderr
    assert "line 5: nested deeper than 32 levels" in result.stderr
    assert "line 6: still.marker: data field 'label' must be a string, got an array" in result.stderr
    assert "line 2: placement field 'azimuth_deg' must be a number" in result.stderr
    assert "1 new event stored" in result.stderr


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "piped"])
@pytest.mark.parametrize(
    "args",
    [["sessions"], ["show", "--last"], ["tail", "--since", "0"], ["export", "--last", "-F", "otio"],
     ["export", "--last", "-F", "jsonl"], ["export", "--last", "-F", "csv"], ["export", "--last", "-F", "edl"],
     ["export", "--last", "-F", "fcp7"], ["export", "--last", "-F", "fcpx"]],
    ids=lambda a: "-".join(a),
)  # fmt: skip
def test_issue17_item3_readers_render_extreme_stored_events_defensively(extreme, monkeypatch, args, terminal):
    import mmx.commands._common as common

    monkeypatch.setattr(common, "stdout_is_terminal", lambda: terminal)
    result = run("ledger", *args, "--ledger", str(extreme))
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.stderr
    if args[0] == "tail" and terminal:
        assert "ts=1e+20" in result.stderr and "ts=-1e+308" in result.stderr and 'deep=[[[[[[[["…"]]]]]]]]' in result.stderr
    if args[0] == "sessions" and terminal:
        assert "ts=1e+20" in result.stderr
    if args[0] == "show" and not terminal:
        summary = orjson.loads(result.stdout)
        # the out-of-range times are shown as stored but not used: two real cuts, one shot of 2 s
        assert summary["session"]["started_at"] == 1e20 and summary["counts"]["out_of_range_ts"] == 4
        assert [s["camera"] for s in summary["shots"]] == ["cam-1", "cam-2"] and summary["program_time_s"] == 2.0
    if args[-1] == "jsonl":
        assert [s["camera"] for s in jsonl(result.stdout)] == ["cam-1", "cam-2"]
