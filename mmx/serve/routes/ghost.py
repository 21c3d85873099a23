"""The ghost's proposals as the server sees them, and ``POST /v1/ghost/{proposal}/accept|veto``.

`mmx ghost` posts ``ghost.proposed`` (and its own decisions) to ``POST /v1/events``; it obeys
``ghost.accepted`` / ``ghost.vetoed`` events from anyone else (``src`` other than ``ghost``).
These routes let a client answer a proposal without writing event JSON by hand: they record
exactly those events (``src`` ``operator``, ``data`` ``{proposal, by}``), once per proposal.

A proposal's ``status``: ``pending`` → ``accepted`` (→ ``executed`` when a ``director.cut``
names it) | ``vetoed`` | ``expired`` (a ``ghost.expired`` event, or its ``expires_at`` passed
unanswered) | ``executed`` (cut without an explicit accept, e.g. autopilot).

- ``GET /v1/ghost`` → ``{"pending": proposal | null, "recent": [proposal, ...] (newest last),
  "held": the last ghost.held data | null}``
- ``POST /v1/ghost/{proposal}/accept`` / ``/veto`` ``{"by"?}`` → the proposal; 404 unknown
  proposal, 409 already decided or expired.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from mmx.events import Event, new_id
from mmx.serve.api import ApiError, json_response, read_json

#: Proposals remembered (oldest forgotten first); a session makes a few per minute.
PROPOSALS_KEPT = 500
DECIDED = ("accepted", "vetoed", "expired", "executed")


class GhostRoutes:
    """``/v1/ghost*`` and the proposal tracker, a hub sink (mixed into `Server`)."""

    def _init_ghost(self) -> None:
        self.proposals: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.ghost_held: dict[str, Any] | None = None
        #: the camera the pending proposal would cut to: its device shows a green tally
        self.tally_preview: str | None = None
        self.hub.add_sink(self._track_ghost)

    def _add_ghost_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/ghost", self._ghost_get)
        r.add_post("/v1/ghost/{proposal}/{answer}", self._ghost_answer)

    def _track_ghost(self, event: Event, _line: bytes) -> None:
        etype, d = event.type, event.data
        if etype == "ghost.proposed" and isinstance(d.get("proposal"), str):
            self.proposals[d["proposal"]] = {**d, "status": "pending", "proposed_ts": event.ts, "by": None,
                                             "decided_ts": None, "src": event.src}  # fmt: skip
            self.proposals.move_to_end(d["proposal"])
            while len(self.proposals) > PROPOSALS_KEPT:
                self.proposals.popitem(last=False)
            # at most one proposal is pending: a newer one supersedes what the ghost forgot to close
            for pid, p in self.proposals.items():
                if pid != d["proposal"] and p["status"] == "pending":
                    p.update(status="expired", decided_ts=event.ts, reason="superseded")
        elif etype in ("ghost.accepted", "ghost.vetoed", "ghost.expired"):
            p = self.proposals.get(d.get("proposal"))  # type: ignore[arg-type]
            if p is not None and p["status"] in ("pending", "accepted"):
                status = etype.split(".", 1)[1]
                if p["status"] == "accepted" and status == "accepted":
                    return
                p.update(status=status, by=d.get("by") or event.src, decided_ts=event.ts)
                if d.get("reason"):
                    p["reason"] = d["reason"]
        elif etype == "director.cut" and isinstance(d.get("proposal"), str):
            p = self.proposals.get(d["proposal"])
            if p is not None:
                p.update(status="executed", executed_ts=event.ts, decided_ts=p["decided_ts"] or event.ts)
        elif etype == "ghost.held":
            self.ghost_held = {**d, "ts": event.ts}
        if etype.startswith("ghost.") or etype == "director.cut":
            self._ghost_tally()

    def _ghost_tally(self) -> None:
        """Send ``tally`` ``preview: true`` to the camera a pending proposal names (green on
        the device), and ``preview: false`` to the one that had it."""
        pending = next((p for p in reversed(self.proposals.values()) if p["status"] in ("pending", "accepted")), None)
        target = pending.get("to") if pending else None
        target = target if isinstance(target, str) and target != self.program else None
        if target == self.tally_preview:
            return
        previous, self.tally_preview = self.tally_preview, target
        for camera_id in (previous, target):
            cam = self.registry.get(camera_id) if camera_id else None
            if cam is not None and cam.live:
                self._send_soon(cam, {"t": "tally", "program": self.program == cam.camera, "preview": cam.camera == target})

    def _proposal_now(self, proposal: dict[str, Any], now: float) -> dict[str, Any]:
        """``proposal`` with an unanswered, past ``expires_at`` reported as expired."""
        expires = proposal.get("expires_at")
        if proposal["status"] == "pending" and isinstance(expires, (int, float)) and now > expires:
            return {**proposal, "status": "expired", "reason": "expires_at passed"}
        return dict(proposal)

    def ghost_state(self) -> dict[str, Any]:
        now = time.time()
        recent = [self._proposal_now(p, now) for p in list(self.proposals.values())[-20:]]
        pending = next((p for p in reversed(recent) if p["status"] in ("pending", "accepted")), None)
        return {"pending": pending, "recent": recent, "held": self.ghost_held}

    async def _ghost_get(self, request: web.Request) -> web.Response:
        return json_response(self.ghost_state())

    async def _ghost_answer(self, request: web.Request) -> web.Response:
        pid, answer = request.match_info["proposal"], request.match_info["answer"]
        if answer not in ("accept", "veto"):
            raise ApiError(404, f"unknown answer {answer!r}: use accept or veto")
        body = await read_json(request)
        by = body.get("by", "")
        if not isinstance(by, str) or len(by) > 128:
            raise ApiError(400, "by must be a string of at most 128 characters")
        by = by or "operator"
        stored = self.proposals.get(pid)
        if stored is None:
            raise ApiError(404, f"unknown proposal {pid!r}")
        proposal = self._proposal_now(stored, time.time())
        if proposal["status"] != "pending":
            detail = f" by {proposal['by']}" if proposal.get("by") else ""
            raise ApiError(409, f"proposal {pid} is already {proposal['status']}{detail}", proposal=proposal)
        etype = "ghost.accepted" if answer == "accept" else "ghost.vetoed"
        self.hub.accept(Event(type=etype, data={"proposal": pid, "by": by}, id=new_id(), ts=time.time(), src="operator"))
        self.log(f"proposal {pid} ({proposal.get('from') or '-'} → {proposal.get('to')}) {etype.split('.')[1]} by {by}")
        return json_response(self._proposal_now(self.proposals[pid], time.time()))
