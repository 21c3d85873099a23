"""`mmx pose` on the command line: usage, the missing extra (exit 69), offline files by name."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app

from .conftest import MMX
from .pose_fixtures import CLIP_FRAMES, needs_mediapipe, read_pose_file, vtest_clip  # noqa: F401

runner = CliRunner()


def _records(stdout: str) -> list[dict]:
    return [orjson.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize(("args", "message"), [
    ([], "give video files and -o DIR (offline), or --server URL (live)"),
    (["a.avi"], "offline mode needs -o DIR for the pose files"),
    (["a.avi", "-o", "d", "--server", "http://x"], "give video files (offline) or --server (live), not both"),
    (["a.avi", "-o", "d", "--cameras", "cam-1"], "--cameras and --all-without-pose are for live mode"),
    (["--server", "http://x", "--cameras", "cam-1", "--all-without-pose"], "--cameras and --all-without-pose exclude each other"),
    (["x/a.avi", "y/a.mp4", "-o", "d"], "x/a.avi and y/a.mp4 would both write d/a.pose.jsonl"),
])  # fmt: skip
def test_usage_errors_exit_2(args, message):
    result = runner.invoke(app, ["pose", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


def test_without_mediapipe_it_says_how_to_install_it_and_exits_69(tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n == "mediapipe" or n.startswith("mediapipe.")] + ["mediapipe"]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails as if absent
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    for args in (["pose", str(video), "-o", str(tmp_path / "out")], ["pose", "--server", "http://127.0.0.1:9", "--token", "t"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 69, result.output
        assert "Error: mmx pose needs MediaPipe, which is not installed" in result.stderr
        assert "Hint: install the pose extra: pip install 'mmx[pose]' (mediapipe==0.10.21" in " ".join(result.stderr.split())
    assert not (tmp_path / "out").exists()


@needs_mediapipe
@pytest.mark.shared_data
def test_offline_reports_bad_files_by_name_does_the_others_and_skips_them_on_rerun(vtest_clip, tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    out = tmp_path / "poses"
    # a subprocess: the real stderr (fd 2, where MediaPipe's native log lines would land)
    proc = subprocess.run([*MMX, "pose", str(junk), str(vtest_clip), str(tmp_path / "gone.avi"), "-o", str(out)],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 66, proc.stderr  # a missing file outranks a corrupt one
    records = {r["video"]: r for r in _records(proc.stdout)}
    assert records[str(junk)]["status"] == "failed" and records[str(junk)]["exit_code"] == 65
    assert records[str(tmp_path / "gone.avi")]["exit_code"] == 66
    done = records[str(vtest_clip)]
    assert done["status"] == "done" and done["frames"] == CLIP_FRAMES
    stderr = " ".join(proc.stderr.split())
    assert f"failed: {junk}: not a video PyAV can decode" in stderr
    assert f"Error: 2 of 3 videos failed: junk.avi, gone.avi (the others are done)" in stderr
    assert f"clip.avi → {out / 'clip.pose.jsonl'}: {CLIP_FRAMES} frames" in stderr
    assert "W0000" not in proc.stderr and "XNNPACK" not in proc.stderr  # MediaPipe's chatter is filtered
    header, frames = read_pose_file(out / "clip.pose.jsonl")
    assert len(frames) == CLIP_FRAMES and header["source"] == "clip.avi"
    assert sorted(p.name for p in out.iterdir()) == ["clip.pose.jsonl"]
    # rerun with the good file only: skipped, exit 0
    proc = subprocess.run([*MMX, "pose", str(vtest_clip), "-o", str(out)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert _records(proc.stdout)[0]["status"] == "skipped"
    assert "skipped" in proc.stderr and "same video sha256 and parameters" in " ".join(proc.stderr.split())


@needs_mediapipe
@pytest.mark.shared_data
def test_jobs_spreads_videos_over_worker_processes(vtest_clip, tmp_path):
    second = tmp_path / "second.avi"
    second.write_bytes(vtest_clip.read_bytes())
    out = tmp_path / "poses"
    proc = subprocess.run([*MMX, "pose", str(vtest_clip), str(second), "-o", str(out), "--jobs", "2"],
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = _records(proc.stdout)
    assert sorted(r["video"] for r in records) == sorted([str(vtest_clip), str(second)])
    assert all(r["status"] == "done" and r["frames"] == CLIP_FRAMES for r in records)
    # the same bytes give the same poses, whichever worker made them
    assert read_pose_file(out / "clip.pose.jsonl")[1] == read_pose_file(out / "second.pose.jsonl")[1]
