"""Generated pose and music streams for scenario tests, replay checks and benchmarks.

Nothing here is random unless a seeded ``numpy.random.Generator`` is passed: the same
arguments give the same events (ids included), so tests and benchmarks are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mmx.events import JOINT_NAMES, Event

#: A standing figure in normalized body coordinates (x right, y down, height 1, origin at
#: the feet's midpoint), one ``(dx, dy)`` per Vision joint in `JOINT_NAMES` order.
_FIGURE = np.array([
    (0.0, -1.0), (-0.03, -1.02), (0.03, -1.02), (-0.06, -1.0), (0.06, -1.0), (0.0, -0.85),
    (-0.12, -0.83), (0.12, -0.83), (-0.16, -0.65), (0.16, -0.65), (-0.18, -0.48), (0.18, -0.48),
    (0.0, -0.5), (-0.08, -0.5), (0.08, -0.5), (-0.09, -0.26), (0.09, -0.26), (-0.1, 0.0), (0.1, 0.0),
])  # fmt: skip
#: Joints that swing when the subject moves (elbows, wrists, knees, ankles).
_LIMBS = np.array([n in ("leftElbow", "rightElbow", "leftWrist", "rightWrist", "leftKnee", "rightKnee",
                         "leftAnkle", "rightAnkle") for n in JOINT_NAMES])  # fmt: skip


def pose_joints(t: float, *, cx: float = 0.5, feet_y: float = 0.8, height: float = 0.6,
                motion: float = 0.0, confidence: float = 0.9) -> dict[str, list[float]]:  # fmt: skip
    """Joints of a figure ``height`` tall (share of the frame) standing at ``cx`` with its
    feet at ``feet_y``; ``motion`` (0…1) swings the limbs at 2 Hz by up to 0.3 body heights."""
    pts = _FIGURE * height
    swing = motion * 0.3 * height * math.sin(2 * math.pi * 2.0 * t)
    xs = cx + pts[:, 0] + np.where(_LIMBS, swing, 0.0)
    ys = feet_y + pts[:, 1] + np.where(_LIMBS, 0.5 * abs(swing), 0.0)
    return {name: [round(float(x), 5), round(float(y), 5), confidence] for name, x, y in zip(JOINT_NAMES, xs, ys)}


class EventFactory:
    """Makes envelopes with deterministic ids (``<prefix>-<n>``) and explicit times."""

    def __init__(self, prefix: str = "sim", session: str | None = "sim-session") -> None:
        self.prefix = prefix
        self.session = session
        self.n = 0

    def __call__(self, type: str, data: dict[str, Any], ts: float, src: str = "serve") -> Event:
        self.n += 1
        return Event(type=type, data=data, id=f"{self.prefix}-{self.n:08d}", ts=ts, seq=self.n,
                     session=self.session, src=src)  # fmt: skip


def pose_stream(cameras: dict[str, Callable[[float], dict[str, Any] | None]], t0: float, t1: float,
                fps: float = 30.0, make: EventFactory | None = None) -> Iterator[Event]:  # fmt: skip
    """``pose.sample`` events for each camera at ``fps`` from ``t0`` to ``t1`` (Unix seconds).

    ``cameras`` maps a camera name to a function of time giving its joints (or None).
    """
    make = make or EventFactory("pose")
    n = int(round((t1 - t0) * fps))
    names = sorted(cameras)
    for k in range(n):
        t = t0 + k / fps
        for name in names:
            yield make("pose.sample", {"camera": name, "t": t, "joints": cameras[name](t)}, t)


def session_events(*, t0: float = 1_800_000_000.0, duration_s: float = 60.0, n_cameras: int = 3,
                   fps: float = 30.0, bpm: float = 120.0, track: str | None = "a" * 64,
                   operator_cut_every_s: float = 6.0, seed: int = 0) -> list[Event]:  # fmt: skip
    """A whole generated session: cameras joining (spread 360/n degrees apart), a music cue,
    pose at ``fps`` where a different camera has a motion burst every ``operator_cut_every_s``
    seconds, and the operator's ``director.cut`` to that camera on the first beat of each burst.

    Beats fall every ``60 / bpm`` seconds from the cue's ``started_at`` (= ``t0 + 1``), the
    grid `beat_grid_npz` writes.
    """
    rng = np.random.default_rng(seed)
    make = EventFactory("sess")
    cams = [f"cam-{i + 1}" for i in range(n_cameras)]
    events = [make("session.started", {"kind": "photoshoot_performance", "title": "generated", "mode": "manual"}, t0)]
    for i, cam in enumerate(cams):
        events.append(make("camera.joined", {"camera": cam, "device": f"dev-{i + 1}", "name": cam,
                                             "placement": {"azimuth_deg": -90 + i * 360 / n_cameras}}, t0 + 0.01 * i))  # fmt: skip
    started = t0 + 1.0
    if track:
        events.append(make("music.cue", {"track": track, "title": "generated", "started_at": started, "offset_s": 0.0}, started))
    beat = 60.0 / bpm
    bursts = []  # (start, end, camera)
    t = t0 + 2.0
    k = 0
    while t + operator_cut_every_s <= t0 + duration_s:
        cam = cams[(k + 1) % n_cameras]
        bursts.append((t, t + operator_cut_every_s * 0.6, cam))
        k += 1
        t += operator_cut_every_s
    jitter = {cam: float(rng.uniform(-0.05, 0.05)) for cam in cams}
    first = t0 + 2.0

    def joints_for(cam: str) -> Callable[[float], dict[str, Any]]:
        def f(t: float) -> dict[str, Any]:
            k = math.floor((t - first) / operator_cut_every_s)
            moving = 0 <= k < len(bursts) and bursts[k][0] <= t < bursts[k][1] and bursts[k][2] == cam
            return pose_joints(t, cx=0.5 + jitter[cam], motion=1.0 if moving else 0.0)
        return f

    events += list(pose_stream({c: joints_for(c) for c in cams}, t0 + 0.5, t0 + duration_s, fps, make))
    for a, _, cam in bursts:
        k = math.ceil((a + 0.6 - started) / beat)
        events.append(make("director.cut", {"from": None, "to": cam, "by": "operator"}, started + k * beat))
    events.append(make("session.ended", {"reason": "operator"}, t0 + duration_s))
    events.sort(key=lambda e: (e.ts, e.seq))
    return events


def beat_grid_npz(path, *, track: str = "a" * 64, bpm: float = 120.0, duration_s: float = 600.0,
                  beats_per_bar: int | None = None, energy: Callable[[float], float] | None = None) -> None:  # fmt: skip
    """Write a minimal `mmx features`-shaped artifact: beats every ``60 / bpm`` s from 0, and
    an onset envelope of ``energy(track_time_s)`` per audio frame (all zeros without it)."""
    sr, hop = 22050, 512
    times = np.arange(0.0, duration_s, 60.0 / bpm)
    frame_t = np.arange(int(duration_s * sr / hop)) * hop / sr
    onset = np.array([energy(t) for t in frame_t], dtype=np.float32) if energy else np.zeros(frame_t.size, np.float32)
    arrays: dict[str, Any] = dict(sr=np.int64(sr), hop_length=np.int64(hop), beat_times=times,
                                  beat_frames=np.round(times * sr / hop).astype(np.int64),
                                  tempo_bpm=np.float64(bpm), sha256=np.str_(track), duration_s=np.float64(duration_s),
                                  onset_env=onset)  # fmt: skip
    if beats_per_bar:
        arrays["downbeat_times"] = times[::beats_per_bar]
    np.savez(path, **arrays)
