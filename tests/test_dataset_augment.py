"""mmx.dataset.augment: mirror, body normalisation and random offset, numpy only (no torch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import mmx.dataset
from mmx.dataset.augment import MIRROR_PERMUTATION, Augment, mirror, normalize_body
from mmx.dataset.pair import PairParams, pair_dataset
from mmx.events import JOINT_NAMES

from .pair_fixtures import HOP, SR, beat_frames_for, burst_motion, features_item, session_item, write_features, write_inventory, write_session  # noqa: E501

LW, RW = JOINT_NAMES.index("leftWrist"), JOINT_NAMES.index("rightWrist")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    """One session, split by time (three splits inside each segment), pose moving on the beats."""
    root = tmp_path_factory.mktemp("aug")
    npz, sha = write_features(root / "features", "song", duration_s=130.0)
    beats_s = beat_frames_for(130.0, 120.0) * HOP / SR
    sd = write_session(root, "S", cameras=("cam-1", "cam-2"), duration_s=120.0, rate_hz=10.0,
                       cues=[{"track": sha, "at_s": 0.0}], motion=burst_motion(beats_s))  # fmt: skip
    inv = write_inventory(root / "inv.jsonl", [features_item(npz, sha), session_item(sd)])
    with open(inv, "rb") as fp:
        pair_dataset(fp, root / "ds", params=PairParams(split_by="time"), inventory_name=str(inv))
    return root / "ds"


def test_mirror_swaps_left_and_right_joints_and_flips_x(dataset_dir):
    ds = mmx.dataset.open(dataset_dir, "train")
    w = ds[3]
    m = mirror(w)
    obs = w["observed"]
    assert obs.any() and (w["pose"][obs, LW, 0] != 1 - w["pose"][obs, RW, 0]).any()  # not symmetric already
    np.testing.assert_allclose(m["pose"][obs, LW, 0], 1 - w["pose"][obs, RW, 0], atol=1e-6)
    np.testing.assert_allclose(m["pose"][obs, RW, 0], 1 - w["pose"][obs, LW, 0], atol=1e-6)
    np.testing.assert_array_equal(m["pose"][obs, LW, 1:], w["pose"][obs, RW, 1:])  # y and confidence move with the joint
    nose = JOINT_NAMES.index("nose")
    np.testing.assert_allclose(m["pose"][obs, nose, 0], 1 - w["pose"][obs, nose, 0], atol=1e-6)
    np.testing.assert_array_equal(m["pose"][~obs], w["pose"][~obs])  # unobserved zeros stay zeros
    np.testing.assert_array_equal(m["dynamics"][:, LW], w["dynamics"][:, RW])  # leftWrist speed <- rightWrist's
    np.testing.assert_array_equal(m["dynamics"][:, 19 + RW], w["dynamics"][:, 19 + LW])  # accelerations too
    np.testing.assert_array_equal(m["dynamics"][:, -1], w["dynamics"][:, -1])  # kinetic energy: same
    for key in ("audio", "beat", "observed"):  # time is untouched: audio stays beside its pose frame
        np.testing.assert_array_equal(m[key], w[key])
    twice = mirror(m)
    np.testing.assert_allclose(twice["pose"], w["pose"], atol=1e-6)
    assert [JOINT_NAMES[j] for j in MIRROR_PERMUTATION[[LW, RW, 0, 12]]] == ["rightWrist", "leftWrist", "nose", "root"]


def test_normalize_body_makes_near_and_far_dancers_the_same_size():
    rng = np.random.default_rng(1)
    t = 30
    pose = np.zeros((t, 19, 3), dtype=np.float32)
    pose[..., :2] = 0.5 + 0.1 * rng.standard_normal((t, 19, 2))
    pose[..., 2] = 0.9
    obs = np.ones(t, dtype=bool)
    obs[:4] = False
    pose[~obs] = 0
    w = {"pose": pose, "observed": obs, "audio": np.zeros((t, 3), np.float32)}
    far = {**w, "pose": pose.copy()}
    centre = np.float32([0.3, 0.6])
    far["pose"][obs, :, :2] = centre + (pose[obs, :, :2] - 0.5) * 0.5  # half the size, elsewhere in the frame
    a, b = normalize_body(w, 0.2), normalize_body(far, 0.1)
    np.testing.assert_allclose(a["pose"], b["pose"], atol=1e-5)
    assert np.abs(np.median(a["pose"][obs, 12, :2], axis=0)).max() < 1e-6  # root at the origin
    np.testing.assert_array_equal(a["pose"][~obs], 0)
    with pytest.raises(ValueError, match="torso length must be > 0"):
        normalize_body(w, float("nan"))


def test_random_offset_moves_audio_and_pose_together_and_stays_in_its_split(dataset_dir):
    everything = mmx.dataset.open(dataset_dir)
    art = np.load(next((dataset_dir.parent / "features").glob("*.npz")))
    mfcc = art["mfcc"]
    aug = Augment(max_offset_frames=400)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        ds = mmx.dataset.open(dataset_dir, split)
        assert len(ds) > 3
        rows = ds.rows.to_pylist()
        first = {}
        for r in rows:  # frames each segment's windows of this split cover
            a, b = first.get(r["segment"], (10**9, -1))
            first[r["segment"]] = (min(a, r["start_frame"]), max(b, r["start_frame"] + r["frames"]))
        moved = 0
        segments: dict = {}
        for i in range(len(ds)):
            w = aug.apply(ds, i, rng)
            # locate the window's first frame in the track by its (seeded-noise) MFCC row
            f0 = int(np.flatnonzero((mfcc == w["audio"][0, 1:21]).all(axis=1))[0])
            lo, hi = first[rows[i]["segment"]]
            assert lo <= f0 and f0 + w["audio"].shape[0] <= hi, (split, i)
            np.testing.assert_array_equal(w["audio"][:, 1:21], mfcc[f0 : f0 + w["audio"].shape[0]])
            seg = segments.setdefault(rows[i]["segment"], pq.read_table(
                dataset_dir / "segments" / f"{rows[i]['segment']}.parquet", columns=["frame", "pose"]))  # fmt: skip
            k = seg["frame"].to_pylist().index(f0)  # the pose of those same frames, read with pyarrow alone
            np.testing.assert_array_equal(w["pose"], np.array(seg["pose"].slice(k, len(w["pose"])).to_pylist(), np.float32))
            moved += f0 != rows[i]["start_frame"]
        assert moved > len(ds) // 2
    assert len(everything) == sum(len(mmx.dataset.open(dataset_dir, s)) for s in ("train", "val", "test"))


def test_numpy_loader_and_augmentations_work_without_torch(dataset_dir):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, mmx.dataset\n"
        "from mmx.dataset.augment import Augment\n"
        f"ds = mmx.dataset.open({str(dataset_dir)!r}, 'train')\n"
        "w = Augment(mirror_p=1.0, max_offset_frames=10, normalize_body=True).apply(ds, 0, np.random.default_rng(0))\n"
        "assert w['pose'].shape == (ds.window_frames, 19, 3) and bool(w['mirrored'])\n"
        "try:\n    import mmx.dataset.torch\nexcept ImportError:\n    print('no torch, numpy ok')\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "no torch, numpy ok"
