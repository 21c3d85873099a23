"""Replay: the ghost policy in simulated time over a recorded session, and its evaluation.

The recording is a capture directory (``session.json`` + ``events.jsonl`` written by
`mmx serve`) or any events file, read by `mmx.ghost.reader.read_replay` (pose lines on a
typed fast path, every other line through `mmx.events.decode`). Its events are fed to a
`Policy` in file order, the policy's clock following the events' own times
(``pose.sample`` ``t``, else ``ts``), so a replay is deterministic: same input and
policy, same output, byte for byte (proposal ids are ``rp-<digest>-<n>`` with a digest of
the policy and the recording's first event id).

What the policy sees: pose samples, camera joins/changes/leaves, music cues, session
start/end and holds/releases. What it does not: recorded ``director.mode`` (the replay
simulates one mode) and recorded ``ghost.*`` decisions (those answered another run).
Recorded ``director.cut`` events are the reference (the operator's actual cuts):

- ``autopilot`` (default) — the ghost keeps its own program timeline and every proposal
  executes at ``cut_at``; the ghost's cuts are compared with the reference.
- ``manual`` — shadow mode: the program follows the recorded cuts and the ghost's
  proposals (at their ``cut_at``) are compared with them.

Metrics (`evaluate`): precision, recall and F1 of cut times matched one-to-one within
``tolerance_s`` (±0.5 s, greedy by smallest time difference), camera agreement over the
matched pairs, share of proposals whose ``cut_at`` is within ``beat_tolerance_s`` (±70 ms)
of a beat of the track playing, and the shot-length distribution of both timelines.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from mmx.errors import DataError, EventError, InputMissingError
from mmx.events import Event
from mmx.ghost.beats import BeatLibrary
from mmx.ghost.policy import Policy, PolicyConfig
from mmx.ghost.reader import PoseLine, read_replay

#: Recorded event types the replayed policy is fed (everything else is reference or ignored).
FED_TYPES = frozenset({"pose.sample", "camera.joined", "camera.changed", "camera.left", "music.cue",
                       "session.started", "session.ended", "director.hold", "director.release"})  # fmt: skip
REPLAY_MODES = ("autopilot", "manual")
SHOT_BINS_S = (0.0, 2.0, 4.0, 8.0, 12.0, 20.0)


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

    ``events``: the ghost's output events in order (``ghost.*`` and, in autopilot, the
    simulated ``director.cut``), with simulated ``ts``. ``reference``: recorded cuts as
    ``(time, camera)``; ``predicted``: the ghost's cuts (autopilot: executed; manual: each
    proposal's ``cut_at``) as ``(time, camera)``; ``beat_offsets_s``: per proposal, seconds
    to the nearest beat (None without a grid); ``start``/``end``: first and last event time.
    """

    mode: str
    events: list[Event] = field(default_factory=list)
    reference: list[tuple[float, str | None]] = field(default_factory=list)
    predicted: list[tuple[float, str]] = field(default_factory=list)
    beat_offsets_s: list[float | None] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    input_events: int = 0
    bad_lines: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _digest(config: PolicyConfig, first_id: str, mode: str) -> str:
    blob = orjson.dumps({"policy": config.as_dict(), "first": first_id, "mode": mode}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:10]


def replay_events(events: Iterable[Event | PoseLine], *, config: PolicyConfig, beats: BeatLibrary | None = None,
                  mode: str = "autopilot") -> ReplayResult:  # fmt: skip
    """Run the policy over ``events`` in simulated time (see the module docstring).

    ``events`` are `Event` objects, or also `PoseLine` records from `read_replay`'s fast
    path (pose samples fed without building an `Event`; the result is the same).
    Raises DataError for a mode other than ``autopilot`` or ``manual``.
    """
    if mode not in REPLAY_MODES:
        raise DataError(f"replay simulates {' or '.join(REPLAY_MODES)}, not {mode!r}")
    result = ReplayResult(mode=mode)
    counter = [0]
    prefix = [""]

    def new_id() -> str:
        counter[0] += 1
        return f"rp-{prefix[0]}-{counter[0]:06d}"

    policy = Policy(config, beats=beats, mode=mode, id_factory=new_id, follow_mode=False)
    session: str | None = None
    seq = 0
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
        if fast:
            outputs = policy.feed_pose(event.data.camera, t, event.joints())  # type: ignore[union-attr]
            if not outputs:
                continue
        elif event.type == "director.cut":
            result.reference.append((event.ts, event.data.get("to")))
            if mode == "manual":
                outputs = policy.feed(event)
            else:
                outputs = policy.step(event.ts)
        elif event.type in FED_TYPES:
            outputs = policy.feed(event)
        else:
            outputs = policy.step(t)
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


def replay(source: str | Path | BinaryIO, *, config: PolicyConfig, features_dir: str | Path | None = None,
           mode: str = "autopilot", on_error=None) -> ReplayResult:  # fmt: skip
    """Replay a capture directory, an events file or an open binary stream.

    Bad lines are passed to ``on_error`` (an `EventError` with its line number) and
    skipped. Raises InputMissingError when the path does not exist.
    """
    beats = BeatLibrary(features_dir)
    bad = [0]

    def report(err: EventError) -> None:
        bad[0] += 1
        if on_error is not None:
            on_error(err)

    def run(fp: BinaryIO) -> ReplayResult:
        return replay_events(read_replay(fp, config.signals, on_error=report), config=config, beats=beats, mode=mode)

    if isinstance(source, (str, Path)):
        with open(events_path(source), "rb") as fp:
            result = run(fp)
    else:
        result = run(source)
    result.bad_lines = bad[0]
    return result


def match_cuts(reference: list[tuple[float, Any]], predicted: list[tuple[float, Any]],
               tolerance_s: float) -> list[tuple[int, int]]:  # fmt: skip
    """One-to-one matches ``(ref_index, pred_index)`` of cut times within ``tolerance_s``,
    greedy by smallest time difference (ties broken by index, so deterministic)."""
    pairs = sorted(
        (abs(rt - pt), i, j)
        for i, (rt, _) in enumerate(reference)
        for j, (pt, _) in enumerate(predicted)
        if abs(rt - pt) <= tolerance_s
    ) if len(reference) * len(predicted) <= 4_000_000 else _banded_pairs(reference, predicted, tolerance_s)  # fmt: skip
    used_r: set[int] = set()
    used_p: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_r and j not in used_p:
            used_r.add(i)
            used_p.add(j)
            out.append((i, j))
    return sorted(out)


def _banded_pairs(reference, predicted, tolerance_s):
    import bisect

    ptimes = sorted((t, j) for j, (t, _) in enumerate(predicted))
    keys = [t for t, _ in ptimes]
    pairs = []
    for i, (rt, _) in enumerate(reference):
        lo = bisect.bisect_left(keys, rt - tolerance_s)
        hi = bisect.bisect_right(keys, rt + tolerance_s)
        pairs += [(abs(rt - pt), i, j) for pt, j in ptimes[lo:hi]]
    return sorted(pairs)


def _quantile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return math.nan
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def shot_lengths(cuts: list[tuple[float, Any]], end: float | None) -> list[float]:
    """Shot lengths in seconds between consecutive cuts (time order), the last shot ending
    at ``end``."""
    times = sorted(t for t, _ in cuts)
    if end is not None:
        times.append(max(end, times[-1]) if times else end)
    return [b - a for a, b in zip(times, times[1:])]


def shot_distribution(lengths: list[float]) -> dict[str, Any]:
    """Count, mean, min/quartiles/max and a histogram (bin edges `SHOT_BINS_S`, last open)."""
    vals = sorted(lengths)
    r = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, 3)  # noqa: E731
    hist = {}
    edges = list(SHOT_BINS_S) + [math.inf]
    for a, b in zip(edges, edges[1:]):
        label = f"{a:g}-{b:g}s" if math.isfinite(b) else f"{a:g}s+"
        hist[label] = sum(1 for v in vals if a <= v < b)
    return {"count": len(vals), "mean_s": r(sum(vals) / len(vals)) if vals else None, "min_s": r(vals[0]) if vals else None,
            "p25_s": r(_quantile(vals, 0.25)), "median_s": r(_quantile(vals, 0.5)), "p75_s": r(_quantile(vals, 0.75)),
            "max_s": r(vals[-1]) if vals else None, "histogram": hist}  # fmt: skip


def evaluate(result: ReplayResult, *, tolerance_s: float = 0.5, beat_tolerance_s: float = 0.070) -> dict[str, Any]:
    """The evaluation report of a replay (see the module docstring); a plain dict of
    JSON-ready numbers, rounded to 4 decimals so it is byte-stable."""
    ref, pred = result.reference, result.predicted
    matches = match_cuts(ref, pred, tolerance_s)
    tp = len(matches)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(ref) if ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    agree = sum(1 for i, j in matches if ref[i][1] == pred[j][1])
    offsets = result.beat_offsets_s
    with_grid = [o for o in offsets if o is not None]
    on_beat = sum(1 for o in with_grid if o <= beat_tolerance_s + 1e-9)
    r4 = lambda x: round(x, 4)  # noqa: E731
    return {
        "mode": result.mode,
        "duration_s": r4((result.end - result.start) if result.start is not None else 0.0),
        "input_events": result.input_events,
        "bad_lines": result.bad_lines,
        "reference_cuts": len(ref),
        "ghost_cuts": len(pred),
        "matched": tp,
        "tolerance_s": tolerance_s,
        "precision": r4(precision),
        "recall": r4(recall),
        "f1": r4(f1),
        "camera_agreement": r4(agree / tp) if tp else None,
        "proposals": result.stats.get("proposals", 0),
        "forced": result.stats.get("forced", 0),
        "expired": result.stats.get("expired", 0),
        "beat_tolerance_s": beat_tolerance_s,
        "proposals_with_beat_grid": len(with_grid),
        "on_beat_share": r4(on_beat / len(offsets)) if offsets else None,
        "on_beat_share_with_grid": r4(on_beat / len(with_grid)) if with_grid else None,
        "shots_ghost": shot_distribution(shot_lengths(pred, result.end)),
        "shots_reference": shot_distribution(shot_lengths(ref, result.end)),
    }
