"""Read a `mmx pair` dataset back as numpy arrays — no deep-learning framework needed.

    >>> import mmx.dataset
    >>> data = mmx.dataset.load("dataset/", "train")
    >>> data["audio"].shape, data["pose"].shape        # (N, T, F), (N, T, 19, 3)

(The module is ``loader`` rather than ``load`` so the package attribute ``mmx.dataset.load``
stays the function.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmx.errors import DataError, InputMissingError

#: The arrays of every shard, in the order of `load`'s result.
ARRAY_KEYS = ("audio", "pose", "dynamics", "observed", "beat")
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
    """Load one split of a dataset written by ``mmx pair``.

    Returns a dict of numpy arrays, windows in ``samples.jsonl`` order:

    - ``audio`` (N, T, F) float32 — the columns listed in ``manifest["arrays"]["audio"]["columns"]``
    - ``pose`` (N, T, 19, 3) float32 — x, y, confidence per joint (``mmx.events.JOINT_NAMES``)
    - ``dynamics`` (N, T, 39) float32 — per-joint speed, acceleration, kinetic-energy proxy
    - ``observed`` (N, T) bool — frames with a real pose sample within ``max_gap_s``
    - ``beat`` (N, T) float32 — 1.0 on music beat frames

    plus ``samples`` (list of N dicts, the ``samples.jsonl`` rows) and ``manifest``.
    T = ``manifest["frames"]["window_frames"]``; an empty split gives N = 0.
    Raises ValueError for an unknown split, InputMissingError when the directory or a shard
    is missing, DataError when a shard disagrees with ``samples.jsonl``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    root = Path(directory)
    manifest = read_manifest(root)
    rows: list[dict[str, Any]] = []
    with open(root / "samples.jsonl", "rb") as fp:
        for line in fp:
            if line.strip():
                row = orjson.loads(line)
                if row.get("split") == split:
                    rows.append(row)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ARRAY_KEYS}
    shard_names = list(dict.fromkeys(r["shard"] for r in rows))
    for name in shard_names:
        path = root / "shards" / f"{name}.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                for key in ARRAY_KEYS:
                    parts[key].append(npz[key])
        except FileNotFoundError:
            raise InputMissingError(f"shard {path} is missing") from None
    out: dict[str, Any] = {}
    arrays = manifest["arrays"]
    for key in ARRAY_KEYS:
        if parts[key]:
            out[key] = np.concatenate(parts[key]) if len(parts[key]) > 1 else parts[key][0]
        else:
            shape = [0 if d == "N" else (d or 0) for d in arrays[key]["shape"]]
            out[key] = np.zeros(shape, dtype=np.dtype(arrays[key]["dtype"]))
    # rows of one split are written in shard order, index 0.. within each shard
    if out["audio"].shape[0] != len(rows):
        raise DataError(f"{root}: {len(rows)} {split} rows in samples.jsonl but {out['audio'].shape[0]} windows in shards")
    out["samples"] = rows
    out["manifest"] = manifest
    return out
