"""Generated inputs for `mmx pair` tests and the pair benchmark.

Feature artifacts with the keys of the agreed `mmx features` format (DESIGN.md "Audio
features and alignment"), session capture directories (session.json + events.jsonl with
pose.sample and music.cue events) whose pose moves on known beats, standalone pose files and
inventories in the `mmx discover` JSON Lines format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import orjson

from mmx.events import JOINT_NAMES

SR = 22050
HOP = 512
FPS = SR / HOP
WALL0 = 1_795_000_000.0  # a Unix time in 2026

#: A person standing in the middle of the frame (normalized image coords, origin top-left):
#: torso (shoulder midpoint to hip midpoint) = 0.25.
BASE_POSE: dict[str, tuple[float, float]] = {
    "nose": (0.50, 0.20), "leftEye": (0.52, 0.18), "rightEye": (0.48, 0.18),
    "leftEar": (0.54, 0.19), "rightEar": (0.46, 0.19), "neck": (0.50, 0.27),
    "leftShoulder": (0.58, 0.30), "rightShoulder": (0.42, 0.30),
    "leftElbow": (0.62, 0.42), "rightElbow": (0.38, 0.42),
    "leftWrist": (0.64, 0.52), "rightWrist": (0.36, 0.52),
    "root": (0.50, 0.55), "leftHip": (0.55, 0.55), "rightHip": (0.45, 0.55),
    "leftKnee": (0.56, 0.70), "rightKnee": (0.44, 0.70),
    "leftAnkle": (0.56, 0.85), "rightAnkle": (0.44, 0.85),
}  # fmt: skip
MOVING = ("leftWrist", "rightWrist", "leftElbow", "rightElbow")


def beat_frames_for(duration_s: float, bpm: float, first_beat_s: float = 0.5) -> np.ndarray:
    """Audio frames of a steady beat (int64)."""
    times = np.arange(first_beat_s, duration_s - 0.01, 60.0 / bpm)
    return np.round(times * FPS).astype(np.int64)


def write_features(directory: Path, name: str, *, duration_s: float = 30.0, bpm: float = 120.0,
                   first_beat_s: float = 0.5, seed: int = 0, drop_keys: Iterable[str] = ()) -> tuple[Path, str]:  # fmt: skip
    """Write a feature artifact with every agreed key; returns (npz path, audio sha256).

    ``onset_env`` peaks on the beats; mel/chroma/mfcc are seeded noise. The "audio sha256"
    is a hash of ``name`` (no audio file exists).
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(duration_s * FPS) + 1
    beats = beat_frames_for(duration_s, bpm, first_beat_s)
    onset = np.full(n, 0.1, dtype=np.float32)
    onset[beats] = 5.0
    sha = hashlib.sha256(f"audio:{name}".encode()).hexdigest()
    base_n = int(duration_s * 30)
    arrays = {
        "sr": np.int64(SR), "hop_length": np.int64(HOP), "n_fft": np.int64(2048),
        "mel": rng.normal(-40, 10, (n, 128)).astype(np.float32),
        "onset_env": onset,
        "tempo_bpm": np.float64(bpm),
        "beat_frames": beats,
        "beat_times": beats * HOP / SR,
        "chroma": rng.random((n, 12)).astype(np.float32),
        "mfcc": rng.normal(0, 1, (n, 20)).astype(np.float32),
        "baseline": rng.normal(0, 1, (base_n, 35)).astype(np.float32),
        "baseline_fps": np.float64(30.0),
        "sha256": np.str_(sha),
        "duration_s": np.float64(duration_s),
        "source_path": np.str_(f"/music/{name}.ogg"),
        "versions": np.str_(json.dumps({"librosa": "test"})),
        "params": np.str_(json.dumps({"sr": SR, "hop_length": HOP})),
        "params_hash": np.str_("0" * 16),
    }  # fmt: skip
    for key in drop_keys:
        arrays.pop(key)
    path = directory / f"{name}-{sha[:12]}.npz"
    np.savez(path, **arrays)
    return path, sha


def burst_motion(beat_times_s: np.ndarray, *, amplitude: float = 0.05, width_s: float = 0.03) -> Callable[[np.ndarray], np.ndarray]:
    """Displacement d(track_time) whose speed peaks on each beat: a smooth step at every beat,
    alternating up and down (so the position stays bounded)."""
    signs = np.where(np.arange(beat_times_s.size) % 2 == 0, 1.0, -1.0)

    def d(t: np.ndarray) -> np.ndarray:
        z = (t[:, None] - beat_times_s[None, :]) / width_s
        return amplitude * (signs[None, :] / (1.0 + np.exp(-np.clip(z, -50, 50)))).sum(axis=1)

    return d


def sway_motion(period_s: float, *, amplitude: float = 0.05, phase_s: float = 0.0) -> Callable[[np.ndarray], np.ndarray]:
    """Displacement whose turning points (speed minima) fall every ``period_s`` from ``phase_s``."""

    def d(t: np.ndarray) -> np.ndarray:
        return amplitude * np.cos(np.pi * (t - phase_s) / period_s)

    return d


def pose_rows(disp: np.ndarray) -> list[dict[str, list[float]]]:
    """Joint dicts for each displacement: the moving joints shift right by ``disp``."""
    out = []
    for d in disp:
        joints = {}
        for name in JOINT_NAMES:
            x, y = BASE_POSE[name]
            if name in MOVING:
                x += float(d)
            joints[name] = [round(x, 6), y, 0.9]
        out.append(joints)
    return out


def event(seq: int, etype: str, ts: float, session: str, data: dict, src: str = "serve") -> dict:
    return {"v": 1, "id": f"{session}-{seq:08d}", "seq": seq, "ts": ts, "type": etype,
            "session": session, "src": src, "data": data}  # fmt: skip


def write_session(root: Path, session: str, *, cameras: Iterable[str] = ("cam-1",), duration_s: float = 30.0,
                  rate_hz: float = 30.0, cues: Iterable[dict] = (), motion: Callable[[np.ndarray], np.ndarray] | None = None,
                  motion_clock: tuple[float, float] | None = None, gaps: Iterable[tuple[float, float]] = (),
                  null_in_gaps: bool = False, wall0: float = WALL0, extra_lines: Iterable[tuple[int, bytes]] = ()) -> Path:  # fmt: skip
    """Write ``root/sessions/<session>/{session.json,events.jsonl}``; returns the session dir.

    ``cues``: dicts with ``track``, ``at_s`` (seconds after wall0), ``offset_s``, ``title``.
    ``motion`` maps track time → displacement, with ``motion_clock = (started_at_s, offset_s)``
    saying which track time a wall time is (defaults to the first cue). Pose samples in the
    ``gaps`` (seconds after wall0) are left out (or written with null joints).
    ``extra_lines``: (position, raw line) inserted into events.jsonl (for malformed input).
    """
    cues = list(cues)
    d = root / "sessions" / session
    d.mkdir(parents=True, exist_ok=True)
    cameras = list(cameras)
    (d / "session.json").write_text(json.dumps({"session": session, "title": f"test {session}",
                                                "cameras": cameras, "started_at": wall0}))  # fmt: skip
    lines: list[bytes] = []
    seq = 0

    def add(etype: str, ts: float, data: dict) -> None:
        nonlocal seq
        seq += 1
        lines.append(orjson.dumps(event(seq, etype, float(ts), session, data), option=orjson.OPT_SERIALIZE_NUMPY))

    add("session.started", wall0, {"kind": "photoshoot_performance", "title": f"test {session}"})
    for cue in cues:
        add("music.cue", wall0 + cue["at_s"], {"track": cue["track"], "title": cue.get("title", "t"),
                                               "path": None, "started_at": wall0 + cue["at_s"],
                                               "offset_s": cue.get("offset_s", 0.0)})  # fmt: skip
    times = np.arange(0.0, duration_s, 1.0 / rate_hz)
    if motion is not None:
        at_s, offset_s = motion_clock or (cues[0]["at_s"], cues[0].get("offset_s", 0.0))
        disp = motion(times - at_s + offset_s)
    else:
        disp = np.zeros(times.size)
    rows = pose_rows(disp)
    gaps = list(gaps)
    for cam_i, cam in enumerate(cameras):
        for k, t in enumerate(times):
            in_gap = any(a <= t < b for a, b in gaps)
            if in_gap and not null_in_gaps:
                continue
            add("pose.sample", wall0 + t + 1e-4 * cam_i, {"camera": cam, "t": float(wall0 + t + 1e-4 * cam_i),
                                                           "joints": None if in_gap else rows[k]})  # fmt: skip
    add("session.ended", wall0 + duration_s, {"reason": "operator"})
    for pos, raw in sorted(extra_lines):  # pos = 0-based index in the final file
        lines.insert(pos, raw)
    (d / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return d


def write_pose_file(path: Path, *, duration_s: float = 20.0, fps: float = 10.0,
                    motion: Callable[[np.ndarray], np.ndarray] | None = None,
                    extra_lines: Iterable[tuple[int, bytes]] = ()) -> Path:  # fmt: skip
    """A standalone pose file in the vtest.pose.jsonl format (header line, then frames)."""
    times = np.round(np.arange(0.0, duration_s, 1.0 / fps), 6)
    disp = motion(times) if motion is not None else np.zeros(times.size)
    lines = [orjson.dumps({"header": {"source": f"{path.name.split('.')[0]}.avi", "fps": fps, "joints": list(JOINT_NAMES)}})]
    for k, (t, joints) in enumerate(zip(times, pose_rows(disp), strict=True)):
        lines.append(orjson.dumps({"frame": k, "t": float(t), "joints": joints}))
    for pos, raw in sorted(extra_lines):  # pos = 0-based index in the final file
        lines.insert(pos, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def features_item(npz: Path, audio_sha: str) -> dict:
    return {"kind": "features", "path": str(npz), "sha256": sha256_file(npz), "size": npz.stat().st_size,
            "missing": [], "audio_sha256": audio_sha, "foreign": False}  # fmt: skip


def session_item(session_dir: Path, features: dict[str, Path] | None = None) -> dict:
    """An inventory line for a session dir, cues read back from its events."""
    events = session_dir / "events.jsonl"
    cues, cams = [], set()
    with open(events, "rb") as fp:
        for line in fp:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("type") == "music.cue":
                dd = obj["data"]
                cues.append({**dd, "features": str((features or {}).get(dd["track"])) if (features or {}).get(dd["track"]) else None,
                             "audio": None})  # fmt: skip
            elif obj.get("type") == "pose.sample":
                cams.add(obj["data"]["camera"])
    return {"kind": "session", "path": str(session_dir), "sha256": sha256_file(events), "size": events.stat().st_size,
            "missing": [], "session": session_dir.name, "session_json": str(session_dir / "session.json"),
            "events_path": str(events), "cameras": sorted(cams), "cues": cues}  # fmt: skip


def pose_item(path: Path) -> dict:
    return {"kind": "pose", "path": str(path), "sha256": sha256_file(path), "size": path.stat().st_size, "missing": []}


def write_inventory(path: Path, items: Iterable[dict], *, extra_lines: Iterable[tuple[int, bytes]] = ()) -> Path:
    lines = [orjson.dumps(it) for it in items]
    for pos, raw in sorted(extra_lines):  # pos = 0-based index in the final file
        lines.insert(pos, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
