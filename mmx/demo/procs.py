"""Child-process supervision for `mmx demo`: start mmx commands, stop every one of them.

Each child runs in its own session (process group), so stopping it also stops anything it
started. `Supervisor.stop_all` sends SIGINT, then SIGTERM, then SIGKILL to whatever is still
alive, so nothing is left running after the demo, after a failure, or after Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: How a child mmx command is started: the same interpreter, so a venv without the
#: console script on PATH works too.
MMX_ARGV = [sys.executable, "-m", "mmx"]


@dataclass
class Child:
    """One supervised process: its name, command line, Popen and stderr log file."""

    name: str
    argv: list[str]
    proc: subprocess.Popen
    log_path: Path | None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class Supervisor:
    """Starts children in their own process groups and stops them all, in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: list[str], *, stdin: Any = subprocess.DEVNULL,
              stdout: Any = subprocess.DEVNULL, env: dict[str, str] | None = None) -> Child:  # fmt: skip
        """Start ``mmx <args>`` with stderr to ``<log_dir>/<name>.log``; returns the child."""
        log_path = self.log_dir / f"{name}.log"
        log: IO[bytes] = open(log_path, "ab")
        argv = [*MMX_ARGV, *args]
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        try:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=log, env=child_env,
                                    start_new_session=True)  # fmt: skip
        finally:
            log.close()
        child = Child(name, argv, proc, log_path)
        self.children.append(child)
        return child

    def run(self, name: str, args: list[str], *, timeout_s: float, stdout: Any = subprocess.DEVNULL) -> Child:
        """Run ``mmx <args>`` to completion (bounded by ``timeout_s``); returns the child."""
        child = self.start(name, args, stdout=stdout)
        try:
            child.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.stop(child)
        return child

    def dead(self) -> list[Child]:
        """Long-running children that have exited (for a health check during the shoot)."""
        return [c for c in self.children if not c.alive]

    @staticmethod
    def _signal(child: Child, sig: int) -> None:
        try:
            os.killpg(child.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, child: Child, *, grace_s: float = 5.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL the child's process group; returns its exit code."""
        for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            if child.proc.poll() is not None:
                break
            self._signal(child, sig)
            try:
                child.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        # whatever the child left in its group goes too
        self._signal(child, signal.SIGKILL)
        return child.proc.poll()

    def stop_all(self, *, grace_s: float = 5.0) -> None:
        """Stop every child still alive, newest first."""
        for child in reversed(self.children):
            self.stop(child, grace_s=grace_s)

    def tail_log(self, child: Child, lines: int = 5) -> str:
        """The last ``lines`` lines of a child's stderr log (for error reports)."""
        if child.log_path is None or not child.log_path.exists():
            return ""
        text = child.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
