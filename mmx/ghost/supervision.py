"""The operator's decisions in recorded sessions, as moments the ghost can learn from.

Sources (`open_sources`): capture directories (``events.jsonl``), directories holding
capture directories (e.g. a server's ``sessions/``), events files (JSON Lines; several
sessions are told apart by the envelope's ``session``) and ledgers (SQLite files written by
``mmx ledger push``; one pass per session). Each session's events are replayed in order
through a `ShootState` (the same signals the policy scores), and at each decision of the
operator the signals of every camera are taken:

- an operator **cut** (``director.cut`` whose ``by`` is not ``ghost``/``autopilot``/``serve``)
  at ``ts`` to camera c: a `CutMoment` — c (the chosen camera) and every other live camera
  the operator could have cut to (not the program) that sees a subject then, each a signal
  vector ``(presence, framing, motion, stillness)``;
- a **decided proposal** (a recorded ``ghost.proposed`` answered ``ghost.accepted`` or
  ``ghost.vetoed`` by the operator, not by autopilot; expiries are not answers): a
  `ProposalMoment` — the proposed camera's and the program's signals at the proposal's
  ``ts``, and whether it was accepted.

Moments the signals cannot speak for are counted, not used: a cut whose chosen camera
sees nobody, a cut with no other camera that sees someone, a proposal to a camera that
sent no pose. A ledger without ``pose.sample`` events (they are off by default in a
server's stream) yields no usable moments: train on capture directories then.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmx.errors import EventError, InputMissingError
from mmx.events import Event, read_events
from mmx.ghost.config import FEATURES, PolicyConfig
from mmx.ghost.reader import PoseLine, read_replay
from mmx.ghost.signals import SUBJECT_MIN_PRESENCE
from mmx.ghost.state import ShootState

NOT_OPERATOR = frozenset({"ghost", "autopilot", "serve"})
_SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class CutMoment:
    """An operator cut: ``cameras`` (name order) and their ``signals`` (n, 4), the index of
    the ``chosen`` one, the ``program`` cut away from (or None)."""

    session: str
    t: float
    cameras: tuple[str, ...]
    signals: np.ndarray
    chosen: int
    program: str | None


@dataclass(frozen=True)
class ProposalMoment:
    """A decided proposal: the target's and the program's signals (each (4,)), accepted or not."""

    session: str
    t: float
    to: str
    target: np.ndarray
    program: np.ndarray
    accepted: bool


@dataclass
class Source:
    """One input: ``path``, ``kind`` (``capture``, ``events``, ``ledger``) and its sha256."""

    path: Path
    kind: str
    sha256: str = ""
    sessions: int = 0


@dataclass
class Supervision:
    """Every moment found, per session, with counts of what was found and left out."""

    cuts: list[CutMoment] = field(default_factory=list)
    proposals: list[ProposalMoment] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    cut_times: dict[str, list[float]] = field(default_factory=dict)  # session → every operator cut's ts
    counts: dict[str, int] = field(default_factory=lambda: {
        "sessions": 0, "operator_cuts": 0, "cuts_used": 0, "cuts_chosen_sees_nobody": 0,
        "cuts_no_alternative": 0, "decided_proposals": 0, "proposals_used": 0, "proposals_no_pose": 0,
        "accepted": 0, "vetoed": 0, "bad_lines": 0, "pose_samples": 0,
    })  # fmt: skip

    @property
    def sessions(self) -> list[str]:
        return sorted({m.session for m in self.cuts} | {m.session for m in self.proposals})

    @property
    def decisions(self) -> int:
        return len(self.cuts) + len(self.proposals)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_sources(paths: Iterable[str | Path]) -> list[Source]:
    """What each path is (see the module docstring), in the order given; a directory of
    capture directories gives one source per capture directory (name order).

    Raises InputMissingError for a path that does not exist or a directory with no
    ``events.jsonl`` in it or one level down.
    """
    out: list[Source] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            if (p / "events.jsonl").is_file():
                out.append(Source(p, "capture"))
                continue
            found = sorted(d for d in p.iterdir() if (d / "events.jsonl").is_file())
            if not found:
                raise InputMissingError(f"{p} holds no capture directory (no events.jsonl in it or one level down)")
            out += [Source(d, "capture") for d in found]
        elif p.is_file():
            with open(p, "rb") as fp:
                head = fp.read(len(_SQLITE_MAGIC))
            out.append(Source(p, "ledger" if head == _SQLITE_MAGIC else "events"))
        else:
            raise InputMissingError(f"no such capture directory, events file or ledger: {p}")
    return out


def _session_streams(source: Source, params, on_error) -> Iterator[tuple[str, Iterator[Event | PoseLine]]]:
    """``(session id, its events in order)`` of one source."""
    if source.kind == "ledger":
        from mmx.ledger import Ledger

        with Ledger.open(source.path, create=False) as ledger:
            sessions = [row[0] for row in ledger.conn.execute(
                "SELECT DISTINCT session FROM events WHERE session IS NOT NULL ORDER BY session")]  # fmt: skip

            def events_of(session: str) -> Iterator[Event]:
                for stored in ledger.iter_events(session=session):
                    try:
                        yield stored.event()
                    except EventError as exc:
                        on_error(exc)

            for session in sessions:
                yield session, events_of(session)
        return
    path = source.path / "events.jsonl" if source.kind == "capture" else source.path
    if source.kind == "capture":
        with open(path, "rb") as fp:
            yield source.path.name, read_replay(fp, params, on_error=on_error)
        return
    # an events file may hold several sessions: group them (in file order within each)
    groups: dict[str, list[Event]] = {}
    with open(path, "rb") as fp:
        for event in read_events(fp, on_error=on_error):
            groups.setdefault(event.session or path.name, []).append(event)
    for session, events in groups.items():
        yield session, iter(events)


def collect(paths: Iterable[str | Path], *, config: PolicyConfig | None = None, on_error=None) -> Supervision:
    """Every operator decision in ``paths`` (see the module docstring), signals computed with
    ``config``'s signal constants. Bad lines go to ``on_error`` (an EventError) and are counted."""
    config = config or PolicyConfig()
    sup = Supervision()

    def report(exc: EventError) -> None:
        sup.counts["bad_lines"] += 1
        if on_error is not None:
            on_error(exc)

    for source in open_sources(paths):
        source.sha256 = sha256_file(source.path / "events.jsonl" if source.kind == "capture" else source.path)
        for session, events in _session_streams(source, config.signals, report):
            source.sessions += 1
            sup.counts["sessions"] += 1
            _session(session, events, config, sup)
        sup.sources.append(source)
    return sup


def _vector(state: ShootState, camera: str, t: float) -> tuple[np.ndarray, bool]:
    """A camera's signals at ``t`` as (4,) and whether it sees a subject."""
    cam = state.cameras.get(camera)
    if cam is None or cam.signals is None:
        return np.zeros(len(FEATURES)), False
    s = cam.signals.at(t)
    return np.array([s.presence, s.framing, s.motion, s.stillness]), s.presence >= SUBJECT_MIN_PRESENCE


def _session(session: str, events: Iterator[Event | PoseLine], config: PolicyConfig, sup: Supervision) -> None:
    state = ShootState(config, mode="manual")
    proposals: dict[str, tuple[float, str, np.ndarray, np.ndarray, bool]] = {}  # id → (t, to, target, program, has pose)
    decided: set[str] = set()
    counts = sup.counts
    for event in events:
        if type(event) is not Event:  # the typed pose path
            counts["pose_samples"] += 1
            state.observe_pose(event.data.camera, event.data.t, event.joints())  # type: ignore[union-attr]
            continue
        d = event.data
        etype = event.type
        if etype == "pose.sample":
            cam = d.get("camera")
            if isinstance(cam, str):
                counts["pose_samples"] += 1
                state.observe_pose(cam, state.event_time(event), d.get("joints"))
            continue
        now = state.advance(event.ts)
        if etype == "director.cut":
            to = d.get("to")
            if d.get("by") not in NOT_OPERATOR and isinstance(to, str) and to != state.program:
                counts["operator_cuts"] += 1
                sup.cut_times.setdefault(session, []).append(event.ts)
                _cut(session, event.ts, to, state, sup)
            if to != state.program:
                state.program, state.program_since = to, now
        elif etype == "ghost.proposed" and event.src == "ghost" and isinstance(d.get("to"), str):
            target, seen = _vector(state, d["to"], event.ts)
            program = _vector(state, d.get("from") or state.program or "", event.ts)[0]
            has_pose = state.cameras.get(d["to"]) is not None and state.cameras[d["to"]].signals.samples > 0  # type: ignore[union-attr]
            proposals[d["proposal"]] = (event.ts, d["to"], target, program, has_pose and seen)
        elif etype in ("ghost.accepted", "ghost.vetoed"):
            pid = d.get("proposal")
            by = d.get("by") or event.src or "operator"
            if by in NOT_OPERATOR or pid not in proposals or pid in decided:
                continue
            decided.add(pid)
            counts["decided_proposals"] += 1
            t, to, target, program, usable = proposals[pid]
            if not usable:
                counts["proposals_no_pose"] += 1
                continue
            accepted = etype == "ghost.accepted"
            counts["accepted" if accepted else "vetoed"] += 1
            counts["proposals_used"] += 1
            sup.proposals.append(ProposalMoment(session, t, to, target, program, accepted))
        elif etype in ("camera.joined", "camera.left"):
            state.feed_camera(event)
        elif etype == "session.started" and isinstance(d.get("program"), str):
            state.program, state.program_since = d["program"], now


def _cut(session: str, t: float, to: str, state: ShootState, sup: Supervision) -> None:
    chosen, seen = _vector(state, to, t)
    if not seen:
        sup.counts["cuts_chosen_sees_nobody"] += 1
        return
    names, rows = [], []
    for name in state._names:
        cam = state.cameras[name]
        if name in (to, state.program) or not cam.live:  # the others the operator could have cut to
            continue
        vec, ok = _vector(state, name, t)
        if ok:
            names.append(name)
            rows.append(vec)
    if not names:
        sup.counts["cuts_no_alternative"] += 1
        return
    order = sorted([*names, to])
    signals = np.array([chosen if n == to else rows[names.index(n)] for n in order])
    sup.counts["cuts_used"] += 1
    sup.cuts.append(CutMoment(session, t, tuple(order), signals, order.index(to), state.program))


__all__ = ["CutMoment", "ProposalMoment", "Source", "Supervision", "collect", "open_sources"]
