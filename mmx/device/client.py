"""`DeviceClient`: a camera speaking the capture-device protocol (docs/device-protocol.md).

One client is one camera: it connects to ``GET /v1/devices/ws`` of `mmx serve`, says
``hello`` with its stable device id, then sends heartbeats, state reports, pose samples in
step with the video clock and JPEG preview frames (binary messages), and obeys the server's
``flip``, ``zoom`` and ``still`` commands. When the server goes away it reconnects with
exponential backoff and jitter (0.25 s doubling to 5 s). Many clients can run in one event
loop (the benchmark runs 64).

Nothing is printed: what happens is reported through ``on_event(dict)`` with an
``"event"`` key (``connected``, ``disconnected``, ``retry``, ``command``, ``tally``,
``placement``, ``session``, ``still``, ``relay``, ``server_error``, ``warning``); every
event also carries ``device`` and ``camera``.
"""

from __future__ import annotations

import asyncio
import hashlib
import platform
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson

from mmx import __version__
from mmx.device.camera import CameraState, CommandRefused
from mmx.device.frames import STILL_QUALITY, FrameSource, encode_jpeg, render_view
from mmx.device.pose import PoseTrack
from mmx.errors import DataError, ServiceUnavailableError

#: Reconnect backoff of docs/device-protocol.md: 0.25 s doubling to 5 s, with jitter.
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
#: Close codes after which reconnecting is wrong: bad token, malformed hello, or another process
#: now speaks for this device id (reconnecting would make the two replace each other forever).
FATAL_CLOSE_CODES = {4400: "malformed hello", 4401: "token refused",
                     4409: "replaced by a newer connection with the same device id"}
#: Seconds between WebSocket pings (aiohttp closes the socket when a pong is late by half of it).
PING_S = 5.0
#: Battery drain of the simulated phone: 1 % every 3 minutes (a phone recording video).
BATTERY_DRAIN_PER_S = 0.01 / 180


def backoff_delay(attempt: int, *, start_s: float = BACKOFF_START_S, max_s: float = BACKOFF_MAX_S,
                  rng: random.Random | None = None) -> float:  # fmt: skip
    """Seconds to wait before reconnect ``attempt`` (0-based): ``start_s * 2**attempt`` capped
    at ``max_s``, with "equal jitter" (a uniform draw from the upper half), so devices
    restarted together do not reconnect in lockstep.
    """
    base = min(max_s, start_s * (2 ** min(attempt, 30)))
    return base / 2 + (rng or random).uniform(0, base / 2)


def ws_url(server: str) -> str:
    """``http://host:port`` (or ``ws://…``, with or without a path prefix) → the device
    WebSocket URL ``ws://host:port/v1/devices/ws``. Raises DataError for other schemes."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise DataError(f"server URL {server!r} is not http://HOST:PORT", hint="e.g. --server http://127.0.0.1:8750")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/devices/ws"):
        path += "/v1/devices/ws"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def http_url(server: str, path: str) -> str:
    """The HTTP URL of ``path`` (e.g. ``/v1/stills``) on ``server``."""
    parts = urlsplit(server if "://" in server else f"http://{server}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    prefix = parts.path.rstrip("/")
    if prefix.endswith("/v1/devices/ws"):
        prefix = prefix[: -len("/v1/devices/ws")]
    return urlunsplit((scheme, parts.netloc, prefix + path, "", ""))


@dataclass
class DeviceConfig:
    """What a device says about itself and how it behaves.

    ``server`` is the base URL of `mmx serve` (``http://127.0.0.1:8750``); ``fps`` the
    preview rate (frames per second, 0 turns previews off); ``size`` the preview size in
    pixels; ``pose_offset_s`` where in the video/pose the device starts (seconds), so several
    devices playing one file are staggered; ``max_retries`` bounds consecutive failed
    connection attempts (None: retry until stopped); ``relay`` is the base URL of
    `mmx relay` to publish the video to over WHIP (None: previews only); ``camera`` the
    camera id to ask for; ``tls_sha256`` a server certificate fingerprint to pin.
    """

    server: str
    token: str
    name: str
    device_id: str
    model: str = "mmx-device"
    platform: str = field(default_factory=lambda: f"{platform.system()} {platform.release()}")
    placement: dict[str, Any] | None = None
    lenses: dict[str, list[float]] | None = None
    fps: float = 10.0
    size: tuple[int, int] = (640, 360)
    pose_offset_s: float = 0.0
    heartbeat_s: float = 1.0
    max_retries: int | None = None
    connect_timeout_s: float = 5.0
    relay: str | None = None
    upload_timeout_s: float = 10.0
    #: the camera id to ask for in hello (``cam-N``): the same id whatever order devices
    #: start in (None: the server numbers new devices in order of first connection)
    camera: str | None = None
    #: hex SHA-256 of the server's certificate, pinned for an ``https`` server found by
    #: mDNS (its certificate comes from its own local CA); None: the usual CA check
    tls_sha256: str | None = None


class _Stop(Exception):
    """Raised inside a connection to end the client for good."""


class DeviceClient:
    """One simulated camera (see the module docstring).

    ``source`` gives pictures (a `VideoSource` or `TestPattern`); ``preview_jpegs``, when
    given, are sent in turn as previews instead of rendering ``source`` (the benchmark
    pre-encodes them so many clients cost little CPU; stills still need ``source``, or
    reuse the current preview JPEG). ``pose`` is played on the video clock. ``http`` may be
    a shared `aiohttp.ClientSession` (the client makes its own otherwise).

    After `run` returns or raises, ``camera`` holds the last camera id the server gave.
    """

    def __init__(
        self,
        config: DeviceConfig,
        *,
        source: FrameSource | None = None,
        pose: PoseTrack | None = None,
        preview_jpegs: Sequence[bytes] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        http: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.pose = pose
        self.preview_jpegs = list(preview_jpegs) if preview_jpegs else None
        self.on_event = on_event or (lambda event: None)
        self.state = CameraState(lenses=config.lenses) if config.lenses else CameraState()
        self.camera: str | None = None
        self.session: str | None = None
        self.program = False
        self.preview_tally = False
        self.placement = config.placement
        self.connected = asyncio.Event()
        self.frames_sent = 0
        self.poses_sent = 0
        self.commands_done = 0
        self._http = http
        self._own_http = http is None
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._clock_start = time.monotonic()
        self._started_wall = time.time()
        self._heartbeat_s = config.heartbeat_s
        self._last_jpeg: bytes | None = None
        self._reported_battery = 1.0
        self._command_tasks: set[asyncio.Task] = set()

    # -- the video clock ---------------------------------------------------------------

    def video_time(self, now: float | None = None) -> float:
        """Seconds on the video clock (unwrapped): ``pose_offset_s`` plus time since start."""
        return self.config.pose_offset_s + ((time.monotonic() if now is None else now) - self._clock_start)

    def _loop_s(self) -> float | None:
        if self.source is not None and self.preview_jpegs is None:
            return self.source.duration_s
        return None

    def current_view(self, size: tuple[int, int] | None = None):
        """The picture the camera shows now (a Pillow image), at ``size`` (default: the
        preview size) with the current zoom crop and front-facing mirror."""
        if self.source is None:
            raise DataError("this device has no picture source")
        image = self.source.frame_at(self.video_time())
        return render_view(image, size=size or self.config.size, zoom=self.state.crop_factor(),
                           mirror=self.state.facing == "front")  # fmt: skip

    def still_jpeg(self) -> tuple[bytes, int, int]:
        """A full-resolution still of the current frame: ``(jpeg, width, height)``; the size
        is the source's own (a zoom crop is scaled back up, as a real lens would fill the
        sensor). Without a source, the current preview JPEG is the still."""
        if self.source is None:
            if self._last_jpeg is None:
                raise DataError("no picture to take a still of yet")
            return self._last_jpeg, self.config.size[0], self.config.size[1]
        width, height = self.source.size
        return encode_jpeg(self.current_view((width, height)), STILL_QUALITY), width, height

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to end: closes the socket and returns (safe from a signal handler)."""
        self._stopping.set()
        if self._ws is not None and not self._ws.closed:
            asyncio.ensure_future(self._ws.close())

    def _emit(self, event: str, **data: Any) -> None:
        try:
            self.on_event({"event": event, "device": self.config.device_id, "camera": self.camera, **data})
        except Exception:  # noqa: BLE001 - a broken observer must not kill the camera
            pass

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff until `stop` is called.

        Raises ServiceUnavailableError when the server refuses the token or the hello for
        good (HTTP 401, close code 4401/4400), or after ``max_retries`` consecutive failed
        attempts.
        """
        if self._http is None:
            pin = aiohttp.Fingerprint(bytes.fromhex(self.config.tls_sha256)) if self.config.tls_sha256 else None
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pin) if pin else None)
        failures = 0
        relay_task = None
        if self.config.relay and self.source is not None:
            from mmx.device.relay import publish_to_relay

            relay_task = asyncio.create_task(publish_to_relay(
                self, self.config.relay, token=self.config.token, stopping=self._stopping,
                emit=self._emit, backoff=lambda n: backoff_delay(n, rng=self._rng)))  # fmt: skip
        try:
            while not self._stopping.is_set():
                welcomed = False
                error = ""
                try:
                    welcomed = await self._connect_once()
                    error = "connection closed"
                except _Stop:
                    return
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status == 401:
                        raise ServiceUnavailableError(f"{self.config.server} refused the token (HTTP 401)",
                                                      hint="pass the token mmx serve printed: --token T") from None  # fmt: skip
                    error = f"HTTP {exc.status} on the WebSocket upgrade"
                except aiohttp.ServerFingerprintMismatch as exc:
                    # not a passing failure: the machine answering is not the server advertised
                    raise ServiceUnavailableError(
                        f"{self.config.server} presented a certificate with SHA-256 {exc.got.hex()}, "
                        f"not the fingerprint {exc.expected.hex()} it was found with",
                        hint="another machine answers at that address; give --server URL of the right one",
                    ) from None
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    error = str(exc) or type(exc).__name__
                finally:
                    self._ws = None
                    self.connected.clear()
                if self._stopping.is_set():
                    return
                failures = 0 if welcomed else failures + 1
                if self.config.max_retries is not None and failures > self.config.max_retries:
                    raise ServiceUnavailableError(
                        f"cannot reach {self.config.server} after {failures} attempt{'s' if failures != 1 else ''}: {error}",
                        hint="is mmx serve running there?")
                delay = backoff_delay(failures, rng=self._rng)
                self._emit("retry", attempt=failures + 1, delay_s=round(delay, 3), error=error)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            if relay_task is not None:
                self._stopping.set()
                try:
                    await asyncio.wait_for(relay_task, 10.0)
                except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort at shutdown
                    relay_task.cancel()
            if self._own_http and self._http is not None:
                await self._http.close()
                self._http = None

    def _hello(self) -> dict[str, Any]:
        caps = self.state.capabilities()
        caps.update(still=True, preview=self.config.fps > 0, pose=self.pose is not None)
        hello = {
            "t": "hello", "token": self.config.token, "device": self.config.device_id,
            "name": self.config.name, "model": self.config.model, "platform": self.config.platform,
            "app": f"mmx-device {__version__}", "capabilities": caps, "state": self.state.report(),
            "ts": time.time(),
        }  # fmt: skip
        if self.placement:
            hello["placement"] = self.placement
        if self.config.camera:
            hello["camera"] = self.config.camera
        return hello

    async def _connect_once(self) -> bool:
        """One connection: hello, welcome, then serve until it closes. Returns whether the
        server welcomed us (so the backoff starts over)."""
        assert self._http is not None
        url = ws_url(self.config.server)
        headers = {"Authorization": f"Bearer {self.config.token}"}
        timeout = aiohttp.ClientWSTimeout(ws_close=2.0)
        # WebSocket pings every PING_S: a server that vanished without closing the TCP
        # connection is noticed within 1.5 × PING_S instead of never.
        connecting = self._http.ws_connect(url, headers=headers, heartbeat=PING_S, autoping=True, timeout=timeout,
                                           max_msg_size=16 << 20)  # fmt: skip
        ws = await asyncio.wait_for(connecting, self.config.connect_timeout_s)
        async with ws:
            self._ws = ws
            if self._stopping.is_set():
                raise _Stop
            await ws.send_str(orjson.dumps(self._hello()).decode())
            welcome = await self._await_welcome(ws)
            if welcome is None:
                return False
            self.camera = welcome.get("camera")
            self.session = welcome.get("session")
            self.program = bool(welcome.get("program"))
            if isinstance(welcome.get("placement"), dict):
                self.placement = welcome["placement"]
            hb = welcome.get("heartbeat_s")
            if isinstance(hb, (int, float)) and 0.05 <= hb <= 60:
                self._heartbeat_s = float(hb)
            self.connected.set()
            self._emit("connected", session=self.session, program=self.program, placement=self.placement,
                       server=self.config.server)  # fmt: skip
            await self._send({"t": "state", **self.state.report()})
            tasks = [asyncio.create_task(self._heartbeats()), asyncio.create_task(self._states())]
            if self.config.fps > 0 and (self.source is not None or self.preview_jpegs):
                tasks.append(asyncio.create_task(self._previews()))
            if self.pose is not None and self.pose.samples:
                tasks.append(asyncio.create_task(self._poses()))
            try:
                await self._receive(ws)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            code = ws.close_code
            if code in FATAL_CLOSE_CODES:
                raise ServiceUnavailableError(f"the server closed the connection: {FATAL_CLOSE_CODES[code]} ({code})")
            self._emit("disconnected", reason="stopped" if self._stopping.is_set() else "closed", close_code=code)
            if self._stopping.is_set():
                raise _Stop
            return True

    async def _await_welcome(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        """Wait for ``welcome`` (bounded by ``connect_timeout_s``). An ``error`` then a close
        with 4401/4400 is fatal."""
        deadline = time.monotonic() + self.config.connect_timeout_s
        said = ""  # the server's error message before it closed, if any
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise asyncio.TimeoutError("no welcome from the server")
            msg = await ws.receive(timeout=remaining)
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    obj = orjson.loads(msg.data)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(obj, dict):
                    continue
                if obj.get("t") == "welcome":
                    return obj
                if obj.get("t") == "error":
                    said = str(obj.get("error") or "")
                    self._emit("server_error", error=obj.get("error"), ref=obj.get("ref"))
                continue
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.ERROR):  # fmt: skip
                code = ws.close_code
                if code in FATAL_CLOSE_CODES:
                    raise ServiceUnavailableError(f"the server refused the hello: {FATAL_CLOSE_CODES[code]} ({code})"
                                                  + (f": {said}" if said else ""))  # fmt: skip
                return None

    async def _send(self, obj: dict[str, Any] | bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        async with self._send_lock:
            if isinstance(obj, bytes):
                await ws.send_bytes(obj)
            else:
                await ws.send_str(orjson.dumps(obj).decode())

    async def _send_frame(self, jpeg: bytes, captured: float) -> None:
        """A preview frame, preceded by its capture time (``frame`` message), with nothing between."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        async with self._send_lock:
            await ws.send_str(orjson.dumps({"t": "frame", "ts": captured}).decode())
            await ws.send_bytes(jpeg)

    # -- periodic senders ----------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            await self._send({"t": "heartbeat", "ts": time.time()})
            await asyncio.sleep(self._heartbeat_s)

    async def _states(self) -> None:
        """Report battery drain now and then (the phone is recording)."""
        while True:
            await asyncio.sleep(10.0)
            elapsed = time.time() - self._started_wall
            self.state.battery = max(0.05, 1.0 - elapsed * BATTERY_DRAIN_PER_S)
            if self._reported_battery - self.state.battery >= 0.01:
                self._reported_battery = self.state.battery
                await self._send({"t": "state", **self.state.report()})

    async def _ticks(self, rate_hz: float):
        """Yield at ``rate_hz`` on absolute deadlines; a late tick is dropped, not queued."""
        period = 1.0 / rate_hz
        next_at = time.monotonic()
        while True:
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -period:  # fell behind (slow encode, slow socket): skip ahead
                next_at = time.monotonic()
                delay = 0
            await asyncio.sleep(max(0.0, delay))
            yield

    async def _previews(self) -> None:
        n, warned = 0, False
        async for _ in self._ticks(self.config.fps):
            captured = time.time()  # the moment this view is taken (device clock)
            if self.preview_jpegs:
                jpeg = self.preview_jpegs[n % len(self.preview_jpegs)]
            else:
                try:
                    jpeg = await asyncio.to_thread(lambda: encode_jpeg(self.current_view()))
                except DataError as exc:  # a frame that does not decode: skip it, say so once
                    if not warned:
                        self._emit("warning", message=exc.message)
                        warned = True
                    continue
            n += 1
            self._last_jpeg = jpeg
            await self._send_frame(jpeg, captured)
            self.frames_sent += 1

    async def _poses(self) -> None:
        assert self.pose is not None
        last = self.video_time()
        async for _ in self._ticks(self.pose.fps):
            now_mono, now_wall = time.monotonic(), time.time()
            vt = self.video_time(now_mono)
            for u, sample in self.pose.between(last, vt, loop_s=self._loop_s()):
                # capture time on the device clock: when that video frame was "seen"
                await self._send({"t": "pose", "ts": now_wall - (vt - u), "joints": sample.joints})
                self.poses_sent += 1
            last = vt

    # -- server messages -------------------------------------------------------------------

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                obj = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                self._emit("warning", message="server sent a message that is not JSON")
                continue
            if not isinstance(obj, dict):
                continue
            kind = obj.get("t")
            if kind == "command":
                # Stills upload over HTTP; run commands as tasks so acks never wait on each other.
                task = asyncio.create_task(self._command(obj))
                self._command_tasks.add(task)  # the loop keeps only weak references to tasks
                task.add_done_callback(self._command_tasks.discard)
            elif kind == "tally":
                self.program, self.preview_tally = bool(obj.get("program")), bool(obj.get("preview"))
                self._emit("tally", program=self.program, preview=self.preview_tally)
            elif kind == "placement":
                self.placement = obj.get("placement")
                self._emit("placement", placement=self.placement)
            elif kind == "session":
                self.session = obj.get("session")
                self._emit("session", session=self.session)
            elif kind == "error":
                self._emit("server_error", error=obj.get("error"), ref=obj.get("ref"))
            elif kind == "welcome":
                pass
            else:
                self._emit("warning", message=f"unknown server message {kind!r}")

    async def _command(self, obj: dict[str, Any]) -> None:
        command_id, command = obj.get("command_id"), obj.get("command")
        args = obj.get("args") if isinstance(obj.get("args"), dict) else {}
        ok, error, extra = True, None, {}
        try:
            if not isinstance(command_id, str) or not command_id:
                raise CommandRefused("command without a command_id")
            if command == "flip":
                self.state.flip()
            elif command == "zoom":
                self.state.set_zoom(args.get("zoom"))
            elif command == "still":
                extra = await self._still(command_id)
            else:
                raise CommandRefused(f"unsupported command {command!r}")
        except CommandRefused as exc:
            ok, error = False, str(exc)
        except (DataError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            ok, error = False, f"still failed: {getattr(exc, 'message', None) or exc or type(exc).__name__}"
        self.commands_done += 1
        await self._send({"t": "ack", "command_id": command_id, "ok": ok, "error": error, "state": self.state.report()})
        self._emit("command", command_id=command_id, command=command, args=args, ok=ok, error=error,
                   state=self.state.report(), **extra)  # fmt: skip

    async def _still(self, still_id: str) -> dict[str, Any]:
        """Take the still, announce it, upload it (`POST /v1/stills`). Raises DataError when
        the server does not store it."""
        assert self._http is not None
        jpeg, width, height = await asyncio.to_thread(self.still_jpeg)
        digest = hashlib.sha256(jpeg).hexdigest()
        await self._send({"t": "still.ready", "command_id": still_id, "still": still_id, "sha256": digest,
                          "bytes": len(jpeg)})  # fmt: skip
        form = aiohttp.FormData()
        form.add_field("camera", self.camera or "")
        form.add_field("still", still_id)
        form.add_field("sha256", digest)
        form.add_field("image", jpeg, filename=f"{still_id}.jpg", content_type="image/jpeg")
        async with self._http.post(http_url(self.config.server, "/v1/stills"), data=form,
                                   headers={"Authorization": f"Bearer {self.config.token}"},
                                   timeout=aiohttp.ClientTimeout(total=self.config.upload_timeout_s)) as resp:  # fmt: skip
            body = await resp.read()
            if resp.status not in (200, 201):
                try:
                    reason = orjson.loads(body).get("error")
                except (orjson.JSONDecodeError, AttributeError):
                    reason = body[:200].decode("utf-8", "replace")
                raise DataError(f"upload answered HTTP {resp.status}: {reason}")
        self._emit("still", still=still_id, sha256=digest, bytes=len(jpeg), width=width, height=height)
        return {"still": still_id, "sha256": digest, "bytes": len(jpeg)}
