"""Per-camera signals from ``pose.sample`` events: presence, framing, motion energy, stillness.

Every signal is a number in ``[0, 1]`` so the policy can weigh them against each other:

- **presence** — share of the 19 Apple Vision joints seen with confidence ≥
  ``confidence_min`` (0.5) in the latest sample.
- **framing** — how well the subject fills and sits in the frame: the product of a size
  term (bounding-box height of the confident joints against ``framing_ideal_height``,
  1 at the ideal, 0 at twice or none of it) and a centeredness term (1 when the box centre
  is the frame centre, 0 at a corner).
- **motion** — joint speed normalized by body size (bounding-box diagonal), averaged over
  the last ``window_s`` seconds, in body sizes per second, squashed by
  ``1 - exp(-speed / motion_scale_bps)`` so 1 body/s with the default scale (0.5) reads ≈ 0.86.
- **stillness** — the subject holding a pose: present, speed under ``stillness_max_bps``,
  ramping from 0 to 1 over ``stillness_full_s`` seconds of holding still.

Joints are ``[x, y, confidence]`` in normalized image coordinates, origin top-left
(DESIGN.md). A joint with a non-finite value, a coordinate outside ``[-coord_margin,
1 + coord_margin]`` or a confidence outside ``[0, 1]`` is dropped and counted in
`CameraSignals.dropped_joints`; a sample older than the camera's latest is dropped and
counted in `CameraSignals.out_of_order`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from operator import sub
from dataclasses import dataclass
from typing import Any, NamedTuple

from mmx.events import JOINT_NAMES

N_JOINTS = len(JOINT_NAMES)
_HALF_DIAGONAL = math.hypot(0.5, 0.5)  # centre to corner of the unit frame
_NUMBER = (float, int)  # exact types: a JSON true/false is not a coordinate


@dataclass(frozen=True, slots=True)
class SignalParams:
    """Constants of the signal extraction (policy file table ``[signals]``)."""

    confidence_min: float = 0.5
    window_s: float = 1.0
    stale_s: float = 1.0
    coord_margin: float = 0.0
    framing_ideal_height: float = 0.6
    motion_scale_bps: float = 0.5
    stillness_max_bps: float = 0.15
    stillness_full_s: float = 1.0


class Signals(NamedTuple):
    """A camera's signals at one moment (all in ``[0, 1]``) plus the raw speed.

    A named tuple rather than a frozen dataclass: one is made per pose sample, and a
    tuple is built several times faster."""

    presence: float = 0.0
    framing: float = 0.0
    motion: float = 0.0
    stillness: float = 0.0
    speed_bps: float = 0.0
    fresh: bool = False

    def as_dict(self) -> dict[str, float]:
        return {"presence": self.presence, "framing": self.framing, "motion": self.motion, "stillness": self.stillness}

    @property
    def subject(self) -> bool:
        """Someone is seen: a fresh sample with at least `SUBJECT_MIN_JOINTS` confident joints."""
        return self.presence >= SUBJECT_MIN_PRESENCE


EMPTY = Signals()
#: Fewest confident joints that make a subject (two give a body box; one is a stray point).
SUBJECT_MIN_JOINTS = 2
SUBJECT_MIN_PRESENCE = (SUBJECT_MIN_JOINTS - 0.5) / N_JOINTS


#: A joint as the signals use it: ``(x, y, confidence)``, or None when not usable.
Joint = tuple[float, float, float]


class CheckedJoints(tuple):
    """The joints of one sample, already checked: 19 entries in `JOINT_NAMES` order, each a
    usable ``(x, y, confidence)`` or None. `CameraSignals.add` takes it as it is (the replay's
    typed decoder makes it), where a joints object from an event is checked first."""

    __slots__ = ()


def joint_values(joints: Any, params: SignalParams) -> tuple[list[Joint | None], int]:
    """The usable joints of a ``pose.sample`` in `JOINT_NAMES` order and how many were dropped.

    Returns ``([(x, y, confidence) or None] * 19, dropped)``: the rules of `clean_joints`.
    """
    values: list[Joint | None] = [None] * N_JOINTS
    if not isinstance(joints, dict):
        return values, 0
    dropped = 0
    lo, hi = -params.coord_margin, 1.0 + params.coord_margin
    num = _NUMBER
    for i, value in enumerate(map(joints.get, JOINT_NAMES)):
        if value is None:
            continue
        # NaN fails every comparison and ±inf the range checks, so no isfinite is needed
        if (type(value) is list and len(value) == 3 and type(x := value[0]) in num and type(y := value[1]) in num
                and type(c := value[2]) in num and lo <= x <= hi and lo <= y <= hi and 0.0 <= c <= 1.0):  # fmt: skip
            values[i] = (x, y, c)
        else:
            dropped += 1
    return values, dropped


def clean_joints(joints: Any, params: SignalParams) -> tuple[dict[str, Joint], int]:
    """The usable joints of a ``pose.sample`` and how many were dropped as bad.

    Returns ``({name: (x, y, confidence)}, dropped)``. Unknown joint names are ignored
    (not counted); a known joint that is not three finite numbers, whose coordinates leave
    the frame (± ``coord_margin``) or whose confidence is outside ``[0, 1]`` is dropped.
    ``joints`` of None (nobody seen) or not an object gives ``({}, 0)``.
    """
    values, dropped = joint_values(joints, params)
    return {name: v for name, v in zip(JOINT_NAMES, values) if v is not None}, dropped


class CameraSignals:
    """Keeps one camera's recent pose samples and derives its `Signals`.

    Feed samples with `add` in capture-time order (``t`` Unix seconds); read with `at`.
    Memory is bounded: only samples within ``window_s`` of the latest are kept. Each `add`
    costs O(joints) plus O(1) amortized for the speed window (a running sum over a deque);
    the `Signals` are computed once per sample, at the first `at` after it.
    """

    __slots__ = ("params", "_prev", "_speeds", "_speed_sum", "_last_t", "_presence", "_framing", "_still_since",
                 "_prev_xy", "_signals", "_height", "_offcentre", "dropped_joints", "out_of_order", "samples")  # fmt: skip

    def __init__(self, params: SignalParams | None = None) -> None:
        self.params = params or SignalParams()
        self._prev: Sequence[Joint | None] = [None] * N_JOINTS  # the confident joints of the latest sample
        self._prev_xy: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # their x and y when all are
        self._speeds: deque[tuple[float, float]] = deque()
        self._speed_sum = 0.0
        self._signals: Signals | None = None
        self._last_t: float | None = None
        self._presence = 0.0
        self._framing = 0.0
        self._still_since: float | None = None
        self._height = 0.0  # the subject's box height (share of the frame) in the latest sample
        self._offcentre = 0.0  # its centre's distance from the frame centre (share of the half diagonal)
        self.dropped_joints = 0
        self.out_of_order = 0
        self.samples = 0

    @property
    def last_t(self) -> float | None:
        return self._last_t

    def add(self, t: float, joints: Any) -> bool:
        """Take one ``pose.sample`` (capture time ``t``; joints object, None or `CheckedJoints`).

        Returns False when the sample was dropped (not newer than the latest, or ``t`` not
        finite); bad joints inside an accepted sample are dropped and counted.
        """
        p = self.params
        last_t = self._last_t
        if not math.isfinite(t) or (last_t is not None and t <= last_t):
            self.out_of_order += 1
            return False
        if type(joints) is CheckedJoints:
            values = joints
        else:
            values, dropped = joint_values(joints, p)
            self.dropped_joints += dropped
        self.samples += 1
        cmin = p.confidence_min
        xs = ys = None
        if None not in values:  # the usual sample: every joint there, most often all seen
            xs, ys, cs = zip(*values)
            if min(cs) < cmin:
                xs = ys = None
        if xs is not None:
            seen = values
            n_seen = N_JOINTS
        else:
            seen = [v if v is not None and v[2] >= cmin else None for v in values]
            pts = list(filter(None, seen))
            n_seen = len(pts)
            if n_seen >= 2:
                xs, ys, _ = zip(*pts)
        self._presence = n_seen / N_JOINTS
        speed = None
        if n_seen >= 2:
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            h = y1 - y0
            ideal = p.framing_ideal_height
            size_term = max(0.0, 1.0 - abs(h - ideal) / ideal)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            off = math.hypot(cx - 0.5, cy - 0.5) / _HALF_DIAGONAL
            self._framing = size_term * max(0.0, 1.0 - off)
            self._height, self._offcentre = h, off
            body = math.hypot(x1 - x0, y1 - y0)
            dt = t - last_t if last_t is not None else 0.0
            if body > 1e-3 and 0.0 < dt <= p.window_s:
                prev_xy = self._prev_xy
                if prev_xy is not None and n_seen == N_JOINTS:  # the same joints seen twice: C-level loops
                    moved = list(map(math.hypot, map(sub, xs, prev_xy[0]), map(sub, ys, prev_xy[1])))
                else:
                    hypot = math.hypot
                    moved = [hypot(v[0] - q[0], v[1] - q[1]) for v, q in zip(seen, self._prev) if v and q]
                if moved:
                    speed = (sum(moved) / len(moved)) / dt / body
        else:
            self._framing = self._height = self._offcentre = 0.0
        self._last_t = t
        self._prev = seen
        self._prev_xy = (xs, ys) if n_seen == N_JOINTS else None
        self._signals = None
        speeds = self._speeds
        if speed is not None:
            speeds.append((t, speed))
            self._speed_sum += speed
        while speeds and speeds[0][0] < t - p.window_s:
            self._speed_sum -= speeds.popleft()[1]
        if not speeds:
            self._speed_sum = 0.0  # no float drift carried across gaps
        mean = self._mean_speed()
        if n_seen and speeds and mean <= p.stillness_max_bps:
            if self._still_since is None:
                self._still_since = speeds[0][0]
        else:
            self._still_since = None
        return True

    def _mean_speed(self) -> float:
        if not self._speeds:
            return 0.0
        return max(0.0, self._speed_sum / len(self._speeds))

    def detail(self, now: float) -> dict[str, float]:
        """What the signals at ``now`` are made of, for reasons in words: ``joints`` seen,
        box ``height`` and ``offcentre`` (shares of the frame height and half diagonal),
        ``speed_bps`` (body sizes per second), ``still_s`` (seconds held still), ``age_s`` of
        the latest sample (None without one)."""
        sig = self.at(now)
        still_s = 0.0
        if sig.fresh and self._still_since is not None and self._last_t is not None:
            still_s = self._last_t - self._still_since
        return {"joints": round(sig.presence * N_JOINTS), "height": self._height if sig.fresh else 0.0,
                "offcentre": self._offcentre if sig.fresh else 0.0, "speed_bps": sig.speed_bps, "still_s": still_s,
                "age_s": None if self._last_t is None else now - self._last_t}  # fmt: skip

    def at(self, now: float) -> Signals:
        """The signals as of ``now`` (Unix seconds); all zero when the latest sample is older
        than ``stale_s`` (the camera stopped seeing anyone or stopped sending)."""
        p = self.params
        if self._last_t is None or now - self._last_t > p.stale_s:
            return EMPTY
        sig = self._signals
        if sig is None:  # they change only with a sample; `now` decides staleness alone
            speed = self._mean_speed()
            motion = 1.0 - math.exp(-speed / p.motion_scale_bps) if p.motion_scale_bps > 0 else 0.0
            stillness = 0.0
            if self._still_since is not None and p.stillness_full_s > 0:
                stillness = min(1.0, max(0.0, (self._last_t - self._still_since) / p.stillness_full_s))
            sig = self._signals = Signals(self._presence, self._framing, motion, stillness, speed, True)
        return sig
