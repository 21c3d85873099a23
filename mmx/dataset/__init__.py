"""The training-data lane: pair recorded sessions with music features into a dataset.

- `mmx.dataset.pair` builds a dataset directory (Parquet) from a `mmx discover` inventory.
- `mmx.dataset.open(DIR, split)` gives random access to its windows as numpy arrays
  (`mmx.dataset.reader`); `mmx.dataset.load(DIR, split)` reads a small split whole.
- `mmx.dataset.torch` (extra ``mmx[torch]``): PyTorch datasets, collate, augmentations.
- `mmx.dataset.cluster` (extra ``mmx[cluster]``): pairing on a Dask cluster.
- `mmx.dataset.bas` computes the Beat Alignment Score.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy, so importing a sibling module (e.g. discover) does not pull in pyarrow
    if name in ("open", "load", "Dataset"):
        from mmx.dataset import reader

        return getattr(reader, name)
    raise AttributeError(f"module 'mmx.dataset' has no attribute {name!r}")
