"""Every command has help text and an up-to-date man page (sqlite-utils' tests/test_docs.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mmx.cli import app

from .conftest import ROOT


def _commands():
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="mmx")

    def walk(cmd, ctx, path):
        yield path
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                yield from walk(sub, type(ctx)(sub, info_name=name, parent=ctx), path + [name])

    return list(walk(root, ctx, []))


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(["mmx", *p]))
def test_every_command_has_help_and_a_man_page(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    page = ROOT / "man" / ("-".join(["mmx", *path]) + ".1")
    assert page.exists(), f"{page.name} is missing: run python scripts/gen_man.py"
    text = page.read_text()
    sections = [ln.split(" ", 1)[1] for ln in text.splitlines() if ln.startswith(".SH ")]
    expected_order = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO"]
    assert sections == [s for s in expected_order if s in sections]
    assert {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "SEE ALSO"} <= set(sections)


def test_man_pages_are_not_stale():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_man.py"), "--check"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr



@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(["mmx", *p]))
def test_help_examples_keep_one_command_per_line(path):
    """Click rewraps a paragraph unless \\b opens it: an 'Examples:' heading glued to its
    \\b block squashes every example onto the heading's line."""
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    squashed = [ln for ln in result.output.splitlines() if ln.strip().startswith("Examples:") and ln.strip() != "Examples:"]
    assert not squashed, squashed
