"""The training-data lane: pair recorded sessions with music features into a dataset.

- `mmx.dataset.pair` builds a dataset directory from a `mmx discover` inventory.
- `mmx.dataset.load(DIR, split)` reads one split back as numpy arrays (`mmx.dataset.loader`).
- `mmx.dataset.bas` computes the Beat Alignment Score.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # lazy, so importing a sibling module (e.g. discover) does not pull in numpy-heavy code
    if name == "load":
        from mmx.dataset.loader import load

        return load
    raise AttributeError(f"module 'mmx.dataset' has no attribute {name!r}")
