"""Generated rehearsal media: a synthesized beat track, and a test-pattern video of a dancing
stick figure with the matching pose file.

Everything is deterministic (fixed seeds, pure functions of time) so a demo on a fresh
machine needs no recordings. The pose file has the format of ``shared/data/pose/*.pose.jsonl``:
a header line, then one ``{"frame", "t", "joints"}`` line per video frame, joints in the 19
Apple Vision names as ``[x, y, confidence]``, normalized, origin top-left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from mmx.events import JOINT_NAMES

#: Bones drawn between joints (Apple Vision names).
BONES: tuple[tuple[str, str], ...] = (
    ("nose", "neck"), ("neck", "leftShoulder"), ("neck", "rightShoulder"),
    ("leftShoulder", "leftElbow"), ("leftElbow", "leftWrist"),
    ("rightShoulder", "rightElbow"), ("rightElbow", "rightWrist"),
    ("neck", "root"), ("root", "leftHip"), ("root", "rightHip"),
    ("leftHip", "leftKnee"), ("leftKnee", "leftAnkle"),
    ("rightHip", "rightKnee"), ("rightKnee", "rightAnkle"),
    ("nose", "leftEye"), ("nose", "rightEye"), ("leftEye", "leftEar"), ("rightEye", "rightEar"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BeatTrackSpec:
    """A synthesized track: ``bpm`` beats per minute, 4/4 with an accented downbeat."""

    bpm: float = 120.0
    duration_s: float = 60.0
    sr: int = 22050

    @property
    def beat_period_s(self) -> float:
        return 60.0 / self.bpm


def synth_beat_track(spec: BeatTrackSpec, seed: int = 0) -> np.ndarray:
    """Render a drum-and-bass loop: kick on every beat, hats on the off-beats, a bass note.

    Returns ``(n_samples,)`` float32 mono in [-1, 1] at ``spec.sr`` Hz. Beat ``k`` starts at
    exactly ``k * 60 / bpm`` seconds, so beat trackers have a known answer.
    """
    rng = np.random.default_rng(seed)
    n = int(round(spec.duration_s * spec.sr))
    out = np.zeros(n, dtype=np.float64)
    period = spec.beat_period_s
    kick_len = int(0.18 * spec.sr)
    tk = np.arange(kick_len) / spec.sr
    # pitch-swept sine with exponential decay: the classic synthesized kick
    kick = np.sin(2 * np.pi * (50 * tk + 60 * (1 - np.exp(-tk * 30)) / 30)) * np.exp(-tk * 18)
    hat_len = int(0.05 * spec.sr)
    hat = rng.standard_normal(hat_len) * np.exp(-np.arange(hat_len) / spec.sr * 80) * 0.05
    # a broadband click on the kick's attack, so onset strength peaks on the beat, not the hats
    click_len = int(0.01 * spec.sr)
    kick[:click_len] += rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / spec.sr * 400) * 0.8
    n_beats = int(spec.duration_s / period) + 1
    for k in range(n_beats):
        start = int(round(k * period * spec.sr))
        if start >= n:
            break
        gain = 1.0 if k % 4 == 0 else 0.7
        seg = out[start : start + kick_len]
        seg += gain * kick[: len(seg)]
        off = int(round((k + 0.5) * period * spec.sr))
        if off < n:
            seg = out[off : off + hat_len]
            seg += hat[: len(seg)]
    t = np.arange(n) / spec.sr
    bar = 4 * period
    roots = np.array([55.0, 55.0, 65.41, 49.0])  # A1 A1 C2 G1, one per bar
    freq = roots[(t // bar).astype(int) % len(roots)]
    out += 0.12 * np.sin(2 * np.pi * freq * t)
    out /= max(1e-9, float(np.max(np.abs(out))))
    return (0.9 * out).astype(np.float32)


def dancer_pose(t: float, bpm: float = 120.0, phase: float = 0.0) -> dict[str, list[float]]:
    """The stick figure's 19 joints at time ``t`` seconds: ``{name: [x, y, confidence]}``.

    The figure sways slowly and throws its arms up in a burst right on each beat (a motion
    peak at every beat, still in between), so pose energy follows the music; how hard it
    moves swells and fades over 16 beats.
    """
    period = 60.0 / bpm
    u = (t / period + phase) % 1.0  # position within the beat, 0 = on the beat
    # energy swells and fades over 16 beats (8 s at 120 BPM), so cameras playing this clip
    # at staggered offsets see different amounts of motion at any moment
    energy = 0.1 + 0.9 * (0.5 + 0.5 * math.sin(2 * math.pi * t / (16 * period)))
    burst = energy * math.exp(-u * 6.0)  # a peak on the beat, decaying before the next
    sway = 0.06 * math.sin(2 * math.pi * t / (4 * period) + phase)
    cx, hip_y = 0.5 + sway, 0.62 - 0.02 * burst
    neck = (cx, hip_y - 0.26)
    arm_lift = 0.18 * burst
    joints = {
        "root": (cx, hip_y),
        "neck": neck,
        "nose": (cx, neck[1] - 0.08),
        "leftEye": (cx - 0.015, neck[1] - 0.095),
        "rightEye": (cx + 0.015, neck[1] - 0.095),
        "leftEar": (cx - 0.03, neck[1] - 0.085),
        "rightEar": (cx + 0.03, neck[1] - 0.085),
        "leftShoulder": (cx - 0.07, neck[1] + 0.01),
        "rightShoulder": (cx + 0.07, neck[1] + 0.01),
        "leftElbow": (cx - 0.13, neck[1] + 0.10 - arm_lift),
        "rightElbow": (cx + 0.13, neck[1] + 0.10 - arm_lift),
        "leftWrist": (cx - 0.17, neck[1] + 0.19 - 2.0 * arm_lift),
        "rightWrist": (cx + 0.17, neck[1] + 0.19 - 2.0 * arm_lift),
        "leftHip": (cx - 0.05, hip_y + 0.01),
        "rightHip": (cx + 0.05, hip_y + 0.01),
        "leftKnee": (cx - 0.06 - 0.02 * burst, hip_y + 0.14),
        "rightKnee": (cx + 0.06 + 0.02 * burst, hip_y + 0.14),
        "leftAnkle": (cx - 0.07, hip_y + 0.28),
        "rightAnkle": (cx + 0.07, hip_y + 0.28),
    }
    return {name: [round(joints[name][0], 5), round(joints[name][1], 5), 0.95] for name in JOINT_NAMES}


def draw_figure(frame: np.ndarray, joints: dict[str, list[float]], color: tuple[int, int, int] = (250, 250, 250)) -> None:
    """Paint the skeleton into ``frame`` ``(height, width, 3)`` uint8 RGB, in place."""
    h, w = frame.shape[:2]
    radius = max(2, h // 90)
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = (xx**2 + yy**2) <= radius**2
    for a, b in BONES:
        (x0, y0, _), (x1, y1, _) = joints[a], joints[b]
        steps = int(max(abs(x1 - x0) * w, abs(y1 - y0) * h) / max(1, radius // 2)) + 2
        for s in np.linspace(0.0, 1.0, steps):
            px, py = int((x0 + (x1 - x0) * s) * w), int((y0 + (y1 - y0) * s) * h)
            y_lo, y_hi, x_lo, x_hi = py - radius, py + radius + 1, px - radius, px + radius + 1
            if y_lo < 0 or x_lo < 0 or y_hi > h or x_hi > w:
                continue
            frame[y_lo:y_hi, x_lo:x_hi][disc] = color


def test_pattern_background(width: int, height: int, frame_no: int) -> np.ndarray:
    """A dark gradient with a moving bar: ``(height, width, 3)`` uint8 RGB."""
    x = np.linspace(0, 1, width, dtype=np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    base = np.empty((height, width, 3), dtype=np.uint8)
    base[..., 0] = (30 + 40 * x).astype(np.uint8)
    base[..., 1] = (25 + 35 * y).astype(np.uint8)
    base[..., 2] = 60
    bar = (frame_no * 4) % width
    base[:, bar : bar + 6] = (90, 90, 140)
    return base


def write_dancer_video(video_path: Path, pose_path: Path, *, duration_s: float, bpm: float = 120.0,
                       fps: float = 10.0, width: int = 640, height: int = 360) -> int:  # fmt: skip
    """Write the dancing stick-figure video (H.264 MP4) and its pose file; returns frames written.

    Frame ``n`` is at ``t = n / fps`` seconds and shows exactly the pose written on line
    ``n + 2`` of the pose file.
    """
    import av

    n_frames = int(round(duration_s * fps))
    video_path.parent.mkdir(parents=True, exist_ok=True)
    pose_path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "header": {
            "source": video_path.name, "fps": fps, "width": width, "height": height,
            "estimator": "mmx.demo.media dancer (ground truth)", "joints": list(JOINT_NAMES),
            "coords": "normalized image, origin top-left, x right, y down; c = confidence 0..1",
        }
    }  # fmt: skip
    with av.open(str(video_path), "w") as container, open(pose_path, "wb") as pose_fp:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        pose_fp.write(orjson.dumps(header) + b"\n")
        for n in range(n_frames):
            t = n / fps
            joints = dancer_pose(t, bpm)
            image = test_pattern_background(width, height, n)
            draw_figure(image, joints)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            pose_fp.write(orjson.dumps({"frame": n, "t": round(t, 6), "joints": joints}) + b"\n")
        for packet in stream.encode(None):
            container.mux(packet)
    return n_frames


def write_beat_track(path: Path, spec: BeatTrackSpec) -> Path:
    """Write the synthesized track as 16-bit PCM WAV at ``spec.sr``; returns ``path``."""
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), synth_beat_track(spec), spec.sr, subtype="PCM_16")
    return path
