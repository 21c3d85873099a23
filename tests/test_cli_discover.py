"""`mmx discover` command: JSON Lines on stdout or -o FILE, stderr summary, exit codes, pipes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmx.cli import app

from .audio_fixtures import sha256, write_capture_dir, write_click, write_pose_file
from .conftest import MMX


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "root"
    a = write_click(r / "music" / "a.wav", seconds=2.0)
    result = CliRunner().invoke(app, ["features", str(a), "-o", str(r / "features")])
    assert result.exit_code == 0, result.stderr
    write_capture_dir(r / "sessions", "S1", cues=[{"track": sha256(a), "title": "a"},
                                                  {"track": "e" * 64, "title": "lost"}], malformed_at=3)  # fmt: skip
    write_pose_file(r / "pose" / "p.pose.jsonl", frames=10)
    (r / "loop").symlink_to(r)
    return r


def test_inventory_on_stdout_and_summary_on_stderr(root):
    result = CliRunner().invoke(app, ["discover", str(root)])
    assert result.exit_code == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.splitlines()]
    assert [it["kind"] for it in items] == ["audio", "features", "pose", "session", "error"]
    session = items[3]
    assert session["cues"][0]["features"] == items[1]["path"]
    assert session["missing"] == ["session S1 cued track eeeeeeeeeeee (lost) but no features exist for it"]
    err = result.stderr
    assert "found: 1 audio, 1 features, 1 pose, 1 session, 1 error" in err
    assert "audio: 0.00 h; features: 0.00 h" in err
    assert "session S1: 40 pose samples (cam-1 20, cam-2 20)" in err
    assert "missing (1):" in err and "session S1 cued track eeeeeeeeeeee (lost) but no features exist for it" in err
    assert "errors (1):" in err and "symbolic link loop" in err
    assert "malformed lines (1):" in err and "events.jsonl: line 3:" in err


def test_output_file_is_written_whole(root, tmp_path):
    out = tmp_path / "inv.jsonl"
    result = CliRunner().invoke(app, ["discover", str(root / "music"), str(root / "features"), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert [it["kind"] for it in items] == ["audio", "features"]
    assert items[0]["features"] == items[1]["path"] and items[1]["audio"] == items[0]["path"]
    assert f"wrote 2 items to {out}" in result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".inv")] == []  # no temp file left


def test_missing_root_exits_66(tmp_path):
    result = CliRunner().invoke(app, ["discover", str(tmp_path / "nope")])
    assert result.exit_code == 66
    assert f"Error: no such file or directory: {tmp_path / 'nope'}" in result.stderr
    assert CliRunner().invoke(app, ["discover"]).exit_code == 2


def test_roots_from_stdin_and_piped_into_head(root):
    proc = subprocess.run([*MMX, "discover", "-"], input=f"{root / 'music'}\n{root / 'pose'}\n".encode(),
                          capture_output=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    kinds = [json.loads(line)["kind"] for line in proc.stdout.splitlines()]
    assert kinds == ["audio", "pose"]
    # `mmx discover … | head -1` ends quietly
    pipe = subprocess.run(f"{' '.join(MMX)} discover {root} | head -1", shell=True, capture_output=True, timeout=120)
    assert pipe.returncode == 0 and len(pipe.stdout.splitlines()) == 1
    assert b"Traceback" not in pipe.stderr
