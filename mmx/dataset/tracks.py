"""Feature artifacts (`mmx features` ``.npz``) reduced to what pairing needs."""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmx.errors import DataError, InputMissingError, IOFailure

#: Feature-artifact keys pairing needs besides the audio columns.
REQUIRED_KEYS = ("sr", "hop_length", "onset_env", "beat_frames")
#: Which artifact arrays may become audio columns, and their column names.
AUDIO_KEYS = ("onset_env", "mfcc", "chroma", "mel")
_CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


@dataclass
class Track:
    """One feature artifact, reduced to what pairing needs."""

    sha256: str  # of the audio file
    path: Path
    npz_sha256: str
    sr: int
    hop_length: int
    n_frames: int
    audio: np.ndarray  # (n_frames, F) float32
    beat_frames: np.ndarray  # (n_beats,) int64
    title: str | None
    widths: dict[str, int]  # audio key → its number of columns
    versions: Any = None  # the artifact's own library versions (librosa, …), when it records them


def load_track(path: Path, audio_keys: tuple[str, ...]) -> Track:
    """Load a feature artifact (``.npz``) for pairing.

    Raises InputMissingError when the file is gone, DataError when it is not a readable npz
    or lacks ``sr``, ``hop_length``, ``onset_env``, ``beat_frames`` or a requested audio key.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputMissingError(f"no such feature artifact: {path}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror}") from None
    try:
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
        keys = set(npz.files)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz feature artifact ({exc})") from None
    missing = [k for k in (*REQUIRED_KEYS, *audio_keys) if k not in keys]
    if missing:
        raise DataError(f"{path}: feature artifact lacks keys {', '.join(missing)}",
                        hint="recompute it with `mmx features`")  # fmt: skip
    try:
        sr, hop = int(npz["sr"]), int(npz["hop_length"])
        cols = []
        for key in audio_keys:
            arr = np.asarray(npz[key], dtype=np.float32)
            cols.append(arr.reshape(arr.shape[0], -1))
        widths = {key: c.shape[1] for key, c in zip(audio_keys, cols, strict=True)}
        n_frames = min(c.shape[0] for c in cols)
        audio = np.ascontiguousarray(np.concatenate([c[:n_frames] for c in cols], axis=1))
        beat_frames = np.asarray(npz["beat_frames"], dtype=np.int64).ravel()
        sha = str(npz["sha256"]) if "sha256" in keys else ""
        title = Path(str(npz["source_path"])).name if "source_path" in keys else None
        versions = None
        if "versions" in keys:
            try:
                versions = orjson.loads(str(npz["versions"]))
            except orjson.JSONDecodeError:
                versions = str(npz["versions"])
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"{path}: malformed feature arrays ({exc})") from None
    if sr <= 0 or hop <= 0:
        raise DataError(f"{path}: sr and hop_length must be positive")
    return Track(sha, path, hashlib.sha256(raw).hexdigest(), sr, hop, n_frames, audio, beat_frames, title, widths, versions)


def audio_columns(track_audio_widths: dict[str, int], keys: tuple[str, ...]) -> list[str]:
    """Column names of the audio block: ``onset_env``, ``mfcc[0]``…, ``chroma[C]``…, ``mel[0]``…"""
    names: list[str] = []
    for key in keys:
        width = track_audio_widths[key]
        if key == "onset_env" and width == 1:
            names.append("onset_env")
        elif key == "chroma" and width == 12:
            names += [f"chroma[{n}]" for n in _CHROMA_NAMES]
        else:
            names += [f"{key}[{i}]" for i in range(width)]
    return names

