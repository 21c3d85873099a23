"""Helpers shared by the command modules: stderr console, stdin/stdout dashes, JSON Lines out.

Only command modules import this; library code never prints.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
from rich.console import Console

from mmx.errors import EventError, InputMissingError, IOFailure

#: Everything for humans goes here; stdout is data only.
console = Console(stderr=True, highlight=False)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def wants_json(json_flag: bool) -> bool:
    """Listing commands print JSON Lines with ``--json`` or when stdout is not a terminal."""
    return json_flag or not stdout_is_terminal()


def write_jsonl(obj: Any, fp: IO[bytes] | None = None) -> None:
    """One compact JSON object plus ``\\n`` on stdout (or ``fp``), flushed at once."""
    out = fp or sys.stdout.buffer
    out.write(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    out.flush()


@contextmanager
def open_input(path: str | Path) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary reading; ``-`` is stdin. Raises InputMissingError / IOFailure."""
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    try:
        fp = open(path, "rb")
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputMissingError(f"is a directory, not a file: {path}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror}") from None
    with fp:
        yield fp


@contextmanager
def open_output(path: str | Path) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary writing; ``-`` is stdout. Raises IOFailure."""
    if str(path) == "-":
        yield sys.stdout.buffer
        return
    try:
        fp = open(path, "wb")
    except OSError as exc:
        raise IOFailure(f"cannot write {path}: {exc.strerror}") from None
    with fp:
        yield fp


def report_line_error(error: EventError, source: str = "") -> None:
    """Print one bad-input line report on stderr: ``warning: <source>: line N: reason``."""
    prefix = f"{source}: " if source and source != "-" else ""
    console.print(f"[yellow]warning:[/] {prefix}{error.message}", markup=True, soft_wrap=True)


async def run_until_signal(main: Awaitable[object], stop: Callable[[], None]) -> bool:
    """Await ``main``; SIGINT and SIGTERM call ``stop()`` so it can end cleanly.

    Returns True when SIGINT stopped it (the command then exits 130), False otherwise.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    got: list[int] = []

    def on_signal(signum: int) -> None:
        got.append(signum)
        stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await main
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return signal.SIGINT in got
