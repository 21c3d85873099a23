"""Crash-safe file writes shared by every component that replaces a file whole.

`atomic_file` writes beside the target, fsyncs, renames over it and fsyncs the directory, so
a crash at any point leaves either the old file or the new one, never a torn one, and an
error leaves no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from mmx.errors import IOFailure


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file to write that replaces ``path`` only when the ``with`` block succeeds.

    Parent directories are created. Raises IOFailure (``cannot write PATH: reason``) when an
    OS call fails, in the block too (e.g. a full disk); any other exception from the block
    propagates after the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise IOFailure(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise IOFailure(f"cannot write {path}: {exc.strerror}") from None
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | Path, body: bytes) -> None:
    """Replace ``path`` with ``body`` crash-safely (see `atomic_file`). Raises IOFailure."""
    with atomic_file(path) as fp:
        fp.write(body)


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
