"""`Server`: the aiohttp application of `mmx serve`, the single authority over live state.

It holds the device registry, the director state (program, hold, mode), the active
production session and the event hub, and serves the HTTP API of DESIGN.md plus the device
WebSocket of docs/device-protocol.md. The routes live in `mmx.serve.routes`, one module per
concern, mixed into `Server`; this module keeps the shared state, the lifecycle and the
middleware. Library code: it never prints; human log lines go to the ``log`` callback and
events to the hub's sinks.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from mmx import __version__
from mmx.errors import EventError, IOFailure, MmxError
from mmx.fileio import atomic_write
from mmx.serve.api import ApiError, cam_order, id_order, json_response
from mmx.serve.auth import PRINCIPAL, Authenticator
from mmx.serve.capture import SESSIONS_DIR, CaptureDir, unfinished_sessions
from mmx.serve.config import ServeConfig
from mmx.serve.hub import EventHub, last_seq_in
from mmx.serve.openapi import OpenApiRoutes
from mmx.serve.registry import Camera, Registry
from mmx.serve.routes.cameras import CameraRoutes
from mmx.serve.routes.camera import CameraPageRoutes
from mmx.serve.routes.console import ConsoleRoutes
from mmx.serve.routes.devices import CLOSE_TIMEOUT, DeviceRoutes
from mmx.serve.routes.director import DirectorRoutes
from mmx.serve.routes.events import EventRoutes
from mmx.serve.routes.ghost import GhostRoutes
from mmx.serve.routes.pairings import PairingRoutes
from mmx.serve.recording import ServeRecording
from mmx.serve.routes.pose import PoseRoutes
from mmx.serve.routes.previews import PreviewRoutes
from mmx.serve.routes.record import RecordRoutes
from mmx.serve.routes.session import SessionRoutes
from mmx.serve.routes.stills import StillRoutes

__all__ = ["ApiError", "Server"]

Log = Callable[[str], None]


class Server(EventRoutes, SessionRoutes, DirectorRoutes, CameraRoutes, PreviewRoutes, StillRoutes,
             DeviceRoutes, RecordRoutes, GhostRoutes, ConsoleRoutes, PoseRoutes, PairingRoutes,
             CameraPageRoutes, OpenApiRoutes):
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
        self.recording = ServeRecording(self.data_dir, emit=self.hub.emit, log=lambda msg: self.log(msg),
                                        min_free_bytes=config.record_min_free_bytes,
                                        warn_minutes=config.record_warn_minutes)  # fmt: skip
        self.hub.add_sink(self.recording.observe)
        self.program: str | None = None
        self.hold: str | None = None
        self.mode = "manual"
        self.capture: CaptureDir | None = None
        self.session_info: dict[str, Any] | None = None
        self._session_counts: dict[str, int] = {}
        self.closing = asyncio.Event()
        self.url: str | None = None
        #: every address served, plain first: ``http://127.0.0.1:8750``, ``https://192.168.1.20:8750``
        self.urls: list[str] = []
        self.port: int | None = None
        self.started_at = time.time()
        self._posted: OrderedDict[str, int] = OrderedDict()
        self._stills: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._still_locks: dict[str, asyncio.Lock] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._preview_watchers: set[asyncio.Event] = set()
        self._tasks: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._watchdog: asyncio.Task | None = None
        self.auth = Authenticator(config.token)
        self._init_ghost()
        self._init_console()
        self._init_pose()
        self._init_pairings()
        self._stopped = False

    # ------------------------------------------------------------------------------------
    # lifecycle

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors_middleware, self._auth_middleware],
                              client_max_size=1 << 20)  # fmt: skip
        r = app.router
        r.add_get("/v1/state", self._get_state)
        self._add_event_routes(r)
        self._add_session_routes(r)
        self._add_director_routes(r)
        self._add_camera_routes(r)
        self._add_preview_routes(r)
        self._add_still_routes(r)
        self._add_device_routes(r)
        self._add_record_routes(r)
        self._add_ghost_routes(r)
        self._add_console_routes(r)
        self._add_pose_routes(r)
        self._add_pairing_routes(r)
        self._add_camera_page_routes(r)
        self._add_openapi_routes(r)
        return app

    async def start(self) -> str:
        """Bind and start serving; returns the first URL (plain first, see `urls`).

        Raises IOFailure when a port is taken, DataError when the TLS files do not load.
        Every listener shares one port (with port 0: the one the first listener got).
        """
        self._recover_sessions()
        listeners: list[tuple[str, Any]] = [(self.config.host, None)] if self.config.host else []
        if self.config.tls_hosts:
            from mmx.serve.tls import server_context

            if self.config.tls_cert is None or self.config.tls_key is None:
                raise ValueError("ServeConfig.tls_hosts needs tls_cert and tls_key")
            context = server_context(self.config.tls_cert, self.config.tls_key)
            listeners += [(host, context) for host in self.config.tls_hosts]
        if not listeners:
            raise ValueError("ServeConfig needs a host or tls_hosts to listen on")
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        port = self.config.port
        for host, context in listeners:
            site = web.TCPSite(self._runner, host, port, ssl_context=context)
            try:
                await site.start()
            except OSError as exc:
                await self._runner.cleanup()
                raise IOFailure(f"cannot listen on {host}:{port}: {exc.strerror}",
                                hint="pick another --port, or stop the server already using it") from None  # fmt: skip
            if port == 0:
                port = self._runner.addresses[-1][1]
            shown = f"[{host}]" if ":" in host else host
            self.urls.append(f"{'https' if context is not None else 'http'}://{shown}:{port}")
        self.port = port
        self.url = self.urls[0]
        self._watchdog = asyncio.create_task(self._watch())
        return self.url

    async def stop(self, reason: str = "shutdown") -> None:
        """End the active session (``reason``), close devices and streams, flush and save."""
        if self._stopped:
            return
        self._stopped = True
        # before closing: the relay hears recording.disarmed on its event stream and answers
        await self._stop_recording(reason)
        self.closing.set()
        for cam in self.registry.cameras.values():
            cam.wake_viewers()
        if self.capture is not None:
            self._end_session(reason)
        await self.recording.close()
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
            return json_response({"error": exc.message, **exc.extra}, exc.status, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            text = {404: "no such endpoint", 405: f"method {request.method} not allowed here"}.get(exc.status, exc.reason)
            # a 405 names the methods the path does answer (RFC 9110 section 15.5.6)
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return json_response({"error": f"{text}: {request.method} {request.path}"}, exc.status, headers)
        except EventError as exc:
            # input that would make an event outside the contract, caught at the hub
            self.log(f"refused: {request.method} {request.path}: {exc.reason}")
            return json_response({"error": exc.reason}, 422)
        except MmxError as exc:
            self.log(f"error: {request.method} {request.path}: {exc.message}")
            return json_response({"error": exc.message}, 500)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must not take the server down
            self.log(f"internal error: {request.method} {request.path}: {type(exc).__name__}: {exc}")
            return json_response({"error": f"internal error: {type(exc).__name__}"}, 500)

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[PRINCIPAL] = self.auth.check(request)
        return await handler(request)

    # ------------------------------------------------------------------------------------
    # state

    def state(self) -> dict[str, Any]:
        """The ``GET /v1/state`` answer of DESIGN.md (plus ``seq``, ``session_info``, ``server``)."""
        return {
            "session": self.capture.session if self.capture else None,
            "program": self.program, "hold": self.hold, "mode": self.mode,
            "cameras": [c.public() for c in sorted(self.registry.cameras.values(), key=cam_order)],
            "seq": self.hub.seq, "session_info": self.session_info, "recording": self.recording.status(),
            "session_counts": dict(self._session_counts) if self.capture else None, "music": self.music_cue,
            "now": time.time(), "pose_fps": self.pose_rates.fps(), "pose_dropped": dict(self.pose_rates.dropped),
            "server": {"version": __version__, "url": self.url, "started_at": self.started_at,
                       "event_subscribers": self.hub.subscribers, "event_lag_recoveries": self.hub.lag_recoveries},
        }  # fmt: skip

    def director_state(self) -> dict[str, Any]:
        return {"program": self.program, "hold": self.hold, "mode": self.mode}

    async def _get_state(self, request: web.Request) -> web.Response:
        return json_response(self.state())

    def _camera(self, camera_id: str) -> Camera:
        cam = self.registry.get(camera_id)
        if cam is None:
            raise ApiError(404, f"unknown camera {camera_id!r}", cameras=sorted(self.registry.cameras, key=id_order))
        return cam
