"""`mmx ghost`: the AI director that proposes beat-aware cuts under operator supervision.

- `mmx.ghost.signals` — per-camera signals from ``pose.sample`` (presence, framing, motion
  energy, stillness);
- `mmx.ghost.beats` — beat grids from `mmx features` artifacts placed by ``music.cue``;
- `mmx.ghost.policy` — the pure, deterministic policy stepped with explicit times;
- `mmx.ghost.live` — the async runner against `mmx serve` or events on stdin;
- `mmx.ghost.replay` — the same policy in simulated time over a recorded session, with
  evaluation against the operator's cuts;
- `mmx.ghost.reader` — reading a recording for replay, with a typed fast path for pose lines.
"""

from mmx.ghost.policy import MODES, Output, Policy, PolicyConfig, Rules, Weights, load_policy, parse_policy

__all__ = ["MODES", "Output", "Policy", "PolicyConfig", "Rules", "Weights", "load_policy", "parse_policy"]
