"""`Server`: the aiohttp application of `mmx serve`, the single authority over live state.

It holds the device registry, the director state (program, hold, mode), the active
production session and the event hub, and serves the HTTP API of DESIGN.md plus the device
WebSocket of docs/device-protocol.md. Library code: it never prints; human log lines go to
the ``log`` callback and events to the hub's sinks.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from mmx import __version__
from mmx.errors import EventError, IOFailure, MmxError
from mmx.events import JOINT_NAMES, Event, check_placement, from_dict, new_id
from mmx.serve.capture import SESSIONS_DIR, CaptureDir, unfinished_sessions
from mmx.serve.config import MODES, ServeConfig
from mmx.serve.coverage import compute_coverage
from mmx.serve.hub import EventHub, TypeFilter, last_seq_in
from mmx.fileio import atomic_write, fsync_dir
from mmx.serve.registry import Camera, ClockOffset, Registry
from mmx.serve.stills import SAFE_ID, SHA256_HEX, STILL_TYPES, jpeg_size

#: Event types only the server makes; `POST /v1/events` refuses them (use the endpoints).
SERVER_TYPES = frozenset({
    "session.started", "session.ended", "camera.joined", "camera.left", "camera.changed",
    "camera.command", "camera.ack", "director.cut", "director.hold", "director.release",
    "director.mode", "director.program_lost", "still.captured", "pose.sample",
})  # fmt: skip
COMMANDS = ("flip", "zoom", "still")
MJPEG_BOUNDARY = "mmxframe"
#: WebSocket close codes of docs/device-protocol.md (4xxx: application-defined).
CLOSE_BAD_TOKEN = 4401
CLOSE_BAD_HELLO = 4400
CLOSE_TIMEOUT = 4408
CLOSE_REPLACED = 4409
#: Posted event ids remembered for deduplication (a re-post is acknowledged, not re-broadcast).
POSTED_IDS_KEPT = 50_000
#: A still id → its stored file, for the still command's answer and duplicate checks.
STILLS_KEPT = 10_000

Log = Callable[[str], None]


class ApiError(Exception):
    """An HTTP error answer: ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


def _wire(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


class Server:
    """One running `mmx serve`.

    Use ``await start()`` (returns the URL), then ``await stop()``; or `run` for both around
    a stop event. ``log`` receives one-line human messages (joins, cuts, errors).
    """

    def __init__(self, config: ServeConfig, *, log: Log | None = None) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir)
        try:
            (self.data_dir / SESSIONS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IOFailure(f"cannot create the data directory {self.data_dir}: {exc.strerror}") from None
        self.registry = Registry(self.data_dir)
        start_seq = max([self.registry.last_seq] + [last_seq_in(p) for p in (self.data_dir / SESSIONS_DIR).glob("*/events.jsonl")])
        self.hub = EventHub(start_seq=start_seq, ring_size=config.ring_size, pose_ring_size=config.pose_ring_size,
                            archive=self.data_dir / SESSIONS_DIR)  # fmt: skip
        self.hub.add_sink(self._capture_sink)
        self.log: Log = log or (lambda _msg: None)
        self.program: str | None = None
        self.hold: str | None = None
        self.mode = "manual"
        self.capture: CaptureDir | None = None
        self.session_info: dict[str, Any] | None = None
        self._session_counts: dict[str, int] = {}
        self.closing = asyncio.Event()
        self.url: str | None = None
        self.port: int | None = None
        self.started_at = time.time()
        self._posted: OrderedDict[str, int] = OrderedDict()
        self._stills: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._still_locks: dict[str, asyncio.Lock] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task | None = None
        self._token = config.token.encode()
        self._stopped = False

    # ------------------------------------------------------------------------------------
    # lifecycle

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_middleware, self._auth_middleware],
                              client_max_size=1 << 20)  # fmt: skip
        r = app.router
        r.add_get("/v1/state", self._get_state)
        r.add_get("/v1/events", self._get_events)
        r.add_post("/v1/events", self._post_event)
        r.add_post("/v1/session/start", self._session_start)
        r.add_post("/v1/session/stop", self._session_stop)
        r.add_get("/v1/session", self._session_get)
        r.add_post("/v1/director/{action}", self._director)
        r.add_get("/v1/director", self._director_get)
        r.add_get("/v1/coverage", self._coverage)
        r.add_get("/v1/cameras", self._cameras_list)
        r.add_get("/v1/cameras/{camera}", self._camera_get)
        r.add_put("/v1/cameras/{camera}/placement", self._put_placement)
        r.add_get("/v1/cameras/{camera}/preview.mjpeg", self._preview_mjpeg)
        r.add_get("/v1/cameras/{camera}/preview.jpg", self._preview_jpg)
        r.add_post("/v1/cameras/{camera}/{command}", self._camera_command)
        r.add_post("/v1/stills", self._post_still)
        r.add_get("/v1/devices/ws", self._device_ws)
        return app

    async def start(self) -> str:
        """Bind and start serving; returns ``http://HOST:PORT``. Raises IOFailure when the port is taken."""
        self._recover_sessions()
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise IOFailure(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}",
                            hint="pick another --port, or stop the server already using it") from None  # fmt: skip
        addresses = self._runner.addresses
        self.port = addresses[0][1] if addresses else self.config.port
        self.url = f"http://{self.config.host}:{self.port}"
        self._watchdog = asyncio.create_task(self._watch())
        return self.url

    async def stop(self, reason: str = "shutdown") -> None:
        """End the active session (``reason``), close devices and streams, flush and save."""
        if self._stopped:
            return
        self._stopped = True
        self.closing.set()
        for cam in self.registry.cameras.values():
            cam.wake_viewers()
        if self.capture is not None:
            self._end_session(reason)
        await asyncio.gather(*(self._close_ws(ws, 1001, "server shutting down") for ws in list(self._sockets)))
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._tasks:
            # let pending file writes and device messages finish, briefly
            await asyncio.wait(list(self._tasks), timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        try:
            self.registry.save(last_seq=self.hub.seq)
        except MmxError as exc:
            self.log(f"error: {exc.message}")

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], Any] | None = None) -> None:
        """Start, call ``on_ready(url)``, serve until ``stop`` is set, then stop cleanly."""
        url = await self.start()
        try:
            if on_ready is not None:
                on_ready(url)
            await stop.wait()
        finally:
            await self.stop("shutdown")

    def _recover_sessions(self) -> None:
        """Close sessions a crashed run left ``active``: ``session.ended`` with reason ``recovered``."""
        for path, meta in unfinished_sessions(self.data_dir):
            sid = meta.get("session") or path.name
            event = self.hub.emit("session.ended", {"reason": "recovered", "state": None}, session=sid)
            try:
                with open(path / "events.jsonl", "a+b") as fp:
                    fp.seek(0, os.SEEK_END)
                    if fp.tell():
                        fp.seek(-1, os.SEEK_END)
                        if fp.read(1) != b"\n":
                            fp.write(b"\n")  # a torn last line of the crash stays apart from ours
                    fp.write(event.encode() + b"\n")
                    fp.flush()
                    os.fsync(fp.fileno())
                meta.update(status="completed", ended_at=event.ts, end_reason="recovered")
                atomic_write(path / "session.json", orjson.dumps(meta, option=orjson.OPT_INDENT_2) + b"\n")
            except (OSError, MmxError) as exc:
                self.log(f"error: cannot close the crashed session {sid}: {exc}")
                continue
            self.log(f"session {sid} was left active by an earlier run: ended (recovered)")

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """Mark silent devices lost and fsync the capture file, a few times a second."""
        period = max(0.05, min(0.25, self.config.device_timeout_s / 4))
        saved_seq, saved_at = self.hub.seq, time.monotonic()
        while not self.closing.is_set():
            await asyncio.sleep(period)
            now = time.time()
            if self.hub.seq != saved_seq and time.monotonic() - saved_at >= 5.0:
                # keep the persisted seq close, so a crashed run's successor never reuses seqs
                # of events that only went to stdout (those in capture files are found anyway)
                saved_seq, saved_at = self.hub.seq, time.monotonic()
                self._spawn(self.persist_registry())
            for cam in self.registry.live():
                if cam.last_seen is not None and now - cam.last_seen > self.config.device_timeout_s:
                    ws = cam.ws
                    self._leave(cam, "timeout")
                    if ws is not None:
                        self._spawn(self._close_ws(ws, CLOSE_TIMEOUT, "timeout: nothing received"))
            capture = self.capture
            if capture is not None:
                try:
                    await asyncio.to_thread(capture.sync)
                except OSError as exc:
                    self.log(f"error: cannot fsync the capture file: {exc.strerror}")

    async def persist_registry(self) -> None:
        """Write the registry file off the event loop (coalesced; the newest snapshot wins)."""
        version, body = self.registry.snapshot(self.hub.seq)
        try:
            await asyncio.to_thread(self.registry.file.write, version, body)
        except MmxError as exc:
            self.log(f"error: {exc.message}")

    async def _close_ws(self, ws: web.WebSocketResponse, code: int, message: str) -> None:
        try:
            await asyncio.wait_for(ws.close(code=code, message=message.encode()[:120]), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass

    # ------------------------------------------------------------------------------------
    # middleware

    @web.middleware
    async def _errors_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            headers = {"WWW-Authenticate": 'Bearer realm="mmx"'} if exc.status == 401 else None
            return _json({"error": exc.message, **exc.extra}, exc.status, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(exc.status, exc.reason)
            return _json({"error": f"{text}: {request.method} {request.path}"}, exc.status)
        except MmxError as exc:
            self.log(f"error: {request.method} {request.path}: {exc.message}")
            return _json({"error": exc.message}, 500)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            self.log(f"internal error: {request.method} {request.path}: {type(exc).__name__}: {exc}")
            return _json({"error": f"internal error: {type(exc).__name__}"}, 500)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = None
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif "token" in request.query:
            given = request.query["token"]
        if not given:
            raise ApiError(401, "missing token: send 'Authorization: Bearer <token>' or ?token=<token>")
        if not hmac.compare_digest(given.encode(), self._token):
            raise ApiError(401, "wrong token")
        return await handler(request)

    # ------------------------------------------------------------------------------------
    # state

    def state(self) -> dict[str, Any]:
        """The ``GET /v1/state`` answer of DESIGN.md (plus ``seq``, ``session_info``, ``server``)."""
        return {
            "session": self.capture.session if self.capture else None,
            "program": self.program, "hold": self.hold, "mode": self.mode,
            "cameras": [c.public() for c in sorted(self.registry.cameras.values(), key=_cam_order)],
            "seq": self.hub.seq, "session_info": self.session_info,
            "server": {"version": __version__, "url": self.url, "started_at": self.started_at,
                       "event_subscribers": self.hub.subscribers, "event_lag_recoveries": self.hub.lag_recoveries},
        }  # fmt: skip

    def director_state(self) -> dict[str, Any]:
        return {"program": self.program, "hold": self.hold, "mode": self.mode}

    async def _get_state(self, request: web.Request) -> web.Response:
        return _json(self.state())

    def _camera(self, camera_id: str) -> Camera:
        cam = self.registry.get(camera_id)
        if cam is None:
            raise ApiError(404, f"unknown camera {camera_id!r}", cameras=sorted(self.registry.cameras, key=_id_order))
        return cam

    async def _cameras_list(self, request: web.Request) -> web.Response:
        return _json([c.public() for c in sorted(self.registry.cameras.values(), key=_cam_order)])

    async def _camera_get(self, request: web.Request) -> web.Response:
        return _json(self._camera(request.match_info["camera"]).public())

    # ------------------------------------------------------------------------------------
    # events

    def _capture_sink(self, event: Event, line: bytes) -> None:
        if self.capture is not None and event.session == self.capture.session:
            try:
                self.capture.write(line)
            except OSError as exc:
                self.log(f"error: cannot write {self.capture.path / 'events.jsonl'}: {exc.strerror}")

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        since_text = request.query.get("since")
        since: int | None = None
        if since_text not in (None, ""):
            try:
                since = int(since_text)
            except ValueError:
                raise ApiError(400, f"since must be a whole number (an event seq), got {since_text!r}") from None
            if since < 0:
                raise ApiError(400, "since must not be negative")
        follow = request.query.get("follow", "1").lower() not in ("0", "false", "no")
        type_filter = TypeFilter(request.query.get("types"))
        sub = self.hub.subscribe(type_filter, self.config.stream_queue_size) if follow else None
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            # a since beyond the newest seq (a reader of an older data directory) starts now
            last = self.hub.seq if since is None else min(since, self.hub.seq)
            if since is not None:
                last = await self._write_events(resp, self.hub.history(since, type_filter), last)
            while sub is not None and not self.closing.is_set():
                if sub.lagged:
                    sub.lagged = False
                    self.hub.lag_recoveries += 1
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    last = await self._write_events(resp, self.hub.history(last, type_filter), last)
                    continue
                try:
                    event = await asyncio.wait_for(sub.queue.get(), 0.5)
                except TimeoutError:
                    continue
                batch = [event]
                while not sub.queue.empty() and len(batch) < 256:
                    batch.append(sub.queue.get_nowait())
                last = await self._write_events(resp, batch, last)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)
        return resp

    async def _write_events(self, resp: web.StreamResponse, events: list[Event], last: int) -> int:
        chunk: list[bytes] = []
        for event in events:
            if (event.seq or 0) <= last:
                continue
            chunk.append(event.encode() + b"\n")
            last = event.seq or last
            if len(chunk) >= 512:
                await resp.write(b"".join(chunk))
                chunk = []
        if chunk:
            await resp.write(b"".join(chunk))
        return last

    async def _post_event(self, request: web.Request) -> web.Response:
        obj = await _read_json(request)
        etype = obj.get("type")
        if not isinstance(etype, str) or not etype:
            raise ApiError(400, "the event needs a non-empty string 'type'")
        if etype in SERVER_TYPES:
            raise ApiError(422, f"{etype} is made by the server itself; use its endpoint instead of POST /v1/events")
        obj = dict(obj)
        obj.setdefault("id", new_id())
        if obj.get("ts") is None:
            obj["ts"] = time.time()
        if not obj.get("src"):
            obj["src"] = "operator"
        try:
            event = from_dict(obj)
        except EventError as exc:
            raise ApiError(400, exc.reason) from None
        if event.id in self._posted:
            return _json({"id": event.id, "seq": self._posted[event.id], "duplicate": True}, 202)
        published = self.hub.accept(event)
        self._posted[event.id] = published.seq or 0
        while len(self._posted) > POSTED_IDS_KEPT:
            self._posted.popitem(last=False)
        return _json({"id": published.id, "seq": published.seq, "session": published.session, "duplicate": False}, 202)

    # ------------------------------------------------------------------------------------
    # session

    async def _session_get(self, request: web.Request) -> web.Response:
        return _json(self.session_info)

    async def _session_start(self, request: web.Request) -> web.Response:
        body = await _read_json(request)
        if self.capture is not None:
            raise ApiError(409, f"session {self.capture.session} is already active; stop it first", session=self.capture.session)
        title, notes = body.get("title"), body.get("notes")
        for name, value in (("title", title), ("notes", notes)):
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"{name} must be a string")
        return _json(self.start_session(title=title or "", notes=notes or ""), 201)

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
        self.log(f"session {sid} started{': ' + title if title else ''}")
        return dict(self.session_info)

    async def _session_stop(self, request: web.Request) -> web.Response:
        await _read_json(request)
        if self.capture is None:
            raise ApiError(409, "no session is active")
        return _json(self._end_session("operator"))

    def _end_session(self, reason: str) -> dict[str, Any]:
        capture = self.capture
        assert capture is not None
        summary = {"program": self.program, "hold": self.hold, "mode": self.mode,
                   "cameras": [c.identity() for c in sorted(self.registry.cameras.values(), key=_cam_order)],
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
        version, body = capture.meta_snapshot(cameras=sorted(known.values(), key=lambda c: _id_order(c["camera"])),
                                              clock=self._clock_facts())  # fmt: skip

        async def write() -> None:
            try:
                await asyncio.to_thread(capture.meta_file.write, version, body)
            except MmxError as exc:
                self.log(f"error: {exc.message}")

        self._spawn(write())

    # ------------------------------------------------------------------------------------
    # director

    async def _director_get(self, request: web.Request) -> web.Response:
        return _json(self.director_state())

    async def _director(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await _read_json(request)
        by = body.get("by") or "operator"
        if not isinstance(by, str):
            raise ApiError(400, "by must be a string")
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
        return _json(self.director_state())

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
                self._send_soon(other, {"t": "tally", "program": other.camera == to, "preview": False})
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

    # ------------------------------------------------------------------------------------
    # placement and coverage

    async def _put_placement(self, request: web.Request) -> web.Response:
        cam = self._camera(request.match_info["camera"])
        body = await _read_json(request)
        placement = body.get("placement", body) if isinstance(body.get("placement"), dict) else body
        try:
            check_placement(placement)
        except EventError as exc:
            raise ApiError(400, exc.reason) from None
        placement = {k: v for k, v in placement.items() if v is not None}
        await self.set_placement(cam, placement)
        return _json(cam.public())

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
        cams = [c for c in sorted(self.registry.cameras.values(), key=_cam_order) if include_lost or c.live]
        out = compute_coverage([(c.camera, c.placement) for c in cams], duplicate_angle_deg=self.config.duplicate_angle_deg)
        out["cameras"] = [c.camera for c in cams]
        return _json(out)

    # ------------------------------------------------------------------------------------
    # commands

    async def _camera_command(self, request: web.Request) -> web.Response:
        camera, command = request.match_info["camera"], request.match_info["command"]
        body = await _read_json(request)
        return _json(await self.command(camera, command, body))

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
            if not await _send(ws, {"t": "command", "command_id": command_id, "command": command, "args": args}):
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

    # ------------------------------------------------------------------------------------
    # devices

    async def _device_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.config.max_preview_bytes, timeout=2.0, heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        cam: Camera | None = None
        try:
            hello = await self._read_hello(ws)
            if hello is None:
                return ws
            cam, changed = self._join(ws, hello)
            if changed:
                # the camera id is durable before the device hears it
                await self.persist_registry()
            welcome = {"t": "welcome", "camera": cam.camera, "session": self.capture.session if self.capture else None,
                       "placement": cam.placement, "heartbeat_s": self.config.heartbeat_s,
                       "timeout_s": self.config.device_timeout_s, "server_time": time.time(),
                       "program": self.program == cam.camera, "clock_offset_s": cam.clock.offset_s}  # fmt: skip
            await _send(ws, welcome)
            async for msg in ws:
                if cam.ws is not ws:  # timed out or replaced by a newer connection
                    break
                now = time.time()
                cam.last_seen = now
                try:
                    if msg.type == WSMsgType.TEXT:
                        await self._on_text(cam, ws, msg.data, now)
                    elif msg.type == WSMsgType.BINARY:
                        await self._on_frame(cam, ws, msg.data, now)
                    elif msg.type == WSMsgType.ERROR:
                        break
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # noqa: BLE001 - one bad message must not drop the camera
                    self.log(f"internal error on {cam.camera}'s message: {type(exc).__name__}: {exc}")
                    await _send(ws, {"t": "error", "error": f"line: internal error: {type(exc).__name__}", "ref": None})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sockets.discard(ws)
            if cam is not None and cam.ws is ws:
                self._leave(cam, "shutdown" if self.closing.is_set() else "disconnected")
        return ws

    async def _read_hello(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        async def refuse(message: str, code: int, ref: Any = None) -> None:
            await _send(ws, {"t": "error", "error": message, "ref": ref})
            await self._close_ws(ws, code, message)

        try:
            msg = await ws.receive(timeout=self.config.device_timeout_s)
        except TimeoutError:
            await refuse(f"no hello within {self.config.device_timeout_s:g} s", CLOSE_BAD_HELLO)
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type != WSMsgType.TEXT:
            await refuse("hello: the first message must be a JSON hello, not binary", CLOSE_BAD_HELLO)
            return None
        try:
            hello = orjson.loads(msg.data)
        except orjson.JSONDecodeError as exc:
            await refuse(f"hello: not JSON: {exc}", CLOSE_BAD_HELLO)
            return None
        if not isinstance(hello, dict) or hello.get("t") != "hello":
            ref = hello.get("t") if isinstance(hello, dict) else None
            await refuse('hello: the first message must be {"t": "hello", ...}', CLOSE_BAD_HELLO, ref)
            return None
        token = hello.get("token")
        if token is not None and (not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token)):
            await refuse("hello: wrong token", CLOSE_BAD_TOKEN, "hello")
            return None
        device = hello.get("device")
        if not isinstance(device, str) or not device.strip() or len(device) > 128:
            await refuse("hello: missing 'device' (a stable device id of 1 to 128 characters)", CLOSE_BAD_HELLO, "hello")
            return None
        for name in ("capabilities", "state", "placement"):
            if hello.get(name) is not None and not isinstance(hello[name], dict):
                await refuse(f"hello: '{name}' must be an object", CLOSE_BAD_HELLO, "hello")
                return None
        if hello.get("placement"):
            try:
                check_placement(hello["placement"])
            except EventError as exc:
                await refuse(f"hello: {exc.reason}", CLOSE_BAD_HELLO, "hello")
                return None
        return hello

    def _join(self, ws: web.WebSocketResponse, hello: dict[str, Any]) -> tuple[Camera, bool]:
        now = time.time()
        cam, new = self.registry.camera_for(hello["device"])
        if cam.live and cam.ws is not None and cam.ws is not ws:
            old = cam.ws
            self._leave(cam, "replaced")
            self._spawn(self._close_ws(old, CLOSE_REPLACED, "replaced by a newer connection of the same device"))
        before = (cam.name, cam.model, dict(cam.placement))
        cam.name = _str(hello.get("name")) or cam.name or hello["device"]
        cam.model = _str(hello.get("model")) or cam.model
        cam.platform = _str(hello.get("platform")) or cam.platform
        cam.app = _str(hello.get("app")) or cam.app
        cam.capabilities = dict(hello.get("capabilities") or {})
        state = hello.get("state") or {}
        cam.facing = _str(state.get("facing")) or cam.facing or (cam.facings[0] if cam.facings else None)
        cam.zoom = _num(state.get("zoom"), cam.zoom if cam.zoom is not None else 1)
        cam.battery = _num(state.get("battery"), None)
        cam.thermal = _str(state.get("thermal")) or None
        cam.role = _str(hello.get("role")) or cam.role
        # the server's stored placement (an earlier hello or the operator's PUT) wins;
        # a hello's placement is taken only when the server has none for this device
        if not cam.placement and hello.get("placement"):
            cam.placement = {k: v for k, v in hello["placement"].items() if v is not None}
        cam.clock = ClockOffset()
        cam.clock.add(hello.get("ts"), now)
        cam.ws = ws
        cam.status = "live"
        cam.last_seen = now
        cam.connected_at = now
        self.hub.emit("camera.joined", {**cam.identity(), "platform": cam.platform, "app": cam.app})
        self._update_session_cameras()
        self.log(f"{cam.camera} joined: {cam.name} ({cam.model or 'unknown model'}, device {cam.device})")
        return cam, new or before != (cam.name, cam.model, cam.placement)

    def _leave(self, cam: Camera, reason: str) -> None:
        if not cam.live:
            return
        cam.status = "lost"
        cam.ws = None
        for future in cam.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("camera left"))
        self.hub.emit("camera.left", {"camera": cam.camera, "device": cam.device, "reason": reason})
        self.log(f"{cam.camera} left ({reason})")
        if self.closing.is_set():
            return
        if self.hold == cam.camera:
            self.hold = None
            self.hub.emit("director.release", {"camera": cam.camera, "by": "serve", "reason": "camera_lost"})
        if self.program == cam.camera:
            self._program_lost(cam)

    def _send_soon(self, cam: Camera, msg: dict[str, Any]) -> None:
        if cam.ws is not None:
            self._spawn(_send(cam.ws, msg))

    async def _on_text(self, cam: Camera, ws: web.WebSocketResponse, text: str, now: float) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await _send(ws, {"t": "error", "error": f"line: not JSON: {exc}", "ref": None})
            return
        if not isinstance(msg, dict):
            await _send(ws, {"t": "error", "error": "line: expected a JSON object with a 't' field", "ref": None})
            return
        t = msg.get("t")
        try:
            if t == "heartbeat":
                cam.clock.add(msg.get("ts"), now)
                if msg.get("battery") is not None or msg.get("thermal") is not None:
                    self._apply_state(cam, msg)
            elif t == "state":
                self._apply_state(cam, msg)
            elif t == "pose":
                self._on_pose(cam, msg, now)
            elif t == "ack":
                command_id = msg.get("command_id")
                future = cam.pending.get(command_id) if isinstance(command_id, str) else None
                if future is None:
                    if not isinstance(command_id, str):
                        raise ValueError("ack: missing 'command_id'")
                    return  # a late ack of a command that already timed out
                if not future.done():
                    future.set_result(msg)
            elif t == "still.ready":
                pass  # the upload itself is what counts; this is advance notice only
            elif t == "hello":
                raise ValueError(f"hello: already registered as {cam.camera}")
            else:
                await _send(ws, {"t": "error", "error": f"line: unknown message type {t!r}", "ref": t})
        except ValueError as exc:
            await _send(ws, {"t": "error", "error": f"line: {exc}", "ref": t})

    def _apply_state(self, cam: Camera, state: dict[str, Any]) -> None:
        changed: dict[str, Any] = {}
        facing = state.get("facing")
        if isinstance(facing, str) and facing != cam.facing:
            cam.facing = changed["facing"] = facing
        zoom = state.get("zoom")
        if isinstance(zoom, (int, float)) and not isinstance(zoom, bool) and zoom != cam.zoom:
            cam.zoom = changed["zoom"] = zoom
        if isinstance(state.get("battery"), (int, float)):
            cam.battery = state["battery"]
        if isinstance(state.get("thermal"), str):
            cam.thermal = state["thermal"]
        if changed:
            self.hub.emit("camera.changed", {"camera": cam.camera, **changed})

    def _on_pose(self, cam: Camera, msg: dict[str, Any], now: float) -> None:
        joints = msg.get("joints")
        if joints is not None and not isinstance(joints, dict):
            raise ValueError("pose: 'joints' must be an object of joint name → [x, y, confidence], or null")
        device_ts = msg.get("ts")
        if isinstance(device_ts, bool) or not isinstance(device_ts, (int, float)):
            raise ValueError("pose: missing 'ts' (the capture time, device clock, Unix seconds)")
        if joints:
            unknown = [name for name in joints if name not in _JOINTS]
            if unknown:
                raise ValueError(f"pose: unknown joint {unknown[0]!r}")
        t = cam.clock.to_server(float(device_ts))
        self.hub.emit("pose.sample", {"camera": cam.camera, "t": round(t, 6), "joints": joints,
                                      "device_ts": device_ts, "clock_offset_s": cam.clock.offset_s})  # fmt: skip

    async def _on_frame(self, cam: Camera, ws: web.WebSocketResponse, data: bytes, now: float) -> None:
        if data[:2] != b"\xff\xd8":
            await _send(ws, {"t": "error", "error": "line: a binary message must be a JPEG preview frame", "ref": None})
            return
        cam.set_frame(bytes(data), now)

    # ------------------------------------------------------------------------------------
    # preview

    async def _preview_jpg(self, request: web.Request) -> web.Response:
        cam = self._camera(request.match_info["camera"])
        if cam.frame is None:
            raise ApiError(404, f"no preview frame from {cam.camera} yet")
        return web.Response(body=cam.frame, content_type="image/jpeg",
                            headers={"Cache-Control": "no-cache, no-store", "X-Frame-Seq": str(cam.frame_seq)})  # fmt: skip

    async def _preview_mjpeg(self, request: web.Request) -> web.StreamResponse:
        """Multipart MJPEG: each part is the newest frame; a slow viewer skips frames."""
        cam = self._camera(request.match_info["camera"])
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
            "Cache-Control": "no-cache, no-store", "Pragma": "no-cache",
        })  # fmt: skip
        await resp.prepare(request)
        last = 0
        try:
            while not self.closing.is_set():
                if cam.frame is None or cam.frame_seq == last:
                    await cam.wait_frame(1.0)
                    continue
                frame, last = cam.frame, cam.frame_seq
                head = (f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame)}\r\n"
                        f"X-Frame-Seq: {last}\r\n\r\n").encode()  # fmt: skip
                # write() waits while the viewer's socket buffer is full; meanwhile newer
                # frames replace cam.frame, so this viewer simply gets the latest one next
                await resp.write(head + frame + b"\r\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    # ------------------------------------------------------------------------------------
    # stills

    async def _post_still(self, request: web.Request) -> web.Response:
        limit = self.config.max_still_bytes
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise ApiError(413, f"the upload is {request.content_length} bytes; stills are limited to {limit} bytes")
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "POST /v1/stills takes multipart/form-data: camera, still, sha256, image")
        fields: dict[str, str] = {}
        tmp_dir = self.data_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        tmp: Path | None = None
        image_type = None
        size = 0
        digest = hashlib.sha256()
        head = b""
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "image":
                    image_type = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                    if image_type not in STILL_TYPES:
                        raise ApiError(415, f"image content type {image_type or '(none)'!r} is not JPEG or HEIC "
                                            f"(send image/jpeg or image/heic)")  # fmt: skip
                    tmp = tmp_dir / f"upload-{new_id()}.part"
                    with open(tmp, "wb") as fp:
                        while chunk := await part.read_chunk(256 * 1024):
                            size += len(chunk)
                            if size > limit:
                                raise ApiError(413, f"the still is larger than the limit of {limit} bytes")
                            digest.update(chunk)
                            if len(head) < 65536:
                                head += chunk[: 65536 - len(head)]
                            fp.write(chunk)
                        fp.flush()
                        os.fsync(fp.fileno())
                elif part.name in ("camera", "still", "sha256"):
                    value = await part.read_chunk(1024)
                    if await part.read_chunk(1):
                        raise ApiError(400, f"form field {part.name!r} is too long")
                    fields[part.name] = value.decode("utf-8", "replace").strip()
                else:
                    while await part.read_chunk(64 * 1024):
                        pass
            for name in ("camera", "still", "sha256"):
                if not fields.get(name):
                    raise ApiError(400, f"missing form field {name!r} (camera, still, sha256, image)")
            if tmp is None:
                raise ApiError(400, "missing form field 'image' (the photo's bytes)")
            camera, still, claimed = fields["camera"], fields["still"], fields["sha256"].lower()
            self._camera(camera)
            if not SAFE_ID.match(still):
                raise ApiError(400, "still id may hold only letters, digits, '.', '_' and '-' (at most 128)")
            if not SHA256_HEX.match(claimed):
                raise ApiError(400, "sha256 must be 64 hexadecimal digits")
            actual = digest.hexdigest()
            if actual != claimed:
                raise ApiError(422, f"sha256 mismatch: the image hashes to {actual}, the form says {claimed}")
            key = f"{camera}/{still}"
            lock = self._still_locks.setdefault(key, asyncio.Lock())
            try:
                async with lock:
                    return await self._store_still(tmp, camera=camera, still=still, sha256=actual, size=size,
                                                   ext=STILL_TYPES[image_type or "image/jpeg"], head=head)  # fmt: skip
            finally:
                if not lock.locked() and self._still_locks.get(key) is lock:
                    del self._still_locks[key]
        finally:
            if tmp is not None and tmp.exists():
                tmp.unlink()

    async def _store_still(self, tmp: Path, *, camera: str, still: str, sha256: str, size: int, ext: str,
                           head: bytes) -> web.Response:  # fmt: skip
        key = f"{camera}/{still}"
        known = self._stills.get(key)
        base = self.capture.stills_dir if self.capture is not None else self.data_dir / "stills"
        dest = base / camera / f"{still}{ext}"
        if known is None and dest.exists():
            known = {"path": str(dest), "sha256": await asyncio.to_thread(_sha256_file, dest), "bytes": dest.stat().st_size}
        if known is not None:
            if known["sha256"] != sha256:
                raise ApiError(409, f"still {still} of {camera} is already stored with another sha256", **known)
            return _json({"still": still, "camera": camera, **known, "duplicate": True}, 200)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        wh = jpeg_size(head) if ext == ".jpg" else None
        record = {"path": str(dest), "sha256": sha256, "bytes": size}
        self._stills[key] = record
        while len(self._stills) > STILLS_KEPT:
            self._stills.popitem(last=False)
        self.hub.emit("still.captured", {"still": still, "camera": camera, **record,
                                         "width": wh[0] if wh else None, "height": wh[1] if wh else None})  # fmt: skip
        self._bump("still.captured")
        self.log(f"still {still} from {camera}: {size} bytes")
        return _json({"still": still, "camera": camera, **record, "width": wh[0] if wh else None,
                      "height": wh[1] if wh else None, "duplicate": False}, 201)  # fmt: skip


_JOINTS = frozenset(JOINT_NAMES)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _id_order(camera: str) -> tuple[int, str]:
    tail = camera.rsplit("-", 1)[-1]
    return (int(tail), camera) if tail.isdigit() else (1 << 30, camera)


def _cam_order(cam: Camera) -> tuple[int, str]:
    return _id_order(cam.camera)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _num(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value


async def _send(ws: web.WebSocketResponse | None, msg: dict[str, Any]) -> bool:
    """Send one JSON text message; False when the socket is gone."""
    if ws is None or ws.closed:
        return False
    try:
        await ws.send_str(_wire(msg))
        return True
    except (ConnectionError, RuntimeError):
        return False


async def _read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty). Raises ApiError 400."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the body must be a JSON object")
    return obj
