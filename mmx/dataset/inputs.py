"""Reading the inputs of `mmx pair`: the inventory, session events, pose files, cue files.

Everything here streams: JSON Lines are read in big chunks, hashed as they are read and
decoded one line at a time, so a bad line is reported as ``<path>: line N: …`` and the rest
goes on. Pose samples are kept as C doubles, never as Python objects per sample.
"""

from __future__ import annotations

import hashlib
import math
import operator
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from mmx.errors import DataError, InputMissingError, IOFailure
from mmx.events import JOINT_NAMES, MAX_LINE_BYTES

N_JOINTS = len(JOINT_NAMES)
_MISSING_JOINT = (math.nan, math.nan, 0.0)
_ALL_JOINTS = operator.itemgetter(*JOINT_NAMES)  # joints dict → the 19 [x, y, confidence] in order

ProblemHandler = Callable[[DataError], None]


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


def file_sha256(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fp:
            for chunk in iter(lambda: fp.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()

