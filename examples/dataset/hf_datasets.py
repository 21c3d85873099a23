#!/usr/bin/env python3
"""Read a `mmx pair` dataset with Hugging Face `datasets` — no mmx import needed.

    pip install datasets            # and a dataset made by `mmx pair` (see README.md)
    python examples/dataset/hf_datasets.py dataset/ [--split train] [--check]

The windows index (``windows.parquet``) and each segment (``segments/<name>.parquet``)
are loaded as `datasets.Dataset` objects (Arrow files, memory-mapped by `datasets`); a
window is rows ``[row, row + frames)`` of its segment, sliced on access by a transform, so
no frame is copied once per window. ``--check`` compares every window with what
``mmx.dataset.open`` returns (it imports mmx for that alone).

Everything is read from local files: `datasets` caches its Arrow copy under ``--cache-dir``
(default: its own, ``~/.cache/huggingface/datasets``) and never asks the Hub.
"""

from __future__ import annotations

import argparse
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local Parquet files only

import datasets  # noqa: E402
import numpy as np  # noqa: E402


def load_windows(root: Path, split: str | None, cache_dir: str | None) -> datasets.Dataset:
    """The windows index as a `datasets.Dataset`, one split (or all), with a transform that
    adds each window's arrays: audio (T, F), pose (T, 19, 3), observed (T,), beat (T,) and
    dynamics (T, 39) in torso lengths (speed, accel divided by the window's torso_length,
    kinetic energy by its square: what the manifest documents)."""
    index = datasets.load_dataset("parquet", data_files=str(root / "windows.parquet"), split="train",
                                  cache_dir=cache_dir)  # fmt: skip  # "train" is datasets' name for "all rows"
    if split is not None:
        index = index.filter(lambda s: s == split, input_columns="split")

    @lru_cache(maxsize=16)
    def segment(name: str) -> datasets.Dataset:
        seg = datasets.Dataset.from_parquet(str(root / "segments" / f"{name}.parquet"), cache_dir=cache_dir)
        return seg.with_format("numpy")

    def with_arrays(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {k: list(v) for k, v in batch.items()}
        for key in ("audio", "pose", "observed", "beat", "dynamics"):
            out[key] = []
        for name, row, t, torso in zip(batch["segment"], batch["row"], batch["frames"], batch["torso_length"], strict=True):
            f = segment(name)[int(row) : int(row) + int(t)]
            k = np.float32(1.0 / torso)
            out["audio"].append(f["audio"].astype(np.float32))
            out["pose"].append(f["pose"].astype(np.float32))
            out["observed"].append(f["observed"].astype(bool))
            out["beat"].append(f["beat"].astype(np.float32))
            out["dynamics"].append(np.concatenate([f["speed"] * k, f["accel"] * k, (f["kinetic_energy"] * k * k)[:, None]],
                                                  axis=1).astype(np.float32))  # fmt: skip
        return out

    index.set_transform(with_arrays)
    return index


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, help="a directory written by `mmx pair`")
    ap.add_argument("--split", default="train", help="train, val, test or all (default train)")
    ap.add_argument("--cache-dir", default=None, help="where `datasets` keeps its Arrow copies")
    ap.add_argument("--check", action="store_true", help="compare every window with mmx.dataset.open")
    args = ap.parse_args()
    split = None if args.split == "all" else args.split
    ds = load_windows(args.dataset, split, args.cache_dir)
    print(f"{len(ds)} windows in {args.split}; columns {', '.join(ds.column_names)}")
    if len(ds):
        w = ds[0]
        print(f"window {w['id']}: audio {w['audio'].shape}, pose {w['pose'].shape}, "
              f"observed share {w['observed'].mean():.2f}, {int(w['beat'].sum())} beats")  # fmt: skip
    if args.check:
        import mmx.dataset

        ref = mmx.dataset.open(args.dataset, split)
        assert len(ref) == len(ds), (len(ref), len(ds))
        for i in range(len(ds)):
            w, r = ds[i], ref[i]
            assert w["id"] == ref.row(i)["id"]
            for key in ("audio", "pose", "dynamics", "observed", "beat"):
                np.testing.assert_array_equal(w[key], r[key], err_msg=f"window {i} {key}")
        print(f"all {len(ds)} windows equal mmx.dataset.open's")


if __name__ == "__main__":
    main()
