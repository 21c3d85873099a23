"""The ghost director's policy: pure, deterministic, stepped with explicit times.

`Policy` keeps the live state it learns from events (cameras and their placement, program,
hold, mode, the music playing) and per-camera `CameraSignals`; it never reads a clock. Every
call takes ``now`` (Unix seconds on the server's clock) and returns `Output` records:

- ``ghost.proposed`` — ``{proposal, from, to, score, reasons, cut_at, expires_at}``;
- ``ghost.accepted`` / ``ghost.vetoed`` / ``ghost.expired`` — ``{proposal, by}`` (expired
  also has ``reason``);
- ``cut`` — execute a cut now: ``{to, from, by: "ghost", proposal}`` (the live runner POSTs
  it to ``/v1/director/cut``; replay records it as a simulated ``director.cut``);
- ``note`` — ``{message}`` for a human (e.g. a cue without features).

Rules (named defaults in `Rules`, documented in ``default_policy.toml``): minimum shot,
maximum shot (then a forced proposal), minimum score gain over program (hysteresis),
minimum score, per-camera cooldown after a veto or expiry, nothing while a hold is on,
never a lost camera, no jump cut to a camera placed within ``jump_cut_deg`` of program.
``cut_at`` falls on the ``lead_beats``-th beat after ``now + min_lead_s`` (a downbeat up to
``prefer_downbeat_within_beats`` later when downbeats are known), or on the policy's own
clock (multiples of ``clock_period_s``) without a beat grid; the reasons say which.

Supervision by mode (``director.mode``): ``manual`` — proposals are shown only, never
executed; ``ghost`` — executed at ``cut_at`` once accepted (at once when accepted late,
before ``expires_at``); ``autopilot`` — executed at ``cut_at`` unless vetoed (the
execution is recorded as ``ghost.accepted`` by ``autopilot``). Unanswered proposals
become ``ghost.expired`` at ``expires_at``.
"""

from __future__ import annotations

import bisect
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from mmx.errors import DataError, InputMissingError
from mmx.events import Event, new_id
from mmx.ghost.beats import BeatLibrary, Cue
from mmx.ghost.signals import CameraSignals, CheckedJoints, SignalParams, Signals

MODES = ("manual", "ghost", "autopilot")
FEATURES = ("presence", "framing", "motion", "stillness")
_WORDS = {
    "presence": "presence (share of joints seen)",
    "framing": "framing (size and centering)",
    "motion": "motion energy",
    "stillness": "stillness (holding a pose)",
}


@dataclass(frozen=True, slots=True)
class Weights:
    """Weight of each signal in a camera's score (policy file table ``[weights]``)."""

    presence: float = 0.2
    framing: float = 0.25
    motion: float = 0.45
    stillness: float = 0.1


@dataclass(frozen=True, slots=True)
class Rules:
    """Switching rules (policy file table ``[rules]``); times in seconds."""

    min_shot_s: float = 2.0
    max_shot_s: float = 12.0
    min_gain: float = 0.15
    min_score: float = 0.2
    veto_cooldown_s: float = 10.0
    expiry_cooldown_s: float = 2.0
    jump_cut_deg: float = 20.0
    lead_beats: int = 1
    min_lead_s: float = 0.25
    prefer_downbeat_within_beats: int = 3
    expire_after_s: float = 2.0
    clock_period_s: float = 0.5


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A whole policy: weights, rules and signal constants."""

    weights: Weights = field(default_factory=Weights)
    rules: Rules = field(default_factory=Rules)
    signals: SignalParams = field(default_factory=SignalParams)

    def with_rules(self, **changes: Any) -> PolicyConfig:
        """A copy with some rules replaced (e.g. ``lead_beats`` from the command line)."""
        return replace(self, rules=replace(self.rules, **changes))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: {f.name: getattr(getattr(self, name), f.name) for f in fields(getattr(self, name))}
                for name in ("weights", "rules", "signals")}  # fmt: skip


_TABLES: dict[str, type] = {"weights": Weights, "rules": Rules, "signals": SignalParams}


def default_policy_text() -> str:
    """The text of the shipped ``default_policy.toml``."""
    return resources.files("mmx.ghost").joinpath("default_policy.toml").read_text(encoding="utf-8")


def parse_policy(text: str, *, source: str = "policy") -> PolicyConfig:
    """A `PolicyConfig` from TOML text; keys left out keep their defaults.

    Raises DataError for invalid TOML, an unknown table or key (a typo must not pass
    silently), a value of the wrong type, or values that break the rules' logic (negative
    times, ``max_shot_s <= min_shot_s``, ``lead_beats < 1``).
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{source}: not valid TOML: {exc}") from None
    parts: dict[str, Any] = {}
    for table, value in doc.items():
        cls = _TABLES.get(table)
        if cls is None:
            raise DataError(f"{source}: unknown table [{table}]", hint=f"known tables: {', '.join(_TABLES)}")
        if not isinstance(value, dict):
            raise DataError(f"{source}: [{table}] must be a table")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, v in value.items():
            if key not in known:
                raise DataError(f"{source}: unknown key {table}.{key}", hint=f"known keys: {', '.join(known)}")
            want = int if known[key].type in ("int", int) else float
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (want is int and not isinstance(v, int)):
                raise DataError(f"{source}: {table}.{key} must be {'an integer' if want is int else 'a number'}")
            if not math.isfinite(v):
                raise DataError(f"{source}: {table}.{key} must be finite")
            kwargs[key] = want(v)
        parts[table] = cls(**kwargs)
    config = PolicyConfig(**parts)
    _validate(config, source)
    return config


def _validate(config: PolicyConfig, source: str) -> None:
    r = config.rules
    for name, value in config.as_dict()["rules"].items():
        if value < 0:
            raise DataError(f"{source}: rules.{name} must not be negative")
    if r.max_shot_s <= r.min_shot_s:
        raise DataError(f"{source}: rules.max_shot_s must be greater than rules.min_shot_s")
    if r.lead_beats < 1:
        raise DataError(f"{source}: rules.lead_beats must be at least 1")
    if r.clock_period_s <= 0:
        raise DataError(f"{source}: rules.clock_period_s must be positive")


def load_policy(path: str | Path | None = None) -> PolicyConfig:
    """The policy in TOML file ``path``, or the shipped defaults when None.

    Raises InputMissingError when the file does not exist, DataError when it is invalid.
    """
    if path is None:
        return parse_policy(default_policy_text(), source="default_policy.toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputMissingError(f"no such policy file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read policy file {path}: {exc}") from None
    return parse_policy(text, source=str(path))


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


class Policy:
    """The ghost's decision state machine (see the module docstring).

    ``beats`` finds beat grids for ``music.cue`` tracks; ``id_factory`` makes proposal ids
    (ULIDs live, a deterministic counter in replay); with ``follow_mode`` False the mode
    given stays whatever ``director.mode`` events say (replay simulates one mode). Time never goes backwards: a ``now``
    earlier than one already seen is taken as the latest seen.
    """

    def __init__(self, config: PolicyConfig | None = None, *, beats: BeatLibrary | None = None,
                 mode: str = "manual", id_factory: Callable[[], str] = new_id, follow_mode: bool = True) -> None:  # fmt: skip
        if mode not in MODES:
            raise DataError(f"unknown mode {mode!r}", hint=f"one of: {', '.join(MODES)}")
        self.config = config or PolicyConfig()
        self.beats = beats or BeatLibrary()
        self.mode = mode
        self.follow_mode = follow_mode
        self._new_id = id_factory
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
        self.pending: Proposal | None = None
        self.cooldown_until: dict[str, float] = {}
        self.executed: set[str] = set()
        self.stats = {"proposals": 0, "forced": 0, "cuts": 0, "vetoes": 0, "expired": 0, "accepted": 0,
                      "events": 0, "events_out_of_order": 0}  # fmt: skip

    # ----------------------------------------------------------------- state from outside
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

    def feed(self, event: Event, now: float | None = None) -> list[Output]:
        """Apply one event from the stream, then step to ``now`` (default: the event's time).

        Events older than the policy's clock are applied (state changes are never lost)
        but do not move the clock back; pose samples older than a camera's latest are
        dropped by its signals and counted.
        """
        d = event.data
        etype = event.type
        if etype == "pose.sample" and isinstance(cam := d.get("camera"), str):
            return self.feed_pose(cam, self.event_time(event), d.get("joints"), now)
        t = self.event_time(event) if now is None else now
        if t < self.now:
            self.stats["events_out_of_order"] += 1
        out = self.step(t, consider=False)
        self.stats["events"] += 1
        now = self.now
        if etype == "pose.sample":
            pass  # without a camera name: it only moves the clock
        elif etype == "camera.joined":
            c = self._camera(d["camera"])
            c.live = True
            c.azimuth_deg = self._azimuth(d.get("placement"))
        elif etype == "camera.changed":
            c = self._camera(d["camera"])
            if "placement" in d:
                c.azimuth_deg = self._azimuth(d.get("placement"))
        elif etype == "camera.left":
            self._camera(d["camera"]).live = False
        elif etype == "director.cut":
            out += self._on_cut(d, now)
        elif etype == "director.hold":
            self.hold = True
        elif etype == "director.release":
            self.hold = False
        elif etype == "director.mode":
            if self.follow_mode and d.get("mode") in MODES:
                self.mode = d["mode"]
        elif etype == "music.cue":
            out += self._on_cue(event, now)
        elif etype in ("ghost.accepted", "ghost.vetoed") and event.src != "ghost":
            by = d.get("by") or event.src or "operator"
            if etype == "ghost.accepted":
                out += self.accept(d["proposal"], now, by=by, emit=False)
            else:
                out += self.veto(d["proposal"], now, by=by, emit=False)
        elif etype == "session.started":
            if self.follow_mode and d.get("mode") in MODES:
                self.mode = d["mode"]
        elif etype == "session.ended":
            if self.pending is not None:
                out += self._expire(now, "session ended")
        self._candidate_list = None  # cameras may have joined, moved or left
        out += self._consider(now)
        return out

    def feed_pose(self, camera: str, t: float, joints: dict[str, Any] | CheckedJoints | None,
                  now: float | None = None) -> list[Output]:  # fmt: skip
        """Apply one ``pose.sample`` given by its parts, as `feed` does with the event:
        camera name, capture time ``t`` (Unix seconds) and joints (the event's object, None,
        or `CheckedJoints` from the replay's typed decoder); then step to ``now`` (default ``t``).

        The hot path of both live and replay: no event object, one signals update, one
        `_consider`.
        """
        step_to = t if now is None else now
        if step_to < self.now:
            self.stats["events_out_of_order"] += 1
        out = self.step(step_to, consider=False) if self.pending is not None else []
        self._clock(step_to)
        self.stats["events"] += 1
        self._camera(camera).signals.add(t, joints)  # type: ignore[union-attr]
        considered = self._consider(self.now)
        return out + considered if considered else out

    def _on_cut(self, d: dict[str, Any], now: float) -> list[Output]:
        proposal = d.get("proposal")
        if proposal is not None and proposal in self.executed:
            return []  # our own cut, already applied when executed
        to = d.get("to")
        if to != self.program:
            self.program = to
            self.program_since = now
        if self.pending is not None:
            if proposal == self.pending.id:  # executed by someone else on our behalf
                self.executed.add(proposal)
                self.pending = None
                return []
            return self._expire(now, f"superseded by a cut to {to}")
        return []

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

    def abandon(self, now: float, reason: str) -> list[Output]:
        """Expire the pending proposal now (e.g. the server went away) with ``reason``."""
        return self._expire(self._clock(now), reason)

    def hold_on(self, now: float) -> None:
        """A hold is on (from the terminal without a server): no proposals, no executions."""
        self._clock(now)
        self.hold = True

    def release(self, now: float) -> None:
        """The hold is released."""
        self._clock(now)
        self.hold = False

    # ----------------------------------------------------------------- decisions
    def accept(self, proposal: str, now: float, *, by: str = "operator", emit: bool = True) -> list[Output]:
        """Accept the pending proposal ``proposal``; an unknown or settled id changes nothing.

        In ``ghost`` and ``autopilot`` mode the cut is executed at ``cut_at`` (at once when
        accepted after it, up to ``expires_at``); in ``manual`` mode it is recorded only.
        """
        now = self._clock(now)
        p = self.pending
        if p is None or p.id != proposal or p.accepted_by is not None:
            return []
        p.accepted_by, p.accepted_at = by, now
        self.stats["accepted"] += 1
        out = [Output("ghost.accepted", {"proposal": p.id, "by": by}, now, emit)]
        return out + self.step(now)

    def veto(self, proposal: str, now: float, *, by: str = "operator", emit: bool = True) -> list[Output]:
        """Veto the pending proposal: it is dropped and its camera cools down for
        ``veto_cooldown_s``. An unknown, settled or already accepted-and-executed id changes
        nothing."""
        now = self._clock(now)
        p = self.pending
        if p is None or p.id != proposal:
            return []
        self.pending = None
        self.stats["vetoes"] += 1
        self.cooldown_until[p.to] = now + self.config.rules.veto_cooldown_s
        return [Output("ghost.vetoed", {"proposal": p.id, "by": by}, now, emit)]

    # ----------------------------------------------------------------- time
    def _executes(self, p: Proposal) -> bool:
        if self.mode == "manual":
            return False
        return p.accepted_by is not None or self.mode == "autopilot"

    def next_cut_at(self) -> float | None:
        """When the pending proposal will be executed if nothing changes, or None (nothing
        pending, manual mode, not accepted in ghost mode, a hold on)."""
        p = self.pending
        if p is None or self.hold or not self._executes(p):
            return None
        due = max(p.cut_at, p.accepted_at or p.cut_at)
        return due if due < p.expires_at else None

    def next_deadline(self) -> float | None:
        """The next time at which the policy will act by itself without new events
        (execute, expire, a cooldown or a shot limit ending), or None."""
        p = self.pending
        r = self.config.rules
        if p is not None:
            cut_at = self.next_cut_at()
            return p.expires_at if cut_at is None else min(cut_at, p.expires_at)
        if self.hold:
            return None
        times = [t for t in self.cooldown_until.values() if t > self.now]
        if self.program is not None:
            times += [t for t in (self.program_since + r.min_shot_s, self.program_since + r.max_shot_s) if t > self.now]
        return min(times) if times else None

    def step(self, now: float, *, consider: bool = True) -> list[Output]:
        """Advance the clock to ``now``: execute or expire the pending proposal at its own
        deadline times, then consider a new proposal at ``now``."""
        out: list[Output] = []
        for _ in range(4):  # at most: execute/expire, then nothing pending
            p = self.pending
            if p is None:
                break
            due_cut = max(p.cut_at, p.accepted_at or p.cut_at)
            if self._executes(p) and not self.hold and due_cut <= now and due_cut < p.expires_at:
                t = self._clock(due_cut)
                out += self._execute(p, t)
            elif p.expires_at <= now:
                t = self._clock(p.expires_at)
                out += self._expire(t, "hold on" if self.hold else ("not executed in manual mode" if self.mode == "manual" and p.accepted_by else "unanswered"))
            else:
                break
        now = self._clock(now)
        if consider:
            out += self._consider(now)
        return out

    def _execute(self, p: Proposal, now: float) -> list[Output]:
        cam = self.cameras.get(p.to)
        if cam is None or not cam.live:
            return self._expire(now, f"camera {p.to} lost")
        out: list[Output] = []
        if p.accepted_by is None:
            p.accepted_by, p.accepted_at = "autopilot", now
            self.stats["accepted"] += 1
            out.append(Output("ghost.accepted", {"proposal": p.id, "by": "autopilot"}, now))
        out.append(Output("cut", {"to": p.to, "from": self.program, "by": "ghost", "proposal": p.id}, now))
        self.stats["cuts"] += 1
        self.executed.add(p.id)
        self.program, self.program_since = p.to, now
        self.pending = None
        return out

    def _expire(self, now: float, reason: str) -> list[Output]:
        p = self.pending
        if p is None:
            return []
        self.pending = None
        self.stats["expired"] += 1
        self.cooldown_until[p.to] = max(self.cooldown_until.get(p.to, -math.inf), now + self.config.rules.expiry_cooldown_s)
        return [Output("ghost.expired", {"proposal": p.id, "by": "ghost", "reason": reason}, now)]

    # ----------------------------------------------------------------- proposing
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

    def _consider(self, now: float) -> list[Output]:
        if self.pending is not None or self.hold:
            return []
        r = self.config.rules
        program_cam = self.cameras.get(self.program) if self.program else None
        shot_s = now - self.program_since
        forced_why = None
        if self.program is None:
            forced_why = "nothing on program"
        elif program_cam is not None and not program_cam.live:
            forced_why = f"program camera {self.program} lost"
        elif shot_s < r.min_shot_s:
            return []
        elif shot_s >= r.max_shot_s:
            forced_why = f"shot of {shot_s:.1f} s reached max_shot_s {r.max_shot_s:g} s"
        program_score = self.score(self.program, now)[0] if program_cam is not None and program_cam.live else 0.0
        prog_az = program_cam.azimuth_deg if program_cam is not None else None
        best: tuple[float, str, Signals] | None = None
        cooldown = self.cooldown_until
        for name, cam in self._candidates(prog_az):
            if cooldown and cooldown.get(name, -math.inf) > now:
                continue
            sc, sig = self._score_of(cam, now)
            if best is None or sc > best[0]:
                best = (sc, name, sig)
        if best is None:
            return []
        sc, name, sig = best
        gain = sc - program_score
        if forced_why is None and (sc < r.min_score or gain < r.min_gain):
            return []
        if forced_why is not None and self.program is None and sc < r.min_score:
            return []  # nothing worth opening on yet
        cut_at, timing = self._cut_time(now)
        reasons = self._reasons(name, sc, sig, program_score, gain, forced_why)
        reasons.append(timing)
        p = Proposal(self._new_id(), self.program, name, sc, reasons, cut_at, cut_at + r.expire_after_s, now)
        self.pending = p
        self.stats["proposals"] += 1
        if forced_why:
            self.stats["forced"] += 1
        return [Output("ghost.proposed", p.event_data(), now)]

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

    def _reasons(self, name: str, sc: float, sig: Signals, program_score: float, gain: float,
                 forced_why: str | None) -> list[dict[str, Any]]:  # fmt: skip
        w = self.config.weights
        values = sig.as_dict()
        out = []
        for feat in FEATURES:
            weight = getattr(w, feat)
            contrib = weight * values[feat]
            out.append({"feature": feat, "value": round(values[feat], 4), "weight": weight,
                        "contribution": round(contrib, 4),
                        "text": f"{_WORDS[feat]} {values[feat]:.2f} × weight {weight:g} = +{contrib:.2f}"})  # fmt: skip
        r = self.config.rules
        if forced_why:
            out.append({"feature": "forced", "text": f"forced: {forced_why}; best other camera {name} scores {sc:.2f}"})
        else:
            out.append({"feature": "gain", "value": round(gain, 4), "program_score": round(program_score, 4),
                        "text": f"score {sc:.2f} beats program {self.program} {program_score:.2f} by {gain:.2f} "
                                f"(min_gain {r.min_gain:g})"})  # fmt: skip
        return out

    def _cut_time(self, now: float) -> tuple[float, dict[str, Any]]:
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

    def snapshot(self, now: float) -> dict[str, Any]:
        """A summary for the terminal banner: mode, program, hold, the pending proposal."""
        p = self.pending
        return {"mode": self.mode, "program": self.program, "hold": self.hold,
                "pending": None if p is None else {**p.event_data(), "accepted_by": p.accepted_by,
                                                    "countdown_s": p.cut_at - now}}  # fmt: skip
