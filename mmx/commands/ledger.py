"""`mmx ledger`: the production ledger (push, tail, sessions, show, export)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="The production ledger: a durable SQLite history of every session, camera, cut, hold, still and decision.",
    no_args_is_help=True,
)
