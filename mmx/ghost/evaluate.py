"""Judging a replay: the ghost's cuts against the operator's decisions, and a live run's
proposals against the replay's.

The reference is what the operator chose, never what the ghost decided for itself: cuts
``by: operator`` (or with no ``by``), plus ghost cuts whose proposal the operator accepted
(a ``ghost.accepted`` whose ``by`` is not ``autopilot``/``ghost``/``serve`` — in ghost mode an
acceptance is the operator's choice). Autopilot cuts the operator merely let pass, and the
server's own fallback cuts, are left out.

Metrics (`evaluate`): precision, recall and F1 of cut times matched one-to-one within
``tolerance_s`` (±0.5 s, greedy by smallest time difference), camera agreement over the
matched pairs, share of proposals whose ``cut_at`` is within ``beat_tolerance_s`` (±70 ms)
of a beat of the track playing, proposals per minute, share expired, shots held
(``ghost.held``), the energy/cut-rate correlation (Pearson, over the bars of the music played:
each bar's energy rank against the number of the ghost's cuts in it; also the reference's,
and the cut rate per minute in quiet / medium / loud bars), and the shot-length distribution
of both timelines. In ``recorded`` mode also the fidelity (`fidelity`): the share of the live
run's proposals the replay reproduced (same camera, ``cut_at`` within one beat).
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmx.ghost.replay import ReplayResult

SHOT_BINS_S = (0.0, 2.0, 4.0, 8.0, 12.0, 20.0)
ENERGY_LEVELS = (("quiet", 0.0, 1 / 3), ("medium", 1 / 3, 2 / 3), ("loud", 2 / 3, 1.0 + 1e-9))


def match_cuts(reference: list[tuple[float, Any]], predicted: list[tuple[float, Any]],
               tolerance_s: float) -> list[tuple[int, int]]:  # fmt: skip
    """One-to-one matches ``(ref_index, pred_index)`` of cut times within ``tolerance_s``,
    greedy by smallest time difference (ties broken by index, so deterministic)."""
    ptimes = sorted((t, j) for j, (t, _) in enumerate(predicted))
    keys = [t for t, _ in ptimes]
    pairs = []
    for i, (rt, _) in enumerate(reference):
        lo = bisect.bisect_left(keys, rt - tolerance_s)
        hi = bisect.bisect_right(keys, rt + tolerance_s)
        pairs += [(abs(rt - pt), i, j) for pt, j in ptimes[lo:hi]]
    pairs.sort()
    used_r: set[int] = set()
    used_p: set[int] = set()
    out = []
    for _, i, j in pairs:
        if i not in used_r and j not in used_p:
            used_r.add(i)
            used_p.add(j)
            out.append((i, j))
    return sorted(out)


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


def pearson(x: list[float], y: list[float]) -> float | None:
    """Pearson's r of two equal-length series, or None with fewer than 3 points or a constant one."""
    if len(x) < 3 or len(x) != len(y):
        return None
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return None if den <= 1e-12 else float(a @ b) / den


def energy_cut_rate(bars: list[tuple[float, float, float]], cut_times: list[float]) -> dict[str, Any]:
    """How cut density follows the music: per bar ``(start, end, energy)``, the cuts in it.

    Returns ``{"correlation": Pearson r of energy against cuts per bar (None when undefined),
    "bars": n, "cuts_per_min": {"quiet"|"medium"|"loud": rate or None}}``.
    """
    times = sorted(cut_times)
    counts = [bisect.bisect_left(times, b) - bisect.bisect_left(times, a) for a, b, _ in bars]
    energies = [e for _, _, e in bars]
    rates: dict[str, float | None] = {}
    for name, lo, hi in ENERGY_LEVELS:
        sel = [(b - a, n) for (a, b, e), n in zip(bars, counts) if lo <= e < hi]
        minutes = sum(d for d, _ in sel) / 60.0
        rates[name] = round(sum(n for _, n in sel) / minutes, 3) if minutes > 0 else None
    r = pearson(energies, [float(n) for n in counts])
    return {"correlation": None if r is None else round(r, 4), "bars": len(bars), "cuts_per_min": rates}


def fidelity(result: ReplayResult) -> dict[str, Any]:
    """How much of the live run the replay reproduced (``recorded`` mode): of the recorded
    proposals, how many the replay made too — same camera, ``cut_at`` within one beat (the
    track's median beat interval, else ``clock_period_s``). Also the replay's extra
    proposals and the recorded ``ghost.held`` against the replay's."""
    live = result.live_proposals
    by_live = {lid: rid for rid, lid in result.proposal_map.items()}
    replayed = {p["proposal"]: p for p in result.replayed}
    reproduced = 0
    errors = []
    for lp in live:
        rid = by_live.get(lp["proposal"])
        rp = replayed.get(rid) if rid is not None else None
        if rp is None or rp["to"] != lp["to"] or lp.get("cut_at") is None:
            continue
        err = abs(rp["cut_at"] - lp["cut_at"])
        errors.append(err)
        if err <= lp["beat_s"] + 1e-6:
            reproduced += 1
    r4 = lambda x: round(x, 4)  # noqa: E731
    return {"live_proposals": len(live), "reproduced": reproduced,
            "share": r4(reproduced / len(live)) if live else None,
            "replay_proposals": len(result.replayed), "extra": len(result.replayed) - len(by_live),
            "cut_at_error_median_s": r4(float(np.median(errors))) if errors else None,
            "live_held": result.live_held, "replay_held": result.stats.get("held", 0)}  # fmt: skip


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
    duration = (result.end - result.start) if result.start is not None else 0.0
    proposals = result.stats.get("proposals", 0)
    bars = result.bars()
    report = {
        "mode": result.mode,
        "duration_s": r4(duration),
        "input_events": result.input_events,
        "bad_lines": result.bad_lines,
        "reference": "operator decisions: cuts by the operator and ghost cuts the operator accepted",
        "reference_cuts": len(ref),
        "reference_left_out": result.left_out,
        "ghost_cuts": len(pred),
        "matched": tp,
        "tolerance_s": tolerance_s,
        "precision": r4(precision),
        "recall": r4(recall),
        "f1": r4(f1),
        "camera_agreement": r4(agree / tp) if tp else None,
        "proposals": proposals,
        "proposals_per_min": r4(proposals / (duration / 60.0)) if duration > 0 else None,
        "forced": result.stats.get("forced", 0),
        "held": result.stats.get("held", 0),
        "expired": result.stats.get("expired", 0),
        "expired_share": r4(result.stats.get("expired", 0) / proposals) if proposals else None,
        "beat_tolerance_s": beat_tolerance_s,
        "proposals_with_beat_grid": len(with_grid),
        "on_beat_share": r4(on_beat / len(offsets)) if offsets else None,
        "on_beat_share_with_grid": r4(on_beat / len(with_grid)) if with_grid else None,
        "energy_cut_rate": energy_cut_rate(bars, [t for t, _ in pred]),
        "energy_cut_rate_reference": energy_cut_rate(bars, [t for t, _ in ref]),
        "shots_ghost": shot_distribution(shot_lengths(pred, result.end)),
        "shots_reference": shot_distribution(shot_lengths(ref, result.end)),
    }
    if result.mode == "recorded":
        report["fidelity"] = fidelity(result)
    return report
