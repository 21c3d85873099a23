"""Start-up cost of the CLI (issue 18): the root app and its help load none of the heavy
libraries a command needs only once it runs. bench/cli_startup.py measures the seconds."""

from __future__ import annotations

import subprocess
import sys

#: Imported by some command, never needed to parse arguments or print help.
HEAVY = ["numpy", "librosa", "aiortc", "av", "aiohttp", "asyncio", "ulid", "pydantic", "httpx",
         "opentimelineio", "pyarrow", "rich.table", "mmx.ledger.ingest"]

PROBE = """
import sys
from typer.main import get_command
import mmx.cli
get_command(mmx.cli.app).get_help  # the whole command tree is built
import click
ctx = click.Context(get_command(mmx.cli.app), info_name="mmx")
ctx.command.get_help(ctx)
print(" ".join(m for m in {heavy!r} if m in sys.modules))
"""


def test_the_root_help_loads_no_heavy_library() -> None:
    probe = PROBE.format(heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"loaded at start: {out.stdout.strip()}"


def test_a_ledger_reader_loads_no_event_ingest_or_asyncio(tmp_path) -> None:
    ledger = tmp_path / "l.sqlite"
    subprocess.run([sys.executable, "-m", "mmx", "ledger", "push", "-", "--ledger", str(ledger)],
                   input=b"", check=True, capture_output=True)
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['mmx', 'ledger', 'tail', '--ledger', {str(ledger)!r}]\n"
        "try:\n    runpy.run_module('mmx', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stderr.split() == [], f"loaded by ledger tail: {out.stderr.strip()}"
