"""Pose files for `mmx device`: read them line-numbered, play them on the video clock.

The format is that of ``../shared/data/pose/vtest.pose.jsonl``: an optional first line
``{"header": {"fps": 10.0, ...}}``, then one line per video frame
``{"frame": n, "t": seconds_from_video_start, "joints": {name: [x, y, conf]} | null}`` with
the 19 Apple Vision joint names (`mmx.events.JOINT_NAMES`), normalized image coordinates,
origin top-left. A malformed line is reported as ``line N: <reason>`` and skipped.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from mmx.errors import EventError, InputMissingError, IOFailure
from mmx.events import JOINT_NAMES, iter_lines

_JOINTS = frozenset(JOINT_NAMES)


@dataclass(frozen=True, slots=True)
class PoseSample:
    """One pose line: ``t`` seconds from the video start, ``joints`` (or None: nobody seen)."""

    t: float
    joints: dict[str, list[float]] | None
    frame: int | None = None
    line: int | None = None


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_pose_line(obj: Any) -> PoseSample:
    """Check one decoded pose line. Raises EventError (no line number) naming the problem."""
    if not isinstance(obj, dict):
        raise EventError("expected a JSON object")
    t = obj.get("t")
    if t is None:
        raise EventError("missing field 't'")
    if not _is_num(t) or t < 0:
        raise EventError("field 't' must be a non-negative number of seconds")
    if "joints" not in obj:
        raise EventError("missing field 'joints'")
    joints = obj["joints"]
    if joints is not None:
        if not isinstance(joints, dict):
            raise EventError("field 'joints' must be an object or null")
        for name, value in joints.items():
            if name not in _JOINTS:
                raise EventError(f"unknown joint {name!r}")
            if not (isinstance(value, list) and len(value) == 3 and all(_is_num(v) for v in value)):
                raise EventError(f"joint {name!r} must be [x, y, confidence]")
    frame = obj.get("frame")
    return PoseSample(t=float(t), joints=joints, frame=frame if isinstance(frame, int) else None)


class PoseTrack:
    """The pose samples of one file, sorted by ``t``, played in a loop of ``duration_s``.

    ``duration_s`` is the last sample's ``t`` plus one frame (1 / header ``fps``, or the
    median spacing of the samples).
    """

    def __init__(self, samples: list[PoseSample], *, fps: float | None = None, source: str = "") -> None:
        self.samples = sorted(samples, key=lambda s: s.t)
        self.times = [s.t for s in self.samples]
        self.source = source
        if fps is None and len(self.times) > 1:
            gaps = sorted(b - a for a, b in zip(self.times, self.times[1:]) if b > a)
            fps = 1.0 / gaps[len(gaps) // 2] if gaps else None
        self.fps = fps or 10.0
        self.duration_s = (self.times[-1] if self.times else 0.0) + 1.0 / self.fps

    @classmethod
    def from_file(cls, path: str | Path, *, on_error: Callable[[EventError], None] | None = None) -> PoseTrack:
        """Read a pose file. Each bad line goes to ``on_error`` as an EventError with its line
        number (without ``on_error`` the first one raises) and is skipped.

        Raises InputMissingError when the file does not exist, IOFailure when it cannot be read.
        """
        path = Path(path)
        try:
            fp = open(path, "rb")
        except FileNotFoundError:
            raise InputMissingError(f"no such pose file: {path}") from None
        except OSError as exc:
            raise IOFailure(f"cannot read {path}: {exc.strerror}") from None
        with fp:
            return cls.read(fp, source=str(path), on_error=on_error)

    @classmethod
    def read(cls, fp: BinaryIO, *, source: str = "", on_error: Callable[[EventError], None] | None = None) -> PoseTrack:
        """Read a pose file from an open binary stream (e.g. stdin); errors as `from_file`."""
        samples: list[PoseSample] = []
        fps: float | None = None

        def report(error: EventError) -> None:
            if on_error is None:
                raise error
            on_error(error)

        for line_no, line in iter_lines(fp):
            if line is None:
                report(EventError("line too long", line=line_no))
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report(EventError(f"not JSON: {exc}", line=line_no))
                continue
            if isinstance(obj, dict) and "header" in obj and not samples:
                header = obj["header"]
                if isinstance(header, dict) and _is_num(header.get("fps")) and header["fps"] > 0:
                    fps = float(header["fps"])
                continue
            try:
                sample = parse_pose_line(obj)
            except EventError as exc:
                report(EventError(exc.reason, line=line_no))
                continue
            samples.append(PoseSample(sample.t, sample.joints, sample.frame, line_no))
        return cls(samples, fps=fps, source=source)

    def between(self, t0: float, t1: float, *, loop_s: float | None = None) -> list[tuple[float, PoseSample]]:
        """Samples whose looped time ``u = k * loop_s + sample.t`` lies in ``(t0, t1]``.

        ``t0``/``t1`` are seconds on the (unwrapped, ever-growing) video clock; ``loop_s``
        defaults to ``duration_s`` (pass the video's duration to stay in step with it;
        samples at or past ``loop_s`` are never played). Returns ``(u, sample)`` pairs in
        time order, at most one loop's worth.
        """
        loop = loop_s or self.duration_s
        if not self.samples or t1 <= t0 or loop <= 0:
            return []
        t0 = max(t0, t1 - loop)
        out: list[tuple[float, PoseSample]] = []
        k = math.floor(t0 / loop)
        while k * loop <= t1:
            lo, hi = t0 - k * loop, t1 - k * loop
            start = bisect.bisect_right(self.times, lo)
            stop = bisect.bisect_right(self.times, min(hi, loop - 1e-9))
            out.extend((k * loop + s.t, s) for s in self.samples[start:stop])
            k += 1
        return out
