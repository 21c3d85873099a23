"""`mmx ghost-train`: policy weights and thresholds learned from the operator's decisions.

The model is a pairwise logistic regression over the policy's own four signals — small
enough to read, and what the policy already computes (a camera's score is ``w · x``):

- each operator cut (`mmx.ghost.supervision.CutMoment`) gives, for every other camera that
  saw someone, a pair ``x_chosen − x_other`` labelled 1 (the operator preferred it);
- each decided proposal gives ``x_target − x_program`` labelled 1 when accepted, 0 when
  vetoed, with an intercept ``b`` of its own (how much better a camera must look before
  the operator takes the cut).

``P(a preferred over b) = σ(w · (x_a − x_b) + b·[proposal])``, fitted by Newton's method
with an L2 penalty ``l2 · |w|²/2`` (numpy; 4–5 parameters need no more). The policy
written keeps the base policy and replaces:

- ``[weights]`` — ``w / Σ|w|`` (the base's scale: scores stay in [0, 1] when all are
  positive, so the other thresholds keep their meaning);
- ``min_gain`` — ``−b / Σ|w|`` clipped to [0, 1]: the score gain at which the operator
  accepts half the time (kept from the base without decided proposals);
- ``min_score`` — the 5th percentile of the chosen cameras' scores under the new weights;
- ``min_shot_s`` / ``max_shot_s`` — the 10th / 90th percentile of the operator's shots
  (between consecutive operator cuts; kept from the base with fewer than `MIN_SHOTS`).

Cross-validation is by session, never by moment (a session's moments are not independent):
sessions are dealt to ``folds`` folds in a fixed order, and every fold's model is judged on
the sessions it never saw, against the base policy's weights on the same moments: camera
agreement (at each operator cut, is the camera the policy would score highest among those
it could cut to the operator's?), pair accuracy and log loss, accept/veto accuracy.

Fewer than `MIN_DECISIONS` usable decisions, or fewer than `MIN_SESSIONS` sessions, is
refused (DataError): too little to learn from, and no held-out score to show for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmx import __version__
from mmx.errors import DataError
from mmx.ghost.config import FEATURES, PolicyConfig, Weights, policy_toml
from mmx.ghost.supervision import CutMoment, ProposalMoment, Supervision

#: Fewest usable decisions (operator cuts + decided proposals) a policy is trained on.
MIN_DECISIONS = 30
#: Fewest sessions: cross-validation by session needs at least two.
MIN_SESSIONS = 2
#: Fewest operator shots before the shot-length thresholds are learned.
MIN_SHOTS = 10
L2 = 1.0
MIN_SCORE_QUANTILE = 0.05
SHOT_QUANTILES = (0.10, 0.90)


@dataclass(frozen=True)
class Model:
    """Fitted parameters: ``w`` (4,) per `FEATURES` in logit units, ``b`` the proposal intercept."""

    w: np.ndarray
    b: float

    def margin(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w


def pairs(cuts: list[CutMoment], proposals: list[ProposalMoment]) -> tuple[np.ndarray, np.ndarray]:
    """The design matrix ``(n, 5)`` — signal differences and the proposal indicator — and labels ``(n,)``."""
    rows, labels = [], []
    for m in cuts:
        chosen = m.signals[m.chosen]
        for i in range(len(m.cameras)):
            if i != m.chosen:
                rows.append(np.append(chosen - m.signals[i], 0.0))
                labels.append(1.0)
    for p in proposals:
        rows.append(np.append(p.target - p.program, 1.0))
        labels.append(1.0 if p.accepted else 0.0)
    if not rows:
        return np.zeros((0, len(FEATURES) + 1)), np.zeros(0)
    return np.array(rows), np.array(labels)


def fit(x: np.ndarray, y: np.ndarray, *, l2: float = L2, iterations: int = 100) -> Model:
    """L2-penalized logistic regression by Newton's method; ``x``'s last column is the
    proposal indicator (its coefficient ``b`` is 0 when no row uses it)."""
    n, k = x.shape
    theta = np.zeros(k)
    used = x[:, -1].any() if n else False
    # the intercept is penalized too: when the operator accepted every proposal it would
    # otherwise run off to infinity
    penalty = np.full(k, l2)
    for _ in range(iterations):
        z = x @ theta
        p = 1.0 / (1.0 + np.exp(-z))
        grad = x.T @ (p - y) + penalty * theta
        hess = (x.T * (p * (1.0 - p))) @ x + np.diag(penalty) + 1e-9 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return Model(w=theta[:-1].copy(), b=float(theta[-1]) if used else 0.0)


def _pick(m: CutMoment, w: np.ndarray) -> int:
    """The camera the policy would cut to at ``m``: the highest score among the cameras other
    than the program, the first in name order on a tie (as `Policy` scans them)."""
    scores = m.signals @ w
    best = None
    for i, name in enumerate(m.cameras):
        if name == m.program:
            continue
        if best is None or scores[i] > scores[best]:
            best = i
    return m.chosen if best is None else best


def _judge(model: Model, base: np.ndarray, cuts: list[CutMoment], proposals: list[ProposalMoment]) -> dict[str, float]:
    """Counts on held-out moments: agreements (trained, base), pairs right, log loss sum, proposals right."""
    agree = sum(1 for m in cuts if _pick(m, model.w) == m.chosen)
    agree_base = sum(1 for m in cuts if _pick(m, base) == m.chosen)
    x, y = pairs(cuts, proposals)
    z = x[:, :-1] @ model.w + x[:, -1] * model.b if len(y) else np.zeros(0)
    right = int(np.sum((z > 0) == (y > 0.5)))
    loss = float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)))
    prop = x[:, -1] > 0.5 if len(y) else np.zeros(0, bool)
    prop_right = int(np.sum(((z > 0) == (y > 0.5))[prop]))
    return {"cuts": len(cuts), "agree": agree, "agree_base": agree_base, "pairs": len(y), "pairs_right": right,
            "loss": loss, "proposals": int(prop.sum()), "proposals_right": prop_right}  # fmt: skip


def folds_of(sessions: list[str], folds: int) -> list[list[str]]:
    """``sessions`` (sorted) dealt to ``min(folds, len)`` folds in turn."""
    k = max(2, min(folds, len(sessions)))
    out: list[list[str]] = [[] for _ in range(k)]
    for i, s in enumerate(sorted(sessions)):
        out[i % k].append(s)
    return out


def cross_validate(sup: Supervision, base: PolicyConfig, *, folds: int = 5, l2: float = L2) -> dict[str, Any]:
    """Held-out scores by session (see the module docstring), pooled over the folds."""
    base_w = np.array(base.weights.as_tuple())
    total: dict[str, float] = {}
    groups = folds_of(sup.sessions, folds)
    for held in groups:
        held_set = set(held)
        train_cuts = [m for m in sup.cuts if m.session not in held_set]
        train_props = [p for p in sup.proposals if p.session not in held_set]
        model = fit(*pairs(train_cuts, train_props), l2=l2)
        got = _judge(model, base_w, [m for m in sup.cuts if m.session in held_set],
                     [p for p in sup.proposals if p.session in held_set])  # fmt: skip
        for key, value in got.items():
            total[key] = total.get(key, 0) + value
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    cuts, n_pairs, props = total.get("cuts", 0), total.get("pairs", 0), total.get("proposals", 0)
    return {
        "by": "session", "folds": len(groups), "cut_moments": int(cuts),
        "camera_agreement": r4(total["agree"] / cuts) if cuts else None,
        "base_camera_agreement": r4(total["agree_base"] / cuts) if cuts else None,
        "pair_accuracy": r4(total["pairs_right"] / n_pairs) if n_pairs else None,
        "log_loss": r4(total["loss"] / n_pairs) if n_pairs else None,
        "proposals": int(props), "proposal_accuracy": r4(total["proposals_right"] / props) if props else None,
    }  # fmt: skip


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=np.float64), q))


def shot_lengths(sup: Supervision) -> list[float]:
    """Seconds between consecutive operator cuts, session by session."""
    out = []
    for times in sup.cut_times.values():
        ts = sorted(times)
        out += [b - a for a, b in zip(ts, ts[1:])]
    return out


@dataclass
class Training:
    """A trained policy and everything about how it came to be."""

    config: PolicyConfig
    model: Model
    heldout: dict[str, Any]
    supervision: Supervision
    notes: list[str]

    def report(self) -> dict[str, Any]:
        """The provenance table as a plain dict (what the TOML's ``[provenance]`` holds)."""
        return dict(self.config.provenance or {})

    def toml(self) -> str:
        header = (f"mmx ghost-train {__version__}: weights and thresholds learned from "
                  f"{self.supervision.decisions} operator decisions in {len(self.supervision.sessions)} sessions.\n"
                  "Use it with `mmx ghost --policy FILE`; judge it with `mmx ghost --replay DIR --eval --policy FILE`.\n"
                  "[provenance] says what it was trained on and how it scored on sessions it never saw.")  # fmt: skip
        return policy_toml(self.config, header=header)


def train(sup: Supervision, *, base: PolicyConfig, base_source: str = "default", folds: int = 5,
          l2: float = L2) -> Training:  # fmt: skip
    """Fit, cross-validate and build the policy (see the module docstring).

    Raises DataError when there is too little supervision (fewer than `MIN_DECISIONS`
    usable decisions or `MIN_SESSIONS` sessions) or when the decisions do not separate the
    cameras at all (every weight 0).
    """
    sessions = sup.sessions
    n = sup.decisions
    if n < MIN_DECISIONS or len(sessions) < MIN_SESSIONS:
        c = sup.counts
        raise DataError(
            f"too little supervision to train on: {n} usable operator decision(s) in {len(sessions)} session(s); "
            f"at least {MIN_DECISIONS} in at least {MIN_SESSIONS} sessions are needed",
            hint=f"found {c['operator_cuts']} operator cut(s) ({c['cuts_chosen_sees_nobody']} to a camera that saw "
                 f"nobody, {c['cuts_no_alternative']} with no other camera seeing anyone) and "
                 f"{c['decided_proposals']} decided proposal(s) in {c['sessions']} session(s) with "
                 f"{c['pose_samples']} pose samples; record more sessions (capture directories hold the pose)",
        )  # fmt: skip
    heldout = cross_validate(sup, base, folds=folds, l2=l2)
    model = fit(*pairs(sup.cuts, sup.proposals), l2=l2)
    scale = float(np.sum(np.abs(model.w)))
    if scale < 1e-9:
        raise DataError("the operator's decisions do not separate the cameras by any signal: no policy to learn")
    weights = Weights(**{f: round(float(v) / scale, 4) for f, v in zip(FEATURES, model.w)})
    rules = base.rules
    notes = []
    changes: dict[str, Any] = {}
    if sup.proposals:
        changes["min_gain"] = round(min(1.0, max(0.0, -model.b / scale)), 4)
    else:
        notes.append("min_gain kept from the base policy: no decided proposals")
    chosen_scores = [float(m.signals[m.chosen] @ np.array(weights.as_tuple())) for m in sup.cuts]
    if chosen_scores:
        changes["min_score"] = round(max(0.0, _quantile(chosen_scores, MIN_SCORE_QUANTILE)), 4)
    shots = shot_lengths(sup)
    if len(shots) >= MIN_SHOTS:
        lo, hi = (_quantile(shots, q) for q in SHOT_QUANTILES)
        min_shot = round(min(10.0, max(1.0, lo)), 3)
        changes["min_shot_s"] = min_shot
        changes["max_shot_s"] = round(max(min_shot + 2.0, min(60.0, hi)), 3)
    else:
        notes.append(f"min_shot_s and max_shot_s kept from the base policy: {len(shots)} operator shots (< {MIN_SHOTS})")
    config = replace(base, weights=weights, rules=replace(rules, **changes), provenance=None)
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    provenance = {
        "tool": f"mmx ghost-train {__version__}",
        "base_policy": base_source,
        "base_policy_sha256": base.digest(),
        "policy_sha256": config.digest(),
        "inputs": [{"path": str(s.path), "kind": s.kind, "sha256": s.sha256, "sessions": s.sessions} for s in sup.sources],
        "counts": {**sup.counts, "sessions_used": len(sessions), "decisions": n, "pairs": int(len(pairs(sup.cuts, sup.proposals)[1]))},
        "model": {"kind": "pairwise logistic regression (numpy, Newton's method)", "features": list(FEATURES),
                  "l2": l2, "logit_weights": [r4(v) for v in model.w], "proposal_intercept": r4(model.b),
                  "scale": r4(scale)},
        "thresholds": {
            "weights": "logit weights / sum of their absolute values",
            "min_gain": "-proposal_intercept / scale (the gain accepted half the time)" if sup.proposals else "base",
            "min_score": f"{MIN_SCORE_QUANTILE:.0%} quantile of the chosen cameras' scores" if chosen_scores else "base",
            "min_shot_s": f"{SHOT_QUANTILES[0]:.0%} quantile of the operator's shots" if "min_shot_s" in changes else "base",
            "max_shot_s": f"{SHOT_QUANTILES[1]:.0%} quantile of the operator's shots" if "max_shot_s" in changes else "base",
        },
        "heldout": heldout,
        "notes": notes,
    }  # fmt: skip
    config = replace(config, provenance=provenance)
    return Training(config=config, model=model, heldout=heldout, supervision=sup, notes=notes)


def write_policy(training: Training, path: str | Path) -> None:
    """Write the trained policy's TOML atomically to ``path``."""
    from mmx.fileio import atomic_write

    atomic_write(Path(path), training.toml().encode("utf-8"))


__all__ = ["MIN_DECISIONS", "MIN_SESSIONS", "Model", "Training", "cross_validate", "fit", "folds_of", "pairs",
           "train", "write_policy"]
