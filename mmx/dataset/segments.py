"""One segment (session × camera × cue): resample, compute dynamics, write it, cut its windows.

The frame streams of the cue's span are written once to ``segments/<name>.parquet``; the
windows that pass `min_observed` become rows that point into it (`mmx.dataset.store`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmx.dataset import bas
from mmx.dataset.align import TORSO, pose_dynamics, resample_pose, row_median, torso_length
from mmx.dataset.inputs import N_JOINTS, Cue, PoseStream
from mmx.dataset.store import ROW_GROUP_FRAMES, SegmentWriter, segment_batch, segment_name, segment_schema
from mmx.dataset.tracks import Track
from mmx.dataset.windows import SPLITS, time_split, window_starts

#: Frames resampled and differentiated at a time, so memory does not grow with a cue's length.
_CHUNK_FRAMES = 16 * ROW_GROUP_FRAMES


@dataclass
class Stats:
    """Running dataset statistics per split; `add` merges another run's (in job order)."""

    windows: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    sessions: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    tracks: dict[str, set[str]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    observed_sum: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in SPLITS})
    ke_sum: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in SPLITS})
    bas: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    bas_fact: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    dropped: dict[str, int] = field(default_factory=lambda: {"observed_below_min": 0, "no_body_size": 0})
    segments: int = 0

    def add(self, other: Stats) -> None:
        for s in SPLITS:
            self.windows[s] += other.windows[s]
            self.sessions[s] |= other.sessions[s]
            self.tracks[s] |= other.tracks[s]
            self.observed_sum[s] += other.observed_sum[s]
            self.ke_sum[s] += other.ke_sum[s]
            self.bas[s] += other.bas[s]
            self.bas_fact[s] += other.bas_fact[s]
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v
        self.segments += other.segments

    def summary(self) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return round(float(np.mean(xs)), 6) if xs else None

        per: dict[str, Any] = {}
        for s in SPLITS:
            n = self.windows[s]
            per[s] = {
                "windows": n,
                "sessions": len(self.sessions[s]),
                "tracks": len(self.tracks[s]),
                "mean_observed_share": round(self.observed_sum[s] / n, 6) if n else None,
                "mean_kinetic_energy": round(self.ke_sum[s] / n, 6) if n else None,
                "beat_alignment_score": mean(self.bas[s]),
                "beat_alignment_score_fact": mean(self.bas_fact[s]),
                "bas_sequences": len(self.bas[s]),
            }
        all_bas = [x for s in SPLITS for x in self.bas[s]]
        per["all"] = {
            "windows": sum(self.windows.values()),
            "beat_alignment_score": mean(all_bas),
            "beat_alignment_score_fact": mean([x for s in SPLITS for x in self.bas_fact[s]]),
            "bas_sequences": len(all_bas),
        }
        return per


@dataclass
class CueSpec:
    """What `pair_segment` needs to know about where a segment sits."""

    session: str
    camera: str
    cue: Cue
    split: str | None  # the session's (or track's) split; None with split_by="time"
    time_bounds: tuple[float, float] | None = None  # wall-time block boundaries with split_by="time"


def pair_segment(spec: CueSpec, stream: PoseStream, track: Track, params: Any, geometry: dict[str, Any],
                 segments_dir: Path, stats: Stats) -> list[dict[str, Any]]:  # fmt: skip
    """Pair one camera × cue: write its segment file, return its window rows (`WINDOW_COLUMNS`).

    Nothing is written when no window of the cue passes ``min_observed``. Statistics,
    dropped windows and the Beat Alignment Score of the cue go into ``stats``.
    """
    cue, camera = spec.cue, spec.camera
    fps, big_t = geometry["fps"], geometry["window_frames"]
    shift = -cue.started_at + cue.offset_s + params.clock_offset_s  # wall time → track time
    lo = cue.offset_s + params.clock_offset_s
    hi = min(track.n_frames / fps, cue.ends_at + shift)
    f_lo = max(0, math.ceil(lo * fps - 1e-9))
    f_hi = min(track.n_frames, math.floor(hi * fps + 1e-9) + 1)
    starts = window_starts(f_lo, f_hi, big_t, params.stride_s, fps)
    if starts.size == 0:
        return []
    n = int(starts[-1]) + big_t - f_lo
    frame_t = (f_lo + np.arange(n)) / fps
    # only samples taken while this cue played, on the track's clock
    inside = (stream.t >= cue.started_at) & (stream.t < cue.ends_at)
    sub = PoseStream(stream.t[inside] + shift, stream.joints[inside])
    # whole-cue per-frame scalars (cheap): observed mask, torso length, beats
    torso_pose, observed = resample_pose(PoseStream(sub.t, sub.joints[:, list(TORSO)]), frame_t,
                                         max_gap_s=params.max_gap_s)  # fmt: skip
    torso = torso_length(torso_pose, observed, (0, 1, 2, 3))
    del torso_pose
    measured = torso[~np.isnan(torso)]
    cue_torso = float(np.median(measured)) if measured.size else math.nan
    beat = np.zeros(n, dtype=np.float32)
    bf = track.beat_frames[(track.beat_frames >= f_lo) & (track.beat_frames < f_lo + n)] - f_lo
    beat[bf] = 1.0

    # which windows are kept, and their body scale
    local = starts - f_lo
    cum_obs = np.concatenate([[0], np.cumsum(observed, dtype=np.int64)])
    share = (cum_obs[local + big_t] - cum_obs[local]) / big_t
    scale = np.empty(starts.size)
    for c0 in range(0, starts.size, 256):  # (256, T) at a time: bounded memory
        part = local[c0 : c0 + 256]
        scale[c0 : c0 + 256] = row_median(torso[part[:, None] + np.arange(big_t)[None, :]])
    scale = np.where(np.isnan(scale), cue_torso, scale)
    low = share < params.min_observed
    no_size = ~low & np.isnan(scale)
    if spec.split is None:  # split_by="time": a block per window, straddlers dropped
        wall0 = starts / fps - shift
        code = time_split(wall0, big_t / fps, spec.time_bounds or (math.inf, math.inf))
        straddle = ~low & ~no_size & (code < 0)
        stats.dropped["split_boundary"] = stats.dropped.get("split_boundary", 0) + int(straddle.sum())
        splits = [SPLITS[c] if c >= 0 else "" for c in code]
    else:
        straddle = np.zeros(starts.size, dtype=bool)
        splits = [spec.split] * starts.size
    stats.dropped["observed_below_min"] += int(low.sum())
    stats.dropped["no_body_size"] += int(no_size.sum())
    keep = ~(low | no_size | straddle)

    # frame streams, in chunks (2 extra frames each side keep the central differences exact)
    kin_vel = np.zeros(n)  # mean joint speed, for the Beat Alignment Score
    ke_raw = np.zeros(n)
    name = segment_name(spec.session, camera, cue.track, cue.line)
    writer = None
    if keep.any():
        meta = {"session": spec.session, "camera": camera, "track": cue.track, "cue_line": cue.line,
                "start_frame": int(f_lo), "frames": int(n), "fps": fps, "sr": geometry["sr"],
                "hop_length": geometry["hop_length"]}  # fmt: skip
        schema = segment_schema(geometry["n_audio"], geometry["columns"], meta)
        writer = SegmentWriter(segments_dir / f"{name}.parquet", schema)
    try:
        for c_lo in range(0, n, _CHUNK_FRAMES):
            c_hi = min(n, c_lo + _CHUNK_FRAMES)
            m_lo, m_hi = max(0, c_lo - 2), min(n, c_hi + 2)
            pose, _ = resample_pose(sub, frame_t[m_lo:m_hi], max_gap_s=params.max_gap_s)
            speed, accel, ke = pose_dynamics(pose, fps)
            cut = slice(c_lo - m_lo, c_hi - m_lo)
            pose, speed, accel, ke = pose[cut], speed[cut], accel[cut], ke[cut]
            kin_vel[c_lo:c_hi] = speed.mean(axis=1)
            ke_raw[c_lo:c_hi] = ke
            if writer is None:
                continue
            obs = observed[c_lo:c_hi]
            pose32 = pose.astype(np.float32)
            pose32[~obs] = 0.0
            arrays = {"audio": track.audio[f_lo + c_lo : f_lo + c_hi], "pose": pose32,
                      "speed": np.where(obs[:, None], speed, 0.0), "accel": np.where(obs[:, None], accel, 0.0),
                      "kinetic_energy": np.where(obs, ke, 0.0), "observed": obs, "beat": beat[c_lo:c_hi]}  # fmt: skip
            writer.write(segment_batch(schema, f_lo + np.arange(c_lo, c_hi), fps, arrays))
            del pose, pose32, speed, accel, ke, arrays
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

    rows: list[dict[str, Any]] = []
    title = cue.title or track.title
    cum_ke = np.concatenate([[0.0], np.cumsum(np.where(observed, ke_raw, 0.0).astype(np.float32).astype(np.float64))])
    for k in np.flatnonzero(keep):
        s0, split = int(starts[k]), splits[k]
        sc = float(scale[k])
        rows.append({
            "id": f"{spec.session}/{camera}/{cue.track[:12]}/{s0}", "split": split, "session": spec.session,
            "camera": camera, "track": cue.track, "title": title, "segment": name, "row": int(local[k]),
            "frames": big_t, "start_frame": s0, "track_start_s": round(s0 / fps, 6),
            "track_end_s": round((s0 + big_t) / fps, 6), "observed_share": round(float(share[k]), 4),
            "torso_length": sc,
        })  # fmt: skip
        stats.windows[split] += 1
        stats.sessions[split].add(spec.session)
        stats.tracks[split].add(cue.track)
        stats.observed_sum[split] += float(share[k])
        stats.ke_sum[split] += float(cum_ke[local[k] + big_t] - cum_ke[local[k]]) / (sc * sc) / big_t
    if rows:
        stats.segments += 1

    # Beat Alignment Score over the cue's observed frames; one sequence per camera × cue,
    # counted in the split of the cue's first kept window (its session's with split by session)
    mb = bas.motion_beat_frames(kin_vel, fps, smooth_sigma_s=params.bas_smooth_s, valid=observed)
    music = bf[observed[bf]] if bf.size else bf
    bas_split = spec.split or (rows[0]["split"] if rows else None)
    if bas_split and mb.size and music.size:
        stats.bas[bas_split].append(bas.beat_alignment_score(music / fps, mb / fps, sigma_s=params.bas_sigma_s))
        stats.bas_fact[bas_split].append(bas.beat_alignment_score(
            music / fps, mb / fps, sigma_s=params.bas_sigma_s, direction=bas.MOTION_TO_MUSIC))  # fmt: skip
    return rows


__all__ = ["N_JOINTS", "CueSpec", "Stats", "pair_segment"]
