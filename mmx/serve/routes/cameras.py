"""Cameras: the list, placement and coverage, and the flip/zoom/still commands."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from aiohttp import web

from mmx.errors import EventError
from mmx.events import new_id
from mmx.serve.api import ApiError, cam_order, json_response, read_json, send_json
from mmx.serve.coverage import compute_coverage
from mmx.serve.limits import check_placement_values
from mmx.serve.registry import Camera

COMMANDS = ("flip", "zoom", "still")
#: The paths beside the commands (other methods): a POST there is 405 with their ``Allow``,
#: not an unsupported command (422), and ``Allow`` never lists a POST that would be refused.
NOT_COMMANDS = ("placement", "preview.jpg", "preview.mjpeg")
COMMAND_PATTERN = "(?!(?:" + "|".join(re.escape(n) for n in NOT_COMMANDS) + ")$)[^/]+"


def _field_of(reason: str) -> str | None:
    """The field a refusal names (``placement field 'azimuth_deg' …`` → ``azimuth_deg``)."""
    parts = reason.split("'")
    return parts[1] if len(parts) > 2 else None


class CameraRoutes:
    """``/v1/cameras``, ``/v1/coverage`` and the commands (mixed into `Server`)."""

    def _add_camera_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/coverage", self._coverage)
        r.add_get("/v1/cameras", self._cameras_list)
        r.add_get("/v1/cameras/{camera}", self._camera_get)
        r.add_put("/v1/cameras/{camera}/placement", self._put_placement)
        r.add_post("/v1/cameras/{camera}/{command:" + COMMAND_PATTERN + "}", self._camera_command)

    async def _cameras_list(self, request: web.Request) -> web.Response:
        return json_response([c.public() for c in sorted(self.registry.cameras.values(), key=cam_order)])

    async def _camera_get(self, request: web.Request) -> web.Response:
        return json_response(self._camera(request.match_info["camera"]).public())

    async def _put_placement(self, request: web.Request) -> web.Response:
        cam = self._camera(request.match_info["camera"])
        if not (await request.read()).strip():
            # an empty PUT would clear the placement by accident; clearing it takes an explicit {}
            raise ApiError(400, "PUT placement takes a JSON placement object (send {} to clear it)")
        body = await read_json(request)
        placement = body.get("placement", body) if isinstance(body.get("placement"), dict) else body
        try:
            check_placement_values(placement)
        except EventError as exc:
            raise ApiError(422, exc.reason, field=_field_of(exc.reason)) from None
        placement = {k: v for k, v in placement.items() if v is not None}
        await self.set_placement(cam, placement)
        return json_response(cam.public())

    async def set_placement(self, cam: Camera, placement: dict[str, Any]) -> None:
        """Store ``placement`` for the camera's device (persisted), tell the device and emit."""
        cam.placement = dict(placement)
        await self.persist_registry()
        self.hub.emit("camera.changed", {"camera": cam.camera, "placement": cam.placement})
        if cam.live:
            self._send_soon(cam, {"t": "placement", "placement": cam.placement})
        self._update_session_cameras()

    async def _coverage(self, request: web.Request) -> web.Response:
        include_lost = request.query.get("all", "0").lower() in ("1", "true", "yes")
        cams = [c for c in sorted(self.registry.cameras.values(), key=cam_order) if include_lost or c.live]
        out = compute_coverage([(c.camera, c.placement) for c in cams], duplicate_angle_deg=self.config.duplicate_angle_deg,
                               zooms={c.camera: c.zoom for c in cams},
                               device_fovs={c.camera: c.capabilities.get("fov_deg") for c in cams})  # fmt: skip
        out["cameras"] = [c.camera for c in cams]
        return json_response(out)

    async def _camera_command(self, request: web.Request) -> web.Response:
        camera, command = request.match_info["camera"], request.match_info["command"]
        body = await read_json(request)
        return json_response(await self.command(camera, command, body))

    async def command(self, camera_id: str, command: str, args: dict[str, Any]) -> dict[str, Any]:
        """Send ``command`` to a camera and wait for its ack.

        Returns the ack summary ``{"camera", "command_id", "command", "args", "ok", "error",
        "latency_ms", "facing", "zoom"}``. Raises ApiError 404 (unknown camera), 409 (not
        connected, or disconnected before acking), 422 (unsupported command or lens, or the
        device refused), 504 (no ack within ``ack_timeout_s``).
        """
        cam = self._camera(camera_id)
        if command not in COMMANDS:
            raise ApiError(422, f"unsupported command {command!r}: use {', '.join(COMMANDS)}")
        if not cam.live or cam.ws is None:
            raise ApiError(409, f"{camera_id} is not connected")
        if command == "zoom":
            args = {"zoom": args.get("zoom")}
            refusal = cam.zoom_refusal(args["zoom"])
            if refusal:
                raise ApiError(422, refusal)
        elif command == "flip":
            args = {}
            if len(cam.facings) < 2:
                raise ApiError(422, f"{camera_id} has only one facing ({', '.join(cam.facings) or 'unknown'}); it cannot flip")
        elif command == "still":
            args = {}
            if cam.capabilities.get("still") is False:
                raise ApiError(422, f"{camera_id} cannot take stills")
        command_id = new_id()
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        cam.pending[command_id] = future
        ws = cam.ws
        self.hub.emit("camera.command", {"camera": camera_id, "command_id": command_id, "command": command, "args": args})
        sent = time.perf_counter()
        try:
            if not await send_json(ws, {"t": "command", "command_id": command_id, "command": command, "args": args}):
                raise ConnectionError("send failed")
            ack = await asyncio.wait_for(future, self.config.ack_timeout_s)
        except TimeoutError:
            self.hub.emit("camera.ack", {"camera": camera_id, "command_id": command_id, "command": command, "ok": False,
                                         "error": "timeout", "latency_ms": None})  # fmt: skip
            raise ApiError(504, f"{camera_id} did not ack {command} within {self.config.ack_timeout_s:g} s",
                           camera=camera_id, command_id=command_id, command=command) from None  # fmt: skip
        except ConnectionError:
            self.hub.emit("camera.ack", {"camera": camera_id, "command_id": command_id, "command": command, "ok": False,
                                         "error": "disconnected", "latency_ms": None})  # fmt: skip
            raise ApiError(409, f"{camera_id} disconnected before acking {command}",
                           camera=camera_id, command_id=command_id, command=command) from None  # fmt: skip
        finally:
            cam.pending.pop(command_id, None)
        latency_ms = round((time.perf_counter() - sent) * 1000, 3)
        ok = ack.get("ok") is True
        error = ack.get("error") if isinstance(ack.get("error"), str) else None
        self.hub.emit("camera.ack", {"camera": camera_id, "command_id": command_id, "command": command, "ok": ok,
                                     "error": error, "latency_ms": latency_ms})  # fmt: skip
        if isinstance(ack.get("state"), dict):
            self._apply_state(cam, ack["state"])
        result = {"camera": camera_id, "command_id": command_id, "command": command, "args": args, "ok": ok,
                  "error": error, "latency_ms": latency_ms, "facing": cam.facing, "zoom": cam.zoom}  # fmt: skip
        if command == "still":
            result["still"] = command_id
            stored = self._stills.get(f"{camera_id}/{command_id}")
            if stored:
                result.update(path=stored["path"], sha256=stored["sha256"], bytes=stored["bytes"])
        if not ok:
            raise ApiError(422, error or f"{camera_id} refused {command}", **{k: v for k, v in result.items() if k != "error"})
        return result
