"""`mmx ledger sync --convex`: the ledger reaches a Convex deployment exactly once, in order.

Against `tests.convex_fake`, a loopback server speaking the documented wire protocol of
``POST /api/mutation`` (a real process on a free port, with its state in SQLite so it can be
killed and restarted); the ledger is a real SQLite file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.errors import ServiceUnavailableError, TemporaryFailure
from mmx.events import Event, Producer
from mmx.ledger import convex as cx
from mmx.ledger.store import Ledger

from .conftest import MMX, free_port
from .convex_fake import FakeConvex

KEY = "prod:test|deploy-key"
FAST = cx.RetryPolicy(base_s=0.01, cap_s=0.05, retry_for_s=20.0)


@pytest.fixture
def fake(tmp_path):
    server = FakeConvex(tmp_path / "convex-state.sqlite", free_port(), key=KEY).start()
    yield server
    server.stop()


def shoot_events(n: int, sessions: int = 4) -> list[Event]:
    """``n`` events spread round-robin over ``sessions`` sessions, each its own producer."""
    producers = [Producer("serve", session=f"01SESSION{i:017d}") for i in range(sessions)]
    out: list[Event] = []
    for i in range(n):
        producer = producers[i % sessions]
        if i < sessions:
            out.append(producer.make("session.started", {"kind": "photoshoot_performance", "title": f"take {i}"}))
        else:
            out.append(producer.make("director.cut", {"from": f"cam-{i % 3}", "to": f"cam-{(i + 1) % 3}", "by": "operator"}))
    return out


def make_ledger(path: Path, events: list[Event]) -> Path:
    with Ledger.open(path) as led:
        for start in range(0, len(events), 5000):
            led.write(events[start : start + 5000])
    return path


def run_sync(path: Path, fake: FakeConvex, **kwargs: Any) -> cx.SyncProgress:
    with Ledger.open(path) as led, cx.ConvexClient(fake.url, KEY, timeout_s=kwargs.pop("timeout_s", 10.0)) as client:
        return cx.sync(led, client, retry=kwargs.pop("retry", FAST), **kwargs)


def ledger_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM events ORDER BY seq")]


def acked_seq(path: Path, fake: FakeConvex) -> int:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT acked_seq FROM convex_sync WHERE target = ?", (fake.url,)).fetchone()
    return row[0] if row else 0


def dump_except_sync_marks(path: Path) -> list[str]:
    """Every table's rows and every schema object, except the convex_sync table."""
    with sqlite3.connect(path) as db:
        lines = [line for line in db.iterdump() if "convex_sync" not in line]
    return lines


def assert_per_session_order(stored: list[dict[str, Any]]) -> None:
    seqs: dict[str, list[int]] = defaultdict(list)
    for event in stored:
        seqs[event["session"]].append(event["seq"])
    for session, got in seqs.items():
        assert got == sorted(got), f"session {session} arrived out of order"


def cli(*args: str, key: str | None = None):  # noqa: ANN201 - typer's Result
    """Run ``mmx ARGS`` in-process (CliRunner) with CONVEX_DEPLOY_KEY set to ``key`` or unset."""
    return CliRunner().invoke(app, list(args), env={"CONVEX_DEPLOY_KEY": key})


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CONVEX_DEPLOY_KEY", None)
    env.update(extra)
    return env


# -- exactly once --------------------------------------------------------------------------


def test_ten_thousand_events_arrive_exactly_once_in_ledger_order(tmp_path, fake):
    events = shoot_events(10_000)
    path = make_ledger(tmp_path / "ledger.sqlite", events)
    seen: list[cx.SyncProgress] = []

    progress = run_sync(path, fake, on_progress=lambda p: seen.append(cx.SyncProgress(**{**p.as_dict(), "retrying": None})))

    assert fake.event_ids() == ledger_ids(path) == [e.id for e in events]
    assert progress.sent == 10_000 and progress.batches == 20 and progress.acked_seq == 10_000
    assert max(fake.batch_sizes()) == 500
    assert acked_seq(path, fake) == 10_000
    assert seen[0].behind_events == 10_000 and seen[-1].behind_events == 0
    # the stored envelope is the event's own
    first = fake.events()[0]
    assert first == {k: events[0].to_dict()[k] for k in cx.ENVELOPE_FIELDS}

    # a second run finds nothing to send: one call without events checks the key, nothing more
    calls = len(fake.outcomes())
    again = run_sync(path, fake)
    assert again.sent == 0 and fake.outcomes()[calls:] == ["success"] and len(fake.event_ids()) == 10_000


def test_batches_respect_the_event_count_and_byte_limits(tmp_path, fake):
    producer = Producer("serve", session="01SESSIONBYTES")
    big = [producer.make("still.marker", {"label": "x" * 20_000}) for _ in range(40)]
    path = make_ledger(tmp_path / "ledger.sqlite", big + shoot_events(300, sessions=1))

    run_sync(path, fake, batch_size=50, max_batch_bytes=100_000)

    sizes = fake.batch_sizes()
    assert sum(sizes) == 340 and max(sizes) <= 50
    assert sizes[0] == 4  # four 20 kB events fill the 100 kB budget
    assert fake.event_ids() == ledger_ids(path)


def test_a_413_halves_the_batch_until_it_fits(tmp_path):
    server = FakeConvex(tmp_path / "state.sqlite", free_port(), key=KEY, max_args_bytes=30_000).start()
    try:
        producer = Producer("serve", session="01SESSIONTOOLARGE")
        events = [producer.make("still.marker", {"label": "y" * 2_000}) for _ in range(100)]
        path = make_ledger(tmp_path / "ledger.sqlite", events)
        progress = run_sync(path, server)  # 100 × 2 kB in one 4 MiB call is too much for this server
        assert server.event_ids() == [e.id for e in events]
        assert "too_large" in server.outcomes()
        assert max(server.batch_sizes()) <= 14 and progress.sent == 100
    finally:
        server.stop()


def test_sync_resumes_after_the_last_acknowledged_event(tmp_path, fake):
    events = shoot_events(1200)
    path = make_ledger(tmp_path / "ledger.sqlite", events[:700])
    run_sync(path, fake)
    assert acked_seq(path, fake) == 700
    with Ledger.open(path) as led:
        led.write(events[700:])
    progress = run_sync(path, fake)
    assert progress.sent == 500
    assert fake.event_ids() == [e.id for e in events]
    assert sum(fake.stored_batches()) == 1200  # nothing was sent twice


# -- failures ------------------------------------------------------------------------------


def test_server_killed_mid_sync_and_restarted_everything_arrives_once_in_order(tmp_path, fake):
    events = shoot_events(3000)
    path = make_ledger(tmp_path / "ledger.sqlite", events)
    # the 11th call stores its batch and the server dies before answering (the worst moment)
    fake.inject(*[{"kind": "pass"}] * 10, {"kind": "commit_then_exit"})
    proc = subprocess.Popen(
        [*MMX, "ledger", "sync", "--convex", fake.url, "--ledger", str(path), "--batch", "50", "--timeout", "5"],
        env=cli_env(CONVEX_DEPLOY_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert fake.wait_exit(timeout=30) == 3
        stored_at_crash = len(fake.event_ids())
        assert stored_at_crash == 550
        time.sleep(0.3)  # the client keeps retrying against a closed port
        fake.start()
        # let it get going again, then SIGKILL the server at an arbitrary point
        deadline = time.monotonic() + 30
        while len(fake.event_ids()) < 1500 and time.monotonic() < deadline:
            time.sleep(0.02)
        fake.kill()
        time.sleep(0.3)
        fake.start()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    ids = fake.event_ids()
    assert len(ids) == len(set(ids)) == 3000
    assert ids == [e.id for e in events]  # ledger order, so every session's order too
    assert_per_session_order(fake.events())
    assert acked_seq(path, fake) == 3000
    assert b"retrying" in err
    # the batch stored at the crash was sent again and skipped by id, not stored twice
    assert sum(fake.stored_batches()) >= 3050


def test_5xx_and_timeouts_are_retried(tmp_path, fake):
    events = shoot_events(1000)
    path = make_ledger(tmp_path / "ledger.sqlite", events)
    fake.inject(
        {"kind": "status", "status": 503},
        {"kind": "status", "status": 500},
        {"kind": "hang", "seconds": 2.0},  # longer than the client's timeout
        {"kind": "commit_then_status", "status": 502},  # stored, but the answer is lost
        {"kind": "status", "status": 429},
    )
    progress = run_sync(path, fake, timeout_s=0.5)

    # one retry per fault; on a busy machine an ordinary call may also outlast the 0.5 s
    # timeout and cost one more (harmless: the mutation deduplicates by event id)
    assert progress.retries >= 5
    assert fake.event_ids() == [e.id for e in events]
    outcomes = fake.outcomes()
    assert outcomes[:2] == ["status:503", "status:500"]
    assert "committed:commit_then_status" in outcomes
    assert acked_seq(path, fake) == 1000
    with sqlite3.connect(path) as db:  # a later success clears the recorded error
        assert db.execute("SELECT last_error FROM convex_sync").fetchone()[0] is None


def test_an_unreachable_deployment_gives_up_after_retry_for(tmp_path):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(10))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Ledger.open(path) as led, cx.ConvexClient(url, KEY, timeout_s=1.0) as client:
        with pytest.raises(TemporaryFailure, match=r"ConnectError.*still failing after"):
            cx.sync(led, client, retry=cx.RetryPolicy(base_s=0.01, cap_s=0.05, retry_for_s=0.3))
        state = cx.read_state(led.conn, client.url)
    assert state.acked_seq == 0 and "ConnectError" in (state.last_error or "")


def test_a_function_error_is_reported_once_and_nothing_after_it_is_marked(tmp_path, fake):
    events = shoot_events(1000)
    producer = Producer("serve", session=events[0].session)
    # Convex reserves object keys starting with "$": the mutation refuses this event
    events[700] = producer.make("still.marker", {"$label": "bad"})
    path = make_ledger(tmp_path / "ledger.sqlite", events)
    before = dump_except_sync_marks(path)

    result = cli("ledger", "sync", "--convex", fake.url, "--ledger", str(path), key=KEY)

    err = result.stderr
    assert result.exit_code == 65, err
    assert "refused the batch of local seq 501–1000" in err
    assert "Field name $label starts with a '$'" in err
    assert "Hint:" in err
    assert fake.outcomes() == ["success", "function_error"]  # no retry loop
    assert fake.event_ids() == [e.id for e in events[:500]]
    assert acked_seq(path, fake) == 500
    with sqlite3.connect(path) as db:
        assert "Field name $label" in db.execute("SELECT last_error FROM convex_sync").fetchone()[0]
    assert dump_except_sync_marks(path) == before

    # run again: the same single refused call, then the same exit
    again = cli("ledger", "sync", "--convex", fake.url, "--ledger", str(path), key=KEY)
    assert again.exit_code == 65
    assert fake.outcomes() == ["success", "function_error", "function_error"]


def test_a_function_error_answered_with_http_200_is_one_too(tmp_path):
    server = FakeConvex(tmp_path / "state.sqlite", free_port(), key=KEY, error_status=200).start()
    try:
        server.inject({"kind": "function_error", "message": "Uncaught Error: the studio is read-only"})
        path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(20))
        with pytest.raises(cx.ConvexFunctionError, match="the studio is read-only") as info:
            run_sync(path, server)
        assert info.value.exit_code == 65
        assert server.outcomes() == ["function_error"]
        assert acked_seq(path, server) == 0
    finally:
        server.stop()


def test_wrong_deploy_key_is_a_clear_error_with_exit_69(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(50))
    before = dump_except_sync_marks(path)

    result = cli("ledger", "sync", "--convex", fake.url, "--ledger", str(path), key="prod:test|wrong")

    err = result.stderr
    assert result.exit_code == 69, err
    assert result.stdout == ""
    assert (
        f"Error: Convex at {fake.url} refused the deploy key "
        "(HTTP 401: BadAdminKey: The provided admin key was invalid for this instance)"
    ) in " ".join(err.split())
    assert "Hint: set the deploy key of this deployment" in err
    assert fake.outcomes() == ["auth"]  # not retried
    assert fake.event_ids() == []
    assert acked_seq(path, fake) == 0
    assert dump_except_sync_marks(path) == before


def test_missing_deploy_key_and_unknown_function(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(5))
    result = cli("ledger", "sync", "--convex", fake.url, "--ledger", str(path), "--deploy-key-env", "STUDIO_KEY")
    assert result.exit_code == 69
    assert "Error: no Convex deploy key: $STUDIO_KEY is not set" in result.stderr
    assert fake.outcomes() == []

    class WrongPath(cx.ConvexClient):
        def ingest(self, body: bytes) -> Any:
            return super().ingest(body.replace(b"production:ingestEvents", b"production:ingest"))

    with Ledger.open(path) as led, WrongPath(fake.url, KEY) as client:
        with pytest.raises(ServiceUnavailableError, match="HTTP 404: FunctionNotFound") as info:
            cx.sync(led, client, retry=FAST)
    assert "npx convex deploy" in (info.value.hint or "")


def test_the_ledger_is_never_modified_except_the_sync_marks(tmp_path, fake):
    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(3000))
    before = dump_except_sync_marks(path)
    fake.inject({"kind": "status", "status": 503}, {"kind": "commit_then_status", "status": 500})
    run_sync(path, fake, batch_size=200)
    after = dump_except_sync_marks(path)
    assert after == before
    assert len(before) > 3000  # the dump holds the events and projections, not an empty file
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT target, acked_seq, events_acked FROM convex_sync").fetchall() == [(fake.url, 3000, 3000)]


def test_url_is_checked_and_normalized():
    assert cx.normalize_url("HTTPS://Happy-Otter-123.convex.cloud/") == "https://happy-otter-123.convex.cloud"
    with pytest.raises(ServiceUnavailableError, match="not a Convex deployment URL"):
        cx.normalize_url("happy-otter-123.convex.cloud")


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = cx.RetryPolicy(base_s=0.5, cap_s=30.0)
    for attempt in range(12):
        bound = min(30.0, 0.5 * 2**attempt)
        delays = {policy.delay(attempt) for _ in range(20)}
        assert all(bound / 2 <= d <= bound for d in delays)
        assert len(delays) > 1  # jittered


# -- follow ----------------------------------------------------------------------------------


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_follow_picks_up_new_events(tmp_path, fake):
    events = shoot_events(900)
    path = make_ledger(tmp_path / "ledger.sqlite", events[:300])
    proc = subprocess.Popen(
        [*MMX, "ledger", "sync", "--convex", fake.url, "--ledger", str(path), "--follow"],
        env=cli_env(CONVEX_DEPLOY_KEY=KEY), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert wait_until(lambda: len(fake.event_ids()) == 300)
        with Ledger.open(path) as led:
            led.write(events[300:600])
            assert wait_until(lambda: len(fake.event_ids()) == 600)
            led.write(events[600:])
        assert wait_until(lambda: len(fake.event_ids()) == 900)
        assert proc.poll() is None  # still following
    finally:
        proc.send_signal(signal.SIGTERM)  # ends a --follow run cleanly
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert fake.event_ids() == [e.id for e in events]
    assert acked_seq(path, fake) == 900
    assert b"behind" in err
    summary = orjson.loads(out)
    assert summary["acked_seq"] == 900 and summary["sent"] == 900 and summary["behind_events"] == 0


# -- push --sync-convex and sessions ----------------------------------------------------------


def encode_lines(events: list[Event]) -> bytes:
    return b"".join(e.encode() + b"\n" for e in events)


def test_push_sync_convex_records_locally_and_remotely(tmp_path, fake):
    events = shoot_events(500)
    path = tmp_path / "ledger.sqlite"
    proc = subprocess.Popen(
        [*MMX, "ledger", "push", "-", "--ledger", str(path), "--sync-convex", fake.url],
        env=cli_env(CONVEX_DEPLOY_KEY=KEY), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(encode_lines(events[:200]))
        proc.stdin.flush()
        # the push is still running (stdin open): the events reach Convex as they commit
        assert wait_until(lambda: len(fake.event_ids()) == 200)
        assert proc.poll() is None
        out, err = proc.communicate(encode_lines(events[200:]), timeout=60)  # then EOF
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert ledger_ids(path) == fake.event_ids() == [e.id for e in events]
    assert acked_seq(path, fake) == 500


def test_push_sync_convex_with_a_wrong_key_still_stores_locally(tmp_path, fake):
    events = shoot_events(100)
    path = tmp_path / "ledger.sqlite"
    result = subprocess.run(
        [*MMX, "ledger", "push", "-", "--ledger", str(path), "--sync-convex", fake.url],
        env=cli_env(CONVEX_DEPLOY_KEY="wrong"), input=encode_lines(events), capture_output=True, timeout=60,
    )  # fmt: skip
    err = result.stderr.decode()
    assert result.returncode == 69, err
    assert "refused the deploy key" in err
    assert "the push goes on storing locally" in err
    assert ledger_ids(path) == [e.id for e in events]
    assert fake.event_ids() == []


def sessions_json(path: Path) -> dict[str, dict[str, Any]]:
    result = cli("ledger", "sessions", "--json", "--ledger", str(path))
    assert result.exit_code == 0, result.stderr
    rows = [orjson.loads(line) for line in result.stdout.splitlines()]
    return {row["session"]: row for row in rows}


def test_sessions_show_the_sync_state(tmp_path, fake):
    events = shoot_events(40, sessions=2)
    first, second = events[0].session, events[1].session
    path = make_ledger(tmp_path / "ledger.sqlite", events)
    assert {s["convex_sync"] for s in sessions_json(path).values()} == {"never synced"}

    run_sync(path, fake)
    with Ledger.open(path) as led:  # three more events of the first session, not synced yet
        led.write([Producer("serve", session=first).make("still.marker", {"label": f"m{i}"}) for i in range(3)])
    state = sessions_json(path)
    assert state[first]["convex_sync"] == "3 to sync"
    assert state[second]["convex_sync"] == "synced"

    run_sync(path, fake)
    assert {s["convex_sync"] for s in sessions_json(path).values()} == {"synced"}


def test_a_stop_during_retries_marks_nothing_unacknowledged(tmp_path, fake):
    import threading

    path = make_ledger(tmp_path / "ledger.sqlite", shoot_events(100))
    fake.inject(*[{"kind": "status", "status": 503}] * 50)
    stop = threading.Event()

    def on_progress(progress: cx.SyncProgress) -> None:
        if progress.retries >= 3:
            stop.set()

    progress = run_sync(path, fake, stop=stop, on_progress=on_progress)
    assert progress.sent == 0 and progress.retries == 3
    assert acked_seq(path, fake) == 0
    assert fake.event_ids() == []
