"""Windows and splits: where windows start, which split a session (or track) goes to."""

from __future__ import annotations

import hashlib
import math

import numpy as np

SPLITS = ("train", "val", "test")


def window_starts(f_lo: int, f_hi: int, window_frames: int, stride_s: float, fps: float) -> np.ndarray:
    """Start frames of the windows inside frames [f_lo, f_hi): window k starts at
    ``f_lo + round(k * stride_s * fps)`` and must end by ``f_hi``. Returns int64 (N,)."""
    last = f_hi - window_frames
    if last < f_lo:
        return np.zeros(0, dtype=np.int64)
    n_max = int((last - f_lo) / (stride_s * fps)) + 2
    starts = f_lo + np.round(np.arange(n_max) * stride_s * fps).astype(np.int64)
    return starts[starts <= last]



def assign_splits(groups: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Assign whole groups (sessions or tracks) to train/val/test.

    The sorted groups are shuffled with ``numpy.random.default_rng(seed)``; counts follow the
    fractions by largest remainder, and every split with a fraction > 0 gets at least one
    group when there are enough groups. Same groups + seed → same assignment.
    """
    groups = sorted(set(groups))
    n = len(groups)
    if n == 0:
        return {}
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i in range(3) if fractions[i] > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    pos = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for k in perm[pos : pos + count]:
            out[groups[int(k)]] = split
        pos += count
    return out


def hash_split(group: str, fractions: tuple[float, float, float], seed: int) -> str:
    """Split of a group not known when splits were planned: a uniform number from
    sha256(f"{seed}:{group}") against the cumulative fractions."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"



def empty_split_warning(split_of: dict[str, str], fractions: tuple[float, float, float], by: str) -> str | None:
    """The warning when a split with a fraction > 0 got no group (too few sessions or tracks), else None."""
    empty = [s for s, f in zip(SPLITS, fractions, strict=True) if f > 0 and s not in split_of.values()]
    if not empty:
        return None
    n = len(split_of)
    unit = "session" if by == "session" else "track"
    wanted = "/".join(f"{f:g}" for f in fractions)
    return (f"only {n} {unit}{'s' if n != 1 else ''} for the {wanted} split by {unit}: "
            f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty; "
            "--split-by time cuts each session into contiguous blocks instead")  # fmt: skip


def time_blocks(lo: float, hi: float, fractions: tuple[float, float, float]) -> tuple[float, float]:
    """The two boundaries (seconds) that cut [lo, hi) into train/val/test blocks by ``fractions``."""
    span = hi - lo
    return lo + fractions[0] * span, lo + (fractions[0] + fractions[1]) * span


def time_split(start: np.ndarray, duration: float, bounds: tuple[float, float]) -> np.ndarray:
    """Split of each window [start, start + duration) against the block ``bounds``: 0 train,
    1 val, 2 test, -1 for a window that straddles a boundary (dropped, so that no two windows
    of different splits share a frame). ``start`` (N,) seconds. Returns int8 (N,)."""
    end = start + duration
    b1, b2 = bounds
    eps = 1e-9
    out = np.full(start.shape, -1, dtype=np.int8)
    out[end <= b1 + eps] = 0
    out[(start >= b1 - eps) & (end <= b2 + eps)] = 1
    out[start >= b2 - eps] = 2
    return out
