"""The ghost director's policy: pure, deterministic, stepped with explicit times.

`Policy` keeps the live state it learns from events (cameras and their placement, program,
hold, mode, the music playing) and per-camera `CameraSignals`; it never reads a clock. Every
call takes ``now`` (Unix seconds on the server's clock) and returns `Output` records:

- ``ghost.proposed`` — ``{proposal, from, to, score, reasons, cut_at, expires_at}``;
- ``ghost.held`` — ``{camera, shot_s, reasons}``: the shot passed ``max_shot_s`` (or the
  program camera was lost) and no camera is worth cutting to; the reasons say why, camera
  by camera;
- ``ghost.accepted`` / ``ghost.vetoed`` / ``ghost.expired`` — ``{proposal, by}`` (expired
  also has ``reason``);
- ``cut`` — execute a cut now: ``{to, from, by: "ghost", proposal}`` (the live runner POSTs
  it to ``/v1/director/cut``; replay records it as a simulated ``director.cut``);
- ``note`` — ``{message}`` for a human (e.g. a cue without features).

Judgment (named defaults in `Rules`, documented in ``default_policy.toml``): a camera is
proposed only when it sees a subject (two or more confident joints in a fresh sample) and
scores at least ``min_score``, never while a hold is on, never a lost camera, never one placed
within ``jump_cut_deg`` of program, never inside its cooldown after a veto or an expiry. No
proposal before ``min_shot_s``; after it, only with a score gain of ``min_gain`` over
program; at ``max_shot_s`` the gain is waived, and when no camera passes the rest, the shot
is held and ``ghost.held`` says why (at most once per ``held_repeat_s``) — never a forced cut
to an empty frame. The shot rules follow the music: ``min_shot_s``, ``max_shot_s`` and
``min_gain`` are scaled by ``1 + energy_influence (1 − 2e)`` with e the energy rank of the
bar playing (`mmx.ghost.beats`), so loud bars get more cuts and quiet ones fewer. In the
attended modes the proposal budget (`mmx.ghost.budget`) caps proposals per minute and pauses
after unanswered ones.

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

import math
from collections.abc import Callable
from typing import Any

from mmx.events import Event, new_id
from mmx.ghost import reasons as why
from mmx.ghost.beats import BeatLibrary
from mmx.ghost.budget import ProposalBudget
from mmx.ghost.config import (ATTENDED_MODES, FEATURES, PolicyConfig, Rules, Weights, default_policy_text,
                              load_policy, parse_policy)  # fmt: skip
from mmx.ghost.signals import SUBJECT_MIN_PRESENCE, CheckedJoints, Signals
from mmx.ghost.state import MODES, CameraState, Output, Proposal, ShootState, angle_between
#: Who answers for the operator: a decision or cut by anyone else (the ghost, autopilot, the
#: server's own fallback) is not the operator's attention.
NOT_OPERATOR = frozenset({"ghost", "autopilot", "serve"})

__all__ = ["FEATURES", "MODES", "CameraState", "Output", "Policy", "PolicyConfig", "Proposal", "Rules", "Weights",
           "angle_between", "default_policy_text", "load_policy", "parse_policy"]  # fmt: skip


class Policy(ShootState):
    """The ghost's decision state machine (see the module docstring) on a `ShootState`.

    ``beats`` finds beat grids for ``music.cue`` tracks; ``id_factory`` makes proposal ids
    (ULIDs live, a deterministic counter in replay); with ``follow_mode`` False the mode
    given stays whatever ``director.mode`` events say (replay simulates one mode). Time
    never goes backwards: a ``now`` earlier than one already seen is taken as the latest seen.
    """

    def __init__(self, config: PolicyConfig | None = None, *, beats: BeatLibrary | None = None,
                 mode: str = "manual", id_factory: Callable[[], str] = new_id, follow_mode: bool = True) -> None:  # fmt: skip
        super().__init__(config, beats=beats, mode=mode, follow_mode=follow_mode)
        #: False: state is kept up to date but nothing is proposed (replay of a time the live
        #: ghost was away, or training's observer)
        self.proposing = True
        self._new_id = id_factory
        self.pending: Proposal | None = None
        self.cooldown_until: dict[str, float] = {}
        self.cooldown_why: dict[str, str] = {}
        self.executed: set[str] = set()
        self.budget = ProposalBudget(self.config.rules)
        self._held_shot = math.nan  # program_since of the shot last held (NaN: none)
        self._held_next = -math.inf  # when that shot's ghost.held may be repeated
        self.last_held: dict[str, Any] | None = None  # the last ghost.held's data and ``at``
        self.stats = {"proposals": 0, "forced": 0, "held": 0, "cuts": 0, "vetoes": 0, "expired": 0, "accepted": 0,
                      "events": 0, "events_out_of_order": 0}  # fmt: skip

    # ----------------------------------------------------------------- state from outside
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
            program = d.get("program")
            if isinstance(program, str) and program != self.program:  # the server says what is on air
                self.program, self.program_since = program, now
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
        if d.get("by") not in NOT_OPERATOR:
            self.budget.answered()  # the operator cut by hand: they are paying attention
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
        if by not in NOT_OPERATOR:
            self.budget.answered()
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
        if by not in NOT_OPERATOR:
            self.budget.answered()
        self.cooldown_until[p.to] = now + self.config.rules.veto_cooldown_s
        self.cooldown_why[p.to] = f"vetoed by {by}"
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
        if self.hold or not self.proposing:
            return None
        times = [t for t in self.cooldown_until.values() if t > self.now]
        factor = self._bar[2]
        if self.program is not None:
            times += [t for t in (self.program_since + r.min_shot_s * factor, self.program_since + r.max_shot_s * factor)
                      if t > self.now]  # fmt: skip
        free = self.budget.free_at(self.now, self.mode)
        if free > self.now:
            times.append(free)
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
        r = self.config.rules
        rest = r.expiry_cooldown_s
        if reason == "unanswered":
            pause = self.budget.expired_unanswered(now)
            # the same target rests longer with every unanswered proposal in a row
            rest = min(max(rest, r.expiry_pause_max_s), rest * r.expiry_pause_growth ** (self.budget.streak - 1))
            self.cooldown_why[p.to] = f"proposed and left unanswered ({self.budget.streak} in a row, pause {pause:.0f} s)"
        else:
            self.cooldown_why[p.to] = f"proposal expired ({reason})"
        self.cooldown_until[p.to] = max(self.cooldown_until.get(p.to, -math.inf), now + rest)
        return [Output("ghost.expired", {"proposal": p.id, "by": "ghost", "reason": reason}, now)]

    # ----------------------------------------------------------------- proposing
    def _consider(self, now: float) -> list[Output]:
        if self.pending is not None or self.hold or not self.proposing:
            return []
        r = self.config.rules
        program = self.program
        program_cam = self.cameras.get(program) if program else None
        shot_s = now - self.program_since
        factor = self._factor(now)
        forced_why = None
        if program is None:
            forced_why = "nothing on program"
        elif program_cam is not None and not program_cam.live:
            forced_why = f"program camera {program} lost"
        elif shot_s < r.min_shot_s * factor:
            return []
        elif shot_s >= r.max_shot_s * factor:
            forced_why = f"{program} on for {shot_s:.1f} s, past max_shot {r.max_shot_s * factor:.1f} s"
        if self.mode in ATTENDED_MODES and self.budget.free_at(now, self.mode) > now:
            if forced_why is not None and program is not None:
                return self._held(now, shot_s, factor, self.budget.why_resting(now, self.mode))
            return []
        program_score = self._score_of(program_cam, now)[0] if program_cam is not None and program_cam.live else 0.0
        prog_az = program_cam.azimuth_deg if program_cam is not None else None
        best: tuple[float, str, Signals] | None = None
        cooldown = self.cooldown_until
        min_score = r.min_score
        for name, cam in self._candidates(prog_az):
            if cooldown and cooldown.get(name, -math.inf) > now:
                continue
            sc, sig = self._score_of(cam, now)
            # never a camera that sees nobody, nor one under min_score, forced or not
            if sc < min_score or sig.presence < SUBJECT_MIN_PRESENCE:
                continue
            if best is None or sc > best[0]:
                best = (sc, name, sig)
        if best is None:
            if forced_why is not None and program is not None:
                return self._held(now, shot_s, factor)
            return []
        sc, name, sig = best
        gain = sc - program_score
        if forced_why is None and gain < r.min_gain * factor:
            return []
        cut_at, timing = self.cut_time(now)
        reasons = self._reasons(name, sc, sig, program_score, forced_why, factor, now)
        reasons.append(timing)
        p = Proposal(self._new_id(), program, name, sc, reasons, cut_at, cut_at + r.expire_after_s, now)
        self.pending = p
        self.budget.proposed(now)
        self.stats["proposals"] += 1
        if forced_why:
            self.stats["forced"] += 1
        return [Output("ghost.proposed", p.event_data(), now)]

    def _held(self, now: float, shot_s: float, factor: float, rest: dict[str, Any] | None = None) -> list[Output]:
        """``ghost.held`` for the program shot, once per shot and ``held_repeat_s``."""
        r = self.config.rules
        if self._held_shot == self.program_since and now < self._held_next:
            return []
        self._held_shot, self._held_next = self.program_since, now + r.held_repeat_s
        program = self.program or "-"
        program_cam = self.cameras.get(program)
        if program_cam is not None and not program_cam.live:
            head = f"program camera {program} lost and no other camera is worth cutting to"
            held = {"feature": "held", "shot_s": round(shot_s, 3), "text": head}
        elif rest is not None:
            held = why.held_reason(program, shot_s, r.max_shot_s * factor, "not proposing now")
        else:
            held = why.held_reason(program, shot_s, r.max_shot_s * factor, "no other camera is worth cutting to")
        reasons = [held] + ([rest] if rest is not None else self._held_candidates(now))
        energy = self._energy_reason(factor)
        if energy is not None:
            reasons.append(energy)
        data = {"camera": self.program, "shot_s": round(shot_s, 3), "reasons": reasons}
        self.last_held = {**data, "at": now, "shot_since": self.program_since}
        self.stats["held"] += 1
        return [Output("ghost.held", data, now)]

    def _held_candidates(self, now: float) -> list[dict[str, Any]]:
        """One reason per other camera: why it was not proposed."""
        r = self.config.rules
        program_cam = self.cameras.get(self.program) if self.program else None
        prog_az = program_cam.azimuth_deg if program_cam is not None else None
        out = []
        for name in self._names:
            cam = self.cameras[name]
            if name == self.program:
                continue
            if not cam.live:
                out.append(why.candidate_reason(name, "lost", detail="is lost"))
                continue
            if prog_az is not None and cam.azimuth_deg is not None and angle_between(prog_az, cam.azimuth_deg) < r.jump_cut_deg:
                deg = angle_between(prog_az, cam.azimuth_deg)
                out.append(why.candidate_reason(name, "jump_cut", detail=f"is placed {deg:.0f}° from {self.program} "
                                                                          f"(a jump cut under {r.jump_cut_deg:g}°)"))  # fmt: skip
                continue
            until = self.cooldown_until.get(name, -math.inf)
            if until > now:
                out.append(why.candidate_reason(name, "cooldown", detail=f"rests {until - now:.1f} s more: "
                                                                          f"{self.cooldown_why.get(name, 'cooling down')}"))  # fmt: skip
                continue
            sc, sig = self._score_of(cam, now)
            if not sig.fresh:
                out.append(why.candidate_reason(name, "stale"))
            elif sig.presence < SUBJECT_MIN_PRESENCE:
                out.append(why.candidate_reason(name, "no_subject", score=sc))
            else:
                out.append(why.candidate_reason(name, "min_score", score=sc, rules=r))
        return out

    def _energy_reason(self, factor: float) -> dict[str, Any] | None:
        _, _, _, energy, bar = self._bar
        if energy is None:
            return None
        return why.energy_reason(energy, bar, factor, self.config.rules)

    def _reasons(self, name: str, sc: float, sig: Signals, program_score: float, forced_why: str | None,
                 factor: float, now: float) -> list[dict[str, Any]]:  # fmt: skip
        cam = self.cameras[name]
        detail = cam.signals.detail(now)  # type: ignore[union-attr]
        out = why.feature_reasons(name, sig, detail, self.config.weights, self.config.signals)
        if forced_why:
            out.append(why.forced_reason(forced_why, name, sc))
        else:
            out.append(why.gain_reason(name, sc, self.program, program_score, self.config.rules.min_gain * factor))
        energy = self._energy_reason(factor)
        if energy is not None:
            out.append(energy)
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        """A summary for the terminal banner: mode, program, hold, the pending proposal, the
        last ``ghost.held`` of the current shot, why no proposal may be made now."""
        p = self.pending
        held = self.last_held if self.last_held and self.last_held["shot_since"] == self.program_since else None
        return {"mode": self.mode, "program": self.program, "hold": self.hold,
                "pending": None if p is None else {**p.event_data(), "accepted_by": p.accepted_by,
                                                    "countdown_s": p.cut_at - now},
                "held": None if p is not None else held,
                "resting": self.budget.why_resting(now, self.mode)}  # fmt: skip
