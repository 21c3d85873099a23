"""Shared fixtures: the shared real-data folder, an isolated MMX_HOME, free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MMX_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: The `mmx` command line for subprocess tests (works without the console script on PATH).
MMX = [sys.executable, "-m", "mmx"]

# A shell without job control starts a background command (`scripts/test_under_load.sh &`,
# `nohup make test &`) with SIGINT ignored, and every process the tests start would inherit
# that: the Ctrl-C tests would then see commands run to their end. Ctrl-C is what they test,
# so the suite restores Python's own handler, which the children's exec resets to the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real recordings); the test is skipped when it is absent. Session
    scoped, so that module fixtures built from the recordings can ask for it too."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def mmx_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own MMX_HOME so nothing touches the user's real ledger."""
    home = tmp_path / "mmx-home"
    monkeypatch.setenv("MMX_HOME", str(home))
    monkeypatch.delenv("MMX_DEBUG", raising=False)
    return home


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()
