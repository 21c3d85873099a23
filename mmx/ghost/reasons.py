"""Reasons in words: the objects a ``ghost.proposed`` or ``ghost.held`` carries in ``reasons``.

Every reason is a JSON object with ``feature`` (what it is about) and ``text`` (one human
sentence, what the console and the terminal banner show). By ``feature``:

- ``presence`` / ``framing`` / ``motion`` / ``stillness`` — one signal of the target camera:
  ``camera``, ``value`` (the signal, 0…1), ``weight``, ``contribution`` (weight × value; the
  contributions sum to the proposal's ``score``);
- ``gain`` — ``value`` (score minus program's), ``program_score``, ``min_gain``;
- ``forced`` — why a cut is due without a gain (``max_shot_s`` reached, program lost);
- ``energy`` — ``value`` (the bar's energy rank 0…1), ``bar``, ``factor`` (what the shot
  rules were scaled by);
- ``timing`` — ``clock`` (``beat`` or ``own``), ``lead_s``, ``downbeat``;
- ``held`` — (``ghost.held`` only) ``shot_s``, why the shot is held past ``max_shot_s``;
- ``candidate`` — (``ghost.held``) one camera that was not good enough: ``camera``, ``why``
  (``no_subject``, ``min_score``, ``cooldown``, ``jump_cut``), ``score`` when scored;
- ``budget`` / ``pause`` — the proposal budget is spent, or proposals pause after unanswered
  ones: ``value`` (seconds until the next proposal may be made).
"""

from __future__ import annotations

from typing import Any

from mmx.ghost.config import FEATURES, Rules, Weights
from mmx.ghost.signals import SignalParams, Signals

Reason = dict[str, Any]


def feature_reasons(camera: str, sig: Signals, detail: dict[str, Any], weights: Weights,
                    params: SignalParams) -> list[Reason]:  # fmt: skip
    """One reason per signal of ``camera``, each a sentence about the subject plus its numbers."""
    values = sig.as_dict()
    words = {
        "presence": f"{camera} sees {detail['joints']} of 19 joints",
        "framing": (f"{camera} subject fills {detail['height']:.0%} of the frame height "
                    f"(ideal {params.framing_ideal_height:.0%}), {detail['offcentre']:.0%} off centre"),
        "motion": f"{camera} subject moving {detail['speed_bps']:.1f} body-lengths/s",
        "stillness": (f"{camera} subject holding still for {detail['still_s']:.1f} s" if detail["still_s"] > 0
                      else f"{camera} subject not holding still"),
    }  # fmt: skip
    out = []
    for feat in FEATURES:
        weight = getattr(weights, feat)
        value = values[feat]
        contrib = weight * value
        out.append({"feature": feat, "camera": camera, "value": round(value, 4), "weight": weight,
                    "contribution": round(contrib, 4),
                    "text": f"{words[feat]} ({feat} {value:.2f} × weight {weight:g} = {contrib:+.2f})"})  # fmt: skip
    return out


def gain_reason(camera: str, score: float, program: str | None, program_score: float, min_gain: float) -> Reason:
    gain = score - program_score
    return {"feature": "gain", "value": round(gain, 4), "program_score": round(program_score, 4),
            "min_gain": round(min_gain, 4),
            "text": f"{camera} scores {score:.2f}, {gain:.2f} above program {program or '-'} "
                    f"({program_score:.2f}; needed {min_gain:.2f})"}  # fmt: skip


def forced_reason(why: str, camera: str, score: float) -> Reason:
    return {"feature": "forced", "text": f"{why}: cutting to the best camera that sees someone, {camera} ({score:.2f})"}


def energy_reason(energy: float, bar: int, factor: float, rules: Rules) -> Reason:
    level = "loud" if energy >= 2 / 3 else ("quiet" if energy < 1 / 3 else "medium")
    return {"feature": "energy", "value": round(energy, 4), "bar": bar, "factor": round(factor, 4),
            "text": f"music {level} in bar {bar + 1} (energy rank {energy:.2f}): shots {factor:.2f}× as long "
                    f"(min_shot {rules.min_shot_s * factor:.1f} s, max_shot {rules.max_shot_s * factor:.1f} s)"}  # fmt: skip


def held_reason(program: str, shot_s: float, max_shot_s: float, why: str) -> Reason:
    return {"feature": "held", "shot_s": round(shot_s, 3),
            "text": f"holding {program} after {shot_s:.1f} s (max_shot {max_shot_s:.1f} s): {why}"}  # fmt: skip


def candidate_reason(camera: str, why: str, *, score: float | None = None, rules: Rules | None = None,
                     detail: str = "") -> Reason:  # fmt: skip
    """Why one camera was not proposed: ``why`` is ``no_subject``, ``stale``, ``min_score``,
    ``cooldown`` or ``jump_cut``; ``detail`` completes the sentence for the last two."""
    if why == "no_subject":
        text = f"{camera} sees nobody"
    elif why == "stale":
        text = f"{camera} sends no pose"
    elif why == "min_score":
        text = f"{camera} scores {score:.2f}, under min_score {rules.min_score:g}"  # type: ignore[union-attr]
    else:
        text = f"{camera} {detail}"
    out: Reason = {"feature": "candidate", "camera": camera, "why": why, "text": text}
    if score is not None:
        out["score"] = round(score, 4)
    return out
