"""`mmx device` option handling: bad options fail before connecting, with exact messages."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.device import state_file

from .conftest import free_port


def _invoke(tmp_path, *args):
    base = ["device", "--server", f"http://127.0.0.1:{free_port()}", "--token", "T", "--name", "x",
            "--state-dir", str(tmp_path / "state"), "--max-retries", "0"]  # fmt: skip
    return CliRunner().invoke(app, [*base, *args])


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--size", "640by360"], 65, "Error: size '640by360' is not WIDTHxHEIGHT"),
    (["--lenses", "0.5,wide"], 65, "Error: lens 'wide' is not a number"),
    (["--placement", "azimuth_deg=left"], 65, "Error: placement field 'azimuth_deg' must be a number, got 'left'"),
    (["--placement", "{oops"], 65, "Error: placement is not valid JSON"),
    (["--video", "/nonexistent/clip.mp4"], 66, "Error: no such video file: /nonexistent/clip.mp4"),
    (["--pose", "/nonexistent/p.jsonl"], 66, "Error: no such file: /nonexistent/p.jsonl"),
    (["--server", "ftp://somewhere"], 65, "Error: server URL 'ftp://somewhere' is not http://HOST:PORT"),
])  # fmt: skip
def test_bad_options_are_clear_errors(tmp_path, args, code, message):
    result = _invoke(tmp_path, *args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_a_corrupt_state_file_is_not_silently_replaced(tmp_path):
    path = state_file(tmp_path / "state", "x")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    result = _invoke(tmp_path)
    assert result.exit_code == 65
    assert "not a device state file" in result.output and "deleting makes this a new device" in " ".join(result.output.split())
    assert path.read_text() == "{not json"


def test_unreachable_server_with_no_retries_is_exit_69(tmp_path):
    result = _invoke(tmp_path)
    assert result.exit_code == 69
    assert "Error: cannot reach" in result.output and "after 1 attempt:" in result.output
