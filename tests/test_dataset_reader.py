"""mmx.dataset.open: random access, memory-mapped, equal to what pyarrow alone reads from the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmx.dataset
from mmx.dataset.pair import PairParams, pair_dataset

from .pair_fixtures import (
    HOP,
    SR,
    beat_frames_for,
    burst_motion,
    features_item,
    pose_item,
    session_item,
    write_features,
    write_inventory,
    write_session,
)


def pair(inv: Path, out: Path, cue_file: Path | None = None, **kw) -> dict:
    with open(inv, "rb") as fp:
        return pair_dataset(fp, out, params=PairParams(**kw), inventory_name=str(inv), cue_file=cue_file)


def windows_with_pyarrow_alone(ds_dir: Path) -> list[dict[str, np.ndarray]]:
    """Every window, read the way the manifest documents it, with nothing but pyarrow + numpy."""
    rows = pq.read_table(ds_dir / "windows.parquet").to_pylist()
    out = []
    segments: dict[str, pa.Table] = {}
    for r in rows:
        if r["segment"] not in segments:
            segments[r["segment"]] = pq.read_table(ds_dir / "segments" / f"{r['segment']}.parquet")
        seg = segments[r["segment"]].slice(r["row"], r["frames"])
        t = r["frames"]
        audio = np.array(seg["audio"].to_pylist(), dtype=np.float32)
        pose = np.array(seg["pose"].to_pylist(), dtype=np.float32)
        speed = np.array(seg["speed"].to_pylist(), dtype=np.float32)
        accel = np.array(seg["accel"].to_pylist(), dtype=np.float32)
        ke = np.array(seg["kinetic_energy"].to_pylist(), dtype=np.float32)
        k = np.float32(1.0 / r["torso_length"])
        dyn = np.concatenate([speed * k, accel * k, (ke * k * k)[:, None]], axis=1)
        assert seg["frame"].to_pylist() == list(range(r["start_frame"], r["start_frame"] + t))
        out.append({"audio": audio, "pose": pose, "dynamics": dyn,
                    "observed": np.array(seg["observed"].to_pylist(), dtype=bool),
                    "beat": np.array(seg["beat"].to_pylist(), dtype=np.float32), "split": r["split"]})  # fmt: skip
    return out


def assert_same(ds_dir: Path) -> int:
    plain = windows_with_pyarrow_alone(ds_dir)
    ds = mmx.dataset.open(ds_dir)
    assert len(ds) == len(plain)
    for i in np.random.default_rng(0).permutation(len(ds)):  # random access, any order
        w = ds[int(i)]
        for key in ("audio", "pose", "dynamics", "observed", "beat"):
            assert w[key].dtype == plain[i][key].dtype, key
            np.testing.assert_array_equal(w[key], plain[i][key], err_msg=f"window {i} {key}")
    for split in ("train", "val", "test"):
        assert len(mmx.dataset.open(ds_dir, split)) == sum(1 for p in plain if p["split"] == split)
    return len(ds)


@pytest.mark.shared_data
def test_shared_recordings_read_with_pyarrow_alone_equal_open(shared_data, tmp_path):
    batch = pytest.importorskip("mmx.audio.batch")
    from mmx.audio.features import FeatureParams

    audio = shared_data / "music" / "introzik.ogg"
    pose = shared_data / "pose" / "vtest.pose.jsonl"
    result = batch.process_file(audio, tmp_path / "features", FeatureParams())
    npz = Path(result.npz)
    sha = str(np.load(npz)["sha256"])
    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"pose": str(pose), "track": sha, "offset_s": 30.0}) + "\n")
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), pose_item(pose)])
    summary = pair(inv, tmp_path / "ds", cue_file=cues)
    n = assert_same(tmp_path / "ds")
    assert n == sum(summary["windows"].values()) > 20


def test_sessions_read_with_pyarrow_alone_equal_open_and_bounded_caches(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    beats_s = beat_frames_for(40.0, 120.0) * HOP / SR
    items = [features_item(npz, sha)]
    for i in range(3):
        sd = write_session(tmp_path, f"S{i}", cameras=("cam-1", "cam-2"), duration_s=20.0, rate_hz=10.0,
                           cues=[{"track": sha, "at_s": 1.0}], motion=burst_motion(beats_s),
                           gaps=[(8.0, 11.0)])  # fmt: skip
        items.append(session_item(sd))
    inv = write_inventory(tmp_path / "inv.jsonl", items)
    pair(inv, tmp_path / "ds", min_observed=0.3)
    assert assert_same(tmp_path / "ds") > 50
    ds = mmx.dataset.open(tmp_path / "ds", "train")
    for i in range(len(ds)):
        ds[i]
    cache = ds._segments
    assert len(cache.groups) <= cache.max_groups and len(cache.files) <= cache.max_files


def test_window_offset_moves_audio_and_pose_together(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    sd = write_session(tmp_path, "S", duration_s=30.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.0}])
    pair(write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(sd)]), tmp_path / "ds")
    ds = mmx.dataset.open(tmp_path / "ds")
    art = np.load(npz)
    r = ds.row(3)
    w = ds.window(3, offset=5)
    np.testing.assert_array_equal(w["audio"][:, 0], art["onset_env"][r["start_frame"] + 5 : r["start_frame"] + 5 + r["frames"]])
    d = ds.row(4)["row"] - r["row"]
    shifted, nxt = ds.window(3, offset=d), ds.window(4)
    for key in ("audio", "pose", "observed", "beat"):  # the same frames, whichever window they came through
        np.testing.assert_array_equal(shifted[key], nxt[key])
    first = ds.window(0, offset=-1000)  # clipped to the segment's first row
    np.testing.assert_array_equal(first["audio"], ds.window(0)["audio"])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_open_names_what_is_wrong(tmp_path):
    from mmx.errors import InputMissingError

    with pytest.raises(InputMissingError, match="no manifest.json"):
        mmx.dataset.open(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        npz, sha = write_features(tmp_path / "features", "song", duration_s=20.0)
        sd = write_session(tmp_path, "S", duration_s=10.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.0}])
        pair(write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(sd)]), tmp_path / "ds")
        mmx.dataset.open(tmp_path / "ds", "holdout")
