"""The root `mmx` command: joins the command modules and translates errors to exit codes.

The one translation point is `MmxGroup.invoke`: an `MmxError` raised anywhere below becomes
``Error: …`` (and ``Hint: …``) on stderr and the error's exit code (STYLE.md); Ctrl-C is 130;
a closed stdout (``mmx … | head -1``) ends quietly with 0; anything else is an internal
error, exit 70, with a traceback only when ``MMX_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from mmx import __version__
from mmx.errors import EX_INTERRUPTED, EX_SOFTWARE, MmxError

#: Exceptions that are typer's (click's) own control flow and must pass through untouched.
_CONTROL_FLOW: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort)
try:  # usage errors, bad parameters: typer prints them and exits 2 itself
    from typer._click.exceptions import ClickException as _ClickException

    _CONTROL_FLOW += (_ClickException,)
except ImportError:  # pragma: no cover - typer without its vendored click
    pass


def _debug() -> bool:
    return os.environ.get("MMX_DEBUG", "") not in ("", "0")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def report_error(exc: MmxError) -> None:
    """Print ``Error: …`` and an optional ``Hint: …`` on stderr."""
    from rich.markup import escape

    from mmx.commands._common import console

    # messages are plain text: brackets in them (``mmx[pose]``, ``[x, y]``) are not markup
    console.print(f"[bold red]Error:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
    if exc.hint:
        console.print(f"[bold]Hint:[/] {escape(exc.hint)}", markup=True, soft_wrap=True)


class MmxGroup(TyperGroup):
    """The root group; its `invoke` is mmx's single error translation point."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except _CONTROL_FLOW:
            raise
        except MmxError as exc:
            if _debug():
                traceback.print_exc()
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            raise typer.Exit(EX_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the translation point for bugs
            if _debug():
                traceback.print_exc()
            report_error(MmxError(f"internal error: {type(exc).__name__}: {exc}",
                                  hint="run again with MMX_DEBUG=1 for a traceback and report it"))  # fmt: skip
            raise typer.Exit(EX_SOFTWARE) from None


app = typer.Typer(
    cls=MmxGroup,
    name="mmx",
    help="Live multi-camera AI photoshoot toolkit: serve cameras, direct cuts, keep the ledger, build datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmx {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """mmx: run a live multi-camera AI photoshoot and learn from it.

    Every command reads and writes JSON Lines (one event per line) on stdin/stdout;
    everything for humans goes to stderr.
    """


def _register() -> None:
    """Join the command modules, in the order a shoot uses them (as `mmx --help` lists them).

    Command modules import their heavy libraries (aiohttp, aiortc, librosa, OTIO) inside the
    command, so `mmx --help` and every pipe stage start fast.
    """
    from mmx.commands import demo, device, discover, features, ghost, ghost_train, ledger, pair, pose, relay, serve

    app.command("serve")(serve.serve)
    app.command("device")(device.device)
    app.command("pose")(pose.pose)
    app.command("ghost")(ghost.ghost)
    app.command("ghost-train")(ghost_train.ghost_train)
    app.command("relay")(relay.relay)
    app.add_typer(ledger.app, name="ledger")
    app.command("features")(features.features)
    app.command("discover")(discover.discover)
    app.command("pair")(pair.pair)
    app.command("demo")(demo.demo)


_register()


def main() -> None:
    """Console-script entry point (`mmx`, `python -m mmx`)."""
    try:
        app(prog_name="mmx")
    except KeyboardInterrupt:
        sys.exit(EX_INTERRUPTED)
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(0)
