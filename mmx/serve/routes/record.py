"""Recording: ``POST /v1/record/start``, ``POST /v1/record/stop``, ``GET /v1/record``.

A take is armed with every production session by default (``mmx serve --no-record`` turns
that off) and disarmed just before the session ends; these routes start and stop one by hand
(a rehearsal, or a take inside a session recorded without the default). The files, events and
disk rules are in `mmx.serve.recording`.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from mmx.serve.api import ApiError, json_response, read_json


class RecordRoutes:
    """The recording routes and the session hooks (mixed into `Server`)."""

    def _add_record_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/record", self._record_get)
        r.add_post("/v1/record/start", self._record_start)
        r.add_post("/v1/record/stop", self._record_stop)

    async def _record_get(self, request: web.Request) -> web.Response:
        return json_response(self.recording.status())

    async def _record_start(self, request: web.Request) -> web.Response:
        await read_json(request)
        if self.recording.armed:
            take = self.recording.take
            raise ApiError(409, f"already recording (take {take.take})", take=take.take)
        disk = self.recording.sample_disk()
        if disk["free_bytes"] is not None and disk["free_bytes"] < self.recording.min_free_bytes:
            raise ApiError(507, f"not enough disk space to record: {disk['free_bytes']} bytes free, "
                                f"{self.recording.min_free_bytes} kept in reserve")  # fmt: skip
        try:
            data = self._arm_recording("operator")
        except OSError as exc:
            raise ApiError(500, f"cannot create the video directory: {exc.strerror}") from None
        return json_response(self.recording.status() | {"armed_event": data}, 201)

    async def _record_stop(self, request: web.Request) -> web.Response:
        await read_json(request)
        if not self.recording.armed:
            raise ApiError(409, "not recording")
        take = self.recording.take.take
        stopped = await self.recording.disarm("operator")
        return json_response({"take": take, "stopped": stopped})

    def _arm_recording(self, reason: str) -> dict[str, Any]:
        """Arm a take: into the active session's ``video/`` (time zero: the session start),
        else into a new ``DATA/recordings/<id>/video/`` (time zero: now)."""
        if self.capture is not None:
            started = (self.session_info or {}).get("started_at") or time.time()
            return self.recording.arm(session=self.capture.session, video_dir=self.capture.path / "video",
                                      origin_ts=started, reason=reason)  # fmt: skip
        return self.recording.arm(session=None, video_dir=self.recording.take_dir(), origin_ts=time.time(),
                                  reason=reason)  # fmt: skip

    async def _stop_recording(self, reason: str, *, session: str | None = None) -> None:
        """Disarm the take (when ``session`` is given: only a take of that session)."""
        take = self.recording.take
        if take is None or (session is not None and take.session != session):
            return
        await self.recording.disarm(reason)
