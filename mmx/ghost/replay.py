"""Replay: the ghost policy in simulated time over a recorded session.

The recording is a capture directory (``session.json`` + ``events.jsonl`` written by
`mmx serve`) or any events file, read by `mmx.ghost.reader.read_replay` (pose lines on a
typed fast path, every other line through `mmx.events.decode`). Its events are fed to a
`Policy` in file order, the policy's clock following the events' own times
(``pose.sample`` ``t``, else ``ts``), so a replay is deterministic: same input and
policy, same output, byte for byte (proposal ids are ``rp-<digest>-<n>`` with a digest of
the policy and the recording's first event id).

What the policy sees in every mode: pose samples, camera joins/changes/leaves, music cues,
session start/end and holds/releases. Recorded ``director.cut`` events are the reference
(see `mmx.ghost.evaluate`). Modes:

- ``autopilot`` (default) — the ghost keeps its own program timeline and every proposal
  executes at ``cut_at``; the ghost's cuts are compared with the operator's decisions.
- ``manual`` — shadow mode: the program follows the recorded cuts and the ghost's
  proposals (at their ``cut_at``) are compared with them.
- ``recorded`` — re-enact the live run: the recorded ``director.mode``, every recorded cut
  (the program on air) and the operator's recorded decisions, applied to the replay's own
  proposals. The live ghost leaves what this needs in the recording itself: a
  ``ghost.online`` event whenever it (re)connects or sees a session start (its policy, a
  mode fixed with ``--mode``, its ``--features`` directory) and ``ghost.offline`` when it
  loses the server, so the replay proposes only while the live ghost could and, without
  ``--policy``, with the policy it ran. A recorded proposal and a replayed one are paired
  when they name the same camera within `PAIR_WINDOW_S` of each other; the live run's
  decisions on the first reach the second. The recording is read twice (a cheap first
  pass for the ``ghost.online``/``ghost.offline`` lines); from a pipe it is spooled first.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from mmx.errors import DataError, EventError, InputMissingError
from mmx.events import Event, decode, iter_lines
from mmx.ghost.beats import BeatLibrary, Cue
from mmx.ghost.config import PolicyConfig, load_policy, policy_from_dict
from mmx.ghost.evaluate import evaluate, match_cuts, shot_distribution, shot_lengths  # noqa: F401 (re-exported)
from mmx.ghost.policy import MODES, NOT_OPERATOR, Policy
from mmx.ghost.reader import PoseLine, read_replay

#: Recorded event types the replayed policy is fed (everything else is reference or ignored).
FED_TYPES = frozenset({"pose.sample", "camera.joined", "camera.changed", "camera.left", "music.cue",
                       "session.started", "session.ended", "director.hold", "director.release"})  # fmt: skip
REPLAY_MODES = ("autopilot", "manual", "recorded")
#: A recorded and a replayed proposal to the same camera this close in time are the same one.
PAIR_WINDOW_S = 1.5
_ONLINE_TAGS = (b'"ghost.online"', b'"ghost.offline"')


def events_path(path: str | Path) -> Path:
    """The events file of a capture directory (``events.jsonl``) or the file itself.

    Raises InputMissingError when neither exists.
    """
    p = Path(path)
    if p.is_dir():
        f = p / "events.jsonl"
        if not f.exists():
            raise InputMissingError(f"{p} is not a capture directory: no events.jsonl",
                                    hint="a capture directory holds session.json and events.jsonl")  # fmt: skip
        return f
    if not p.exists():
        raise InputMissingError(f"no such file or capture directory: {p}")
    return p


@dataclass
class ReplayResult:
    """Everything one replay produced.

    ``events``: the ghost's output events in order (``ghost.*`` and, in autopilot and
    recorded mode, the simulated ``director.cut``), with simulated ``ts``. ``cuts``: the
    recorded ``director.cut`` events as ``(time, to, by, proposal)``; ``accepted_by``: the
    recorded acceptances, proposal id → who; `reference` derives the operator's decisions
    from both. ``predicted``: the ghost's cuts (autopilot/recorded: executed; manual: each
    proposal's ``cut_at``) as ``(time, camera)``; ``beat_offsets_s``: per proposal, seconds
    to the nearest beat (None without a grid); ``start``/``end``: first and last event time;
    ``cues``: the music played, ``(cue, from_time)``. Recorded mode also fills
    ``live_proposals`` (the recorded ones: ``proposal``, ``to``, ``cut_at``, ``ts``,
    ``beat_s``), ``replayed`` (the replay's: ``proposal``, ``to``, ``cut_at``, ``at``),
    ``proposal_map`` (replayed id → recorded id) and ``live_held``.
    """

    mode: str
    events: list[Event] = field(default_factory=list)
    cuts: list[tuple[float, str | None, str | None, str | None]] = field(default_factory=list)
    accepted_by: dict[str, str] = field(default_factory=dict)
    predicted: list[tuple[float, str]] = field(default_factory=list)
    beat_offsets_s: list[float | None] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    input_events: int = 0
    bad_lines: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cues: list[tuple[Cue, float]] = field(default_factory=list)
    live_proposals: list[dict[str, Any]] = field(default_factory=list)
    replayed: list[dict[str, Any]] = field(default_factory=list)
    proposal_map: dict[str, str] = field(default_factory=dict)
    live_held: int = 0
    policy_source: str = ""
    _reference: list[tuple[float, str | None]] | None = field(default=None, repr=False)

    @property
    def reference(self) -> list[tuple[float, str | None]]:
        """The operator's decisions as ``(time, camera)``: recorded cuts by the operator (or
        with no ``by``) and ghost cuts whose proposal the operator accepted."""
        if self._reference is None:
            self._reference = [(t, to) for t, to, by, proposal in self.cuts if self._operators(by, proposal)]
        return self._reference

    @reference.setter
    def reference(self, value: list[tuple[float, str | None]]) -> None:
        self._reference = value

    def _operators(self, by: str | None, proposal: str | None) -> bool:
        if by == "ghost":
            return proposal is not None and self.accepted_by.get(proposal, "autopilot") not in NOT_OPERATOR
        return by not in NOT_OPERATOR

    @property
    def left_out(self) -> int:
        """Recorded cuts that are not the operator's decision (autopilot, server fallback)."""
        return len(self.cuts) - len(self.reference)

    def bars(self) -> list[tuple[float, float, float]]:
        """The bars of the music played within the replay: ``(start, end, energy)``."""
        if self.start is None or self.end is None:
            return []
        out = []
        for k, (cue, since) in enumerate(self.cues):
            until = self.cues[k + 1][1] if k + 1 < len(self.cues) else self.end
            out += cue.wall_bars(max(since, self.start), until)
        return out


def _digest(config: PolicyConfig, first_id: str, mode: str) -> str:
    blob = orjson.dumps({"policy": config.as_dict(), "first": first_id, "mode": mode}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:10]


@dataclass
class LiveRun:
    """What the live ghost recorded about itself (``ghost.online`` / ``ghost.offline``):
    when it could propose, the policy it ran (the first ``ghost.online``'s), a fixed mode."""

    intervals: list[tuple[float, float]] = field(default_factory=list)
    policy: dict[str, Any] | None = None
    mode: str | None = None
    features: str | None = None
    seen: bool = False

    def online_at(self, t: float) -> bool:
        if not self.seen:
            return True
        return any(a <= t < b for a, b in self.intervals)


def scan_live_run(fp: BinaryIO) -> LiveRun:
    """The first pass of a ``recorded`` replay: the ``ghost.online``/``ghost.offline`` lines
    (found by a bytes test, decoded alone; bad ones skipped — the second pass reports them)."""
    run = LiveRun()
    marks: list[tuple[float, bool]] = []
    for _, line in iter_lines(fp):
        if line is None or not any(tag in line for tag in _ONLINE_TAGS):
            continue
        try:
            event = decode(line)
        except EventError:
            continue
        if event.type == "ghost.online":
            d = event.data
            if not run.seen:
                run.seen = True
                run.policy = d.get("policy") if isinstance(d.get("policy"), dict) else None
                run.mode = d.get("mode_fixed") if d.get("mode_fixed") in MODES else None
                run.features = d.get("features") if isinstance(d.get("features"), str) else None
            since = d.get("since_ts") if isinstance(d.get("since_ts"), (int, float)) else event.ts
            marks.append((float(since), True))
        elif event.type == "ghost.offline":
            marks.append((event.ts, False))
    marks.sort()
    start = None
    for t, online in marks:
        if online and start is None:
            start = t
        elif not online and start is not None:
            run.intervals.append((start, t))
            start = None
    if start is not None:
        run.intervals.append((start, math.inf))
    return run


class _Pairing:
    """Pairs recorded proposals with replayed ones (same camera, within `PAIR_WINDOW_S`)."""

    def __init__(self, result: ReplayResult) -> None:
        self.result = result
        self.live_open: deque[dict[str, Any]] = deque()  # recorded, not yet paired
        self.replay_open: deque[dict[str, Any]] = deque()  # replayed, not yet paired
        self.live_to_replay: dict[str, str] = {}

    def _pair(self, rp: dict[str, Any], lp: dict[str, Any]) -> None:
        self.result.proposal_map[rp["proposal"]] = lp["proposal"]
        self.live_to_replay[lp["proposal"]] = rp["proposal"]

    def _prune(self, now: float) -> None:
        for q, key in ((self.live_open, "ts"), (self.replay_open, "at")):
            while q and q[0][key] < now - 2 * PAIR_WINDOW_S:
                q.popleft()

    def live(self, lp: dict[str, Any], now: float) -> None:
        self._prune(now)
        for rp in self.replay_open:
            if rp["to"] == lp["to"] and abs(rp["at"] - lp["ts"]) <= PAIR_WINDOW_S:
                self.replay_open.remove(rp)
                self._pair(rp, lp)
                return
        self.live_open.append(lp)

    def replayed(self, rp: dict[str, Any], now: float) -> None:
        self._prune(now)
        for lp in self.live_open:
            if lp["to"] == rp["to"] and abs(rp["at"] - lp["ts"]) <= PAIR_WINDOW_S:
                self.live_open.remove(lp)
                self._pair(rp, lp)
                return
        self.replay_open.append(rp)


def replay_events(events: Iterable[Event | PoseLine], *, config: PolicyConfig, beats: BeatLibrary | None = None,
                  mode: str = "autopilot", live_run: LiveRun | None = None) -> ReplayResult:  # fmt: skip
    """Run the policy over ``events`` in simulated time (see the module docstring).

    ``events`` are `Event` objects, or also `PoseLine` records from `read_replay`'s fast
    path (pose samples fed without building an `Event`; the result is the same).
    ``live_run`` (recorded mode) says when the live ghost was online and whether its mode was
    fixed. Raises DataError for a mode other than those of `REPLAY_MODES`.
    """
    if mode not in REPLAY_MODES:
        raise DataError(f"replay simulates {', '.join(REPLAY_MODES[:-1])} or {REPLAY_MODES[-1]}, not {mode!r}")
    recorded = mode == "recorded"
    live_run = live_run or LiveRun()
    result = ReplayResult(mode=mode)
    counter = [0]
    prefix = [""]

    def new_id() -> str:
        counter[0] += 1
        return f"rp-{prefix[0]}-{counter[0]:06d}"

    if recorded:
        policy = Policy(config, beats=beats, mode=live_run.mode or "manual", id_factory=new_id,
                        follow_mode=live_run.mode is None)  # fmt: skip
    else:
        policy = Policy(config, beats=beats, mode=mode, id_factory=new_id, follow_mode=False)
    pairing = _Pairing(result) if recorded else None
    gated = recorded and live_run.seen
    session: str | None = None
    seq = 0
    last_cue: Cue | None = None
    iterator: Iterator[Event | PoseLine] = iter(events)
    for event in iterator:
        if not prefix[0]:
            prefix[0] = _digest(config, event.id, mode)
        result.input_events += 1
        if session is None and event.session:
            session = event.session
        fast = type(event) is not Event
        t = event.data.t if fast else policy.event_time(event)  # type: ignore[union-attr]
        if result.start is None:
            result.start = result.end = t
        elif t < result.start:
            result.start = t
        elif t > result.end:  # type: ignore[operator]
            result.end = t
        clock = None
        early: list = []
        if recorded:
            # the live ghost saw an event when the server sent it (its ts) and acted on its own
            # deadlines (a shot limit, a cooldown's end, cut_at) in between: so does the replay
            clock = max(event.ts, t)
            if gated:
                policy.proposing = live_run.online_at(clock)
            early = _deadlines(policy, clock)
        if fast:
            outputs = policy.feed_pose(event.data.camera, t, event.joints(), clock)  # type: ignore[union-attr]
            if early:
                outputs = early + outputs
            if not outputs:
                continue
        else:
            outputs = early + _feed(policy, event, result, recorded, mode, pairing, clock)  # type: ignore[arg-type]
            if policy.cue is not last_cue and policy.cue is not None:
                last_cue = policy.cue
                result.cues.append((last_cue, policy.now))
        for out in outputs:
            if out.type == "note":
                result.notes.append(out.data["message"])
                continue
            if not out.emit:
                continue
            if out.type == "ghost.proposed":
                cue = policy.cue
                result.beat_offsets_s.append(cue.nearest_beat_distance(out.data["cut_at"]) if cue else None)
                if mode == "manual":
                    result.predicted.append((out.data["cut_at"], out.data["to"]))
                if pairing is not None:
                    rp = {"proposal": out.data["proposal"], "to": out.data["to"], "cut_at": out.data["cut_at"], "at": out.at}
                    result.replayed.append(rp)
                    pairing.replayed(rp, out.at)
            etype, data = out.type, out.data
            if etype == "cut":
                etype, data = "director.cut", {**out.data, "simulated": True}
                result.predicted.append((out.at, out.data["to"]))
            seq += 1
            result.events.append(Event(type=etype, data=data, id=new_id() if etype != "ghost.proposed" else data["proposal"],
                                       ts=out.at, seq=seq, session=session, src="ghost"))  # fmt: skip
    if result.end is not None:
        for out in policy.step(result.end):
            if out.type == "cut":
                result.predicted.append((out.at, out.data["to"]))
    result.stats = dict(policy.stats)
    return result


def _deadlines(policy: Policy, clock: float) -> list:
    """Step the policy at each of its own deadlines up to ``clock`` (the live ghost's timer)."""
    out: list = []
    for _ in range(8):
        due = policy.next_deadline()
        if due is None or due > clock:
            break
        out += policy.step(max(due, policy.now))
        if policy.next_deadline() == due:
            break
    return out


def _feed(policy: Policy, event: Event, result: ReplayResult, recorded: bool, mode: str,
          pairing: _Pairing | None, clock: float | None = None) -> list:  # fmt: skip
    """One non-pose event of the recording: what the replayed policy makes of it (in recorded
    mode at ``clock``, the time the live ghost saw it)."""
    etype = event.type
    d = event.data
    if etype == "director.cut":
        result.cuts.append((event.ts, d.get("to"), d.get("by"), d.get("proposal")))
        if recorded:
            proposal = d.get("proposal")
            out = []
            if pairing is not None and proposal in pairing.live_to_replay:  # a cut of the live run's proposal
                rid = pairing.live_to_replay[proposal]
                due = policy.next_cut_at()
                # the live ghost dispatches its cuts a few ms early, so the server's stamp can
                # precede cut_at: the replay executes its own proposal at cut_at, as live did
                if policy.pending is not None and policy.pending.id == rid and due is not None and due <= event.ts + 0.25:
                    out = policy.step(due, consider=False)
                event = Event(type=etype, data={**d, "proposal": rid}, id=event.id,
                              ts=event.ts, seq=event.seq, session=event.session, src=event.src)  # fmt: skip
            return out + policy.feed(event, now=clock)
        return policy.feed(event) if mode == "manual" else policy.step(event.ts)
    if etype == "ghost.accepted":
        by = d.get("by") or event.src or "operator"
        if isinstance(d.get("proposal"), str):
            result.accepted_by.setdefault(d["proposal"], by)
    if recorded:
        if etype == "director.mode":
            return policy.feed(event, now=clock)
        if etype == "ghost.proposed" and event.src == "ghost":
            cue = policy.cue
            beat = (cue.beat_period_s() if cue is not None and cue.grid is not None else None) or policy.config.rules.clock_period_s
            lp = {"proposal": d["proposal"], "to": d["to"], "cut_at": d.get("cut_at"), "ts": event.ts, "beat_s": beat}
            result.live_proposals.append(lp)
            pairing.live(lp, policy.now)  # type: ignore[union-attr]
            return policy.step(clock if clock is not None else event.ts)
        if etype == "ghost.held" and event.src == "ghost":
            result.live_held += 1
        if etype in ("ghost.accepted", "ghost.vetoed"):
            by = d.get("by") or event.src or "operator"
            rid = pairing.live_to_replay.get(d.get("proposal")) if pairing is not None else None  # type: ignore[arg-type]
            if by not in NOT_OPERATOR and rid is not None:
                now = max(policy.now, clock if clock is not None else event.ts)
                if etype == "ghost.accepted":
                    return policy.accept(rid, now, by=by, emit=False)
                return policy.veto(rid, now, by=by, emit=False)
    if etype in FED_TYPES:
        return policy.feed(event, now=clock)
    return policy.step(clock if clock is not None else policy.event_time(event))


def replay(source: str | Path | BinaryIO, *, config: PolicyConfig | None = None, features_dir: str | Path | None = None,
           mode: str = "autopilot", on_error=None) -> ReplayResult:  # fmt: skip
    """Replay a capture directory, an events file or an open binary stream.

    ``config`` None: in ``recorded`` mode the policy the live ghost recorded (its first
    ``ghost.online``), else the shipped defaults; ``features_dir`` None in ``recorded``
    mode: the live ghost's ``--features`` when that directory exists. Bad lines are passed to
    ``on_error`` (an `EventError` with its line number) and skipped. Raises
    InputMissingError when the path does not exist, DataError for an unknown mode or a
    recorded policy that does not parse.
    """
    if mode not in REPLAY_MODES:
        raise DataError(f"replay simulates {', '.join(REPLAY_MODES[:-1])} or {REPLAY_MODES[-1]}, not {mode!r}")
    bad = [0]

    def report(err: EventError) -> None:
        bad[0] += 1
        if on_error is not None:
            on_error(err)

    def run(fp: BinaryIO) -> ReplayResult:
        live_run = None
        cfg, source_note = config, "given"
        feats = features_dir
        if mode == "recorded":
            live_run = scan_live_run(fp)
            fp.seek(0)
            if cfg is None and live_run.policy is not None:
                cfg, source_note = policy_from_dict(live_run.policy, source="the recorded ghost.online policy"), "recorded"
            if feats is None and live_run.features and Path(live_run.features).is_dir():
                feats = live_run.features
        if cfg is None:
            cfg, source_note = load_policy(), "default"
        result = replay_events(read_replay(fp, cfg.signals, on_error=report), config=cfg, beats=BeatLibrary(feats),
                               mode=mode, live_run=live_run)  # fmt: skip
        result.policy_source = source_note
        return result

    if isinstance(source, (str, Path)):
        with open(events_path(source), "rb") as fp:
            result = run(fp)
    elif mode == "recorded" and not source.seekable():
        with tempfile.TemporaryFile() as spool:  # two passes need a file
            shutil.copyfileobj(source, spool, 1 << 20)
            spool.seek(0)
            result = run(spool)  # type: ignore[arg-type]
    else:
        result = run(source)
    result.bad_lines = bad[0]
    return result


__all__ = ["FED_TYPES", "PAIR_WINDOW_S", "REPLAY_MODES", "LiveRun", "ReplayResult", "evaluate", "events_path",
           "match_cuts", "replay", "replay_events", "scan_live_run", "shot_distribution", "shot_lengths"]
