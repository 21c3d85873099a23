"""The device's stable id, kept in a small JSON state file so a restarted device is the
same device to the server's registry (same camera id, same placement).

One file per device name: ``<state-dir>/device-<name-slug>.json`` holding
``{"device": "dev-<ulid>", "name": ...}``, written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from mmx.errors import DataError
from mmx.events import new_id
from mmx.fileio import atomic_write


def state_file(state_dir: str | Path, name: str) -> Path:
    """The state file of the device called ``name`` under ``state_dir``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "device"
    return Path(state_dir) / f"device-{slug}.json"

def load_device_id(state_dir: str | Path, name: str, *, device_id: str | None = None) -> str:
    """The device id for ``name``: ``device_id`` when given (the state file is then neither
    read nor written), else the one stored in the state file, else a new ``dev-<ulid>``
    written there first.

    Raises DataError when the state file exists but is unreadable as a state file (it is
    never silently replaced: that would make this a new device), IOFailure when the state
    directory cannot be written.
    """
    if device_id:
        if len(device_id) > 128:
            raise DataError("a device id has at most 128 characters")
        return device_id
    path = state_file(state_dir, name)
    stored: str | None = None
    if path.exists():
        try:
            obj = orjson.loads(path.read_bytes())
        except (orjson.JSONDecodeError, OSError) as exc:
            raise DataError(f"{path}: not a device state file ({exc})",
                            hint="fix or delete it; deleting makes this a new device to the server") from None  # fmt: skip
        stored = obj.get("device") if isinstance(obj, dict) else None
        if not isinstance(stored, str) or not stored or len(stored) > 128:
            raise DataError(f"{path}: no usable 'device' id",
                            hint="fix or delete it; deleting makes this a new device to the server")  # fmt: skip
    chosen = stored or f"dev-{new_id().lower()}"
    if chosen != stored:
        atomic_write(path, orjson.dumps({"device": chosen, "name": name}) + b"\n")
    return chosen
