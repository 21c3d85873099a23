"""The `mmx features` artifact: one ``.npz`` per audio file, written atomically, read and checked.

File name ``<audio stem>-<sha256[:12]>.npz`` in the output directory. Arrays are time-major;
audio frame ``k`` sits at ``t = k * hop_length / sr`` seconds from the start of the track
(DESIGN.md, "Audio features and alignment"). Keys (shape, dtype, meaning)::

    sr                 ()               int64    analysis sample rate, 22050 Hz
    hop_length         ()               int64    hop length, 512 samples (≈ 43.07 frames/s)
    n_fft              ()               int64    FFT window length, 2048 samples
    mel                (n_frames, 128)  float32  log-power mel spectrogram, dB
                                                 (``power_to_db(ref=max)``)
    onset_env          (n_frames,)      float32  onset envelope (``onset.onset_strength``)
    tempo_bpm          ()               float64  tempo: 60 / mean inter-beat interval
    tempo_librosa_bpm  ()               float64  librosa's estimate (whole-frame lags)
    beat_frames        (n_beats,)       int64    beats as audio frame indices
    beat_times         (n_beats,)       float64  beats in seconds from the track start
    chroma             (n_frames, 12)   float32  chromagram (``chroma_stft``)
    mfcc               (n_frames, 20)   float32  20 MFCC
    baseline           (n_base, 35)     float32  EDGE/FACT baseline block at baseline_fps:
                                                 onset envelope (1), MFCC (20), chroma_cens
                                                 (12), onset-peak one-hot (1), beat one-hot (1);
                                                 (0, 35) when analysed with --no-baseline
    baseline_fps       ()               float64  frame rate of ``baseline`` (frame k at k / fps)
    baseline_sr        ()               int64    baseline sample rate (``baseline_fps * 512``)
    sha256             ()               str      sha256 of the source file's bytes (hex)
    duration_s         ()               float64  duration of the source audio, seconds
    source_path        ()               str      absolute path of the source when analysed
    versions           ()               str      JSON: mmx, librosa, numpy, soundfile, ...
    params             ()               str      JSON: every analysis parameter
    params_hash        ()               str      sha256 (hex) of the canonical params JSON

This module needs numpy only (no librosa), so readers such as the ghost director stay light.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmx.errors import DataError, InputMissingError, IOFailure
from mmx.fileio import atomic_file

#: Keys every mmx feature artifact carries (the format above).
REQUIRED_KEYS: tuple[str, ...] = (
    "sr", "hop_length", "n_fft", "mel", "onset_env", "tempo_bpm", "beat_frames", "beat_times",
    "chroma", "mfcc", "baseline", "baseline_fps", "sha256", "duration_s", "source_path",
    "versions", "params", "params_hash",
)  # fmt: skip

#: Keys read back as Python scalars / strings rather than arrays.
_SCALAR_KEYS = {
    "sr": int, "hop_length": int, "n_fft": int, "tempo_bpm": float, "baseline_fps": float,
    "baseline_sr": int, "tempo_librosa_bpm": float, "duration_s": float, "sha256": str, "source_path": str,
    "versions": str, "params": str, "params_hash": str,
}  # fmt: skip

BASELINE_DIM = 35
HASH_PREFIX_LEN = 12


def sha256_file(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes. Raises InputMissingError / IOFailure."""
    try:
        with open(path, "rb") as fp:
            return hashlib.file_digest(fp, "sha256").hexdigest()
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror}") from None


def artifact_name(audio_path: str | Path, sha256: str) -> str:
    """``<audio stem>-<sha256[:12]>.npz`` — the artifact's file name for an audio file."""
    return f"{Path(audio_path).stem}-{sha256[:HASH_PREFIX_LEN]}.npz"


def write_features(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write ``arrays`` as an uncompressed ``.npz`` at ``path`` atomically.

    The data goes to a temporary file in the same directory, is fsynced and renamed over
    ``path``, so a crash mid-write never leaves a partial artifact under the final name.
    Raises IOFailure when the directory cannot be written.
    """
    path = Path(path)
    with atomic_file(path) as fp:
        np.savez(fp, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def _open_npz(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputMissingError(f"no such file: {path}") from None
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror or exc}") from None


def _scalar(value: np.ndarray, kind: type) -> Any:
    item = value.item() if value.shape == () else value.reshape(-1)[0].item()
    return kind(item)


def npz_keys(path: str | Path) -> list[str]:
    """The array names stored in an ``.npz`` (without loading any array). Raises DataError."""
    with _open_npz(Path(path)) as npz:
        return list(npz.files)


def read_header(path: str | Path) -> dict[str, Any]:
    """The small scalar fields of an artifact (no spectrogram loaded) plus ``keys`` and ``missing_keys``.

    Returns ``{"keys": [...], "missing_keys": [...], "sha256": ..., "tempo_bpm": ...,
    "n_beats": ..., ...}`` for whatever of `REQUIRED_KEYS`' scalars are present.
    Raises DataError when the file is not a readable ``.npz``.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        keys = list(npz.files)
        out: dict[str, Any] = {"keys": keys, "missing_keys": [k for k in REQUIRED_KEYS if k not in keys]}
        try:
            for key, kind in _SCALAR_KEYS.items():
                if key in keys:
                    out[key] = _scalar(npz[key], kind)
            if "beat_frames" in keys:
                out["n_beats"] = int(npz["beat_frames"].shape[0])
        except (ValueError, IndexError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(f"{path}: corrupt feature artifact ({exc})") from None
    return out


def _check_shapes(path: Path, data: dict[str, Any]) -> None:
    n_frames = data["mel"].shape[0]
    expect = {
        "mel": (n_frames, None), "onset_env": (n_frames,), "chroma": (n_frames, 12),
        "mfcc": (n_frames, 20), "baseline": (None, BASELINE_DIM), "beat_frames": (None,),
        "beat_times": (None,),
    }  # fmt: skip
    for key, shape in expect.items():
        got = data[key].shape
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
            raise DataError(f"{path}: {key} has shape {got}, expected {want}")
    if data["beat_frames"].shape != data["beat_times"].shape:
        raise DataError(f"{path}: beat_frames and beat_times differ in length")


def read_features(path: str | Path) -> dict[str, Any]:
    """Load a whole feature artifact into a dict and check it.

    Arrays keep their stored shapes (see the module docstring); the scalar keys come back
    as Python ``int``/``float``/``str``. Raises InputMissingError when the file is absent and
    DataError naming the file when it is not an ``.npz``, lacks any of `REQUIRED_KEYS`
    (the message lists them) or an array has the wrong shape.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        missing = [k for k in REQUIRED_KEYS if k not in npz.files]
        if missing:
            raise DataError(
                f"{path}: not an mmx feature artifact: missing keys {', '.join(missing)}",
                hint="make it with `mmx features AUDIO -o DIR`",
            )
        try:
            data: dict[str, Any] = {}
            for key in npz.files:
                value = npz[key]
                data[key] = _scalar(value, _SCALAR_KEYS[key]) if key in _SCALAR_KEYS else value
        except (ValueError, IndexError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(f"{path}: corrupt feature artifact ({exc})") from None
    _check_shapes(path, data)
    return data


def find_features(features_dir: str | Path, sha256: str, *, params_hash: str | None = None) -> Path | None:
    """The artifact for the audio whose content hash is ``sha256`` in ``features_dir``, or None.

    Looks at ``*-<sha256[:12]>.npz`` and accepts the first (in name order) whose stored
    ``sha256`` equals the full hash (and whose ``params_hash`` matches, when given).
    Unreadable candidates are passed over. A missing directory gives None.
    """
    features_dir = Path(features_dir)
    sha256 = sha256.lower()
    if len(sha256) < HASH_PREFIX_LEN or not features_dir.is_dir():
        return None
    for candidate in sorted(features_dir.glob(f"*-{sha256[:HASH_PREFIX_LEN]}.npz")):
        try:
            header = read_header(candidate)
        except (DataError, InputMissingError, IOFailure):
            continue
        if header.get("sha256", "").lower() != sha256:
            continue
        if params_hash is not None and header.get("params_hash") != params_hash:
            continue
        return candidate
    return None


def load_beat_grid(path: str | Path) -> tuple[np.ndarray, float]:
    """``(beat_times_s, tempo_bpm)`` of an artifact: beat times in seconds (float64, sorted).

    Raises InputMissingError when absent and DataError when the file lacks ``beat_times``
    or ``tempo_bpm``.
    """
    path = Path(path)
    with _open_npz(path) as npz:
        missing = [k for k in ("beat_times", "tempo_bpm") if k not in npz.files]
        if missing:
            raise DataError(f"{path}: no beat grid: missing keys {', '.join(missing)}")
        try:
            beat_times = np.asarray(npz["beat_times"], dtype=np.float64).reshape(-1)
            tempo_bpm = _scalar(npz["tempo_bpm"], float)
        except (ValueError, IndexError, zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DataError(f"{path}: corrupt feature artifact ({exc})") from None
    return np.sort(beat_times), tempo_bpm
