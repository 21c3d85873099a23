"""The root command: version, the error translation point and its exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mmx import __version__, errors
from mmx.cli import app

from .conftest import MMX


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"mmx {__version__}"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([*MMX, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "Usage: mmx" in result.stdout


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(app, ["no-such-command"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.DataError("bad line"), 65),
        (errors.InputMissingError("no such file: x"), 66),
        (errors.ServiceUnavailableError("down"), 69),
        (errors.IOFailure("disk full"), 74),
        (errors.TemporaryFailure("busy"), 75),
        (errors.LedgerError("locked"), 74),
        (RuntimeError("boom"), 70),
        (KeyboardInterrupt(), 130),
    ],
)
def test_errors_translate_to_exit_codes(monkeypatch, exc, code):
    probe = typer.Typer()

    @probe.command("raise")
    def _raise() -> None:
        raise exc

    app.add_typer(probe, name="probe-errors")
    try:
        result = CliRunner().invoke(app, ["probe-errors", "raise"])
    finally:
        app.registered_groups.pop()
    assert result.exit_code == code
    if isinstance(exc, errors.MmxError):
        assert f"Error: {exc.message}" in result.stderr
        assert "Traceback" not in result.stderr
    if isinstance(exc, RuntimeError):
        assert "Error: internal error: RuntimeError: boom" in result.stderr
        assert "Hint: run again with MMX_DEBUG=1" in result.stderr


def test_hint_is_printed():
    probe = typer.Typer()

    @probe.command("raise")
    def _raise() -> None:
        raise errors.ServiceUnavailableError("Convex refused the deploy key", hint="check CONVEX_DEPLOY_KEY")

    app.add_typer(probe, name="probe-hint")
    try:
        result = CliRunner().invoke(app, ["probe-hint", "raise"])
    finally:
        app.registered_groups.pop()
    assert result.exit_code == 69
    assert "Hint: check CONVEX_DEPLOY_KEY" in result.stderr


def test_closed_stdout_ends_quietly():
    """`mmx … | head -1`: the reader goes away, mmx exits without a traceback."""
    code = (
        "import sys\nfrom mmx.cli import app\nimport typer\n"
        "p = typer.Typer()\n"
        "@p.command('spew')\n"
        "def spew():\n"
        "    for i in range(1000000):\n"
        "        sys.stdout.write('line %d\\n' % i)\n"
        "app.add_typer(p, name='probe')\n"
        "from mmx.cli import main\n"
        "sys.argv = ['mmx', 'probe', 'spew']\nmain()\n"
    )
    result = subprocess.run(["bash", "-c", f"{sys.executable} -c \"$CODE\" | head -1; exit ${{PIPESTATUS[0]}}"],
                            env={"CODE": code, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.stdout == "line 0\n"
    assert result.stderr == ""
    assert result.returncode == 0
