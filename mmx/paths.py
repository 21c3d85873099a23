"""Where mmx keeps its files: ``$MMX_HOME`` (default: the platform user data directory)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "mmx"


def mmx_home() -> Path:
    """``$MMX_HOME`` if set, else the platform user data dir (e.g. ``~/.local/share/mmx``)."""
    env = os.environ.get("MMX_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME))


def default_ledger_path() -> Path:
    """The default ledger file, ``$MMX_HOME/ledger.sqlite``."""
    return mmx_home() / "ledger.sqlite"


def default_state_dir() -> Path:
    """The default device state directory (the platform user state dir for mmx)."""
    env = os.environ.get("MMX_HOME")
    return Path(env).expanduser() / "state" if env else Path(platformdirs.user_state_dir(APP_NAME))
