"""`mmx ghost-train`: sessions whose operator follows a known rule train a policy that knows it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.events import encode
from mmx.ghost.config import load_policy
from mmx.ghost.simulate import rule_operator_session
from mmx.ghost.supervision import collect
from mmx.ghost.train import MIN_DECISIONS, fit, folds_of, pairs, _pick

from .pose_views import TRAINING_VIEWS, joints_of, shifted

pytestmark = pytest.mark.usefixtures("shared_data")

T0 = 1_800_000_000.0


def framing_sessions(n: int, *, first: int = 0, duration_s: float = 60.0) -> list[tuple[str, list]]:
    """``n`` sessions on the real pose (three crops of the shared recording, each session
    another stretch of it) whose operator always cuts to the best-framed camera and answers
    proposals by the same rule."""
    out = []
    for i in range(first, first + n):
        t0 = T0 + i * 1000.0
        views = shifted(TRAINING_VIEWS, i * 3.1)
        session = f"take-{i:02d}"
        events = rule_operator_session({c: joints_of(v, t0) for c, v in views.items()}, t0=t0, duration_s=duration_s,
                                       rule="framing", seed=i, session=session, proposals_every_s=7.0)  # fmt: skip
        out.append((session, events))
    return out


def write_captures(root, sessions) -> None:
    for session, events in sessions:
        cap = root / session
        cap.mkdir(parents=True)
        (cap / "session.json").write_text(orjson.dumps({"session": session}).decode())
        (cap / "events.jsonl").write_bytes(b"".join(encode(e) for e in events))


@pytest.fixture(scope="module")
def framing_capture(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("train") / "sessions"
    write_captures(root, framing_sessions(10))
    return root


def test_c_a_framing_operator_trains_a_policy_that_agrees_with_them(framing_capture, tmp_path):
    """(c) Ten sessions of an operator who always takes the best-framed camera: the trained
    policy's held-out camera agreement beats the default policy's by 20 points or more,
    framing weighs most, and the file loads with `mmx ghost --policy`."""
    out = tmp_path / "trained.toml"
    result = CliRunner().invoke(app, ["ghost-train", str(framing_capture), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    held = report["heldout"]
    assert held["by"] == "session" and held["folds"] == 5 and held["cut_moments"] >= 20
    assert held["camera_agreement"] >= held["base_camera_agreement"] + 0.20, held
    trained = load_policy(out)
    w = trained.weights
    assert max(("presence", "framing", "motion", "stillness"), key=lambda f: getattr(w, f)) == "framing"
    assert trained.provenance["heldout"] == held
    assert "held-out camera agreement" in result.stderr and "held out by session" in result.stderr
    # provenance: every input with its sha256 and sessions, the counts, the raw model
    inputs = trained.provenance["inputs"]
    assert len(inputs) == 10 and all(i["kind"] == "capture" and len(i["sha256"]) == 64 and i["sessions"] == 1 for i in inputs)
    counts = trained.provenance["counts"]
    assert counts["decisions"] == counts["cuts_used"] + counts["proposals_used"] >= MIN_DECISIONS
    assert counts["accepted"] > 0 and counts["vetoed"] > 0
    assert trained.provenance["policy_sha256"] == trained.digest()
    # the same inputs give the same file
    again = tmp_path / "again.toml"
    assert CliRunner().invoke(app, ["ghost-train", str(framing_capture), "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == out.read_bytes()
    # on eight takes neither saw (the next stretches of the recording), the ghost scoring with
    # the trained weights picks the operator's camera far more often than with the defaults
    fresh = tmp_path / "fresh"
    write_captures(fresh, framing_sessions(8, first=10))
    moments = collect([fresh]).cuts
    assert len(moments) >= 20
    picks = {name: sum(_pick(m, np.array(cfg.weights.as_tuple())) == m.chosen for m in moments) / len(moments)
             for name, cfg in (("trained", trained), ("default", load_policy()))}  # fmt: skip
    assert picks["trained"] >= picks["default"] + 0.20, picks


def test_training_reads_ledgers_like_capture_directories(framing_capture, tmp_path):
    from mmx.events import read_events
    from mmx.ledger import Ledger

    ledger = tmp_path / "ledger.sqlite"
    with Ledger.open(ledger) as lg:
        for cap in sorted(framing_capture.iterdir()):
            with open(cap / "events.jsonl", "rb") as fp:
                lg.write(list(read_events(fp)))
    by_dir = collect([framing_capture])
    by_ledger = collect([ledger])
    assert by_ledger.sources[0].kind == "ledger" and by_ledger.sources[0].sessions == 10
    assert by_ledger.counts == by_dir.counts
    assert [m.chosen for m in by_ledger.cuts] == [m.chosen for m in by_dir.cuts]
    out = tmp_path / "from-ledger.toml"
    assert CliRunner().invoke(app, ["ghost-train", str(ledger), "-o", str(out)]).exit_code == 0
    direct = tmp_path / "from-dirs.toml"
    assert CliRunner().invoke(app, ["ghost-train", str(framing_capture), "-o", str(direct)]).exit_code == 0
    assert load_policy(out) == load_policy(direct)


def test_too_little_supervision_is_refused(tmp_path):
    few = tmp_path / "few"
    write_captures(few, framing_sessions(2, first=40, duration_s=20.0))
    result = CliRunner().invoke(app, ["ghost-train", str(few), "-o", str(tmp_path / "p.toml")])
    assert result.exit_code == 65
    assert "too little supervision to train on:" in result.stderr
    assert f"at least {MIN_DECISIONS} in at least 2 sessions are needed" in result.stderr
    assert not (tmp_path / "p.toml").exists()
    # one long session is not enough either: nothing to hold out
    one = tmp_path / "one"
    write_captures(one, framing_sessions(1, first=50, duration_s=240.0))
    result = CliRunner().invoke(app, ["ghost-train", str(one), "-o", str(tmp_path / "p.toml")])
    assert result.exit_code == 65 and "in 1 session(s)" in result.stderr
    # a recording without pose: every decision unusable, and the hint says why
    nopose = tmp_path / "nopose"
    sessions = [(s, [e for e in ev if e.type != "pose.sample"]) for s, ev in framing_sessions(3, first=60)]
    write_captures(nopose, sessions)
    result = CliRunner().invoke(app, ["ghost-train", str(nopose), "-o", str(tmp_path / "p.toml")])
    assert result.exit_code == 65 and "with 0 pose samples" in result.stderr
    missing = CliRunner().invoke(app, ["ghost-train", str(tmp_path / "absent"), "-o", "-"])
    assert missing.exit_code == 66


def test_bad_lines_are_reported_and_skipped(framing_capture, tmp_path):
    import shutil

    root = tmp_path / "sessions"
    shutil.copytree(framing_capture, root)
    target = root / "take-03" / "events.jsonl"
    lines = target.read_bytes().splitlines(keepends=True)
    target.write_bytes(b"".join(lines[:10]) + b"{broken\n" + b"".join(lines[10:]))
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(app, ["ghost-train", str(root), "-o", str(out)])
    assert result.exit_code == 65
    assert "line 11: not JSON" in result.stderr
    assert out.exists() and load_policy(out).provenance["counts"]["bad_lines"] == 1


def test_policy_to_stdout_and_json_needs_a_file(framing_capture):
    result = CliRunner().invoke(app, ["ghost-train", str(framing_capture), "-o", "-"])
    assert result.exit_code == 0
    assert result.stdout.startswith("# mmx ghost-train") and "[provenance]" in result.stdout
    bad = CliRunner().invoke(app, ["ghost-train", str(framing_capture), "-o", "-", "--json"])
    assert bad.exit_code == 2


def test_the_regression_finds_known_weights_and_folds_keep_sessions_whole():
    rng = np.random.default_rng(3)
    true_w = np.array([0.5, -2.0, 3.0, 0.0])
    x = rng.uniform(-1, 1, size=(4000, 4))
    y = (rng.uniform(size=4000) < 1 / (1 + np.exp(-(x @ true_w + 0.7)))).astype(float)
    model = fit(np.column_stack([x, np.ones(len(x))]), y, l2=0.01)
    assert model.w == pytest.approx(true_w, abs=0.25) and model.b == pytest.approx(0.7, abs=0.15)
    folds = folds_of([f"s{i}" for i in range(7)], 5)
    assert sorted(s for f in folds for s in f) == [f"s{i}" for i in range(7)] and len(folds) == 5
    assert pairs([], [])[0].shape == (0, 5)
