"""`mmx pair` command: options, stdout summary, stderr messages, exit codes, stdin, real data."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

import mmx.dataset
from mmx.cli import app

from .conftest import MMX
from .pair_fixtures import (
    FPS,
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


def windows(ds: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(ds / "windows.parquet").to_pylist()


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:  # newer click/typer keep stderr apart already
        return CliRunner()


@pytest.fixture
def inventory(tmp_path) -> Path:
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    beats_s = beat_frames_for(40.0, 120.0) * HOP / SR
    items = [features_item(npz, sha)]
    for i in range(3):
        sd = write_session(tmp_path, f"S{i}", duration_s=15.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 1.0}],
                           motion=burst_motion(beats_s))  # fmt: skip
        items.append(session_item(sd))
    return write_inventory(tmp_path / "inv.jsonl", items)


def test_pair_writes_a_dataset_and_one_json_summary_line(inventory, tmp_path):
    out = tmp_path / "ds"
    result = runner().invoke(app, ["pair", str(inventory), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["dir"] == str(out)
    assert sum(summary["windows"].values()) == len(windows(out)) > 0
    assert set(summary["windows"]) == {"train", "val", "test"}
    assert all(summary["windows"][s] > 0 for s in ("train", "val", "test"))  # 3 sessions → one per side
    assert "windows (train" in result.stderr
    assert (out / "manifest.json").exists() and (out / "splits" / "test.txt").exists()
    data = mmx.dataset.load(out, "val")
    assert data["pose"].shape[1:] == (round(5 * FPS), 19, 3)


def test_pair_reads_the_inventory_from_stdin(inventory, tmp_path):
    out = tmp_path / "ds"
    proc = subprocess.run([*MMX, "pair", "-", "-o", str(out), "--window", "4", "--stride", "1"],
                          input=inventory.read_bytes(), capture_output=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    summary = orjson.loads(proc.stdout.splitlines()[0])
    m = json.loads((out / "manifest.json").read_text())
    assert m["inputs"]["inventory"]["path"] == "-" and m["params"]["window_s"] == 4.0 and m["params"]["stride_s"] == 1.0
    assert summary["manifest_hash"] == m["manifest_hash"]


def test_bad_lines_are_warned_with_line_numbers_and_exit_65(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    good = write_session(tmp_path, "good", duration_s=15.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.0}],
                         extra_lines=[(4, b'{"type":"pose.sample","data":{"camera":"cam-1","t":1795000000.5,"joints":{"nose":[1]}}}')])  # fmt: skip
    lost = write_session(tmp_path, "lost", duration_s=15.0, rate_hz=10.0, cues=[{"track": "a" * 64, "at_s": 0.0}])
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(good), session_item(lost)],
                          extra_lines=[(0, b"not json at all")])  # fmt: skip
    result = runner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "ds")])
    assert result.exit_code == 65
    err = result.stderr
    assert f"warning: {inv}: line 1: not JSON" in err
    assert "line 5: pose.sample joints must map joint names to [x, y, confidence] numbers" in err
    assert f"session lost (events line 2) cued track {'a' * 64} but no features exist for it" in err
    assert "Error: 3 input problem(s), reported above; the rest was paired into" in err
    summary = json.loads(result.stdout.splitlines()[0])
    assert summary["problems"] == 3 and summary["windows"]["train"] > 0


def test_one_session_warns_that_val_and_test_are_empty_and_time_split_fills_them(tmp_path):
    npz, sha = write_features(tmp_path / "features", "song", duration_s=110.0)
    sd = write_session(tmp_path, "only", duration_s=100.0, rate_hz=10.0, cues=[{"track": sha, "at_s": 0.0}])
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), session_item(sd)])
    result = runner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.stderr
    warning = ("only 1 session for the 0.8/0.1/0.1 split by session: val and test are empty; "
               "--split-by time cuts each session into contiguous blocks instead")  # fmt: skip
    assert f"warning: {warning}" in " ".join(result.stderr.split())
    summary = json.loads(result.stdout)
    assert summary["warnings"] == [warning] and summary["windows"]["val"] == summary["windows"]["test"] == 0
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["splits"]["warnings"] == [warning]

    result = runner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "timed"), "--split-by", "time"])
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    summary = json.loads(result.stdout)
    assert all(summary["windows"][s] > 0 for s in ("train", "val", "test")) and summary["dropped"]["split_boundary"] > 0
    rows = windows(tmp_path / "timed")
    frames = {s: set() for s in ("train", "val", "test")}
    for r in rows:
        frames[r["split"]] |= set(range(r["start_frame"], r["start_frame"] + r["frames"]))
    assert not frames["train"] & frames["val"] and not frames["val"] & frames["test"] and not frames["train"] & frames["test"]
    # contiguous blocks in time order: train, then val, then test
    assert max(frames["train"]) < min(frames["val"]) and max(frames["val"]) < min(frames["test"])


def test_missing_inventory_is_exit_66(tmp_path):
    result = runner().invoke(app, ["pair", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "ds")])
    assert result.exit_code == 66
    assert "no such file" in result.stderr


@pytest.mark.parametrize("args", [["--split", "0.5/0.5/0.5"], ["--split-by", "camera"], ["--window", "0"],
                                  ["--audio-features", "mfcc,loudness"]])  # fmt: skip
def test_bad_options_are_usage_errors(inventory, tmp_path, args):
    result = runner().invoke(app, ["pair", str(inventory), "-o", str(tmp_path / "ds"), *args])
    assert result.exit_code == 2
    assert not (tmp_path / "ds").exists()


def test_refuses_to_overwrite_a_directory_that_is_not_a_dataset(inventory, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = runner().invoke(app, ["pair", str(inventory), "-o", str(out)])
    assert result.exit_code == 74
    assert "is not an mmx dataset; refusing to overwrite it" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me"


def test_preview_writes_a_png(inventory, tmp_path):
    png = tmp_path / "window.png"
    result = runner().invoke(app, ["pair", str(inventory), "-o", str(tmp_path / "ds"), "--preview", str(png)])
    assert result.exit_code == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert json.loads(result.stdout)["preview"] == str(png)


def test_split_by_track_and_seed_options(tmp_path):
    items, shas = [], []
    for k in range(3):
        npz, sha = write_features(tmp_path / "features", f"song{k}", duration_s=30.0, seed=k)
        items.append(features_item(npz, sha))
        shas.append(sha)
    for i in range(4):
        sd = write_session(tmp_path, f"S{i}", duration_s=24.0, rate_hz=10.0,
                           cues=[{"track": shas[(i + j) % 3], "at_s": 8.0 * j} for j in range(3)])  # fmt: skip
        items.append(session_item(sd))
    inv = write_inventory(tmp_path / "inv.jsonl", items)
    result = runner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "ds"), "--split-by", "track",
                                   "--split", "0.34/0.33/0.33", "--seed", "5"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = windows(tmp_path / "ds")
    by_track: dict[str, set[str]] = {}
    for r in rows:
        by_track.setdefault(r["track"], set()).add(r["split"])
    assert len(by_track) == 3 and all(len(v) == 1 for v in by_track.values())
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["splits"]["by"] == "track" and m["splits"]["seed"] == 5


def _audio_features(audio: Path, out_dir: Path) -> Path:
    """Compute a real feature artifact with mmx.audio (the `mmx features` library)."""
    batch = pytest.importorskip("mmx.audio.batch", reason="mmx.audio (mmx features) is not available yet")
    from mmx.audio.features import FeatureParams

    result = batch.process_file(audio, out_dir, FeatureParams())
    if result.error or not result.npz:
        pytest.fail(f"mmx.audio could not compute features of {audio}: {result.error}")
    return Path(result.npz)


@pytest.mark.shared_data
def test_real_pose_file_cued_to_a_real_track_pairs_into_windows(shared_data, tmp_path):
    audio = shared_data / "music" / "introzik.ogg"
    pose = shared_data / "pose" / "vtest.pose.jsonl"
    npz = _audio_features(audio, tmp_path / "features")
    with np.load(npz) as art:
        sha = str(art["sha256"])
        assert {"mel", "onset_env", "beat_frames", "chroma", "mfcc"} <= set(art.files)
    assert sha == "7e8ac71c4d79f4625404ef4f9564ae70ec91056dd77f1a5cd10b908147aef7e0"
    cues = tmp_path / "cues.jsonl"
    cues.write_text(json.dumps({"pose": str(pose), "track": sha, "offset_s": 30.0}) + "\n")
    inv = write_inventory(tmp_path / "inv.jsonl", [features_item(npz, sha), pose_item(pose)])
    png = tmp_path / "vtest.png"
    result = runner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "ds"), "--cues", str(cues),
                                   "--preview", str(png)])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    data = mmx.dataset.load(tmp_path / "ds", "train")
    n = summary["windows"]["train"]
    # 79.5 s of video, 366 of 795 frames without a person: some windows dropped, many kept
    assert n == data["pose"].shape[0] > 20 and summary["dropped"]["observed_below_min"] > 0
    assert (data["observed"].mean(axis=1) >= 0.5).all()
    assert data["beat"].sum() > n  # ~92 BPM: several beats per 5 s window
    rows = data["samples"]
    assert all(30.0 - 1 / FPS <= r["track_start_s"] and r["track_end_s"] <= 30.0 + 79.5 + 1 / FPS for r in rows)
    assert rows[0]["camera"] == "vtest" and png.exists()
    m = data["manifest"]
    assert m["inputs"]["pose_files"][0]["sha256"] == "52abae0c4c9dc5abf3f5789a448ce54e24faa4bbf9b2e09fa7e5724ec9d4a4b6"
    assert 0.0 <= m["stats"]["all"]["beat_alignment_score"] <= 1.0


def test_discover_piped_into_pair(tmp_path):
    """The documented pipeline: `mmx discover sessions/ features/ | mmx pair - -o dataset/`."""
    if "discover" not in runner().invoke(app, ["--help"]).stdout:
        pytest.skip("mmx discover is not registered yet")
    npz, sha = write_features(tmp_path / "features", "song", duration_s=40.0)
    beats_s = beat_frames_for(40.0, 120.0) * HOP / SR
    for i in range(2):
        write_session(tmp_path, f"S{i}", cameras=("cam-1", "cam-2"), duration_s=15.0, rate_hz=10.0,
                      cues=[{"track": sha, "at_s": 1.0}], motion=burst_motion(beats_s))  # fmt: skip
    discover = subprocess.Popen([*MMX, "discover", str(tmp_path / "sessions"), str(tmp_path / "features")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    pair = subprocess.run([*MMX, "pair", "-", "-o", str(tmp_path / "ds")], stdin=discover.stdout,
                          capture_output=True, timeout=120)  # fmt: skip
    discover.stdout.close()  # type: ignore[union-attr]
    assert discover.wait(timeout=60) == 0
    assert pair.returncode == 0, pair.stderr.decode()
    summary = orjson.loads(pair.stdout.splitlines()[0])
    rows = windows(tmp_path / "ds")
    assert {r["session"] for r in rows} == {"S0", "S1"} and {r["camera"] for r in rows} == {"cam-1", "cam-2"}
    assert sum(summary["windows"].values()) == len(rows) > 0
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert m["inputs"]["features"][0]["path"] == str(npz)
