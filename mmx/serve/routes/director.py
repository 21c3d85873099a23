"""The director: cut, hold, release and mode. What is on program is the server's alone."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mmx.serve.api import ApiError, json_response, read_json
from mmx.serve.config import MODES
from mmx.serve.limits import MAX_NAME
from mmx.serve.registry import Camera


class DirectorRoutes:
    """``/v1/director/*`` and the cut logic (mixed into `Server`)."""

    def _add_director_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/director/{action}", self._director)
        r.add_get("/v1/director", self._director_get)

    async def _director_get(self, request: web.Request) -> web.Response:
        return json_response(self.director_state())

    async def _director(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await read_json(request)
        by = body.get("by", "")
        if not isinstance(by, str):  # {} or 0 once became "operator" unseen
            raise ApiError(400, "by must be a string")
        by = by or "operator"
        if len(by) > MAX_NAME or len(str(body.get("proposal") or "")) > MAX_NAME:
            raise ApiError(422, f"by and proposal are at most {MAX_NAME} characters")
        if action == "cut":
            if "to" not in body:
                raise ApiError(400, "a cut needs 'to': the camera to put on program")
            to, proposal = body.get("to"), body.get("proposal")
            if to is not None and not isinstance(to, str):
                raise ApiError(400, "to must be a camera id or null")
            if proposal is not None and not isinstance(proposal, str):
                raise ApiError(400, "proposal must be a string")
            self.cut(to, by=by, proposal=proposal, force=bool(body.get("force")))
        elif action == "hold":
            camera = body.get("camera") or self.program
            if camera is None:
                raise ApiError(409, "nothing is on program to hold; give a camera")
            if not isinstance(camera, str):
                raise ApiError(400, "camera must be a camera id")
            cam = self._camera(camera)
            if not cam.live:
                raise ApiError(409, f"{camera} is not connected")
            if self.hold is not None and self.hold != camera and not body.get("force"):
                raise ApiError(423, f"program is held on {self.hold}; release it or hold with force")
            if camera != self.program:
                self.cut(camera, by=by, force=True)
            if self.hold != camera:
                self.hold = camera
                self.hub.emit("director.hold", {"camera": camera, "by": by})
                self.log(f"hold on {camera} ({by})")
        elif action == "release":
            if self.hold is not None:
                camera, self.hold = self.hold, None
                self.hub.emit("director.release", {"camera": camera, "by": by})
                self.log(f"hold on {camera} released ({by})")
        elif action == "mode":
            mode = body.get("mode")
            if mode not in MODES:
                raise ApiError(422, f"unknown mode {mode!r}: use {', '.join(MODES)}")
            if mode != self.mode:
                previous, self.mode = self.mode, mode
                self.hub.emit("director.mode", {"mode": mode, "previous": previous, "by": by})
                self.log(f"mode {previous} → {mode}")
        else:
            raise ApiError(404, f"unknown director action {action!r}: use cut, hold, release or mode")
        return json_response(self.director_state())

    def cut(self, to: str | None, *, by: str = "operator", proposal: str | None = None, force: bool = False,
            reason: str | None = None) -> bool:  # fmt: skip
        """Put ``to`` on program (None: nothing). Raises ApiError 404/409/423. True when it changed."""
        if to is not None:
            cam = self._camera(to)
            if not cam.live:
                raise ApiError(409, f"{to} is not connected")
        if self.hold is not None and to != self.hold and not force:
            raise ApiError(423, f"program is held on {self.hold}; release it or cut with force")
        if to == self.program:
            return False
        previous, self.program = self.program, to
        data: dict[str, Any] = {"from": previous, "to": to, "by": by}
        if proposal is not None:
            data["proposal"] = proposal
        if reason is not None:
            data["reason"] = reason
        if force:
            data["force"] = True
        self.hub.emit("director.cut", data)
        self._bump("director.cut")
        for camera_id in (previous, to):
            other = self.registry.get(camera_id) if camera_id else None
            if other is not None and other.live:
                self._send_soon(other, {"t": "tally", "program": other.camera == to,
                                        "preview": other.camera != to and other.camera == self.tally_preview})
        self.log(f"cut {previous or '-'} → {to or '-'} ({by})")
        return True

    def _bump(self, etype: str) -> None:
        if self.capture is not None:
            self._session_counts[etype] = self._session_counts.get(etype, 0) + 1

    def _program_lost(self, cam: Camera) -> None:
        fallback = self.config.fallback_camera
        target = None
        if fallback and fallback != cam.camera:
            fb = self.registry.get(fallback)
            if fb is not None and fb.live:
                target = fallback
        self.hub.emit("director.program_lost", {"camera": cam.camera, "fallback": target, "configured_fallback": fallback})
        self.log(f"program camera {cam.camera} lost; cutting to {target or 'nothing'}")
        self.cut(target, by="serve", force=True, reason="program_lost")
