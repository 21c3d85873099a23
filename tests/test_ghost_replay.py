"""Replay and evaluation of the ghost policy over a generated capture directory."""

from __future__ import annotations

import subprocess

import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.events import encode
from mmx.ghost.policy import Policy, load_policy
from mmx.ghost.replay import ReplayResult, evaluate, match_cuts, replay, shot_distribution, shot_lengths
from mmx.ghost.simulate import beat_grid_npz, pose_joints, session_events

from .conftest import MMX

TRACK = "a" * 64
T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A capture directory of a 60 s generated session (3 cameras, 120 BPM) and its features."""
    root = tmp_path_factory.mktemp("ghost-replay")
    cap = root / "sessions" / "sim-session"
    cap.mkdir(parents=True)
    events = session_events(t0=T0, duration_s=60.0, track=TRACK, bpm=120.0)
    with open(cap / "events.jsonl", "wb") as fp:
        for e in events:
            fp.write(encode(e))
    (cap / "session.json").write_text('{"session": "sim-session"}')
    feats = root / "features"
    feats.mkdir()
    beat_grid_npz(feats / f"generated-{TRACK[:12]}.npz", track=TRACK, bpm=120.0)
    return cap, feats, events


def test_replay_is_deterministic_and_matches_the_operator(capture):
    cap, feats, events = capture
    a = replay(cap, config=load_policy(), features_dir=feats)
    b = replay(cap, config=load_policy(), features_dir=feats)
    assert [encode(e) for e in a.events] == [encode(e) for e in b.events]
    ra, rb = evaluate(a), evaluate(b)
    assert orjson.dumps(ra) == orjson.dumps(rb)
    assert ra["input_events"] == len(events)
    n_ref = sum(1 for e in events if e.type == "director.cut")
    assert ra["reference_cuts"] == n_ref >= 8
    # the operator cut to each motion burst on its first beat; the ghost finds the same cuts
    assert ra["recall"] >= 0.85
    assert ra["precision"] >= 0.8
    assert ra["camera_agreement"] == 1.0
    assert ra["on_beat_share_with_grid"] == 1.0
    assert ra["shots_ghost"]["count"] == ra["ghost_cuts"]
    assert ra["shots_ghost"]["min_s"] >= load_policy().rules.min_shot_s
    assert sum(ra["shots_ghost"]["histogram"].values()) == ra["ghost_cuts"]
    # the output is events: proposals with ids, decisions, simulated cuts on beats
    types = [e.type for e in a.events]
    assert types.count("ghost.proposed") == ra["proposals"]
    cuts = [e for e in a.events if e.type == "director.cut"]
    assert len(cuts) == ra["ghost_cuts"] and all(c.data["simulated"] for c in cuts)
    for c in cuts[1:]:  # the first cut opens before the music starts
        k = (c.ts - (T0 + 1.0)) / 0.5
        assert k == pytest.approx(round(k), abs=1e-6)
    assert all(e.src == "ghost" and e.session == "sim-session" for e in a.events)


def test_a_different_policy_gives_a_different_report(capture):
    cap, feats, _ = capture
    base = evaluate(replay(cap, config=load_policy(), features_dir=feats))
    lazy = evaluate(replay(cap, config=load_policy().with_rules(min_shot_s=10.0, max_shot_s=30.0), features_dir=feats))
    assert lazy["ghost_cuts"] < base["ghost_cuts"]
    assert lazy["recall"] < base["recall"]
    assert lazy["shots_ghost"]["min_s"] >= 10.0


def test_manual_replay_shadows_the_recorded_cuts(capture):
    cap, feats, _ = capture
    # this operator cuts 10 times a minute, beyond the default budget of 6 proposals a minute
    roomy = load_policy().with_rules(max_proposals_per_min=12)
    r = replay(cap, config=roomy, features_dir=feats, mode="manual")
    rep = evaluate(r)
    assert not any(e.type == "director.cut" for e in r.events)
    assert rep["mode"] == "manual" and rep["ghost_cuts"] == rep["proposals"]
    assert rep["recall"] >= 0.85
    # with the default budget the shadow proposes no more than 6 in any minute
    capped = replay(cap, config=load_policy(), features_dir=feats, mode="manual")
    times = [e.ts for e in capped.events if e.type == "ghost.proposed"]
    assert max(sum(1 for u in times if t <= u < t + 60) for t in times) <= 6
    assert evaluate(capped)["recall"] < rep["recall"]


def test_without_features_proposals_are_off_the_beat_grid(capture):
    cap, _, _ = capture
    r = replay(cap, config=load_policy(), features_dir=None)
    rep = evaluate(r)
    assert rep["proposals_with_beat_grid"] == 0 and rep["on_beat_share"] == 0.0
    assert any("no --features directory given: proposing on own clock" in n for n in r.notes)


def test_metrics_on_known_cuts():
    ref = [(0.0, "a"), (10.0, "b"), (20.0, "c")]
    pred = [(0.3, "a"), (10.6, "b"), (19.9, "x"), (30.0, "d")]
    assert match_cuts(ref, pred, 0.5) == [(0, 0), (2, 2)]
    result = ReplayResult(mode="autopilot", cuts=[(t, cam, "operator", None) for t, cam in ref], predicted=pred,
                          beat_offsets_s=[0.0, 0.069, 0.2, None], start=0.0, end=40.0, stats={"proposals": 4})  # fmt: skip
    assert result.reference == ref
    rep = evaluate(result)
    assert rep["matched"] == 2
    assert rep["precision"] == 0.5
    assert rep["recall"] == round(2 / 3, 4)
    assert rep["f1"] == round(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 4)
    assert rep["camera_agreement"] == 0.5
    assert rep["on_beat_share"] == 0.5 and rep["on_beat_share_with_grid"] == round(2 / 3, 4)
    assert shot_lengths(pred, 40.0) == pytest.approx([10.3, 9.3, 10.1, 10.0])
    d = shot_distribution([1.0, 3.0, 5.0, 13.0, 25.0])
    assert d["count"] == 5 and d["median_s"] == 5.0 and d["min_s"] == 1.0 and d["max_s"] == 25.0
    assert d["histogram"] == {"0-2s": 1, "2-4s": 1, "4-8s": 1, "8-12s": 0, "12-20s": 1, "20s+": 1}


def test_one_match_per_cut():
    # two predictions near one reference cut: only one counts
    assert match_cuts([(5.0, "a")], [(4.8, "a"), (5.1, "a")], 0.5) == [(0, 1)]


def test_cli_eval_json_and_bad_lines(capture, tmp_path):
    cap, feats, _ = capture
    runner = CliRunner()
    result = runner.invoke(app, ["ghost", "--replay", str(cap), "--features", str(feats), "--eval", "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert report["f1"] > 0.8
    # a broken line: reported with its number, the rest replayed, exit 65
    lines = (cap / "events.jsonl").read_bytes().splitlines(keepends=True)
    broken = tmp_path / "events.jsonl"
    broken.write_bytes(b"".join(lines[:5]) + b"{not json\n" + b"".join(lines[5:]))
    bad = runner.invoke(app, ["ghost", "--replay", str(broken), "--features", str(feats), "--eval", "--json"])
    assert bad.exit_code == 65
    assert "line 6: not JSON" in bad.stderr
    assert orjson.loads(bad.stdout.strip().splitlines()[-1])["bad_lines"] == 1
    assert orjson.loads(bad.stdout.strip().splitlines()[-1])["ghost_cuts"] == report["ghost_cuts"]


def test_cli_replay_events_and_errors(capture, tmp_path):
    cap, feats, _ = capture
    runner = CliRunner()
    out = runner.invoke(app, ["ghost", "--replay", str(cap), "--features", str(feats)])
    assert out.exit_code == 0
    events = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert events and {e["type"] for e in events} >= {"ghost.proposed", "ghost.accepted", "director.cut"}
    missing = runner.invoke(app, ["ghost", "--replay", str(tmp_path)])
    assert missing.exit_code == 66
    assert "is not a capture directory: no events.jsonl" in missing.stderr
    nomode = runner.invoke(app, ["ghost", "--replay", str(cap), "--mode", "ghost"])
    assert nomode.exit_code == 65
    assert "replay simulates autopilot, manual or recorded, not 'ghost'" in nomode.stderr
    noreplay = runner.invoke(app, ["ghost", "--eval"])
    assert noreplay.exit_code == 2


def test_replay_from_stdin_through_a_real_pipe(capture):
    cap, feats, _ = capture
    with open(cap / "events.jsonl", "rb") as fp:
        proc = subprocess.run([*MMX, "ghost", "--replay", "-", "--features", str(feats), "--eval", "--json"],
                              stdin=fp, capture_output=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    direct = evaluate(replay(cap, config=load_policy(), features_dir=feats))
    assert orjson.loads(proc.stdout) == orjson.loads(orjson.dumps(direct))


# ------------------------------------------------------------------ the fast pose path
def _pose_line(t: float, **changes) -> bytes:
    obj = {"v": 1, "id": f"p-{t:.3f}", "seq": 1, "ts": t, "type": "pose.sample", "session": "s", "src": "serve",
           "data": {"camera": "cam-2", "t": t, "joints": pose_joints(t, motion=1.0)}}  # fmt: skip
    for key, value in changes.items():
        if key.startswith("data_"):
            obj["data"][key[5:]] = value
        else:
            obj[key] = value
    return orjson.dumps(obj)


def test_fast_pose_path_means_what_the_general_decoder_means(tmp_path):
    """Lines the typed fast path must refuse (or take) give the same replay, errors and line
    numbers as the general decoder, while clean pose lines do take the fast path."""
    from mmx.events import read_events
    from mmx.ghost.reader import PoseLine, read_replay
    from mmx.ghost.replay import replay_events

    head = session_events(t0=T0, duration_s=20.0, track=TRACK, bpm=120.0)
    joints = pose_joints
    makers = [
        lambda t: _pose_line(t, data_joints={**joints(t), "nose": [0.5, 1.2, 0.9]}),  # a joint out of the frame
        lambda t: _pose_line(t, data_joints={**joints(t), "neck": [0.5, 0.5, 1.5]}),  # confidence above 1
        lambda t: _pose_line(t, data_joints={**joints(t), "root": [True, 0.5, 0.9]}),  # a boolean is no number
        lambda t: _pose_line(t, data_joints={**joints(t), "leftHip": [0.5, 0.5]}),  # two numbers
        lambda t: _pose_line(t, data_joints={**joints(t), "tail": [0.5, 0.5, 0.9]}),  # unknown joint: ignored
        lambda t: _pose_line(t, data_joints={**joints(t), "nose": None}),  # null joint: not seen
        lambda t: _pose_line(t, data_joints={**joints(t), "nose": [0, 1, 1]}),  # integers
        lambda t: _pose_line(t, data_joints=None),
        lambda t: _pose_line(t, data_extra={"any": "thing"}),
        lambda t: _pose_line(t, data_device_ts=t - 0.2, data_clock_offset_s=0.2),  # what mmx serve adds
        lambda t: _pose_line(t, extra_field=[1, 2]),
        lambda t: _pose_line(t, data_t=True),  # bad line: t must be a number
        lambda t: _pose_line(t, seq=-1),  # bad line
        lambda t: _pose_line(t, id=""),  # bad line
        lambda t: _pose_line(t, src=None),  # bad line
        lambda t: _pose_line(t, data_camera=3),  # bad line
        lambda t: _pose_line(t, data_joints=[1, 2]),  # bad line: joints must be an object
        lambda t: _pose_line(t)[:-1] + b',"x":1e999}',  # bad line: infinity is not JSON
        lambda t: _pose_line(t)[:-1] + b',"x":"\xff"}',  # bad line: not UTF-8
        lambda t: _pose_line(t)[:-1] + b',"x":"\\ud800"}',  # bad line: a lone surrogate
        lambda t: _pose_line(t)[:-1] + b',"x":"caf\\u00e9"}',  # an escape: the general path
        lambda t: _pose_line(t)[:-1] + b',"data":{"camera":"cam-3","t":%r}}' % t,  # a repeated key: the last counts
        lambda t: b"  " + _pose_line(t) + b"  ",
    ]
    # after the session (cam-2's samples keep their time order), then the session once more
    # shifted by a minute so the policy runs on after them
    later = [encode(e) for e in session_events(t0=T0 + 60.0, duration_s=20.0, track=TRACK, bpm=120.0)]
    body = [encode(e) for e in head] + [make(T0 + 21.0 + k / 30) + b"\n" for k, make in enumerate(makers)] + later
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(body))

    fast_errors, slow_errors = [], []
    with open(path, "rb") as fp:
        items = list(read_replay(fp, load_policy().signals, on_error=lambda e: fast_errors.append(str(e))))
    assert sum(isinstance(i, PoseLine) for i in items) > 0.8 * len(body)  # the fast path is taken
    fast = replay(path, config=load_policy(), on_error=lambda e: None)
    with open(path, "rb") as fp:
        slow = replay_events(read_events(fp, on_error=lambda e: slow_errors.append(str(e))), config=load_policy())
    assert fast_errors == slow_errors and len(slow_errors) == 9
    assert [encode(e) for e in fast.events] == [encode(e) for e in slow.events]
    assert (fast.input_events, fast.start, fast.end, fast.stats, fast.notes) == (
        slow.input_events, slow.start, slow.end, slow.stats, slow.notes)
    assert fast.bad_lines == 9 and fast.stats["proposals"] >= 4
    # the cameras' signals end the same (dropped joints counted the same way)
    by_fast, by_slow = Policy(load_policy()), Policy(load_policy())
    for item in items:
        if isinstance(item, PoseLine):
            by_fast.feed_pose(item.data.camera, item.data.t, item.joints())
        else:
            by_fast.feed(item)
    with open(path, "rb") as fp:
        for event in read_events(fp, on_error=lambda e: None):
            by_slow.feed(event)

    def signals(policy):
        return {name: (c.signals.samples, c.signals.dropped_joints, c.signals.out_of_order, c.signals.at(policy.now))
                for name, c in policy.cameras.items()}  # fmt: skip

    assert signals(by_fast) == signals(by_slow)
    assert signals(by_slow)["cam-2"][1] == 4
