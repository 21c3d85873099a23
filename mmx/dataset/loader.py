"""Read a `mmx pair` dataset back — no deep-learning framework needed.

    >>> import mmx.dataset
    >>> ds = mmx.dataset.open("dataset/", "train")      # random access, memory-mapped
    >>> ds[0]["audio"].shape, ds[0]["pose"].shape        # (T, F), (T, 19, 3)
    >>> small = mmx.dataset.load("dataset/", "val")      # a whole (small) split as stacked arrays

`open` and `load` live in `mmx.dataset.reader`; this module keeps the manifest reader.
(The module is ``loader`` rather than ``load`` so the package attribute ``mmx.dataset.load``
stays the function.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from mmx.errors import DataError, InputMissingError

SPLITS = ("train", "val", "test")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The dataset's ``manifest.json`` as a dict.

    Raises InputMissingError when the directory has no manifest, DataError when it is not a
    `mmx pair` manifest.
    """
    path = Path(directory) / "manifest.json"
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputMissingError(f"{directory} is not an mmx dataset (no manifest.json)") from None
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "mmx-pair-dataset":
        raise DataError(f"{path}: not an mmx pair manifest")
    return manifest


def load(directory: str | Path, split: str = "train") -> dict[str, Any]:
    """One whole split as stacked numpy arrays; see `mmx.dataset.reader.load`."""
    from mmx.dataset.reader import load as _load

    return _load(directory, split)
