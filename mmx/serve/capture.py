"""A production session's capture directory (DESIGN.md "Sessions on disk").

``sessions/<session-id>/``:

- ``session.json``: metadata (kind, title, notes, mode, status ``active``/``completed``,
  ``started_at``/``ended_at`` Unix seconds, end reason, cameras with placement, clock facts),
  rewritten atomically whenever it changes;
- ``events.jsonl``: every event of the session in ``seq`` order, including ``pose.sample``
  and ``music.cue``; appended and flushed per record, fsynced at least once a second and on
  close, so a crash loses at most the last second and never tears an earlier line;
- ``stills/<camera>/<still>.jpg``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

from mmx.errors import IOFailure
from mmx.serve.registry import DurableFile

SESSIONS_DIR = "sessions"


class CaptureDir:
    """Writer of one session's capture directory."""

    def __init__(self, root: Path, session: str, meta: dict[str, Any]) -> None:
        self.session = session
        self.path = Path(root) / SESSIONS_DIR / session
        self.meta = dict(meta)
        try:
            (self.path / "stills").mkdir(parents=True, exist_ok=True)
            self._fp = open(self.path / "events.jsonl", "ab")
        except OSError as exc:
            raise IOFailure(f"cannot create the capture directory {self.path}: {exc.strerror}") from None
        self._dirty = False
        self._last_sync = time.monotonic()
        self.events = 0
        self.meta_file = DurableFile(self.path / "session.json")
        self.write_meta()

    @property
    def stills_dir(self) -> Path:
        return self.path / "stills"

    def write(self, line: bytes) -> None:
        """Append one JSON Lines record and flush it to the OS."""
        if self._fp.closed:
            return
        self._fp.write(line)
        self._fp.flush()
        self.events += 1
        self._dirty = True

    def sync(self, *, force: bool = False) -> None:
        """fsync the events file when something was written (at most once a second unless forced)."""
        if self._fp.closed or not self._dirty:
            return
        now = time.monotonic()
        if force or now - self._last_sync >= 1.0:
            self._dirty = False
            self._last_sync = now
            try:
                os.fsync(self._fp.fileno())
            except ValueError:  # closed meanwhile by close(), which fsyncs itself
                pass

    def meta_snapshot(self, **changes: Any) -> tuple[int, bytes]:
        """Apply ``changes`` and return ``(version, body)`` of ``session.json`` for `DurableFile.write`."""
        self.meta.update(changes)
        return self.meta_file.next_version(), orjson.dumps(self.meta, option=orjson.OPT_INDENT_2) + b"\n"

    def write_meta(self, **changes: Any) -> None:
        """Rewrite ``session.json`` now, in this thread. Raises IOFailure."""
        self.meta_file.write(*self.meta_snapshot(**changes))

    def close(self, **changes: Any) -> None:
        """Flush and fsync the events, then write the final ``session.json``."""
        if not self._fp.closed:
            self._fp.flush()
            os.fsync(self._fp.fileno())
            self._fp.close()
        self.meta_file.write(*self.meta_snapshot(**changes), final=True)


def unfinished_sessions(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Capture directories whose ``session.json`` still says ``active`` (a crashed run)."""
    out = []
    for meta_path in sorted((Path(root) / SESSIONS_DIR).glob("*/session.json")):
        try:
            meta = orjson.loads(meta_path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(meta, dict) and meta.get("status") == "active":
            out.append((meta_path.parent, meta))
    return out
