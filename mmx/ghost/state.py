"""What the ghost knows of the shoot: cameras, program, hold, mode and the music playing.

`ShootState` is the part of the policy that only follows the shoot — camera joins, leaves
and placement, per-camera `CameraSignals` and scores, the program and its shot length, the
music cue and its beat grid (where a cut falls: `ShootState.cut_time`) and the energy of
the bar playing — without deciding anything; `mmx.ghost.policy.Policy` builds its decisions
on it. Nothing here reads a clock: every method takes ``now`` (Unix seconds on the server's
clock), and time never goes backwards (a ``now`` earlier than one already seen is taken as
the latest seen).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from mmx.errors import DataError
from mmx.events import Event
from mmx.ghost.beats import BeatLibrary, Cue
from mmx.ghost.config import PolicyConfig
from mmx.ghost.signals import CameraSignals, Signals

MODES = ("manual", "ghost", "autopilot")


@dataclass(slots=True)
class Output:
    """One thing the policy decided: an event to emit, a cut to execute, or a note.

    ``emit`` is False for decisions that came in from the stream (already on the server).
    """

    type: str
    data: dict[str, Any]
    at: float
    emit: bool = True


@dataclass(slots=True)
class Proposal:
    """The pending proposal (at most one at a time)."""

    id: str
    from_: str | None
    to: str
    score: float
    reasons: list[dict[str, Any]]
    cut_at: float
    expires_at: float
    proposed_at: float
    accepted_by: str | None = None
    accepted_at: float | None = None

    def event_data(self) -> dict[str, Any]:
        return {"proposal": self.id, "from": self.from_, "to": self.to, "score": round(self.score, 4),
                "reasons": self.reasons, "cut_at": self.cut_at, "expires_at": self.expires_at}  # fmt: skip


@dataclass(slots=True)
class CameraState:
    """What the policy knows of one camera (changed by the policy's events only: it caches
    which cameras are candidates)."""

    camera: str
    live: bool = True
    azimuth_deg: float | None = None
    signals: CameraSignals | None = None
    scored: tuple[Signals, float] | None = field(default=None, repr=False)  # the last score and its signals


def angle_between(a: float, b: float) -> float:
    """Smallest absolute difference of two azimuths in degrees (0…180)."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


class ShootState:
    """The shoot as the events tell it (see the module docstring).

    ``beats`` finds beat grids for ``music.cue`` tracks; with ``follow_mode`` False the mode
    given stays whatever ``director.mode`` events say.
    """

    def __init__(self, config: PolicyConfig | None = None, *, beats: BeatLibrary | None = None,
                 mode: str = "manual", follow_mode: bool = True) -> None:  # fmt: skip
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}", hint=f"one of: {', '.join(MODES)}")
        self.config = config or PolicyConfig()
        self.beats = beats or BeatLibrary()
        self.mode = mode
        self.follow_mode = follow_mode
        self.now = -math.inf
        self.cameras: dict[str, CameraState] = {}
        self._names: list[str] = []  # camera names in sorted order: the candidates' scoring order
        self._candidates_of: str | None = None  # the program the cached candidates are for
        self._candidate_list: list[tuple[str, CameraState]] | None = None  # None: to compute
        self.program: str | None = None
        self.program_since = -math.inf
        self.hold = False
        self.cue: Cue | None = None
        self.cue_note: str | None = None
        # the bar playing, cached: (wall start, wall end, shot-rule factor, energy rank or None, bar index)
        self._bar: tuple[float, float, float, float | None, int] = (math.inf, -math.inf, 1.0, None, -1)

    def _clock(self, now: float) -> float:
        if now < self.now:
            return self.now
        self.now = now
        return now

    def _camera(self, name: str) -> CameraState:
        cam = self.cameras.get(name)
        if cam is None:
            cam = self.cameras[name] = CameraState(name, signals=CameraSignals(self.config.signals))
            bisect.insort(self._names, name)
            self._candidate_list = None
        return cam

    @staticmethod
    def _azimuth(placement: Any) -> float | None:
        if isinstance(placement, dict):
            az = placement.get("azimuth_deg")
            if isinstance(az, (int, float)) and not isinstance(az, bool) and math.isfinite(az):
                return float(az)
        return None

    def load_state(self, state: dict[str, Any], now: float) -> None:
        """Seed from the server's ``GET /v1/state`` answer (program, hold, mode, cameras)."""
        now = self._clock(now)
        mode = state.get("mode")
        if self.follow_mode and mode in MODES:
            self.mode = mode
        program = state.get("program")
        if program != self.program:
            self.program = program if isinstance(program, str) else None
            self.program_since = now
        self.hold = bool(state.get("hold"))
        self._candidate_list = None
        for info in state.get("cameras") or []:
            if not isinstance(info, dict) or not isinstance(info.get("camera"), str):
                continue
            cam = self._camera(info["camera"])
            cam.live = info.get("status", "live") != "lost"
            az = self._azimuth(info.get("placement"))
            if az is not None or "placement" in info:
                cam.azimuth_deg = az

    def set_mode(self, mode: str) -> None:
        """Switch supervision mode (``manual``, ``ghost``, ``autopilot``)."""
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}", hint=f"one of: {', '.join(MODES)}")
        self.mode = mode

    @staticmethod
    def event_time(event: Event) -> float:
        """The time an event speaks for: a pose sample's capture ``t``, else its ``ts``."""
        if event.type == "pose.sample":
            t = event.data.get("t")
            if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t):
                return float(t)
        return event.ts

    def _on_cue(self, event: Event, now: float) -> list[Output]:
        d = event.data
        track = d["track"]
        grid = self.beats.get(track)
        started_at = d.get("started_at")
        self.cue = Cue(track=track, started_at=float(started_at if started_at is not None else event.ts),
                       offset_s=float(d.get("offset_s") or 0.0), grid=grid, title=d.get("title") or "")  # fmt: skip
        if grid is None:
            why = self.beats.errors.get(track, "no beat grid")
            self.cue_note = f"track {track[:12]}: {why}: proposing on own clock"
            return [Output("note", {"message": self.cue_note}, now, emit=False)]
        self.cue_note = None
        return [Output("note", {"message": f"music: track {track[:12]} with {len(grid.beat_times)} beats"}, now, emit=False)]

    def score(self, camera: str, now: float) -> tuple[float, Signals]:
        """A camera's score at ``now`` (weighted sum of its signals) and the signals."""
        cam = self.cameras.get(camera)
        if cam is None or cam.signals is None:
            return 0.0, Signals()
        return self._score_of(cam, now)

    def _score_of(self, cam: CameraState, now: float) -> tuple[float, Signals]:
        s = cam.signals.at(now)  # type: ignore[union-attr]
        scored = cam.scored
        if scored is not None and scored[0] is s:  # signals change only with a sample or going stale
            return scored[1], s
        w = self.config.weights
        sc = w.presence * s.presence + w.framing * s.framing + w.motion * s.motion + w.stillness * s.stillness
        cam.scored = (s, sc)
        return sc, s

    def _factor(self, now: float) -> float:
        """The energy scale of the shot rules at ``now`` (1 without bar energy), cached per bar."""
        lo, hi, factor, _, _ = self._bar
        if lo <= now < hi:
            return factor
        cue = self.cue
        k = self.config.rules.energy_influence
        found = cue.energy_at(now) if cue is not None and k > 0 else None
        if found is None:
            self._bar = (now, now, 1.0, None, -1)  # not cached: the cue may change
            return 1.0
        energy, bar = found
        grid = cue.grid
        shift = cue.started_at - cue.offset_s
        factor = 1.0 + k * (1.0 - 2.0 * energy)
        self._bar = (grid.bar_starts[bar] + shift, grid.bar_end(bar) + shift, factor, energy, bar)  # type: ignore[union-attr]
        return factor

    def _candidates(self, prog_az: float | None) -> list[tuple[str, CameraState]]:
        """The cameras a cut may go to, in name order: live, not on program, not placed
        within ``jump_cut_deg`` of program (``prog_az``). Kept until the program changes or
        an event other than a pose sample comes in."""
        if self._candidate_list is None or self._candidates_of != self.program:
            jump_cut_deg = self.config.rules.jump_cut_deg
            self._candidate_list = [
                (name, cam) for name in self._names
                if name != self.program and (cam := self.cameras[name]).live
                and not (prog_az is not None and cam.azimuth_deg is not None
                         and angle_between(prog_az, cam.azimuth_deg) < jump_cut_deg)
            ]  # fmt: skip
            self._candidates_of = self.program
        return self._candidate_list

    def cut_time(self, now: float) -> tuple[float, dict[str, Any]]:
        """Where a cut decided at ``now`` falls: ``(cut_at, the timing reason)`` (see
        `mmx.ghost.policy` for the rule)."""
        r = self.config.rules
        earliest = now + r.min_lead_s
        cue = self.cue
        why = "no music playing"
        if cue is not None and cue.grid is None:
            why = self.cue_note or f"track {cue.track[:12]} has no beat grid"
        elif cue is not None:
            ahead = cue.wall_beats_after(earliest, r.lead_beats + r.prefer_downbeat_within_beats)
            if len(ahead) >= r.lead_beats:
                i = r.lead_beats - 1
                chosen, down = ahead[i]
                if cue.grid.downbeats and not down:
                    for t, is_down in ahead[i + 1:]:
                        if is_down:
                            chosen, down = t, True
                            break
                kind = "downbeat" if down else "beat"
                return chosen, {"feature": "timing", "clock": "beat", "downbeat": down, "lead_s": round(chosen - now, 4),
                                "text": f"cut on the {kind} {chosen - now:.2f} s ahead (lead_beats {r.lead_beats}, "
                                        f"track {cue.track[:12]})"}  # fmt: skip
            why = f"past the last beat of track {cue.track[:12]}"
        period = r.clock_period_s
        tick = (math.floor(earliest / period) + r.lead_beats) * period
        return tick, {"feature": "timing", "clock": "own", "lead_s": round(tick - now, 4),
                      "text": f"{why}: cut on own {period:g} s clock, {tick - now:.2f} s ahead"}  # fmt: skip
