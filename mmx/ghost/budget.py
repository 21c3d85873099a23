"""The proposal budget: how much of the operator's attention the ghost may ask for.

In the attended modes (``manual``, ``ghost``: a human must answer) the ghost proposes at
most ``max_proposals_per_min`` times in any 60 s, and after a proposal expires unanswered
it pauses: ``expiry_pause_s`` after the first, times ``expiry_pause_growth`` for each further
one in a row, at most ``expiry_pause_max_s``. Any answer from the operator (an accept, a veto
or a cut by hand) ends the streak; a pause already begun runs out. In ``autopilot`` the
proposals execute by themselves and only the shot rules pace them.
"""

from __future__ import annotations

import math
from collections import deque

from mmx.ghost.config import ATTENDED_MODES, Rules

WINDOW_S = 60.0


class ProposalBudget:
    """Proposal times of the last minute and the unanswered streak (see the module docstring).

    Times are the policy's clock (Unix seconds); nothing here reads a clock.
    """

    __slots__ = ("rules", "times", "streak", "pause_until", "pause_s")

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.times: deque[float] = deque()
        self.streak = 0  # unanswered expiries in a row
        self.pause_until = -math.inf
        self.pause_s = 0.0  # length of the current (or last) pause

    def free_at(self, now: float, mode: str) -> float:
        """The earliest time a proposal may be made (``<= now``: now); −inf in autopilot."""
        if mode not in ATTENDED_MODES:
            return -math.inf
        times = self.times
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        limit = self.rules.max_proposals_per_min
        at = self.pause_until
        if len(times) >= limit:
            at = max(at, times[len(times) - limit] + WINDOW_S)
        return at

    def why_resting(self, now: float, mode: str) -> dict[str, object] | None:
        """A reason object when no proposal may be made at ``now`` (None when one may)."""
        at = self.free_at(now, mode)
        if at <= now:
            return None
        limit = self.rules.max_proposals_per_min
        if self.pause_until >= at:
            n = self.streak
            return {"feature": "pause", "value": round(at - now, 3), "streak": n,
                    "text": f"{n} proposal{'s' if n != 1 else ''} in a row went unanswered: pausing "
                            f"{self.pause_s:.0f} s, {at - now:.1f} s to go"}  # fmt: skip
        return {"feature": "budget", "value": round(at - now, 3), "limit": limit,
                "text": f"{limit} proposals in the last minute (max_proposals_per_min {limit}): "
                        f"the next one in {at - now:.1f} s"}  # fmt: skip

    def proposed(self, now: float) -> None:
        self.times.append(now)

    def expired_unanswered(self, now: float) -> float:
        """Count an unanswered expiry at ``now``; the pause it starts, in seconds."""
        r = self.rules
        self.streak += 1
        pause = min(r.expiry_pause_max_s, r.expiry_pause_s * r.expiry_pause_growth ** (self.streak - 1))
        self.pause_s = pause
        self.pause_until = max(self.pause_until, now + pause)
        return pause

    def answered(self) -> None:
        """The operator answered (accept, veto, a cut by hand): the streak starts over."""
        self.streak = 0
