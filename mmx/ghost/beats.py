"""Beat grids for the ghost: which track is playing and when its beats fall on the wall clock.

A ``music.cue`` says track ``track`` (sha256 of the audio file) started at Unix time
``started_at`` from ``offset_s`` into the track, so (DESIGN.md, "Audio features and
alignment") ``track_time = wall_time - started_at + offset_s`` and a beat at track time
``b`` sits at wall time ``started_at + b - offset_s``.

Beat grids come from `mmx features` artifacts (``<stem>-<sha12>.npz``: ``beat_times`` in
seconds, ``tempo_bpm``, ``sha256``, optionally ``downbeat_times``). mmx.audio's
``find_features`` / ``load_beat_grid`` are used when that package is importable; the small
readers here fill in what they do not return (duration, downbeats, bar energy) and stand in
without it.

Bar energy: bars start at the artifact's downbeats when it has them, else at every
`BEATS_PER_BAR`-th beat from the first; a bar's energy is the mean onset strength
(``onset_env``, frame k at ``k * hop_length / sr`` s) over the bar, and the grid keeps its
rank among the track's bars scaled to [0, 1] (0 the quietest bar, 1 the loudest; ties share
their mean rank; 0.5 everywhere when all bars are alike). Ranks rather than raw values: the
onset envelope has no absolute scale across tracks, and a rank spreads any track's bars over
the whole range the policy's ``energy_influence`` works on.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmx.errors import DataError, MmxError


@dataclass(frozen=True)
class BeatGrid:
    """Beat times of one track, in seconds from the track's start (sorted, finite).

    ``downbeats`` holds the subset that are bar downbeats when the artifact knows them
    (empty otherwise). ``duration_s`` is the track length when known (else the last beat).
    """

    track: str
    beat_times: tuple[float, ...]
    downbeats: frozenset[float] = field(default_factory=frozenset)
    tempo_bpm: float | None = None
    duration_s: float | None = None
    source: str = ""
    bar_starts: tuple[float, ...] = ()
    bar_energy: tuple[float, ...] = ()

    def bar_at(self, t: float) -> int | None:
        """Index of the bar holding track time ``t`` (seconds), or None before the first bar,
        after the last one or without bar energy."""
        starts = self.bar_starts
        if not starts or t < starts[0]:
            return None
        i = bisect.bisect_right(starts, t) - 1
        if i == len(starts) - 1 and t >= self.bar_end(i):
            return None
        return i

    def bar_end(self, i: int) -> float:
        """End of bar ``i`` in track seconds (the next bar's start; the last bar lasts as long
        as the one before it, or to the track's end when that comes first)."""
        starts = self.bar_starts
        if i + 1 < len(starts):
            return starts[i + 1]
        length = starts[i] - starts[i - 1] if i > 0 else 2.0
        end = starts[i] + length
        return min(end, self.duration_s) if self.duration_s and self.duration_s > starts[i] else end


#: Beats of a bar when the artifact knows no downbeats (most popular music is in 4/4).
BEATS_PER_BAR = 4


def rank01(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` scaled to [0, 1], ties sharing their mean rank; all 0.5 when every
    value is the same (or there is one)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return values
    if n == 1 or np.ptp(values) <= 1e-12 * max(1.0, float(np.max(np.abs(values)))):
        return np.full(n, 0.5)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    uniq, inverse = np.unique(values, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse] / (n - 1)


def bar_energy(beat_times: tuple[float, ...], downbeats: frozenset[float], onset_env: np.ndarray | None,
               frame_s: float | None, duration_s: float | None) -> tuple[tuple[float, ...], tuple[float, ...]]:  # fmt: skip
    """``(bar_starts, energy_rank)`` of a track (see the module docstring); empty without an
    onset envelope or with fewer than two bars."""
    if onset_env is None or frame_s is None or frame_s <= 0 or len(beat_times) < 2:
        return (), ()
    env = np.asarray(onset_env, dtype=np.float64).reshape(-1)
    if env.size == 0 or not np.all(np.isfinite(env)):
        return (), ()
    starts = sorted(b for b in beat_times if b in downbeats) if downbeats else list(beat_times[::BEATS_PER_BAR])
    if len(starts) < 2:
        return (), ()
    grid = BeatGrid(track="", beat_times=(), bar_starts=tuple(starts), duration_s=duration_s)
    means = []
    for i, a in enumerate(starts):
        lo, hi = int(math.ceil(a / frame_s - 1e-9)), int(math.ceil(grid.bar_end(i) / frame_s - 1e-9))  # a <= k·frame < end
        part = env[max(0, lo):max(0, min(env.size, hi))]
        means.append(float(part.mean()) if part.size else 0.0)
    return tuple(float(s) for s in starts), tuple(float(e) for e in rank01(np.array(means)))


def _arr(npz, key: str) -> np.ndarray | None:
    if key not in npz.files:
        return None
    return np.asarray(npz[key])


def read_beat_grid(path: str | Path) -> BeatGrid:
    """Read a `mmx features` artifact's beat grid with numpy.

    Uses ``beat_times`` (seconds) or else ``beat_frames * hop_length / sr``; downbeats from
    ``downbeat_times`` or ``downbeat_frames`` when present. Raises DataError when the file
    is not a readable npz or has no beats.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            times = _arr(npz, "beat_times")
            sr = _arr(npz, "sr")
            hop = _arr(npz, "hop_length")
            if times is None:
                frames = _arr(npz, "beat_frames")
                if frames is None or sr is None or hop is None:
                    raise DataError(f"{path}: no beat_times or beat_frames in the feature artifact")
                times = frames.astype(float) * float(hop) / float(sr)
            down = _arr(npz, "downbeat_times")
            if down is None:
                dframes = _arr(npz, "downbeat_frames")
                if dframes is not None and sr is not None and hop is not None:
                    down = dframes.astype(float) * float(hop) / float(sr)
            sha = _arr(npz, "sha256")
            tempo = _arr(npz, "tempo_bpm")
            duration = _arr(npz, "duration_s")
            if duration is None:
                duration = _arr(npz, "duration")
            onset = _arr(npz, "onset_env")
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not a readable feature artifact: {exc}") from None
    beats = tuple(sorted(float(b) for b in np.ravel(times) if math.isfinite(float(b))))
    downs = frozenset(float(b) for b in np.ravel(down)) if down is not None else frozenset()
    downbeats = frozenset(b for b in beats if b in downs)
    duration_s = float(np.ravel(duration)[0]) if duration is not None and np.size(duration) else None
    frame_s = float(hop) / float(sr) if sr is not None and hop is not None and float(sr) > 0 else None
    starts, energy = bar_energy(beats, downbeats, onset, frame_s, duration_s)
    return BeatGrid(
        track=str(sha.item()) if sha is not None else "",
        beat_times=beats,
        downbeats=downbeats,
        tempo_bpm=float(np.ravel(tempo)[0]) if tempo is not None and np.size(tempo) else None,
        duration_s=duration_s,
        source=str(path),
        bar_starts=starts,
        bar_energy=energy,
    )


def find_artifact(features_dir: str | Path, sha256: str) -> Path | None:
    """The feature artifact of the audio file with this sha256 in ``features_dir``, or None.

    Artifacts are named ``<stem>-<sha12>.npz``; a name match is confirmed by the file's
    ``sha256`` key when it has one.
    """
    if not sha256 or len(sha256) < 12:
        return None
    try:
        from mmx.audio import find_features
    except ImportError:
        pass
    else:
        found = find_features(features_dir, sha256)
        return Path(found) if found else None
    base = Path(features_dir)
    if not base.is_dir():
        return None
    for candidate in sorted(base.glob(f"*-{sha256[:12].lower()}.npz")):
        try:
            with np.load(candidate, allow_pickle=False) as npz:
                if "sha256" in npz.files and str(npz["sha256"].item()) != sha256:
                    continue
        except (OSError, ValueError):
            continue
        return candidate
    return None


def load_grid(path: str | Path) -> BeatGrid:
    """Load a beat grid from an artifact path.

    Beats and tempo come from mmx.audio's ``load_beat_grid`` when that package provides it
    (``(beat_times_s, tempo_bpm)``); duration and downbeats, which it does not return, are
    read here. Raises DataError (or mmx.audio's InputMissingError/IOFailure).
    """
    grid = read_beat_grid(path)
    try:
        from mmx.audio import load_beat_grid
    except ImportError:
        return grid
    times, tempo = load_beat_grid(path)
    beats = tuple(float(b) for b in np.ravel(times) if math.isfinite(float(b)))
    if beats == grid.beat_times:
        return replace(grid, tempo_bpm=float(tempo))
    return replace(grid, beat_times=beats, downbeats=frozenset(b for b in beats if b in grid.downbeats),
                   tempo_bpm=float(tempo), bar_starts=(), bar_energy=())  # fmt: skip


class BeatLibrary:
    """Finds and caches the beat grid of a track hash in a features directory (or none)."""

    def __init__(self, features_dir: str | Path | None = None, grids: dict[str, BeatGrid] | None = None) -> None:
        self.features_dir = Path(features_dir) if features_dir else None
        self._cache: dict[str, BeatGrid | None] = dict(grids or {})
        self.errors: dict[str, str] = {}

    def get(self, track: str) -> BeatGrid | None:
        """The grid of ``track`` (sha256) or None when no artifact is found or it is unreadable
        (the reason is kept in ``errors[track]``)."""
        if track in self._cache:
            return self._cache[track]
        grid = None
        if self.features_dir is None:
            self.errors[track] = "no --features directory given"
        else:
            path = find_artifact(self.features_dir, track)
            if path is None:
                self.errors[track] = f"no feature artifact for track {track[:12]} in {self.features_dir}"
            else:
                try:
                    grid = load_grid(path)
                    if not grid.beat_times:
                        self.errors[track] = f"{path.name} has no beats"
                        grid = None
                except MmxError as exc:
                    self.errors[track] = exc.message
        self._cache[track] = grid
        return grid


@dataclass(frozen=True)
class Cue:
    """The music playing: a track's grid placed on the wall clock by its ``music.cue``."""

    track: str
    started_at: float
    offset_s: float
    grid: BeatGrid | None
    title: str = ""

    def wall_beats_after(self, t: float, count: int) -> list[tuple[float, bool]]:
        """Up to ``count`` beats strictly after wall time ``t``: ``(wall_time, is_downbeat)``."""
        if self.grid is None:
            return []
        shift = self.started_at - self.offset_s
        beats = self.grid.beat_times
        i = bisect.bisect_right(beats, t - shift)
        return [(beats[j] + shift, beats[j] in self.grid.downbeats) for j in range(i, min(len(beats), i + count))]

    def energy_at(self, t: float) -> tuple[float, int] | None:
        """``(energy rank 0…1, bar index)`` of the bar playing at wall time ``t``, or None
        (no grid, no bar energy, or outside the track's bars)."""
        grid = self.grid
        if grid is None or not grid.bar_energy:
            return None
        i = grid.bar_at(t - (self.started_at - self.offset_s))
        return None if i is None else (grid.bar_energy[i], i)

    def wall_bars(self, t0: float, t1: float) -> list[tuple[float, float, float]]:
        """The bars overlapping wall times [t0, t1): ``(start, end, energy)`` clipped to it."""
        grid = self.grid
        if grid is None or not grid.bar_energy or t1 <= t0:
            return []
        shift = self.started_at - self.offset_s
        out = []
        i = max(0, bisect.bisect_right(grid.bar_starts, t0 - shift) - 1)
        while i < len(grid.bar_starts):
            a, b = grid.bar_starts[i] + shift, grid.bar_end(i) + shift
            if a >= t1:
                break
            if b > t0:
                out.append((max(a, t0), min(b, t1), grid.bar_energy[i]))
            i += 1
        return out

    def beat_period_s(self) -> float | None:
        """The median beat interval in seconds, or None with fewer than two beats."""
        beats = self.grid.beat_times if self.grid is not None else ()
        if len(beats) < 2:
            return None
        return float(np.median(np.diff(beats)))

    def nearest_beat_distance(self, t: float) -> float | None:
        """Seconds from wall time ``t`` to the nearest beat, or None without a grid."""
        if self.grid is None or not self.grid.beat_times:
            return None
        shift = self.started_at - self.offset_s
        beats = self.grid.beat_times
        i = bisect.bisect_left(beats, t - shift)
        near = [abs(beats[j] + shift - t) for j in (i - 1, i) if 0 <= j < len(beats)]
        return min(near)
