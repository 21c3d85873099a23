"""Pair recorded pose with music features into a windowed training dataset (`mmx pair`).

Inputs come from a `mmx discover` inventory (JSON Lines): feature artifacts (``kind:
"features"``, one ``.npz`` per audio file, DESIGN.md "Audio features and alignment"),
session capture directories (``kind: "session"``: ``session.json`` + ``events.jsonl`` with
``pose.sample`` and ``music.cue`` events) and standalone pose files (``kind: "pose"``,
paired through a cue file).

Alignment (DESIGN.md): a ``music.cue`` event says track T started playing at wall time
``started_at`` (Unix s, server clock) from position ``offset_s``; a pose sample taken at wall
time ``w`` sits at ``track_time = w - started_at + offset_s + clock_offset_s`` in the track.
The cue lasts until the next cue of the session, or the session's end. For every session ×
camera × cue, the pose stream is resampled onto the audio frame times of the track
(``t = k * hop_length / sr``, 22050/512 ≈ 43.07 fps) by linear interpolation of every joint
coordinate and confidence; frames farther than ``max_gap_s`` from any real pose sample
(``joints`` not null) are unobserved. Fixed windows (``window_s``, ``stride_s``) are cut
inside the cue's span; windows whose observed share is below ``min_observed`` are dropped
and counted.

Output directory (written to a sibling temporary directory, then renamed into place, so a
crash never leaves a half-written dataset under the final name):

- ``shards/<split>-NNNNN.npz`` with exactly ``shard_size`` windows (the last of each split
  fewer): ``audio`` (N, T, F) float32, ``pose`` (N, T, 19, 3) float32, ``dynamics``
  (N, T, 39) float32, ``observed`` (N, T) bool, ``beat`` (N, T) float32. Zip entries carry a
  fixed date, so the same inputs and parameters give byte-identical files.
- ``samples.jsonl``: one row per window (session, camera, track, track_start_s,
  track_end_s, split, shard, index, …).
- ``splits/{train,val,test}.txt``: the session ids (or track hashes with split_by="track")
  of each split, one per line, sorted.
- ``manifest.json``: parameters, inputs with sha256, versions, counts, dropped windows,
  skipped cues, statistics (incl. the Beat Alignment Score), assumptions, hashes.

Sessions are streamed one at a time: peak memory is one session's pose plus at most two
shard images per split (one filling, one being written by the background writer thread),
whatever the number of sessions.
"""

from __future__ import annotations

import errno
import hashlib
import io
import math
import mmap
import operator
import os
import platform
import shutil
import struct
import zipfile
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import orjson

from mmx import __version__
from mmx.dataset import bas
from mmx.errors import DataError, InputMissingError, IOFailure
from mmx.events import JOINT_NAMES, MAX_LINE_BYTES

try:  # zlib-ng's CRC-32 (SIMD) is about 4× zlib's; the same numbers, so zlib is a correct fallback
    from zlib_ng.zlib_ng import crc32 as _crc32
except ImportError:  # pragma: no cover - a platform without zlib-ng wheels
    from zlib import crc32 as _crc32

SPLITS = ("train", "val", "test")
N_JOINTS = len(JOINT_NAMES)
FORMAT_NAME = "mmx-pair-dataset"
FORMAT_VERSION = 1
#: Feature-artifact keys pairing needs besides the audio columns.
REQUIRED_KEYS = ("sr", "hop_length", "onset_env", "beat_frames")
#: Which artifact arrays may become audio columns, and their column names.
AUDIO_KEYS = ("onset_env", "mfcc", "chroma", "mel")
_CHROMA_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: Fixed zip entry date and time, 1980-01-01 00:00:00 (the earliest a zip can hold, in MS-DOS
#: format), so shards are byte-identical.
_ZIP_DAY, _ZIP_TIME = (1980 - 1980) << 9 | 1 << 5 | 1, 0
#: Sizes and offsets from this on go into ZIP64 records (APPNOTE 4.3.9.2); the 32-bit field
#: then holds 0xFFFFFFFF.
_ZIP64_FROM = 0xFFFFFFFF
_PAGE = mmap.PAGESIZE  # shard images are whole pages, for O_DIRECT writes
#: Joints of the torso, for the body-size normalisation.
_TORSO = tuple(JOINT_NAMES.index(n) for n in ("leftShoulder", "rightShoulder", "leftHip", "rightHip"))
_MISSING_JOINT = (math.nan, math.nan, 0.0)
_ALL_JOINTS = operator.itemgetter(*JOINT_NAMES)  # joints dict → the 19 [x, y, confidence] in order

ProblemHandler = Callable[[DataError], None]
ProgressHandler = Callable[[int, int, str], None]


# --------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class PairParams:
    """Every assumption of the pairing, written into the manifest.

    Times in seconds; ``split`` the (train, val, test) fractions summing to 1;
    ``split_by`` "session" or "track"; ``audio_features`` artifact keys concatenated into the
    audio columns, in this order; ``bas_sigma_s`` σ of the Beat Alignment Score;
    ``bas_smooth_s`` σ of the smoothing of the kinetic velocity before finding motion beats.
    """

    window_s: float = 5.0
    stride_s: float = 0.5
    max_gap_s: float = 0.5
    min_observed: float = 0.5
    clock_offset_s: float = 0.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "session"
    seed: int = 0
    shard_size: int = 256
    audio_features: tuple[str, ...] = ("onset_env", "mfcc", "chroma")
    bas_sigma_s: float = bas.SIGMA_S
    bas_smooth_s: float = bas.SMOOTH_SIGMA_S

    def check(self) -> None:
        """Raise ValueError naming the first parameter that makes no sense."""
        if not self.window_s > 0:
            raise ValueError("window must be > 0 seconds")
        if not self.stride_s > 0:
            raise ValueError("stride must be > 0 seconds")
        if not self.max_gap_s >= 0:
            raise ValueError("max-gap must be >= 0 seconds")
        if not 0 <= self.min_observed <= 1:
            raise ValueError("min-observed must be between 0 and 1")
        if not math.isfinite(self.clock_offset_s):
            raise ValueError("clock-offset must be a finite number of seconds")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError("split must be three fractions train/val/test summing to 1, e.g. 0.8/0.1/0.1")
        if self.split_by not in ("session", "track"):
            raise ValueError("split-by must be 'session' or 'track'")
        if self.shard_size < 1:
            raise ValueError("shard-size must be >= 1")
        if not self.audio_features or any(k not in AUDIO_KEYS for k in self.audio_features):
            raise ValueError(f"audio features must be among {', '.join(AUDIO_KEYS)}")
        if len(set(self.audio_features)) != len(self.audio_features):
            raise ValueError("audio features must not repeat")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        d["audio_features"] = list(self.audio_features)
        return d


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8/0.1/0.1"`` → (0.8, 0.1, 0.1). Raises ValueError unless three fractions ≥ 0 sum to 1."""
    parts = text.replace(",", "/").split("/")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"not three numbers: {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"need train/val/test fractions >= 0 summing to 1, got {text!r}")
    return values  # type: ignore[return-value]


def _hash(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


# --------------------------------------------------------------------------------------
# reading inputs


def _hashed_lines(fp: IO[bytes], sha256: Any, *, max_line_bytes: int = MAX_LINE_BYTES,
                  chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line_no, line)`` like `mmx.events.iter_lines`, reading big chunks.

    Every byte read goes into ``sha256`` (a hashlib object). Blank lines are skipped; a line
    longer than ``max_line_bytes`` is yielded as ``(line_no, None)`` and never held whole.
    Reading in chunks rather than ``readline`` per line matters for hour-long event files.
    """
    line_no = 0
    rest = b""
    too_long = False
    while True:
        chunk = fp.read(chunk_bytes)
        if not chunk:
            break
        sha256.update(chunk)
        parts = chunk.split(b"\n")
        parts[0] = rest + parts[0]
        rest = parts.pop()
        for line in parts:
            line_no += 1
            if too_long or len(line) > max_line_bytes:
                too_long = False
                yield line_no, None
            elif line.strip():
                yield line_no, line
        if len(rest) > max_line_bytes:
            too_long, rest = True, b""
    if too_long or rest:
        line_no += 1
        if too_long or len(rest) > max_line_bytes:
            yield line_no, None
        elif rest.strip():
            yield line_no, rest


def _open_input(path: Path, what: str) -> IO[bytes]:
    """Open an input for reading in 1 MiB buffers; raises InputMissingError / IOFailure."""
    try:
        return open(path, "rb", buffering=1 << 20)
    except FileNotFoundError:
        raise InputMissingError(f"no such {what}: {path}") from None
    except OSError as exc:
        raise IOFailure(f"cannot read {path}: {exc.strerror}") from None


def _json_lines(fp: IO[bytes], digest: Any, bad: Callable[[int, str], None]) -> Iterator[tuple[int, Any]]:
    """``(line_no, decoded JSON)`` per line of ``fp`` (hashed into ``digest`` as read).

    Over-long lines and lines that are not JSON go to ``bad(line_no, reason)`` and are skipped.
    """
    for line_no, line in _hashed_lines(fp, digest):
        if line is None:
            bad(line_no, "line too long")
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad(line_no, "not JSON")
            continue
        yield line_no, obj


def _loads(line: bytes, line_no: int, what: str = "a JSON object") -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise DataError(f"line {line_no}: not JSON ({exc.args[0].split(':')[0]})") from None
    if not isinstance(obj, dict):
        raise DataError(f"line {line_no}: not {what}")
    return obj


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (base / p)


@dataclass
class Inventory:
    """What pairing needs from a `mmx discover` inventory."""

    sha256: str = ""
    features: dict[str, list[Path]] = field(default_factory=dict)  # audio sha256 → artifacts
    sessions: list[dict[str, Any]] = field(default_factory=list)
    pose_files: dict[str, dict[str, Any]] = field(default_factory=dict)  # resolved path → item


def read_inventory(fp: IO[bytes], *, base: Path, on_problem: ProblemHandler) -> Inventory:
    """Read an inventory lazily; bad lines go to ``on_problem`` as ``line N: …`` DataErrors.

    ``base`` resolves relative paths (the inventory's directory). Items of kinds pairing does
    not use (audio, playlist) are counted and skipped, and so are foreign feature artifacts
    that carry no source-audio hash (discover lists them with ``audio_sha256: null``).
    """
    inv = Inventory()
    digest = hashlib.sha256()
    for line_no, line in _hashed_lines(fp, digest):
        if line is None:
            on_problem(DataError(f"line {line_no}: line too long"))
            continue
        try:
            item = _loads(line, line_no, "an inventory object")
            kind, path = item.get("kind"), item.get("path")
            if not isinstance(kind, str) or not isinstance(path, str) or not path:
                raise DataError(f"line {line_no}: an inventory item needs a string 'kind' and 'path'")
            if kind == "features":
                sha = item.get("audio_sha256")
                if item.get("foreign") and not sha:
                    continue  # another tool's artifact with no source hash: nothing to pair it by
                if not isinstance(sha, str) or not sha:
                    raise DataError(f"line {line_no}: features item {path} has no 'audio_sha256'")
                inv.features.setdefault(sha, []).append(_resolve(path, base))
            elif kind == "session":
                item = dict(item, _line=line_no, path=str(_resolve(path, base)))
                inv.sessions.append(item)
            elif kind == "pose":
                inv.pose_files[str(_resolve(path, base))] = item
        except DataError as exc:
            on_problem(exc)
    inv.sha256 = digest.hexdigest()
    for paths in inv.features.values():
        paths.sort()  # deterministic choice when one track has several artifacts
    return inv


@dataclass
class Cue:
    """One pairing instruction: this track played from ``offset_s`` at wall time ``started_at``."""

    track: str
    started_at: float
    offset_s: float
    line: int
    title: str | None = None
    ends_at: float = math.inf  # wall time; the next cue or the end of the recording


@dataclass
class PoseStream:
    """Real pose samples of one camera: ``t`` (m,) wall seconds sorted, ``joints`` (m, 19, 3)
    float64 with NaN x/y and 0 confidence for joints the sample lacked."""

    t: np.ndarray
    joints: np.ndarray
    n_null: int = 0


class _PoseCollector:
    """Accumulates one camera's pose samples as raw doubles (`array.array`).

    Each sample's 57 values (the joints in JOINT_NAMES order, flattened at C level) go into
    a C array with ``array.fromlist``, which also checks that they are numbers. The Python
    floats of a line are freed with it, so parsing an hour-long session keeps no Python
    objects per sample: 8 bytes per value, and the allocator keeps reusing warm memory.
    """

    def __init__(self) -> None:
        self.t = array("d")
        self.values = array("d")  # 3 * N_JOINTS per sample
        self.n_null = 0

    def add(self, t: float, joints: dict[str, Any]) -> str | None:
        """Append one sample; returns None, or why nothing was appended: ``"shape"`` unless
        every joint present is a list of 3, ``"values"`` when one of them is not a number.
        A joint missing from the dict gets NaN x/y and confidence 0."""
        try:  # fast path: every joint present and iterable
            row = list(chain.from_iterable(_ALL_JOINTS(joints)))
        except (KeyError, TypeError):  # a joint missing, or not a list
            row = []
            for name in JOINT_NAMES:
                joint = joints.get(name)
                if joint is None:
                    joint = _MISSING_JOINT
                elif type(joint) is not list or len(joint) != 3:
                    return "shape"
                row += joint
        if len(row) != 3 * N_JOINTS:
            return "shape"
        try:
            self.values.fromlist(row)  # all or nothing
        except TypeError:
            return "values"
        self.t.append(t)
        return None

    def finish(self) -> PoseStream:
        t = np.frombuffer(self.t, dtype=np.float64)
        joints = np.frombuffer(self.values, dtype=np.float64).reshape(-1, N_JOINTS, 3)
        order = np.argsort(t, kind="stable")
        return PoseStream(t=t[order], joints=joints[order], n_null=self.n_null)  # copies: the arrays let go


@dataclass
class SessionData:
    """One session's pose streams (per camera), cues, recording end and file hash."""

    cameras: dict[str, PoseStream]
    cues: list[Cue]
    events_sha256: str
    end_wall: float


def read_session_events(path: Path, *, on_problem: ProblemHandler) -> SessionData:
    """Parse a session's ``events.jsonl``: ``pose.sample`` per camera, ``music.cue``, end time.

    Lines that are not events, pose samples without a camera or time, or joints that are not
    ``{name: [x, y, confidence]}`` are reported as ``<path>: line N: …`` and skipped.
    Raises InputMissingError when the file does not exist, IOFailure when it cannot be read.
    """
    collectors: dict[str, _PoseCollector] = {}
    cues: list[Cue] = []
    end_wall = -math.inf
    ended_at: float | None = None

    def bad(line_no: int, reason: str) -> None:
        on_problem(DataError(f"{path}: line {line_no}: {reason}"))

    with _open_input(path, "events file") as fp:
        digest = hashlib.sha256()
        for line_no, obj in _json_lines(fp, digest, bad):
            if type(obj) is not dict or not isinstance(obj.get("type"), str):
                bad(line_no, "not an event (a JSON object with 'type')")
                continue
            data = obj.get("data")
            ts = obj.get("ts")
            if type(ts) in (float, int) and ts > end_wall:
                end_wall = float(ts)
            etype = obj["type"]
            if etype == "pose.sample":
                if type(data) is not dict:
                    bad(line_no, "pose.sample without a data object")
                    continue
                camera, t, joints = data.get("camera"), data.get("t"), data.get("joints")
                if not isinstance(camera, str) or type(t) not in (float, int) or not math.isfinite(t):
                    bad(line_no, "pose.sample needs a string 'camera' and a number 't'")
                    continue
                col = collectors.get(camera)
                if col is None:
                    col = collectors[camera] = _PoseCollector()
                if t > end_wall:
                    end_wall = float(t)
                if joints is None:
                    col.n_null += 1
                    continue
                wrong = col.add(t, joints) if type(joints) is dict else "shape"
                if wrong is not None:
                    bad(line_no, "pose.sample joint values must be numbers" if wrong == "values" else
                        "pose.sample joints must map joint names to [x, y, confidence] numbers")  # fmt: skip
            elif etype == "music.cue":
                if type(data) is not dict or not isinstance(data.get("track"), str) or not data["track"]:
                    bad(line_no, "music.cue needs a string 'track' (the audio file's sha256)")
                    continue
                started_at = data.get("started_at")
                if started_at is None:  # optional in the vocabulary: the event time then
                    started_at = ts
                offset_s = data.get("offset_s", 0.0) or 0.0
                if type(started_at) not in (float, int) or type(offset_s) not in (float, int):
                    bad(line_no, "music.cue 'started_at' and 'offset_s' must be numbers")
                    continue
                title = data.get("title") if isinstance(data.get("title"), str) else None
                cues.append(Cue(data["track"], float(started_at), float(offset_s), line_no, title))
            elif etype == "session.ended" and type(ts) in (float, int):
                ended_at = float(ts)
    cameras = {camera: collectors[camera].finish() for camera in sorted(collectors)}
    end = ended_at if ended_at is not None else end_wall
    _close_cues(cues, end)
    return SessionData(cameras, cues, digest.hexdigest(), end)


def _close_cues(cues: list[Cue], end_wall: float) -> None:
    cues.sort(key=lambda c: (c.started_at, c.line))
    for i, cue in enumerate(cues):
        cue.ends_at = cues[i + 1].started_at if i + 1 < len(cues) else end_wall


def read_pose_file(path: Path, *, on_problem: ProblemHandler) -> tuple[PoseStream, dict[str, Any], str]:
    """Read a standalone pose file (``{"header": …}`` then ``{"frame", "t", "joints"}`` lines).

    Returns (stream with ``t`` in seconds from the video start, header, sha256). Bad lines are
    reported as ``<path>: line N: …`` and skipped. Raises InputMissingError / IOFailure.
    """
    col = _PoseCollector()
    header: dict[str, Any] = {}

    def bad(line_no: int, reason: str) -> None:
        on_problem(DataError(f"{path}: line {line_no}: {reason}"))

    with _open_input(path, "pose file") as fp:
        digest = hashlib.sha256()
        for line_no, obj in _json_lines(fp, digest, bad):
            if type(obj) is not dict:
                bad(line_no, "not a JSON object")
                continue
            if "header" in obj and isinstance(obj["header"], dict):
                header = obj["header"]
                continue
            t, joints = obj.get("t"), obj.get("joints", "missing")
            if type(t) not in (float, int) or not math.isfinite(t):
                bad(line_no, "a pose line needs a number 't' (seconds)")
                continue
            if joints is None:
                col.n_null += 1
                continue
            wrong = col.add(t, joints) if type(joints) is dict else "shape"
            if wrong is not None:
                bad(line_no, "joint values must be numbers" if wrong == "values" else
                    "joints must map joint names to [x, y, confidence] numbers, or be null")  # fmt: skip
    return col.finish(), header, digest.hexdigest()


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


# --------------------------------------------------------------------------------------
# signal processing


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


def torso_length(pose: np.ndarray, observed: np.ndarray, joints: tuple[int, ...] = _TORSO) -> np.ndarray:
    """Shoulder-midpoint to hip-midpoint distance per frame (n,), NaN where not measurable
    (frame unobserved or any of the four joints with confidence 0). ``pose`` (n, J, 3);
    ``joints`` the indices of leftShoulder, rightShoulder, leftHip, rightHip in it."""
    ls, rs, lh, rh = (pose[:, j] for j in joints)
    mid_s = (ls[:, :2] + rs[:, :2]) / 2
    mid_h = (lh[:, :2] + rh[:, :2]) / 2
    length = np.sqrt(((mid_s - mid_h) ** 2).sum(-1))
    ok = observed & (ls[:, 2] > 0) & (rs[:, 2] > 0) & (lh[:, 2] > 0) & (rh[:, 2] > 0) & (length > 1e-6)
    return np.where(ok, length, np.nan)


def _row_median(values: np.ndarray) -> np.ndarray:
    """Median of each row of (N, T) ignoring NaN; NaN for a row without numbers. No warnings."""
    s = np.sort(values, axis=1)  # NaN sort last
    k = (~np.isnan(values)).sum(axis=1)
    rows = np.arange(values.shape[0])
    lo = s[rows, np.maximum(k - 1, 0) // 2]
    hi = s[rows, np.minimum(k // 2, values.shape[1] - 1)]
    return np.where(k > 0, (lo + hi) / 2, np.nan)


def window_starts(f_lo: int, f_hi: int, window_frames: int, stride_s: float, fps: float) -> np.ndarray:
    """Start frames of the windows inside frames [f_lo, f_hi): window k starts at
    ``f_lo + round(k * stride_s * fps)`` and must end by ``f_hi``. Returns int64 (N,)."""
    last = f_hi - window_frames
    if last < f_lo:
        return np.zeros(0, dtype=np.int64)
    n_max = int((last - f_lo) / (stride_s * fps)) + 2
    starts = f_lo + np.round(np.arange(n_max) * stride_s * fps).astype(np.int64)
    return starts[starts <= last]


# --------------------------------------------------------------------------------------
# writing


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header (format 1.0, or 2.0 when the header needs it) of a C-order array."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB: only the 2.0 format can hold it
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


class NpzImage:
    """A stored (uncompressed) ``.npz`` laid out in one page-aligned memory block.

    ``arrays`` are numpy views into the block, at the places the zip puts their bytes, so
    filling them fills the file: `save` adds the CRC-32s (zlib-ng) and writes the block with
    one ``write``, with ``O_DIRECT`` where the file system takes it: a dataset is gigabytes
    that nobody reads right away, and on disk the page cache's copy and page allocation cost
    the kernel more CPU than the pairing itself (bench/pair_bench.py: kernel time per window
    down about 5× with O_DIRECT on the test VM).

    The zip is PKWARE APPNOTE 6.3 (section 4.3): a local header per array, then its ``.npy``
    header and bytes, then the central directory. Every entry carries 1980-01-01 00:00:00 and
    mode 0644, so the bytes depend only on the arrays. Each array's bytes start on a 64-byte
    boundary (a padding extra field, id 0xD935 as Android's zipalign writes). ZIP64 records
    are added only when a size or offset needs them. Readable by ``numpy.load``, `zipfile`
    and any zip tool.
    """

    def __init__(self, specs: dict[str, tuple[tuple[int, ...], Any]]) -> None:
        entries = []  # (key, shape, dtype, name, local header + name + extra, npy header, header offset, size)
        offset = 0
        for key, (shape, dtype) in specs.items():
            dtype = np.dtype(dtype)
            name = f"{key}.npy".encode()
            npy = _npy_header(shape, dtype)
            size = len(npy) + math.prod(shape) * dtype.itemsize
            big = size >= _ZIP64_FROM
            extra = struct.pack("<HHQQ", 1, 16, size, size) if big else b""
            pad = -(offset + 30 + len(name) + len(extra) + 4 + len(npy)) % 64
            extra += struct.pack("<HH", 0xD935, pad) + bytes(pad)
            local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if big else 20, 0, 0, _ZIP_TIME, _ZIP_DAY, 0,
                                *((0xFFFFFFFF,) * 2 if big else (size, size)), len(name), len(extra))  # fmt: skip
            entries.append((key, tuple(shape), dtype, name, local + name + extra, npy, offset, size))
            offset += len(local) + len(name) + len(extra) + size
        central = bytearray()
        self.crc_at: list[tuple[int, int]] = []  # where each entry's CRC-32 goes: local header, central entry
        zip64_end = False
        for _key, _shape, _dtype, name, _local, _npy, at, size in entries:
            big, far = size >= _ZIP64_FROM, at >= _ZIP64_FROM
            fields = ((size, size) if big else ()) + ((at,) if far else ())
            extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
            zip64_end |= bool(fields)
            self.crc_at.append((at + 14, offset + len(central) + 16))
            central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0300 | 45, 45 if fields else 20, 0, 0,
                                   _ZIP_TIME, _ZIP_DAY, 0, *((0xFFFFFFFF,) * 2 if big else (size, size)),
                                   len(name), len(extra), 0, 0, 0, 0o644 << 16, 0xFFFFFFFF if far else at)  # fmt: skip
            central += name + extra
        cd_size, cd_offset, n = len(central), offset, len(entries)
        if zip64_end or cd_offset >= _ZIP64_FROM or cd_size >= _ZIP64_FROM:
            central += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x0300 | 45, 45, 0, 0, n, n, cd_size, cd_offset)
            central += struct.pack("<IIQI", 0x07064B50, 0, cd_offset + cd_size, 1)
            cd_size, cd_offset = min(cd_size, 0xFFFFFFFF), 0xFFFFFFFF
        central += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_offset, 0)
        self.size = offset + len(central)
        self.block = mmap.mmap(-1, -(-self.size // _PAGE) * _PAGE)  # page-aligned, zero-filled
        self.block[offset : self.size] = central
        self.data: list[tuple[int, int]] = []  # (start, end) of each entry's .npy (header + array bytes)
        self.arrays: dict[str, np.ndarray] = {}
        for key, shape, dtype, _name, head, npy, at, size in entries:
            start = at + len(head)
            self.block[at : start + len(npy)] = head + npy
            self.data.append((start, start + size))
            count = math.prod(shape)
            self.arrays[key] = np.frombuffer(self.block, dtype=dtype, count=count, offset=start + len(npy)).reshape(shape)

    def save(self, path: Path) -> None:
        """Write the file (CRC-32s filled in first). Raises OSError."""
        block = memoryview(self.block)
        for (start, end), (local_at, central_at) in zip(self.data, self.crc_at, strict=True):
            crc = _crc32(block[start:end])
            struct.pack_into("<I", self.block, local_at, crc)
            struct.pack_into("<I", self.block, central_at, crc)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        direct = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere the page cache
        if direct:
            try:
                fd = os.open(path, flags | direct, 0o644)
            except OSError:  # the file system does not take O_DIRECT
                pass
            else:
                try:
                    _write_all(fd, block)  # whole pages, as O_DIRECT wants; the tail is cut below
                    os.ftruncate(fd, self.size)
                    return
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # refused after all: written again through the page cache below
                finally:
                    os.close(fd)
        fd = os.open(path, flags, 0o644)
        try:
            _write_all(fd, block[: self.size])
        finally:
            os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as an uncompressed ``.npz`` whose bytes depend only on the arrays (see
    `NpzImage` for the layout). ``np.savez`` would stamp the current time into the zip."""
    image = NpzImage({k: (a.shape, a.dtype) for k, a in arrays.items()})
    for key, arr in arrays.items():
        image.arrays[key][...] = arr
    image.save(path)


class ShardWriter:
    """Fills one shard per split in memory and writes it as ``shards/<split>-NNNNN.npz``.

    Windows are gathered straight from the per-cue frame arrays (`numpy.take` with ``out=``)
    into the arrays of an `NpzImage`, i.e. into the shard file's own bytes: each window is
    copied once, and a full shard is written with one ``write``. The last shard of a split
    (fewer windows) is written from slices of the same arrays.
    """

    def __init__(self, root: Path, shard_size: int, shapes: dict[str, tuple[tuple[int, ...], Any]],
                 samples_fp: IO[bytes]) -> None:  # fmt: skip
        self.root = root
        self.size = shard_size
        self.shapes = shapes
        self.samples_fp = samples_fp
        self.images: dict[str, NpzImage] = {}  # the shard each split is filling
        self.spare: dict[str, NpzImage] = {}  # a written image per split, to fill again
        # full shards are written by one background thread while the next one fills: the
        # write (an O_DIRECT wait on disk) overlaps the pairing; at most one is in flight
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmx-pair-shards")
        self.pending: tuple[str, NpzImage, Future[None]] | None = None
        self.fill: dict[str, int] = {s: 0 for s in SPLITS}
        self.shard_no: dict[str, int] = {s: 0 for s in SPLITS}
        self.shards: list[str] = []

    def _buffer(self, split: str) -> dict[str, np.ndarray]:
        image = self.images.get(split)
        if image is None:
            image = self.spare.pop(split, None)
            if image is None:
                image = NpzImage({k: ((self.size, *shape), dt) for k, (shape, dt) in self.shapes.items()})
            self.images[split] = image
        return image.arrays

    def _wait(self) -> None:
        """Wait for the shard in flight; raises its OSError."""
        if self.pending is not None:
            split, image, done = self.pending
            self.pending = None
            done.result()
            self.spare[split] = image

    def add(self, split: str, sources: dict[str, tuple[np.ndarray, np.ndarray]], rows: list[dict[str, Any]],
            finish: Callable[[dict[str, np.ndarray], slice], None] | None = None) -> None:  # fmt: skip
        """Append N windows to ``split``, writing shards as they fill.

        ``sources`` maps each array name to (frames array (n, ...), frame indices (N, T));
        window i of that array is ``frames[indices[i]]``. ``rows`` are the N samples.jsonl
        rows without split/shard/index (filled in here). ``finish(views, rows_slice)`` may
        adjust the freshly gathered windows in place (e.g. normalise them).
        """
        n = len(rows)
        done = 0
        while done < n:
            buf = self._buffer(split)
            at = self.fill[split]
            take = min(n - done, self.size - at)
            views = {}
            for key, (frames, idx) in sources.items():
                view = buf[key][at : at + take]
                part = idx[done : done + take]
                np.take(frames, part.reshape(-1), axis=0, out=view.reshape(-1, *frames.shape[1:]), mode="clip")
                views[key] = view
            if finish is not None:
                finish(views, slice(done, done + take))
            name = f"{split}-{self.shard_no[split]:05d}"
            out = bytearray()
            for i in range(take):
                row = rows[done + i]
                row["split"], row["shard"], row["index"] = split, name, at + i
                out += orjson.dumps(row)
                out += b"\n"
            self.samples_fp.write(out)
            self.fill[split] = at + take
            done += take
            if self.fill[split] == self.size:
                self._write(split)

    def _write(self, split: str) -> None:
        count = self.fill[split]
        if count == 0:
            return
        name = f"{split}-{self.shard_no[split]:05d}"
        path = self.root / "shards" / f"{name}.npz"
        if count == self.size:
            self._wait()
            image = self.images.pop(split)
            self.pending = (split, image, self.pool.submit(image.save, path))
        else:
            write_npz(path, {k: v[:count] for k, v in self.images[split].arrays.items()})
        self.shards.append(name)
        self.shard_no[split] += 1
        self.fill[split] = 0

    def close(self) -> None:
        """Write the last shard of each split and wait for every write. Raises OSError."""
        try:
            for split in SPLITS:
                if split in self.images:
                    self._write(split)
            self._wait()
        finally:
            self.abort()

    def abort(self) -> None:
        """Stop without writing what is left (the caller removes the directory)."""
        self.pool.shutdown(wait=True)
        self.pending = None
        self.images.clear()
        self.spare.clear()


# --------------------------------------------------------------------------------------
# splits


def assign_splits(groups: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Assign whole groups (sessions or tracks) to train/val/test.

    The sorted groups are shuffled with ``numpy.random.default_rng(seed)``; counts follow the
    fractions by largest remainder, and every split with a fraction > 0 gets at least one
    group when there are enough groups. Same groups + seed → same assignment.
    """
    groups = sorted(set(groups))
    n = len(groups)
    if n == 0:
        return {}
    exact = [f * n for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i in range(3) if fractions[i] > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(3), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    perm = np.random.default_rng(seed).permutation(n)
    out: dict[str, str] = {}
    pos = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for k in perm[pos : pos + count]:
            out[groups[int(k)]] = split
        pos += count
    return out


def hash_split(group: str, fractions: tuple[float, float, float], seed: int) -> str:
    """Split of a group not known when splits were planned: a uniform number from
    sha256(f"{seed}:{group}") against the cumulative fractions."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{group}".encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


# --------------------------------------------------------------------------------------
# the pipeline


@dataclass
class _Job:
    """One session (or one standalone pose file) to pair; data loaded only when processed."""

    id: str
    kind: str  # "session" | "pose"
    path: Path  # session dir or pose file
    events: Path | None = None
    session_json: Path | None = None
    planned_tracks: list[str] | None = None  # from the inventory / cue file, for split planning
    pose_cues: list[Cue] = field(default_factory=list)
    line: int = 0


def _session_job(item: dict[str, Any]) -> _Job:
    path = Path(item["path"])
    sid = item.get("session") if isinstance(item.get("session"), str) and item.get("session") else path.name
    events = item.get("events_path") if isinstance(item.get("events_path"), str) else None
    sjson = item.get("session_json") if isinstance(item.get("session_json"), str) else None
    tracks = None
    if isinstance(item.get("cues"), list):
        tracks = [c["track"] for c in item["cues"] if isinstance(c, dict) and isinstance(c.get("track"), str)]
    return _Job(id=sid, kind="session", path=path,
                events=_resolve(events, path) if events else path / "events.jsonl",
                session_json=_resolve(sjson, path) if sjson else path / "session.json",
                planned_tracks=tracks, line=item.get("_line", 0))  # fmt: skip


def read_cue_file(path: Path, *, on_problem: ProblemHandler) -> tuple[dict[Path, list[Cue]], str]:
    """Read ``--cues FILE``: JSON Lines ``{"pose": path, "track": sha256, "offset_s": s}``.

    Relative pose paths are relative to the cue file. Returns ({pose path: cues}, sha256).
    Bad lines go to ``on_problem`` as ``<path>: line N: …``.
    """
    out: dict[Path, list[Cue]] = {}
    with _open_input(path, "cue file") as fp:
        digest = hashlib.sha256()
        for line_no, line in _hashed_lines(fp, digest):
            try:
                if line is None:
                    raise DataError(f"line {line_no}: line too long")
                obj = _loads(line, line_no, "a cue object")
                pose, track, offset = obj.get("pose"), obj.get("track"), obj.get("offset_s", 0.0)
                if not isinstance(pose, str) or not isinstance(track, str) or not track:
                    raise DataError(f"line {line_no}: a cue needs string 'pose' (path) and 'track' (sha256)")
                if type(offset) not in (float, int):
                    raise DataError(f"line {line_no}: 'offset_s' must be a number of seconds")
                title = obj.get("title") if isinstance(obj.get("title"), str) else None
                cue = Cue(track, 0.0, float(offset), line_no, title)
                out.setdefault(_resolve(pose, path.parent).absolute(), []).append(cue)
            except DataError as exc:
                on_problem(DataError(f"{path}: {exc.message}"))
    return out, digest.hexdigest()


def _file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class _Stats:
    """Running dataset statistics per split."""

    def __init__(self) -> None:
        self.windows = {s: 0 for s in SPLITS}
        self.sessions: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.tracks: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.observed_sum = {s: 0.0 for s in SPLITS}
        self.ke_sum = {s: 0.0 for s in SPLITS}
        self.bas: dict[str, list[float]] = {s: [] for s in SPLITS}
        self.bas_fact: dict[str, list[float]] = {s: [] for s in SPLITS}
        self.dropped: dict[str, int] = {"observed_below_min": 0, "no_body_size": 0}

    def summary(self) -> dict[str, Any]:
        def mean(xs: list[float]) -> float | None:
            return round(float(np.mean(xs)), 6) if xs else None

        per = {}
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
        all_fact = [x for s in SPLITS for x in self.bas_fact[s]]
        per["all"] = {
            "windows": sum(self.windows.values()),
            "beat_alignment_score": mean(all_bas),
            "beat_alignment_score_fact": mean(all_fact),
            "bas_sequences": len(all_bas),
        }
        return per


ASSUMPTIONS = [
    "Pose timestamps (pose.sample t) and music cues (music.cue started_at) are on the same clock, the server's; "
    "clock_offset_s is added to every track time to correct a constant difference.",
    "A pose sample taken at wall time w sits at track time w - started_at + offset_s + clock_offset_s.",
    "A cue lasts until the next music.cue of the session, or the session's end (session.ended, else the last "
    "timestamp in events.jsonl); a standalone pose file's cue covers the whole file, with started_at = 0 on the "
    "file's own time axis.",
    "Audio frame k sits at k * hop_length / sr seconds from the start of the track; all windows share one sr and "
    "hop_length (the first artifact's).",
    "Pose is linearly interpolated per joint coordinate and confidence between real samples; joints missing from a "
    "sample count as confidence 0; pose before the first / after the last real sample is held.",
    "A frame is observed when a real pose sample (joints not null) lies within max_gap_s seconds; unobserved "
    "frames hold zeros in pose and dynamics.",
    "Window k of a cue starts at frame f0 + round(k * stride_s * fps) and spans round(window_s * fps) frames; "
    "windows with an observed share below min_observed are dropped.",
    "Speed and acceleration are in torso lengths per second (per second squared): the torso length is the median, "
    "over the window's observed frames, of the distance between the shoulder midpoint and the hip midpoint in "
    "normalized image coordinates (the cue's median when the window has none); image aspect ratio is ignored.",
    "Splits are by session (or by track): every window of a group is on the same side.",
]


class _Pairing:
    """One run of `pair_dataset`: the state shared while sessions stream through."""

    def __init__(self, params: PairParams, inv: Inventory, tmp: Path, problem: ProblemHandler,
                 split_of: dict[str, str]) -> None:  # fmt: skip
        self.params = params
        self.inv = inv
        self.tmp = tmp
        self.problem = problem
        self.split_of = split_of
        self.stats = _Stats()
        self.skipped: list[dict[str, Any]] = []
        self.inputs_sessions: list[dict[str, Any]] = []
        self.inputs_pose: list[dict[str, Any]] = []
        self.tracks_used: dict[str, dict[str, Any]] = {}
        self.cache: OrderedDict[Path, Track] = OrderedDict()  # the last two tracks used
        self.geometry: dict[str, Any] = {}  # sr, hop_length, fps, window_frames, n_audio, columns
        self.samples_fp = open(tmp / "samples.jsonl", "wb")
        self.writer: ShardWriter | None = None

    # -- inputs -------------------------------------------------------------------------

    def split_for(self, group: str) -> str:
        if group not in self.split_of:  # a group the plan did not know (cue missing from the inventory)
            self.split_of[group] = hash_split(group, self.params.split, self.params.seed)
        return self.split_of[group]

    def track(self, sha: str, where: str) -> Track:
        """The feature artifact of a cued track. Raises DataError / InputMissingError / IOFailure."""
        paths = self.inv.features.get(sha)
        if not paths:
            raise DataError(f"{where} cued track {sha} but no features exist for it",
                            hint="run `mmx features` on the track's audio and `mmx discover` again")  # fmt: skip
        path = paths[0]
        track = self.cache.get(path)
        if track is None:
            track = load_track(path, self.params.audio_features)
            self.cache[path] = track
            while len(self.cache) > 2:
                self.cache.popitem(last=False)
        else:
            self.cache.move_to_end(path)
        geo = self.geometry
        if not geo:
            fps = track.sr / track.hop_length
            geo.update(sr=track.sr, hop_length=track.hop_length, fps=fps,
                       window_frames=int(round(self.params.window_s * fps)), n_audio=track.audio.shape[1],
                       columns=audio_columns(track.widths, self.params.audio_features))  # fmt: skip
        elif (track.sr, track.hop_length) != (geo["sr"], geo["hop_length"]):
            raise DataError(f"{path}: sr {track.sr} / hop_length {track.hop_length} differ from the dataset's "
                            f"{geo['sr']} / {geo['hop_length']}")  # fmt: skip
        elif track.audio.shape[1] != geo["n_audio"]:
            raise DataError(f"{path}: {track.audio.shape[1]} audio columns, the dataset has {geo['n_audio']}")
        self.tracks_used.setdefault(sha, {"track": sha, "path": str(path), "sha256": track.npz_sha256,
                                          "versions": track.versions})  # fmt: skip
        return track

    def load_job(self, job: _Job) -> tuple[dict[str, PoseStream], list[Cue], str]:
        """Read one session's events (or one pose file): (pose per camera, cues, label)."""
        if job.kind == "session":
            assert job.events is not None and job.session_json is not None
            data = read_session_events(job.events, on_problem=self.problem)
            self.inputs_sessions.append({
                "session": job.id, "dir": str(job.path),
                "session_json": {"path": str(job.session_json), "sha256": _file_sha256(job.session_json)},
                "events": {"path": str(job.events), "sha256": data.events_sha256},
            })  # fmt: skip
            return data.cameras, data.cues, f"session {job.id}"
        stream, header, sha = read_pose_file(job.path, on_problem=self.problem)
        self.inputs_pose.append({"session": job.id, "path": str(job.path), "sha256": sha})
        source = header.get("source") if isinstance(header.get("source"), str) else None
        fps = header.get("fps") if type(header.get("fps")) in (float, int) and header["fps"] > 0 else None
        end = float(stream.t[-1]) + (1.0 / fps if fps else 0.0) if stream.t.size else 0.0
        cues = [Cue(c.track, 0.0, c.offset_s, c.line, c.title, ends_at=end) for c in job.pose_cues]
        return {Path(source).stem if source else "pose": stream}, cues, f"pose file {job.path}"

    def run_job(self, job: _Job) -> None:
        try:
            cameras, cues, where = self.load_job(job)
        except (InputMissingError, IOFailure, DataError) as exc:
            self.problem(DataError(f"{job.kind} {job.id}: {exc.message}"))
            self.skipped.append({"session": job.id, "track": None, "reason": exc.message})
            return
        for cue in cues:
            loc = f"{where} ({'cue file' if job.kind == 'pose' else 'events'} line {cue.line})"
            try:
                track = self.track(cue.track, loc)
            except (DataError, InputMissingError, IOFailure) as exc:
                self.problem(exc if isinstance(exc, DataError) else DataError(exc.message))
                self.skipped.append({"session": job.id, "track": cue.track, "reason": exc.message})
                continue
            if cue.ends_at <= cue.started_at:
                self.skipped.append({"session": job.id, "track": cue.track, "reason": "cue has an empty span"})
                continue
            for camera, stream in cameras.items():
                self.pair_cue(job, camera, stream, cue, track)

    # -- pairing ------------------------------------------------------------------------

    def ensure_writer(self) -> ShardWriter:
        if self.writer is None:
            t, geo = self.geometry["window_frames"], self.geometry
            shapes = {
                "audio": ((t, geo["n_audio"]), np.float32),
                "pose": ((t, N_JOINTS, 3), np.float32),
                "dynamics": ((t, 2 * N_JOINTS + 1), np.float32),
                "observed": ((t,), np.bool_),
                "beat": ((t,), np.float32),
            }
            self.writer = ShardWriter(self.tmp, self.params.shard_size, shapes, self.samples_fp)
        return self.writer

    def pair_cue(self, job: _Job, camera: str, stream: PoseStream, cue: Cue, track: Track) -> None:
        """Cut the windows of one camera × cue and hand them to the shard writer."""
        params, stats = self.params, self.stats
        fps = self.geometry["fps"]
        big_t = self.geometry["window_frames"]
        shift = -cue.started_at + cue.offset_s + params.clock_offset_s  # wall time → track time
        lo = cue.offset_s + params.clock_offset_s
        hi = min(track.n_frames / fps, cue.ends_at + shift)
        f_lo = max(0, math.ceil(lo * fps - 1e-9))
        f_hi = min(track.n_frames, math.floor(hi * fps + 1e-9) + 1)
        starts = window_starts(f_lo, f_hi, big_t, params.stride_s, fps)
        if starts.size == 0:
            return
        n = int(starts[-1]) + big_t - f_lo
        frame_t = (f_lo + np.arange(n)) / fps
        # only samples taken while this cue played, on the track's clock
        inside = (stream.t >= cue.started_at) & (stream.t < cue.ends_at)
        sub = PoseStream(stream.t[inside] + shift, stream.joints[inside])
        # whole-cue per-frame scalars (cheap): observed mask, torso length, beats
        torso_pose, observed = resample_pose(PoseStream(sub.t, sub.joints[:, list(_TORSO)]), frame_t,
                                             max_gap_s=params.max_gap_s)  # fmt: skip
        torso = torso_length(torso_pose, observed, (0, 1, 2, 3))
        del torso_pose
        measured = torso[~np.isnan(torso)]
        cue_torso = float(np.median(measured)) if measured.size else math.nan
        del measured
        beat = np.zeros(n, dtype=np.float32)
        bf = track.beat_frames[(track.beat_frames >= f_lo) & (track.beat_frames < f_lo + n)] - f_lo
        beat[bf] = 1.0
        kin_vel = np.zeros(n)  # mean joint speed, for the Beat Alignment Score
        cum_obs = np.concatenate([[0], np.cumsum(observed, dtype=np.int64)])
        split = self.split_for(job.id if params.split_by == "session" else cue.track)
        writer = self.ensure_writer()
        offsets = np.arange(big_t)
        title = cue.title or track.title
        # full pose and dynamics per chunk of windows, so memory does not grow with the cue's
        # length; 2 extra frames each side make the central differences exact at the seams
        for c0 in range(0, starts.size, params.shard_size):
            st = starts[c0 : c0 + params.shard_size]
            local = st - f_lo
            c_lo, c_hi = int(local[0]), int(local[-1]) + big_t
            m_lo, m_hi = max(0, c_lo - 2), min(n, c_hi + 2)
            pose, _ = resample_pose(sub, frame_t[m_lo:m_hi], max_gap_s=params.max_gap_s)
            speed, accel, ke = pose_dynamics(pose, fps)
            kin_vel[c_lo:c_hi] = speed[c_lo - m_lo : c_hi - m_lo].mean(axis=1)
            obs_c = observed[m_lo:m_hi]
            pose32 = pose.astype(np.float32)
            pose32[~obs_c] = 0.0
            dyn = np.empty((pose.shape[0], 2 * N_JOINTS + 1), dtype=np.float32)
            dyn[:, :N_JOINTS], dyn[:, N_JOINTS:-1], dyn[:, -1] = speed, accel, ke
            dyn[~obs_c] = 0.0
            del pose, speed, accel, ke

            share = (cum_obs[local + big_t] - cum_obs[local]) / big_t
            idx = local[:, None] + offsets[None, :]  # (N, T) frame indices into this cue's arrays
            scale = _row_median(torso[idx])
            scale = np.where(np.isnan(scale), cue_torso, scale)
            low = share < params.min_observed
            no_size = ~low & np.isnan(scale)
            stats.dropped["observed_below_min"] += int(low.sum())
            stats.dropped["no_body_size"] += int(no_size.sum())
            keep = ~(low | no_size)
            if not keep.any():
                continue
            idx, st, share, scale = idx[keep], st[keep], share[keep], scale[keep]
            inv_scale = (1.0 / scale).astype(np.float32)
            ke_total = [0.0]

            def normalise(views: dict[str, np.ndarray], part: slice, inv_scale=inv_scale, ke_total=ke_total) -> None:
                d = views["dynamics"]
                k = inv_scale[part]
                d *= k[:, None, None]  # every column (contiguous), then kinetic energy once more: / torso²
                d[..., -1] *= k[:, None]
                ke_total[0] += float(d[..., -1].sum(dtype=np.float64))

            rows = []
            for k in range(st.size):
                s0 = int(st[k])
                rows.append({
                    "id": f"{job.id}/{camera}/{cue.track[:12]}/{s0}",
                    "session": job.id, "camera": camera, "track": cue.track, "title": title,
                    "track_start_s": round(s0 / fps, 6), "track_end_s": round((s0 + big_t) / fps, 6),
                    "start_frame": s0, "observed_share": round(float(share[k]), 4),
                })  # fmt: skip
            sources = {"audio": (track.audio, idx + f_lo), "pose": (pose32, idx - m_lo), "dynamics": (dyn, idx - m_lo),
                       "observed": (observed, idx), "beat": (beat, idx)}  # fmt: skip
            writer.add(split, sources, rows, finish=normalise)
            stats.windows[split] += st.size
            stats.sessions[split].add(job.id)
            stats.tracks[split].add(cue.track)
            stats.observed_sum[split] += float(share.sum())
            stats.ke_sum[split] += ke_total[0] / big_t

        # Beat Alignment Score over the cue's observed frames
        mb = bas.motion_beat_frames(kin_vel, fps, smooth_sigma_s=params.bas_smooth_s, valid=observed)
        music = bf[observed[bf]] if bf.size else bf
        if mb.size and music.size:
            stats.bas[split].append(bas.beat_alignment_score(music / fps, mb / fps, sigma_s=params.bas_sigma_s))
            stats.bas_fact[split].append(bas.beat_alignment_score(
                music / fps, mb / fps, sigma_s=params.bas_sigma_s, direction=bas.MOTION_TO_MUSIC))

    # -- output -------------------------------------------------------------------------

    def close(self, *, abort: bool = False) -> None:
        """Write what is left (or, with ``abort``, drop it: the caller removes the directory)."""
        if self.writer is not None:
            self.writer.abort() if abort else self.writer.close()
        self.samples_fp.close()

    def finish(self, *, inventory: dict[str, Any], cues: dict[str, Any] | None, n_problems: int) -> dict[str, Any]:
        """Write splits/*.txt and manifest.json into the temporary directory; returns the manifest."""
        params, stats, geo = self.params, self.stats, self.geometry
        self.close()
        used = {s: sorted(stats.sessions[s] if params.split_by == "session" else stats.tracks[s]) for s in SPLITS}
        for s in SPLITS:
            (self.tmp / "splits" / f"{s}.txt").write_text("".join(f"{g}\n" for g in used[s]))
        t = geo.get("window_frames")
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "params": params.as_dict(),
            "params_hash": _hash(params.as_dict()),
            "frames": {"sr": geo.get("sr"), "hop_length": geo.get("hop_length"), "fps": geo.get("fps"),
                       "window_frames": t},
            "arrays": {
                "audio": {"shape": ["N", t, geo.get("n_audio")], "dtype": "float32", "columns": geo.get("columns", [])},
                "pose": {"shape": ["N", t, N_JOINTS, 3], "dtype": "float32", "joints": list(JOINT_NAMES),
                         "channels": ["x", "y", "confidence"],
                         "units": "normalized image coordinates, origin top-left; zeros where unobserved"},
                "dynamics": {"shape": ["N", t, 2 * N_JOINTS + 1], "dtype": "float32",
                             "columns": [f"speed[{j}]" for j in JOINT_NAMES] + [f"accel[{j}]" for j in JOINT_NAMES]
                             + ["kinetic_energy"],
                             "units": "speed in torso lengths/s, accel in torso lengths/s^2, kinetic_energy = "
                                      "0.5 * mean over joints of speed^2 (torso lengths^2/s^2); zeros where unobserved"},
                "observed": {"shape": ["N", t], "dtype": "bool"},
                "beat": {"shape": ["N", t], "dtype": "float32", "units": "1.0 at the artifact's beat_frames, else 0.0"},
            },
            "inputs": {
                "inventory": inventory,
                "cues": cues,
                "sessions": self.inputs_sessions,
                "pose_files": self.inputs_pose,
                "features": [self.tracks_used[k] for k in sorted(self.tracks_used)],
            },
            "versions": {"mmx": __version__, "numpy": np.__version__, "python": platform.python_version()},
            "counts": {"windows": dict(stats.windows), "shards": sorted(self.writer.shards) if self.writer else []},
            "dropped": {"total": sum(stats.dropped.values()), "reasons": dict(stats.dropped)},
            "skipped": self.skipped,
            "problems": n_problems,
            "splits": {"by": params.split_by, "seed": params.seed, "fractions": list(params.split), "groups": used},
            "stats": stats.summary(),
            "beat_alignment": {
                "definition": "motion beats = strict local minima of the mean joint speed (kinetic velocity) after "
                              "Gaussian smoothing with sigma smooth_sigma_s; beat_alignment_score = mean over music "
                              "beats (observed frames) of exp(-d^2 / (2 sigma_s^2)), d the distance in seconds to the "
                              "nearest motion beat (Bailando/EDGE); beat_alignment_score_fact averages over motion "
                              "beats instead (FACT's alignment_score); each cue x camera is one sequence, scores are "
                              "means over sequences",
                "sigma_s": params.bas_sigma_s,
                "smooth_sigma_s": params.bas_smooth_s,
            },
            "assumptions": ASSUMPTIONS,
        }  # fmt: skip
        manifest["manifest_hash"] = _hash(manifest)
        (self.tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
        return manifest


def _plan_jobs(inv: Inventory, cue_file: Path | None, inventory_name: str,
               problem: ProblemHandler) -> tuple[list[_Job], str | None]:  # fmt: skip
    """Sessions from the inventory and pose files from the cue file, sorted by id."""
    jobs: dict[str, _Job] = {}
    for item in sorted(inv.sessions, key=lambda it: it["path"]):
        job = _session_job(item)
        if job.id in jobs:
            problem(DataError(f"{inventory_name}: line {job.line}: session {job.id} listed twice "
                              f"({jobs[job.id].path} and {job.path}); keeping the first"))  # fmt: skip
            continue
        jobs[job.id] = job
    cue_sha = None
    if cue_file is not None:
        pose_cues, cue_sha = read_cue_file(cue_file, on_problem=problem)
        for pose_path, cues in sorted(pose_cues.items()):
            item = inv.pose_files.get(str(pose_path), {})
            sha = item.get("sha256") if isinstance(item.get("sha256"), str) else _file_sha256(pose_path)
            jid = f"pose:{pose_path.stem.removesuffix('.pose')}:{(sha or 'missing')[:8]}"
            jobs[jid] = _Job(id=jid, kind="pose", path=pose_path, planned_tracks=[c.track for c in cues],
                             pose_cues=cues)  # fmt: skip
    return [jobs[k] for k in sorted(jobs)], cue_sha


def pair_dataset(
    inventory: IO[bytes] | BinaryIO,
    out_dir: Path,
    *,
    params: PairParams,
    inventory_name: str = "-",
    inventory_base: Path | None = None,
    cue_file: Path | None = None,
    on_problem: ProblemHandler | None = None,
    on_progress: ProgressHandler | None = None,
) -> dict[str, Any]:
    """Build the paired dataset in ``out_dir`` from an inventory stream.

    Bad input (malformed lines, missing features, unreadable files) is reported through
    ``on_problem`` and skipped; the rest is processed. ``on_progress(done, total, label)``
    is called once per session. The dataset is built in a sibling temporary directory and
    renamed into place at the end; a previous dataset in ``out_dir`` stays whole until then.
    Returns the summary: ``dir``, ``windows`` per split, ``dropped``, ``problems``,
    ``manifest_hash``, ``params_hash``, ``beat_alignment_score``.
    Raises ValueError for bad parameters, IOFailure when ``out_dir`` cannot be written or
    exists and is not a dataset.
    """
    params.check()
    problems: list[str] = []

    def problem(exc: DataError) -> None:
        problems.append(exc.message)
        if on_problem is not None:
            on_problem(exc)

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists())):
        raise IOFailure(f"{out_dir} exists and is not an mmx dataset; refusing to overwrite it",
                        hint="choose another -o directory or remove it")  # fmt: skip
    base = inventory_base or (Path(inventory_name).parent if inventory_name != "-" else Path.cwd())
    inv = read_inventory(inventory, base=base.absolute(), on_problem=problem if inventory_name == "-" else
                         lambda exc: problem(DataError(f"{inventory_name}: {exc.message}", hint=exc.hint)))  # fmt: skip
    jobs, cue_sha = _plan_jobs(inv, cue_file, inventory_name, problem)

    # split planning: whole groups, known up front
    if params.split_by == "session":
        groups = [j.id for j in jobs if j.planned_tracks is None or any(t in inv.features for t in j.planned_tracks)]
    else:
        groups = sorted({t for j in jobs for t in (j.planned_tracks or []) if t in inv.features})
    split_of = assign_splits(groups, params.split, params.seed)

    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "shards").mkdir(parents=True)
        (tmp / "splits").mkdir()
    except OSError as exc:
        raise IOFailure(f"cannot create {tmp}: {exc.strerror}") from None
    run = _Pairing(params, inv, tmp, problem, split_of)
    try:
        for done, job in enumerate(jobs):
            if on_progress is not None:
                on_progress(done, len(jobs), job.id)
            run.run_job(job)
        if on_progress is not None:
            on_progress(len(jobs), len(jobs), "")
        manifest = run.finish(inventory={"path": inventory_name, "sha256": inv.sha256},
                              cues={"path": str(cue_file), "sha256": cue_sha} if cue_file is not None else None,
                              n_problems=len(problems))  # fmt: skip
        # swap into place: the old dataset stays whole until the new one is complete
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except OSError as exc:
        run.close(abort=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise IOFailure(f"cannot write the dataset {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        run.close(abort=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "dir": str(out_dir),
        "windows": dict(run.stats.windows),
        "dropped": dict(run.stats.dropped),
        "problems": len(problems),
        "manifest_hash": manifest["manifest_hash"],
        "params_hash": manifest["params_hash"],
        "beat_alignment_score": manifest["stats"]["all"]["beat_alignment_score"],
    }

