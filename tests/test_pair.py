"""mmx.dataset.pair / loader / bas: alignment, observed mask, splits, determinism, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
import pytest

import mmx.dataset
from mmx.dataset import bas
from mmx.dataset.pair import (
    PairParams,
    PoseStream,
    assign_splits,
    pair_dataset,
    parse_split,
    resample_pose,
    window_starts,
)

from .pair_fixtures import (
    FPS,
    HOP,
    SR,
    beat_frames_for,
    burst_motion,
    features_item,
    pose_item,
    session_item,
    sway_motion,
    write_features,
    write_inventory,
    write_pose_file,
    write_session,
)


def run_pair(inv: Path, out: Path, **kw) -> tuple[dict, list[str]]:
    problems: list[str] = []
    cue_file = kw.pop("cue_file", None)
    with open(inv, "rb") as fp:
        summary = pair_dataset(fp, out, params=PairParams(**kw), inventory_name=str(inv), cue_file=cue_file,
                               on_problem=lambda e: problems.append(e.message))  # fmt: skip
    return summary, problems


@pytest.fixture
def one_session(tmp_path):
    """A 30 s session, 30 Hz pose on one camera, wrists bursting on every beat of a 120 BPM track.

    The cue starts the track at session second 2 from track position 1.0, so track time =
    session second - 1.0; a 3 s pose gap sits at session seconds 10–13 (track 9–12).
    """

    def make(*, null_in_gaps=False, cameras=("cam-1",)):
        npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0, bpm=120.0)
        beats_s = beat_frames_for(40.0, 120.0) * HOP / SR
        sd = write_session(tmp_path, "S1", cameras=cameras, duration_s=30.0, rate_hz=30.0,
                           cues=[{"track": sha, "at_s": 2.0, "offset_s": 1.0}], motion=burst_motion(beats_s),
                           gaps=[(10.0, 13.0)], null_in_gaps=null_in_gaps)  # fmt: skip
        inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(sd)])
        return inv, sha

    return make


def local_peaks(x: np.ndarray, floor: float) -> np.ndarray:
    i = np.flatnonzero((x[1:-1] > x[:-2]) & (x[1:-1] >= x[2:]) & (x[1:-1] > floor)) + 1
    return i


def test_kinetic_energy_peaks_sit_on_beat_frames(one_session, tmp_path):
    inv, _ = one_session()
    summary, problems = run_pair(inv, tmp_path / "ds")
    assert problems == []
    data = mmx.dataset.load(tmp_path / "ds", "train")
    assert data["audio"].shape[0] == summary["windows"]["train"] > 30
    checked = 0
    for n, row in enumerate(data["samples"]):
        ke = data["dynamics"][n, :, -1]
        t = (row["start_frame"] + np.arange(ke.size)) / FPS
        sampled = (t < 9.0 - 0.6) | (t > 12.0 + 0.6)  # well away from the pose gap (track 9–12 s)
        beats = np.flatnonzero(data["beat"][n])
        peaks = local_peaks(ke, 0.5 * ke.max())
        for p in peaks:  # every strong kinetic-energy peak is on a beat frame (±1 frame)
            if sampled[p]:
                assert np.min(np.abs(beats - p)) <= 1, (n, p, beats)
                checked += 1
        for b in beats:  # every beat away from the window's edges has its peak
            if 3 <= b < ke.size - 3 and sampled[b]:
                assert np.min(np.abs(peaks - b)) <= 1, (n, b, peaks)
    assert checked > 100


def test_a_wrong_clock_offset_moves_the_peaks_off_the_beats(one_session, tmp_path):
    inv, _ = one_session()
    run_pair(inv, tmp_path / "ds", clock_offset_s=0.25)  # half a beat at 120 BPM
    data = mmx.dataset.load(tmp_path / "ds", "train")
    dists = []
    for n in range(data["beat"].shape[0]):
        ke = data["dynamics"][n, :, -1]
        beats = np.flatnonzero(data["beat"][n])
        dists += [np.min(np.abs(beats - p)) for p in local_peaks(ke, 0.5 * ke.max()) if beats.size]
    assert np.median(dists) >= 9  # 0.25 s ≈ 10.8 frames


@pytest.mark.parametrize("null_in_gaps", [False, True], ids=["no-samples", "null-joints"])
def test_observed_mask_around_a_gap(one_session, tmp_path, null_in_gaps):
    inv, _ = one_session(null_in_gaps=null_in_gaps)
    run_pair(inv, tmp_path / "ds", max_gap_s=0.5)
    data = mmx.dataset.load(tmp_path / "ds", "train")
    # real samples: session seconds k/30 outside [10, 13); track time = session second - 1
    last_before, first_after = (299 / 30) - 1.0, 13.0 - 1.0
    saw_unobserved = False
    for row, obs, pose in zip(data["samples"], data["observed"], data["pose"], strict=True):
        t = (row["start_frame"] + np.arange(obs.size)) / FPS
        expected = (t <= last_before + 0.5) | (t >= first_after - 0.5)
        clear = np.abs(t - (last_before + 0.5)) > 1e-6
        np.testing.assert_array_equal(obs[clear], expected[clear])
        assert (pose[~obs] == 0).all()
        assert np.allclose(pose[obs][:, :, 2], 0.9)
        saw_unobserved |= not obs.all()
    assert saw_unobserved


def test_windows_below_min_observed_are_dropped_and_counted(one_session, tmp_path):
    inv, _ = one_session()
    summary, _ = run_pair(inv, tmp_path / "ds", min_observed=0.9)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert summary["dropped"]["observed_below_min"] > 0
    assert manifest["dropped"]["reasons"]["observed_below_min"] == summary["dropped"]["observed_below_min"]
    data = mmx.dataset.load(tmp_path / "ds", "train")
    assert (data["observed"].mean(axis=1) >= 0.9).all()
    full, _ = run_pair(inv, tmp_path / "all", min_observed=0.0)
    assert full["windows"]["train"] == summary["windows"]["train"] + summary["dropped"]["observed_below_min"]


def test_loader_returns_the_documented_shapes(one_session, tmp_path):
    inv, _ = one_session(cameras=("cam-1", "cam-2"))
    summary, _ = run_pair(inv, tmp_path / "ds")
    data = mmx.dataset.load(tmp_path / "ds", "train")
    n, t = summary["windows"]["train"], round(5.0 * FPS)
    assert data["audio"].shape == (n, t, 33) and data["audio"].dtype == np.float32
    assert data["pose"].shape == (n, t, 19, 3) and data["pose"].dtype == np.float32
    assert data["dynamics"].shape == (n, t, 39) and data["dynamics"].dtype == np.float32
    assert data["observed"].shape == (n, t) and data["observed"].dtype == np.bool_
    assert data["beat"].shape == (n, t) and set(np.unique(data["beat"])) == {0.0, 1.0}
    assert len(data["samples"]) == n and {r["camera"] for r in data["samples"]} == {"cam-1", "cam-2"}
    assert data["manifest"]["arrays"]["audio"]["columns"][:2] == ["onset_env", "mfcc[0]"]
    segments = sorted((tmp_path / "ds" / "segments").glob("*.parquet"))
    assert len(segments) == 2  # one session x two cameras x one cue
    # audio rows are the artifact's frames: onset_env column equals the artifact's onset_env
    art = np.load(next((tmp_path / "features").glob("*.npz")))
    row = data["samples"][3]
    np.testing.assert_array_equal(data["audio"][3, :, 0], art["onset_env"][row["start_frame"] : row["start_frame"] + t])
    empty = mmx.dataset.load(tmp_path / "ds", "test")
    assert empty["audio"].shape == (0, t, 33) and empty["pose"].shape == (0, t, 19, 3) and empty["samples"] == []
    with pytest.raises(ValueError):
        mmx.dataset.load(tmp_path / "ds", "holdout")


def test_audio_features_option_selects_columns(one_session, tmp_path):
    inv, _ = one_session()
    run_pair(inv, tmp_path / "ds", audio_features=("onset_env", "mel"))
    data = mmx.dataset.load(tmp_path / "ds", "train")
    assert data["audio"].shape[2] == 129
    assert data["manifest"]["arrays"]["audio"]["columns"][-1] == "mel[127]"


def many_sessions(tmp_path: Path, n: int, *, tracks: int = 1, duration_s: float = 8.0) -> Path:
    items, shas = [], []
    for k in range(tracks):
        npz, sha = write_features(tmp_path / "features", f"song{k}", duration_s=40.0, seed=k)
        items.append(features_item(npz, sha))
        shas.append(sha)
    for i in range(n):
        cues = [{"track": shas[(i + j) % tracks], "at_s": j * duration_s / 2, "offset_s": 0.0} for j in range(min(2, tracks))]
        sd = write_session(tmp_path, f"S{i:02d}", duration_s=duration_s, rate_hz=10.0, cues=cues,
                           motion=sway_motion(0.5))  # fmt: skip
        items.append(session_item(sd))
    return write_inventory(tmp_path / "inv.jsonl", items)


def read_rows(ds: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(ds / "windows.parquet").to_pylist()


def test_split_by_session_keeps_each_session_on_one_side(tmp_path):
    inv = many_sessions(tmp_path, 10)
    run_pair(inv, tmp_path / "a", seed=0)
    rows = read_rows(tmp_path / "a")
    side: dict[str, set[str]] = {}
    for r in rows:
        side.setdefault(r["session"], set()).add(r["split"])
    assert all(len(s) == 1 for s in side.values())
    counts = {s: sum(1 for v in side.values() if v == {s}) for s in ("train", "val", "test")}
    assert counts == {"train": 8, "val": 1, "test": 1}
    listed = {s: (tmp_path / "a" / "splits" / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert {k for k, v in side.items() if v == {"val"}} == set(listed["val"])
    assert sorted(listed["train"] + listed["val"] + listed["test"]) == sorted(side)
    # the same seed gives the same split; another seed another one
    run_pair(inv, tmp_path / "b", seed=0)
    assert (tmp_path / "b" / "splits" / "val.txt").read_text() == (tmp_path / "a" / "splits" / "val.txt").read_text()
    others = set()
    for seed in (1, 2, 3):
        run_pair(inv, tmp_path / f"s{seed}", seed=seed)
        others.add((tmp_path / f"s{seed}" / "splits" / "val.txt").read_text())
    assert others - {(tmp_path / "a" / "splits" / "val.txt").read_text()}


def test_split_by_track_keeps_each_track_on_one_side(tmp_path):
    inv = many_sessions(tmp_path, 6, tracks=3, duration_s=16.0)
    run_pair(inv, tmp_path / "ds", split_by="track", split=(1 / 3, 1 / 3, 1 / 3))
    rows = read_rows(tmp_path / "ds")
    side: dict[str, set[str]] = {}
    for r in rows:
        side.setdefault(r["track"], set()).add(r["split"])
    assert len(side) == 3 and all(len(s) == 1 for s in side.values())
    assert {next(iter(s)) for s in side.values()} == {"train", "val", "test"}
    sessions_in = {r["session"] for r in rows if r["split"] == "train"} & {r["session"] for r in rows if r["split"] == "test"}
    assert sessions_in  # sessions do straddle splits: the unit is the track
    assert sorted((tmp_path / "ds" / "splits" / "train.txt").read_text().split()) == sorted(
        t for t, s in side.items() if s == {"train"})  # fmt: skip


def test_assign_splits_is_deterministic_and_fills_every_side():
    groups = [f"g{i}" for i in range(20)]
    a = assign_splits(groups, (0.8, 0.1, 0.1), 7)
    assert a == assign_splits(list(reversed(groups)), (0.8, 0.1, 0.1), 7)
    assert sorted(a.values()).count("train") == 16
    assert set(assign_splits(["x", "y", "z"], (0.8, 0.1, 0.1), 0).values()) == {"train", "val", "test"}
    assert assign_splits(["x"], (0.8, 0.1, 0.1), 0) == {"x": "train"}


def test_rerun_is_byte_identical_and_a_changed_parameter_changes_the_hash(one_session, tmp_path):
    inv, _ = one_session(cameras=("cam-1", "cam-2"))
    s1, _ = run_pair(inv, tmp_path / "a")
    s2, _ = run_pair(inv, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 5
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # rerunning into the same directory replaces it whole, same bytes again
    before = (tmp_path / "a" / "windows.parquet").read_bytes()
    run_pair(inv, tmp_path / "a")
    assert (tmp_path / "a" / "windows.parquet").read_bytes() == before
    s3, _ = run_pair(inv, tmp_path / "c", stride_s=1.0)
    assert s1["manifest_hash"] == s2["manifest_hash"]
    assert s3["manifest_hash"] != s1["manifest_hash"] and s3["params_hash"] != s1["params_hash"]


def test_a_failed_segment_write_is_an_io_failure_and_leaves_no_partial_dataset(one_session, tmp_path, monkeypatch):
    import errno

    import mmx.dataset.store as store
    from mmx.errors import IOFailure

    inv, _ = one_session(cameras=("cam-1", "cam-2"))

    def full_disk(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.SegmentWriter, "close", full_disk)
    with pytest.raises(IOFailure, match="No space left on device"):
        run_pair(inv, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_manifest_records_inputs_parameters_and_assumptions(one_session, tmp_path):
    inv, sha = one_session()
    run_pair(inv, tmp_path / "ds", window_s=4.0, seed=3)
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["params"]["window_s"] == 4.0 and m["params"]["seed"] == 3
    assert m["frames"]["window_frames"] == round(4.0 * FPS) and m["frames"]["hop_length"] == 512
    assert m["inputs"]["inventory"]["sha256"] == __import__("hashlib").sha256(inv.read_bytes()).hexdigest()
    ev = m["inputs"]["sessions"][0]["events"]
    assert ev["sha256"] == __import__("hashlib").sha256(Path(ev["path"]).read_bytes()).hexdigest()
    assert m["inputs"]["features"][0]["track"] == sha
    assert m["versions"]["numpy"] == np.__version__
    assert m["counts"]["windows"]["train"] > 0
    assert m["beat_alignment"]["sigma_s"] == pytest.approx(0.05)
    assert any("clock_offset_s" in a for a in m["assumptions"])
    body = {k: v for k, v in m.items() if k != "manifest_hash"}
    assert m["manifest_hash"] == __import__("hashlib").sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_bad_inputs_are_reported_with_line_numbers_and_the_rest_is_paired(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    good = write_session(tmp_path, "good", duration_s=20.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.0}],
                         extra_lines=[(3, b'{"type": "pose.sample", "data": {"camera": "cam-1"}}'), (5, b"{oops")])  # fmt: skip
    missing = write_session(tmp_path, "lost", duration_s=20.0, rate_hz=10.0, cues=[{"track": "f" * 64, "at_s": 0.0}])
    pose = write_pose_file(tmp_path / "clip.pose.jsonl", duration_s=20.0, fps=10.0,
                           extra_lines=[(4, b'{"frame": 3, "t": "soon", "joints": null}')])  # fmt: skip
    broken_npz, broken_sha = write_features(tmp_path / "features", "broken", drop_keys=("beat_frames",))
    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"pose": "clip.pose.jsonl", "track": sha, "offset_s": 2.0}) + "\nnot json\n"
                    + json.dumps({"pose": "clip.pose.jsonl", "track": broken_sha, "offset_s": 0.0}) + "\n")  # fmt: skip
    inv = write_inventory(tmp_path / "inv.jsonl",
                          [features_item(npz, sha), features_item(broken_npz, broken_sha), session_item(good),
                           session_item(missing), pose_item(pose)],
                          extra_lines=[(1, b"[1, 2]")])  # fmt: skip
    summary, problems = run_pair(inv, tmp_path / "ds", cue_file=cues)
    text = "\n".join(problems)
    assert f"{inv}: line 2: not an inventory object" in text
    assert f"{good / 'events.jsonl'}: line 4: pose.sample needs a string 'camera' and a number 't'" in text
    assert f"{good / 'events.jsonl'}: line 6: not JSON" in text
    assert f"{pose}: line 5: a pose line needs a number 't' (seconds)" in text
    assert f"{cues}: line 2: not JSON" in text
    assert f"session lost (events line 2) cued track {'f' * 64} but no features exist for it" in text
    assert f"{broken_npz}: feature artifact lacks keys beat_frames" in text
    assert summary["problems"] == len(problems) == 7
    rows = read_rows(tmp_path / "ds")
    assert {r["session"] for r in rows} == {"good", "pose:clip:" + __import__("hashlib").sha256(pose.read_bytes()).hexdigest()[:8]}
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert {s["track"] for s in m["skipped"]} == {"f" * 64, broken_sha}
    # the standalone pose file: track time = t + 2.0
    prow = next(r for r in rows if r["session"].startswith("pose:"))
    assert prow["track_start_s"] == pytest.approx(2.0, abs=1 / FPS)


def test_standalone_pose_file_pairs_through_the_cue_file(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    pose = write_pose_file(tmp_path / "dance.pose.jsonl", duration_s=20.0, fps=10.0, motion=sway_motion(0.5))
    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"pose": str(pose), "track": sha, "offset_s": 5.0}) + "\n")
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), pose_item(pose)])
    summary, problems = run_pair(inv, tmp_path / "ds", cue_file=cues)
    assert problems == []
    rows = read_rows(tmp_path / "ds")
    assert rows[0]["camera"] == "dance" and rows[0]["track_start_s"] == pytest.approx(5.0, abs=1 / FPS)
    assert max(r["track_end_s"] for r in rows) <= 25.0 + 1 / FPS  # end = exclusive end frame
    assert summary["windows"]["train"] == len(rows) >= 25


# -- building blocks ----------------------------------------------------------------------


def test_resample_pose_is_linear_and_marks_gaps():
    t = np.array([0.0, 0.1, 0.2, 1.2])
    joints = np.zeros((4, 19, 3))
    joints[:, :, 0] = t[:, None] * 2  # x = 2t
    joints[:, :, 2] = np.array([1.0, 0.5, 1.0, 1.0])[:, None]
    joints[1, 4, :2] = np.nan  # one joint missing from one sample
    joints[1, 4, 2] = 0.0
    ft = np.array([-0.5, 0.05, 0.15, 0.5, 1.0, 2.0])
    pose, obs = resample_pose(PoseStream(t, joints), ft, max_gap_s=0.25)
    np.testing.assert_allclose(pose[1:5, 0, 0], 2 * ft[1:5])
    np.testing.assert_allclose(pose[[0, 5], 0, 0], [0.0, 2.4])  # held outside
    np.testing.assert_allclose(pose[1:3, 4, 0], 2 * ft[1:3])  # the missing joint from its neighbours
    np.testing.assert_allclose(pose[1, 0, 2], 0.75)
    np.testing.assert_allclose(pose[1, 4, 2], 0.5)  # confidence counts the missing sample as 0
    assert obs.tolist() == [False, True, True, False, True, False]


def test_window_starts_follow_the_stride_inside_the_span():
    fps = SR / HOP
    starts = window_starts(10, 10 + 431, 215, 0.5, fps)
    assert starts[0] == 10 and starts[-1] + 215 <= 441
    assert set(np.diff(starts)) <= {21, 22}
    assert window_starts(0, 100, 215, 0.5, fps).size == 0


def test_parse_split():
    assert parse_split("0.8/0.1/0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.8/0.1", "0.5/0.5/0.5", "a/b/c", "-0.1/1/0.1"):
        with pytest.raises(ValueError):
            parse_split(bad)


def test_gaussian_smooth_matches_scipy():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).normal(size=200)
    np.testing.assert_allclose(bas.gaussian_smooth(x, 3.6), scipy_ndimage.gaussian_filter1d(x, 3.6), atol=1e-12)


def test_beat_alignment_score_directions():
    music = np.array([1.0, 2.0, 3.0])
    motion = np.array([1.0, 2.05])
    s = bas.beat_alignment_score(music, motion, sigma_s=0.05)
    assert s == pytest.approx((1 + np.exp(-0.5) + np.exp(-0.95**2 / 0.005)) / 3)
    fact = bas.beat_alignment_score(music, motion, sigma_s=0.05, direction=bas.MOTION_TO_MUSIC)
    assert fact == pytest.approx((1 + np.exp(-0.5)) / 2)
    assert np.isnan(bas.beat_alignment_score(music, np.array([])))


@pytest.mark.parametrize("phase_s, low, high", [(0.0, 0.8, 1.0), (0.25, 0.0, 0.05)], ids=["on-beat", "off-beat"])
def test_dataset_bas_is_high_when_motion_turns_on_the_beats(tmp_path, phase_s, low, high):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0, bpm=120.0, first_beat_s=0.5)
    # turning points every 0.5 s at track times 0.5 + k/2 (+ phase)
    sd = write_session(tmp_path, "S", duration_s=30.0, rate_hz=30.0, cues=[{"track": sha, "at_s": 0.0}],
                       motion=sway_motion(0.5, phase_s=0.5 + phase_s))  # fmt: skip
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(sd)])
    summary, _ = run_pair(inv, tmp_path / "ds")
    assert low <= summary["beat_alignment_score"] <= high


def test_events_with_missing_joints_and_non_numeric_values(tmp_path):
    from mmx.dataset.pair import read_session_events

    from .pair_fixtures import BASE_POSE, event

    lines = []
    for k in range(20):
        joints = {name: [x, y, 0.8] for name, (x, y) in BASE_POSE.items()}
        if k % 2:
            del joints["leftWrist"]  # Vision omits joints it cannot see
        if k == 7:
            joints["nose"] = ["left", 0.2, 0.9]
        lines.append(orjson.dumps(event(k + 1, "pose.sample", 100.0 + k / 10, "S", {"camera": "c", "t": 100.0 + k / 10,
                                                                                   "joints": joints})))  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    problems: list[str] = []
    data = read_session_events(path, on_problem=lambda e: problems.append(e.message))
    assert problems == [f"{path}: line 8: pose.sample joint values must be numbers"]
    stream = data.cameras["c"]
    assert stream.t.size == 19
    wrist = list(__import__("mmx.events", fromlist=["JOINT_NAMES"]).JOINT_NAMES).index("leftWrist")
    assert np.isnan(stream.joints[1, wrist, 0]) and stream.joints[1, wrist, 2] == 0.0
    pose, obs = resample_pose(stream, np.array([100.05, 100.1]), max_gap_s=0.5)
    assert pose[0, wrist, 0] == pytest.approx(BASE_POSE["leftWrist"][0])  # interpolated from its neighbours
    assert pose[0, wrist, 2] == pytest.approx(0.4) and obs.all()


def test_chunked_processing_gives_the_same_bytes_whatever_the_chunk_size(one_session, tmp_path, monkeypatch):
    import mmx.dataset.segments as segments

    inv, _ = one_session(cameras=("cam-1", "cam-2"))
    monkeypatch.setattr(segments, "_CHUNK_FRAMES", 37)  # chunks that cut row groups and windows anywhere
    run_pair(inv, tmp_path / "small")
    monkeypatch.setattr(segments, "_CHUNK_FRAMES", 1 << 20)
    run_pair(inv, tmp_path / "big")
    for p in sorted((tmp_path / "big" / "segments").iterdir()):
        assert (tmp_path / "small" / "segments" / p.name).read_bytes() == p.read_bytes()
    a, b = mmx.dataset.load(tmp_path / "small", "train"), mmx.dataset.load(tmp_path / "big", "train")
    for key in ("audio", "pose", "dynamics", "observed", "beat"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert [r["id"] for r in a["samples"]] == [r["id"] for r in b["samples"]]
    sa = json.loads((tmp_path / "small" / "manifest.json").read_text())["stats"]
    sb = json.loads((tmp_path / "big" / "manifest.json").read_text())["stats"]
    assert sa == sb


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_hashed_lines_numbers_lines_like_iter_lines(chunk):
    import hashlib
    import io

    from mmx.dataset.pair import _hashed_lines
    from mmx.events import iter_lines

    data = b'{"a":1}\r\n\n  \n' + b"x" * 40 + b'\n{"b":2}\n' + b"y" * 25 + b"\n" + b"z" * 50
    digest = hashlib.sha256()
    got = list(_hashed_lines(io.BytesIO(data), digest, max_line_bytes=30, chunk_bytes=chunk))
    want = [(n, None if line is None else line.rstrip(b"\n")) for n, line in iter_lines(io.BytesIO(data), max_line_bytes=30)]
    assert got == want == [(1, b'{"a":1}\r'), (4, None), (5, b'{"b":2}'), (6, b"y" * 25), (7, None)]
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_interrupted_run_keeps_the_previous_dataset_whole(tmp_path):
    inv = many_sessions(tmp_path, 3)
    run_pair(inv, tmp_path / "ds", seed=0)
    before = {p.relative_to(tmp_path / "ds"): p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}

    def interrupt(done, total, label):
        if done == 2:
            raise KeyboardInterrupt

    with open(inv, "rb") as fp, pytest.raises(KeyboardInterrupt):
        pair_dataset(fp, tmp_path / "ds", params=PairParams(seed=1), inventory_name=str(inv), on_progress=interrupt)
    after = {p.relative_to(tmp_path / "ds"): p.read_bytes() for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")) == []


def test_a_cue_without_started_at_starts_at_its_event_time(tmp_path):
    from mmx.dataset.pair import read_session_events

    from .pair_fixtures import event

    lines = [orjson.dumps(event(1, "music.cue", 50.0, "S", {"track": "t" * 64, "started_at": None, "offset_s": None})),
             orjson.dumps(event(2, "music.cue", 70.0, "S", {"track": "u" * 64, "started_at": 71.0, "offset_s": 3.5})),
             orjson.dumps(event(3, "session.ended", 90.0, "S", {}))]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    data = read_session_events(path, on_problem=lambda e: pytest.fail(e.message))
    assert [(c.started_at, c.offset_s, c.ends_at) for c in data.cues] == [(50.0, 0.0, 71.0), (71.0, 3.5, 90.0)]


def test_foreign_features_without_a_source_hash_are_skipped_quietly(tmp_path):
    """discover lists another tool's .npz with audio_sha256 null: nothing to pair, no problem."""
    import io

    from mmx.dataset.pair import read_inventory

    lines = [
        {"kind": "features", "path": "/x/foreign.npz", "sha256": "f" * 64, "size": 1, "foreign": True, "audio_sha256": None},
        {"kind": "features", "path": "/x/ours.npz", "sha256": "e" * 64, "size": 1, "foreign": False, "audio_sha256": None},
    ]
    problems = []
    inv = read_inventory(io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines)), base=tmp_path,
                         on_problem=problems.append)  # fmt: skip
    assert inv.features == {}
    assert [p.message for p in problems] == ["line 2: features item /x/ours.npz has no 'audio_sha256'"]
