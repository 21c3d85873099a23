"""The terminal banner of `mmx ghost`: what the ghost proposes and why, in words.

`TerminalUI` draws a rich panel on the command's stderr console ten times a second: mode,
program and hold; the pending proposal with a countdown to its beat and its reasons as
sentences (the strongest signals, the gain or why the cut is due, the music, the timing); or,
with nothing pending, the shot the ghost is holding (``ghost.held``) and why, camera by
camera; and whether the proposal budget is resting. When stdin is a terminal it reads raw
single keys: ``a`` accept, ``v`` veto, ``h`` hold, ``r`` release.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmx.ghost.live import GhostRunner

#: Reasons shown under a proposal, besides the two strongest signals (in this order).
_SHOWN = ("forced", "gain", "energy", "timing")


def proposal_lines(reasons: list[dict[str, Any]]) -> list[str]:
    """The sentences shown for a proposal: its two strongest signals, then why (gain or
    forced), the music and the timing."""
    top = sorted((r for r in reasons if "contribution" in r), key=lambda r: -r["contribution"])[:2]
    rest = sorted((r for r in reasons if r.get("feature") in _SHOWN), key=lambda r: _SHOWN.index(r["feature"]))
    return [r["text"] for r in top + rest if r.get("text")]


def held_lines(held: dict[str, Any], limit: int = 4) -> list[str]:
    """The sentences shown for a held shot: the hold itself, then up to ``limit`` more."""
    texts = [r["text"] for r in held.get("reasons") or [] if r.get("text")]
    more = len(texts) - 1 - limit
    return texts[: limit + 1] + ([f"… and {more} more"] if more > 0 else [])


class TerminalUI:
    """The banner and the keys (see the module docstring). ``console`` is the command's
    stderr console; ``keys`` reads raw keys from stdin."""

    def __init__(self, console: Any, runner: GhostRunner, *, keys: bool) -> None:
        self.console = console
        self.runner = runner
        self.keys = keys
        self._live: Any = None
        self._saved: Any = None
        self._task: asyncio.Task[Any] | None = None

    def render(self) -> Any:
        from rich.panel import Panel
        from rich.text import Text

        now = self.runner.clock()
        snap = self.runner.policy.snapshot(now)
        head = Text()
        head.append(f"mode {snap['mode']}", style="bold")
        head.append(f" · program {snap['program'] or '-'}")
        head.append(" · HOLD" if snap["hold"] else " · hold off", style="bold red" if snap["hold"] else "")
        if not self.runner.proposing:
            head.append(" · server unavailable, not proposing", style="yellow")
        body = Text()
        p = snap["pending"]
        if p is not None:
            countdown = max(0.0, p["cut_at"] - now)
            state = f"accepted by {p['accepted_by']}" if p["accepted_by"] else "pending"
            body.append(f"{p['from'] or '-'} → {p['to']}", style="bold green")
            body.append(f"  score {p['score']:.2f}  cut in {countdown:4.2f} s  ({state})")
            for line in proposal_lines(p["reasons"]):
                body.append("\n  " + line, style="dim")
        elif snap["held"] is not None:
            body.append(f"held {snap['held']['camera'] or '-'}", style="bold yellow")
            for i, line in enumerate(held_lines(snap["held"])):
                body.append(("  " if i == 0 else "\n  ") + line, style="" if i == 0 else "dim")
        else:
            body.append("no proposal pending")
        if snap["resting"] is not None:
            body.append("\nresting: " + snap["resting"]["text"], style="yellow")
        keys = Text("  [a] accept  [v] veto  [h] hold  [r] release ") if self.keys else None
        return Panel(Text.assemble(head, "\n", body), title="mmx ghost", subtitle=keys)

    async def __aenter__(self) -> TerminalUI:
        from rich.live import Live

        self._live = Live(self.render(), console=self.console, refresh_per_second=10, transient=True)
        self._live.start()
        if self.keys:
            import termios
            import tty

            fd = sys.stdin.fileno()
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            asyncio.get_running_loop().add_reader(fd, self._on_key, fd)
        self._task = asyncio.create_task(self._refresh())
        return self

    def _on_key(self, fd: int) -> None:
        try:
            data = os.read(fd, 16)
        except OSError:
            return
        for ch in data.decode("utf-8", "ignore").lower():
            self.runner.key(ch)

    async def _refresh(self) -> None:
        while True:
            self._live.update(self.render())
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.keys and self._saved is not None:
            import termios

            fd = sys.stdin.fileno()
            asyncio.get_running_loop().remove_reader(fd)
            termios.tcsetattr(fd, termios.TCSADRAIN, self._saved)
        if self._live is not None:
            self._live.stop()
