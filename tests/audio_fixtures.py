"""Generated inputs for the features/discover tests: click tracks, broken audio, capture dirs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import soundfile as sf

from mmx.events import JOINT_NAMES

WALL0 = 1_795_264_000.0


def click_signal(*, bpm: float = 120.0, seconds: float = 12.0, sr: int = 44100, first_s: float = 0.0,
                 freq_hz: float = 1000.0) -> np.ndarray:  # fmt: skip
    """Mono float32 signal with a 20 ms decaying sine click on every beat, starting at ``first_s``."""
    y = np.zeros(int(seconds * sr), dtype=np.float32)
    n = int(0.02 * sr)
    t = np.arange(n) / sr
    click = (0.8 * np.sin(2 * np.pi * freq_hz * t) * np.exp(-t / 0.004)).astype(np.float32)
    period = 60.0 / bpm
    k = 0
    while (start := int(round((first_s + k * period) * sr))) + n <= y.size:
        y[start : start + n] += click
        k += 1
    return y


def write_click(path: Path, *, bpm: float = 120.0, seconds: float = 12.0, sr: int = 44100, stereo: bool = False,
                fmt: str | None = None, **kw) -> Path:  # fmt: skip
    """Write a click track (WAV/FLAC/OGG by suffix) and return its path."""
    y = click_signal(bpm=bpm, seconds=seconds, sr=sr, **kw)
    data = np.stack([y, 0.5 * y], axis=1) if stereo else y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sr, format=fmt)
    return path


def write_truncated_ogg(path: Path, *, seconds: float = 6.0, keep: float = 0.5) -> Path:
    """An Ogg Vorbis file cut to ``keep`` of its bytes (what an interrupted copy leaves)."""
    full = path.with_name(path.stem + ".full.ogg")
    write_click(full, seconds=seconds, bpm=100.0)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _joints(x: float) -> dict[str, list[float]]:
    return {name: [round(x + 0.01 * i, 4), round(0.2 + 0.03 * i, 4), 0.9] for i, name in enumerate(JOINT_NAMES)}


def write_capture_dir(root: Path, session: str, *, cameras: Iterable[str] = ("cam-1", "cam-2"),
                      samples_per_camera: int = 20, cues: Iterable[dict] = (), malformed_at: int | None = None,
                      title: str = "test shoot") -> Path:  # fmt: skip
    """A session capture directory in the DESIGN.md format (``session.json`` + ``events.jsonl``).

    ``cues``: dicts with ``track`` (sha256), ``title``, ``path``, ``offset_s``. With
    ``malformed_at`` a line that is not JSON is inserted at that 1-based line number.
    Returns the directory.
    """
    cameras = list(cameras)
    d = root / session
    (d / "stills").mkdir(parents=True, exist_ok=True)
    meta = {"session": session, "kind": "photoshoot_performance", "title": title, "status": "completed",
            "started_at": WALL0, "cameras": [{"camera": c, "name": c} for c in cameras]}  # fmt: skip
    (d / "session.json").write_text(json.dumps(meta))
    seq = 0
    lines: list[str] = []

    def add(etype: str, ts: float, data: dict) -> None:
        nonlocal seq
        seq += 1
        lines.append(json.dumps({"v": 1, "id": f"{session}-{seq:06d}", "seq": seq, "ts": ts, "type": etype,
                                 "session": session, "src": "serve", "data": data}))  # fmt: skip

    add("session.started", WALL0, {"kind": "photoshoot_performance", "title": title, "mode": "manual"})
    for cam in cameras:
        add("camera.joined", WALL0 + 0.1, {"camera": cam, "name": cam})
    for i, cue in enumerate(cues):
        add("music.cue", WALL0 + 1 + i, {"track": cue["track"], "title": cue.get("title"), "path": cue.get("path"),
                                         "started_at": WALL0 + 1 + i, "offset_s": cue.get("offset_s", 0.0)})  # fmt: skip
    for k in range(samples_per_camera):
        for cam in cameras:
            t = WALL0 + 2 + k / 10
            add("pose.sample", t, {"camera": cam, "t": t, "joints": None if k % 5 == 4 else _joints(0.3 + 0.01 * k)})
    add("session.ended", WALL0 + 10, {"reason": "operator"})
    if malformed_at is not None:
        lines.insert(malformed_at - 1, '{"v": 1, "type": "pose.sample", this is not json')
    (d / "events.jsonl").write_text("\n".join(lines) + "\n")
    return d


def write_pose_file(path: Path, *, frames: int = 30, fps: float = 10.0, malformed_at: int | None = None) -> Path:
    """A standalone pose file in the format of ``shared/data/pose/vtest.pose.jsonl``."""
    lines = [json.dumps({"header": {"source": "gen.avi", "fps": fps, "joints": list(JOINT_NAMES),
                                    "coords": "normalized image, origin top-left"}})]  # fmt: skip
    for k in range(frames):
        lines.append(json.dumps({"frame": k, "t": k / fps, "joints": None if k % 3 == 0 else _joints(0.4)}))
    if malformed_at is not None:
        lines.insert(malformed_at - 1, "not json at all")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_foreign_npz(path: Path, *, n_frames: int = 100, n_beats: int = 8) -> Path:
    """An ``.npz`` from some other tool: a mel spectrogram plus tempo and beat arrays."""
    np.savez(path, melspec=np.zeros((n_frames, 80), np.float32), bpm=np.float64(128.0),
             beats=np.arange(n_beats) * 10, sample_rate=np.int64(16000), hop=np.int64(160))  # fmt: skip
    return path
