"""`mmx features` command: JSON Lines stdout, stderr errors and summary, exit codes, skip/force, stdin."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmx.audio import read_features
from mmx.cli import app

from .audio_fixtures import sha256, write_click, write_truncated_ogg
from .conftest import MMX


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture
def music(tmp_path) -> Path:
    write_click(tmp_path / "music" / "one.wav", seconds=3.0)
    write_click(tmp_path / "music" / "two.flac", seconds=2.0, bpm=100.0)
    return tmp_path / "music"


def test_directory_in_npz_out_one_json_line_per_file(music, tmp_path):
    out = tmp_path / "features"
    result = CliRunner().invoke(app, ["features", str(music), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    lines = sorted(_lines(result.stdout), key=lambda r: r["path"])
    assert [Path(r["path"]).name for r in lines] == ["one.wav", "two.flac"]
    for rec in lines:
        assert set(rec) == {"path", "npz", "sha256", "duration_s", "tempo_bpm", "beats", "skipped"}
        assert rec["sha256"] == sha256(Path(rec["path"])) and rec["skipped"] is False
        assert Path(rec["npz"]).name == f"{Path(rec['path']).stem}-{rec['sha256'][:12]}.npz"
        data = read_features(rec["npz"])
        assert rec["beats"] == len(data["beat_frames"]) and rec["tempo_bpm"] == pytest.approx(data["tempo_bpm"])
    assert lines[0]["duration_s"] == pytest.approx(3.0)
    assert "2 analysed, 0 skipped (already done), 0 failed" in result.stderr


def test_second_run_skips_and_force_redoes(music, tmp_path):
    out = tmp_path / "features"
    runner = CliRunner()
    assert runner.invoke(app, ["features", str(music), "-o", str(out)]).exit_code == 0
    again = runner.invoke(app, ["features", str(music), "-o", str(out)])
    assert again.exit_code == 0
    assert [r["skipped"] for r in _lines(again.stdout)] == [True, True]
    assert "0 analysed, 2 skipped (already done)" in again.stderr
    forced = runner.invoke(app, ["features", str(music / "one.wav"), "-o", str(out), "--force"])
    assert forced.exit_code == 0 and [r["skipped"] for r in _lines(forced.stdout)] == [False]
    other_fps = runner.invoke(app, ["features", str(music / "one.wav"), "-o", str(out), "--baseline-fps", "60"])
    assert [r["skipped"] for r in _lines(other_fps.stdout)] == [False]
    npz = _lines(other_fps.stdout)[0]["npz"]
    assert read_features(npz)["baseline_fps"] == 60.0


def test_bad_audio_is_named_on_stderr_others_go_on_exit_65(music, tmp_path):
    bad = write_truncated_ogg(music / "cut.ogg")
    (music / "noise.mp3").write_bytes(b"ID3 but nothing else")
    result = CliRunner().invoke(app, ["features", str(music), "-o", str(tmp_path / "f"), "--jobs", "2"])
    assert result.exit_code == 65
    assert sorted(Path(r["path"]).name for r in _lines(result.stdout)) == ["one.wav", "two.flac"]
    assert f"error: {bad}: truncated Ogg stream" in result.stderr
    assert f"error: {music / 'noise.mp3'}: cannot decode audio" in result.stderr
    assert "2 analysed, 0 skipped (already done), 2 failed" in result.stderr
    assert "Error: 2 of 4 audio files could not be analysed" in result.stderr
    assert len(list((tmp_path / "f").glob("*.npz"))) == 2


def test_missing_input_and_empty_directory(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["features", str(tmp_path / "nope.wav"), "-o", str(tmp_path / "f")])
    assert missing.exit_code == 66
    assert f"Error: no such file or directory: {tmp_path / 'nope.wav'}" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["features", str(tmp_path / "empty"), "-o", str(tmp_path / "f")])
    assert empty.exit_code == 65 and "Error: no audio files found in" in empty.stderr


def test_usage_errors(tmp_path, music):
    runner = CliRunner()
    assert runner.invoke(app, ["features", str(music)]).exit_code == 2  # -o is required
    assert runner.invoke(app, ["features", str(music), "-o", str(tmp_path), "--jobs", "0"]).exit_code == 2
    assert runner.invoke(app, ["features", str(music), "-o", str(tmp_path), "--baseline-fps", "0"]).exit_code == 2


def test_paths_from_stdin(music, tmp_path):
    out = tmp_path / "features"
    result = CliRunner().invoke(app, ["features", "-", "-o", str(out)], input=f"{music / 'two.flac'}\n\n")
    assert result.exit_code == 0, result.stderr
    (rec,) = _lines(result.stdout)
    assert rec["path"] == str(music / "two.flac") and Path(rec["npz"]).exists()
    assert "1 analysed" in result.stderr


def test_ctrl_c_stops_the_workers_and_leaves_nothing_partial(tmp_path):
    import os
    import signal
    import time

    import psutil

    for i in range(2):
        write_click(tmp_path / "music" / f"long{i}.wav", seconds=90.0)
    out = tmp_path / "features"
    proc = subprocess.Popen([*MMX, "features", str(tmp_path / "music"), "-o", str(out), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        workers: list = []
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = psutil.Process(proc.pid).children()
            time.sleep(0.2)
        assert len(workers) == 2, "the worker pool did not start"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert b"Traceback" not in stderr
    psutil.wait_procs(workers, timeout=10)
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    # no artifact under its final name unless whole
    for npz in out.glob("*.npz") if out.exists() else []:
        read_features(npz)


def test_no_baseline_skips_the_edge_block_and_keeps_the_rest(music, tmp_path):
    runner = CliRunner()
    full = runner.invoke(app, ["features", str(music / "one.wav"), "-o", str(tmp_path / "full")])
    lean = runner.invoke(app, ["features", str(music / "one.wav"), "-o", str(tmp_path / "lean"), "--no-baseline"])
    assert full.exit_code == 0 and lean.exit_code == 0, lean.stderr
    a = read_features(_lines(full.stdout)[0]["npz"])
    b = read_features(_lines(lean.stdout)[0]["npz"])
    assert a["baseline"].shape[0] > 0 and a["baseline"].shape[1] == 35
    assert b["baseline"].shape == (0, 35)
    for key in ("mel", "onset_env", "chroma", "mfcc", "beat_frames"):
        assert (a[key] == b[key]).all(), key
    assert a["params_hash"] != b["params_hash"]
    assert json.loads(b["params"])["baseline"] is False and "baseline" not in json.loads(a["params"])
    # the lean artifact is not taken for a full one: asking again without the flag redoes it
    again = runner.invoke(app, ["features", str(music / "one.wav"), "-o", str(tmp_path / "lean")])
    assert [r["skipped"] for r in _lines(again.stdout)] == [False]
