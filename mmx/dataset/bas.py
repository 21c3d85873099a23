"""Beat Alignment Score (BAS): how well motion beats line up with music beats.

Definitions follow the dance-generation literature:

- *Motion beats* are the local minima of the kinetic velocity, the mean over joints of each
  joint's speed, after Gaussian smoothing (Bailando, Li et al. 2022, ``utils/metrics_new.py``
  ``calc_db``: ``gaussian_filter(kinetic_vel, 5)`` at 60 fps, then ``argrelextrema(np.less)``;
  FACT/AI Choreographer, Li et al. 2021, ``tools/calculate_beat_scores.py``).
- *BAS* (Bailando, EDGE): the mean over **music** beats of ``exp(-d² / (2σ²))``, d the
  distance from the music beat to the nearest motion beat. Bailando uses σ² = 9 frames² at
  60 fps, i.e. σ = 3 frames = 0.05 s.
- FACT's original ``alignment_score`` averages the other way round, over **motion** beats
  (nearest music beat for each motion beat), with the same σ = 3 frames at 60 fps. Both
  directions are offered (`direction`); mmx reports both and names them.

Everything here works in seconds, so the score does not depend on the frame rate.
"""

from __future__ import annotations

import math

import numpy as np

#: σ of the score: 3 frames at 60 fps (Bailando, FACT).
SIGMA_S = 3 / 60
#: σ of the Gaussian smoothing of the kinetic velocity before finding minima: 5 frames at
#: 60 fps (Bailando ``calc_db``).
SMOOTH_SIGMA_S = 5 / 60

MUSIC_TO_MOTION = "music_to_motion"  # Bailando / EDGE: mean over music beats
MOTION_TO_MUSIC = "motion_to_music"  # FACT (mint): mean over motion beats


def gaussian_smooth(x: np.ndarray, sigma_frames: float) -> np.ndarray:
    """Gaussian-smooth a 1-D signal like ``scipy.ndimage.gaussian_filter1d`` (mode "reflect").

    ``x`` shape (n,); ``sigma_frames`` in samples; the kernel is truncated at 4 σ.
    Returns float64 of shape (n,).
    """
    x = np.asarray(x, dtype=np.float64)
    if sigma_frames <= 0 or x.size == 0:
        return x.copy()
    radius = int(4.0 * sigma_frames + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (k / sigma_frames) ** 2)
    kernel /= kernel.sum()
    # scipy's "reflect" (d c b a | a b c d | d c b a) is numpy's "symmetric"
    padded = np.pad(x, radius, mode="symmetric")
    return np.convolve(padded, kernel, mode="valid")


def motion_beat_frames(kinetic_velocity: np.ndarray, fps: float, *, smooth_sigma_s: float = SMOOTH_SIGMA_S,
                       valid: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Frame indices of motion beats: strict local minima of the smoothed kinetic velocity.

    ``kinetic_velocity`` shape (n,), any speed unit (minima do not depend on it); ``fps`` its
    frame rate in Hz; ``valid`` an optional (n,) bool mask — a minimum counts only where the
    frame and both neighbours are valid (e.g. observed pose). Returns int64 indices, sorted.
    """
    v = gaussian_smooth(kinetic_velocity, smooth_sigma_s * fps)
    if v.size < 3:
        return np.zeros(0, dtype=np.int64)
    is_min = np.zeros(v.size, dtype=bool)
    is_min[1:-1] = (v[1:-1] < v[:-2]) & (v[1:-1] < v[2:])
    if valid is not None:
        ok = np.asarray(valid, dtype=bool)
        is_min[1:-1] &= ok[1:-1] & ok[:-2] & ok[2:]
        is_min[[0, -1]] = False
    return np.flatnonzero(is_min).astype(np.int64)


def beat_alignment_score(music_beats_s: np.ndarray, motion_beats_s: np.ndarray, *, sigma_s: float = SIGMA_S,
                         direction: str = MUSIC_TO_MOTION) -> float:  # fmt: skip
    """The Beat Alignment Score in [0, 1], or NaN when either beat list is empty.

    ``music_beats_s`` and ``motion_beats_s`` are beat times in seconds (any order);
    ``sigma_s`` the Gaussian width in seconds (default 0.05 s = 3 frames at 60 fps);
    ``direction`` `MUSIC_TO_MOTION` (Bailando/EDGE: mean over music beats of the score of the
    nearest motion beat) or `MOTION_TO_MUSIC` (FACT: mean over motion beats).
    Raises ValueError for an unknown direction or σ ≤ 0.
    """
    if sigma_s <= 0:
        raise ValueError("sigma_s must be > 0")
    if direction == MUSIC_TO_MOTION:
        queries, targets = np.asarray(music_beats_s, float), np.asarray(motion_beats_s, float)
    elif direction == MOTION_TO_MUSIC:
        queries, targets = np.asarray(motion_beats_s, float), np.asarray(music_beats_s, float)
    else:
        raise ValueError(f"unknown direction {direction!r}")
    if queries.size == 0 or targets.size == 0:
        return math.nan
    targets = np.sort(targets)
    pos = np.searchsorted(targets, queries)
    left = targets[np.clip(pos - 1, 0, targets.size - 1)]
    right = targets[np.clip(pos, 0, targets.size - 1)]
    dist = np.minimum(np.abs(queries - left), np.abs(right - queries))
    return float(np.mean(np.exp(-(dist**2) / (2.0 * sigma_s**2))))
