"""Alignment: pose resampled onto audio frame times, its dynamics and the body scale."""

from __future__ import annotations

import numpy as np

from mmx.dataset.inputs import N_JOINTS, PoseStream
from mmx.events import JOINT_NAMES

#: Joints of the torso, for the body-size normalisation.
TORSO = tuple(JOINT_NAMES.index(n) for n in ("leftShoulder", "rightShoulder", "leftHip", "rightHip"))


def resample_pose(stream: PoseStream, frame_times: np.ndarray, *, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate pose onto frame times.

    ``stream.t`` (m,) sorted seconds and ``stream.joints`` (m, J, 3) (J = 19, or a subset);
    ``frame_times`` (n,) seconds on the same clock. Every coordinate and the confidence are
    interpolated between the two real samples around each frame (held constant before the
    first and after the last); a joint missing from a sample is interpolated from the
    samples that have it, its confidence counts as 0. Returns (pose (n, J, 3) float64,
    observed (n,) bool), observed meaning a real sample lies within ``max_gap_s`` seconds.
    Each frame's values depend only on its own time, so resampling a range of frames in
    pieces gives exactly the same numbers as resampling it whole.
    """
    n = frame_times.size
    m = stream.t.size
    n_joints = stream.joints.shape[1] if stream.joints.ndim == 3 else N_JOINTS
    if m == 0:
        return np.zeros((n, n_joints, 3)), np.zeros(n, dtype=bool)
    ts = stream.t
    flat = stream.joints.reshape(m, -1)
    idx = np.searchsorted(ts, frame_times, side="right")
    i0 = np.clip(idx - 1, 0, m - 1)
    i1 = np.clip(idx, 0, m - 1)
    t0, t1 = ts[i0], ts[i1]
    span = t1 - t0
    w = np.zeros(n)
    np.divide(frame_times - t0, span, out=w, where=span > 0)
    np.clip(w, 0.0, 1.0, out=w)
    out = flat[i0]  # out = flat[i0] * (1 - w) + flat[i1] * w, with one temporary
    out *= (1.0 - w)[:, None]
    upper = flat[i1]
    upper *= w[:, None]
    out += upper
    del upper
    nan_cols = np.flatnonzero(np.isnan(flat).any(axis=0))
    for c in nan_cols:  # rare: joints some samples lacked
        ok = ~np.isnan(flat[:, c])
        out[:, c] = np.interp(frame_times, ts[ok], flat[ok, c]) if ok.any() else 0.0
    observed = np.minimum(np.abs(frame_times - t0), np.abs(t1 - frame_times)) <= max_gap_s
    return out.reshape(n, n_joints, 3), observed


def pose_dynamics(pose: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-joint speed and acceleration magnitude of the x/y coordinates.

    ``pose`` (n, 19, 3) normalized image coordinates; ``fps`` frames per second. Central
    differences (``numpy.gradient``). Returns (speed (n, 19) in image units/s, acceleration
    (n, 19) in image units/s², kinetic-energy proxy (n,) = ½ · mean over joints of speed²).
    """
    if pose.shape[0] < 2:
        z = np.zeros(pose.shape[:2])
        return z, z.copy(), np.zeros(pose.shape[0])
    dt = 1.0 / fps
    # x and y apart: a sum over a length-2 axis is one of numpy's slowest reductions
    vx, vy = np.gradient(pose[..., 0], dt, axis=0), np.gradient(pose[..., 1], dt, axis=0)
    ax, ay = np.gradient(vx, dt, axis=0), np.gradient(vy, dt, axis=0)
    speed2 = vx * vx + vy * vy
    accel = np.sqrt(ax * ax + ay * ay)
    ke = 0.5 * speed2.mean(-1)
    return np.sqrt(speed2), accel, ke


def torso_length(pose: np.ndarray, observed: np.ndarray, joints: tuple[int, ...] = TORSO) -> np.ndarray:
    """Shoulder-midpoint to hip-midpoint distance per frame (n,), NaN where not measurable
    (frame unobserved or any of the four joints with confidence 0). ``pose`` (n, J, 3);
    ``joints`` the indices of leftShoulder, rightShoulder, leftHip, rightHip in it."""
    ls, rs, lh, rh = (pose[:, j] for j in joints)
    mid_s = (ls[:, :2] + rs[:, :2]) / 2
    mid_h = (lh[:, :2] + rh[:, :2]) / 2
    length = np.sqrt(((mid_s - mid_h) ** 2).sum(-1))
    ok = observed & (ls[:, 2] > 0) & (rs[:, 2] > 0) & (lh[:, 2] > 0) & (rh[:, 2] > 0) & (length > 1e-6)
    return np.where(ok, length, np.nan)


def row_median(values: np.ndarray) -> np.ndarray:
    """Median of each row of (N, T) ignoring NaN; NaN for a row without numbers. No warnings."""
    s = np.sort(values, axis=1)  # NaN sort last
    k = (~np.isnan(values)).sum(axis=1)
    rows = np.arange(values.shape[0])
    lo = s[rows, np.maximum(k - 1, 0) // 2]
    hi = s[rows, np.minimum(k // 2, values.shape[1] - 1)]
    return np.where(k > 0, (lo + hi) / 2, np.nan)

