"""`mmx ghost`: the AI director that proposes beat-aware cuts under operator supervision.

- `mmx.ghost.signals` — per-camera signals from ``pose.sample`` (presence, framing, motion
  energy, stillness);
- `mmx.ghost.beats` — beat grids and bar energy from `mmx features` artifacts placed by
  ``music.cue``;
- `mmx.ghost.config` — the policy file (weights, rules, signal constants, provenance);
- `mmx.ghost.state` — what the ghost knows of the shoot (cameras, program, music);
- `mmx.ghost.policy` — the pure, deterministic policy stepped with explicit times, with
  `mmx.ghost.budget` (the proposal budget) and `mmx.ghost.reasons` (reasons in words);
- `mmx.ghost.live` — the async runner against `mmx serve` or events on stdin, and
  `mmx.ghost.banner` — its terminal banner;
- `mmx.ghost.replay` — the same policy in simulated time over a recorded session, judged by
  `mmx.ghost.evaluate` against the operator's decisions;
- `mmx.ghost.reader` — reading a recording for replay, with a typed fast path for pose lines.
"""

from mmx.ghost.config import PolicyConfig, Rules, Weights, load_policy, parse_policy
from mmx.ghost.policy import MODES, Output, Policy

__all__ = ["MODES", "Output", "Policy", "PolicyConfig", "Rules", "Weights", "load_policy", "parse_policy"]
