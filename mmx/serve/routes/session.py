"""Production sessions: ``/v1/session`` start, stop and state; one capture directory each."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from mmx import __version__
from mmx.errors import MmxError
from mmx.events import new_id
from mmx.serve.api import ApiError, cam_order, id_order, json_response, read_json
from mmx.serve.capture import CaptureDir
from mmx.serve.limits import MAX_TEXT


class SessionRoutes:
    """Session start/stop (mixed into `Server`)."""

    def _add_session_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/session/start", self._session_start)
        r.add_post("/v1/session/stop", self._session_stop)
        r.add_get("/v1/session", self._session_get)

    async def _session_get(self, request: web.Request) -> web.Response:
        return json_response(self.session_info)

    async def _session_start(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        if self.capture is not None:
            raise ApiError(409, f"session {self.capture.session} is already active; stop it first", session=self.capture.session)
        title, notes = body.get("title"), body.get("notes")
        for name, value in (("title", title), ("notes", notes)):
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"{name} must be a string")
            if value is not None and len(value) > MAX_TEXT:
                raise ApiError(422, f"{name} is longer than {MAX_TEXT} characters")
        await self._stop_recording("session_started")  # a rehearsal take ends where the session begins
        return json_response(self.start_session(title=title or "", notes=notes or ""), 201)

    def start_session(self, *, title: str = "", notes: str = "") -> dict[str, Any]:
        """Open a capture directory, emit ``session.started`` (and ``camera.joined`` per live camera)."""
        sid = new_id()
        now = time.time()
        cameras = [c.identity() for c in self.registry.live()]
        meta = {"session": sid, "kind": "photoshoot_performance", "title": title, "notes": notes,
                "mode": self.mode, "status": "active", "started_at": now, "ended_at": None, "end_reason": None,
                "server": {"version": __version__, "url": self.url}, "cameras": cameras,
                "clock": self._clock_facts(), "events": "events.jsonl", "stills": "stills"}  # fmt: skip
        self.capture = CaptureDir(self.data_dir, sid, meta)
        self._session_counts = {}
        self.hub.session = sid
        self.session_info = {"session": sid, "title": title, "notes": notes, "started_at": now,
                             "path": str(self.capture.path), "status": "active"}  # fmt: skip
        self.hub.emit("session.started", {"kind": "photoshoot_performance", "title": title, "notes": notes,
                                          "mode": self.mode, "program": self.program, "cameras": cameras})  # fmt: skip
        for cam in self.registry.live():
            # cameras connected before the session started join it now, so the session's
            # own record (ledger projections, capture file) lists them
            self.hub.emit("camera.joined", {**cam.identity(), "reason": "session"})
        for cam in self.registry.live():
            self._send_soon(cam, {"t": "session", "session": sid})
        if self.config.record and not self.recording.armed:
            try:
                self._arm_recording("session")
            except OSError as exc:
                self.log(f"error: cannot record session {sid}: {exc.strerror}")
        self.log(f"session {sid} started{': ' + title if title else ''}")
        return dict(self.session_info)

    async def _session_stop(self, request: web.Request) -> web.Response:
        await read_json(request)
        if self.capture is None:
            raise ApiError(409, "no session is active")
        await self._stop_recording("session_ended", session=self.capture.session)
        if self.capture is None:  # ended meanwhile by a concurrent stop
            raise ApiError(409, "no session is active")
        return json_response(self._end_session("operator"))

    def _end_session(self, reason: str) -> dict[str, Any]:
        capture = self.capture
        assert capture is not None
        summary = {"program": self.program, "hold": self.hold, "mode": self.mode,
                   "cameras": [c.identity() for c in sorted(self.registry.cameras.values(), key=cam_order)],
                   "cuts": self._session_counts.get("director.cut", 0), "stills": self._session_counts.get("still.captured", 0),
                   "events": capture.events + 1}  # fmt: skip
        event = self.hub.emit("session.ended", {"reason": reason, "state": summary})
        self.capture = None
        self.hub.session = None
        info = dict(self.session_info or {}, status="completed", ended_at=event.ts, end_reason=reason,
                    events=capture.events, stills=summary["stills"], cuts=summary["cuts"])  # fmt: skip
        self.session_info = None
        try:
            capture.close(status="completed", ended_at=event.ts, end_reason=reason, mode=self.mode,
                          cameras=summary["cameras"], clock=self._clock_facts(), summary=summary)  # fmt: skip
        except (OSError, MmxError) as exc:
            self.log(f"error: cannot finish the capture directory {capture.path}: {exc}")
        for cam in self.registry.live():
            self._send_soon(cam, {"t": "session", "session": None})
        self.log(f"session {capture.session} ended ({reason}): {capture.events} events, {summary['stills']} stills")
        return info

    def _clock_facts(self) -> dict[str, Any]:
        return {"reference": "server", "cameras": {c.camera: c.clock.facts() for c in self.registry.cameras.values()}}

    def _update_session_cameras(self) -> None:
        if self.capture is None:
            return
        known = {c["camera"]: c for c in self.capture.meta.get("cameras", [])}
        for cam in self.registry.cameras.values():
            if cam.live or cam.camera in known:
                known[cam.camera] = cam.identity()
        capture = self.capture
        version, body = capture.meta_snapshot(cameras=sorted(known.values(), key=lambda c: id_order(c["camera"])),
                                              clock=self._clock_facts())  # fmt: skip

        async def write() -> None:
            try:
                await asyncio.to_thread(capture.meta_file.write, version, body)
            except MmxError as exc:
                self.log(f"error: {exc.message}")

        self._spawn(write())
