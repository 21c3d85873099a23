"""The device WebSocket (``GET /v1/devices/ws``) of docs/device-protocol.md: join, messages, leave."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from mmx.errors import EventError
from mmx.events import JOINT_NAMES, validate
from mmx.serve.api import send_json
from mmx.serve.limits import (MAX_HELLO_BYTES, MAX_HELLO_TEXT, MAX_TEXT, check_hello_text, check_placement_values,
                              normalise_lenses)  # fmt: skip
from mmx.serve.registry import CAMERA_ID, Camera, CameraTaken, ClockOffset

#: WebSocket close codes of docs/device-protocol.md (4xxx: application-defined).
CLOSE_BAD_TOKEN = 4401
CLOSE_BAD_HELLO = 4400
CLOSE_TIMEOUT = 4408
CLOSE_REPLACED = 4409
_JOINTS = frozenset(JOINT_NAMES)


class DeviceRoutes:
    """Capture devices (mixed into `Server`)."""

    def _add_device_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/devices/ws", self._device_ws)

    async def _device_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.config.max_preview_bytes, timeout=2.0, heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        cam: Camera | None = None
        if not self._pairing_socket_opened(request, ws):
            self._sockets.discard(ws)
            await self._close_ws(ws, CLOSE_BAD_TOKEN, "pairing revoked")
            return ws
        try:
            hello = await self._read_hello(ws)
            if hello is None:
                return ws
            try:
                cam, new = self.registry.camera_for(hello["device"], hello.get("camera"))
            except CameraTaken as exc:
                await send_json(ws, {"t": "error", "error": f"hello: {exc}", "ref": "hello"})
                await self._close_ws(ws, CLOSE_BAD_HELLO, f"hello: {exc}")
                return ws
            if new:
                # the camera id is durable before the device hears it
                await self.persist_registry()
            changed = self._join(ws, cam, hello)
            self._pairing_joined(request, cam)
            # welcome goes out before anything else can reach this socket: from here to the
            # frame's write there is no await, so no command, tally or placement of another
            # task can overtake it (a device ignores commands before its welcome)
            welcome = {"t": "welcome", "camera": cam.camera, "session": self.capture.session if self.capture else None,
                       "placement": cam.placement, "heartbeat_s": self.config.heartbeat_s,
                       "timeout_s": self.config.device_timeout_s, "server_time": time.time(),
                       "program": self.program == cam.camera, "clock_offset_s": cam.clock.offset_s,
                       "relay": bool(self.config.relay_url)}  # fmt: skip
            await send_json(ws, welcome)
            if changed:
                self._spawn(self.persist_registry())  # name, model or the hello's placement
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
                    await send_json(ws, {"t": "error", "error": f"line: internal error: {type(exc).__name__}", "ref": None})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._sockets.discard(ws)
            self._pairing_socket_closed(request, ws)
            if cam is not None and cam.ws is ws:
                self._leave(cam, "shutdown" if self.closing.is_set() else "disconnected")
        return ws

    async def _read_hello(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        async def refuse(message: str, code: int, ref: Any = None) -> None:
            await send_json(ws, {"t": "error", "error": message, "ref": ref})
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
        if len(msg.data) > MAX_HELLO_BYTES:
            await refuse(f"hello: longer than {MAX_HELLO_BYTES} bytes", CLOSE_BAD_HELLO, "hello")
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
        if token is not None and not (isinstance(token, str) and (self.auth.is_operator_token(token)
                                                                  or self.auth.camera_token(token) is not None)):
            await refuse("hello: wrong token", CLOSE_BAD_TOKEN, "hello")
            return None
        device = hello.get("device")
        if not isinstance(device, str) or not device.strip() or len(device) > 128:
            await refuse("hello: missing 'device' (a stable device id of 1 to 128 characters)", CLOSE_BAD_HELLO, "hello")
            return None
        camera = hello.get("camera")
        if camera is not None and not (isinstance(camera, str) and CAMERA_ID.fullmatch(camera)):
            await refuse("hello: 'camera' must be a camera id such as cam-1", CLOSE_BAD_HELLO, "hello")
            return None
        for name in ("capabilities", "state", "placement"):
            if hello.get(name) is not None and not isinstance(hello[name], dict):
                await refuse(f"hello: '{name}' must be an object", CLOSE_BAD_HELLO, "hello")
                return None
        try:
            # the hello as an event's data meets the contract (nesting, string and number
            # bounds), so camera.joined made from it does too
            validate({"id": "hello", "ts": time.time(), "type": "device.hello", "data": hello})
            check_hello_text(hello)
            if hello.get("placement"):
                check_placement_values(hello["placement"])
            if hello.get("capabilities"):
                hello["capabilities"] = normalise_lenses(hello["capabilities"])
        except EventError as exc:
            await refuse(f"hello: {exc.reason}", CLOSE_BAD_HELLO, "hello")
            return None
        return hello

    def _join(self, ws: web.WebSocketResponse, cam: Camera, hello: dict[str, Any]) -> bool:
        """Make ``cam`` live on ``ws`` with what ``hello`` says; True when its stored facts changed."""
        now = time.time()
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
        return before != (cam.name, cam.model, cam.placement)

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
            self._spawn(send_json(cam.ws, msg))

    async def _on_text(self, cam: Camera, ws: web.WebSocketResponse, text: str, now: float) -> None:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await send_json(ws, {"t": "error", "error": f"line: not JSON: {exc}", "ref": None})
            return
        if not isinstance(msg, dict):
            await send_json(ws, {"t": "error", "error": "line: expected a JSON object with a 't' field", "ref": None})
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
            elif t == "frame":
                ts = msg.get("ts")
                if isinstance(ts, bool) or not isinstance(ts, (int, float)):
                    raise ValueError("frame: missing 'ts' (the next preview frame's capture time, device clock)")
                cam.next_capture_t = cam.clock.to_server(float(ts))
            elif t == "ack":
                command_id = msg.get("command_id")
                future = cam.pending.get(command_id) if isinstance(command_id, str) else None
                if future is None:
                    if not isinstance(command_id, str):
                        raise ValueError("ack: missing 'command_id'")
                    return  # a late ack of a command that already timed out
                if not future.done():
                    if isinstance(msg.get("error"), str) and len(msg["error"]) > MAX_TEXT:
                        msg["error"] = msg["error"][:MAX_TEXT]  # the camera.ack event carries it
                    future.set_result(msg)
            elif t == "still.ready":
                pass  # the upload itself is what counts; this is advance notice only
            elif t == "hello":
                raise ValueError(f"hello: already registered as {cam.camera}")
            else:
                await send_json(ws, {"t": "error", "error": f"line: unknown message type {t!r}", "ref": t})
        except ValueError as exc:
            await send_json(ws, {"t": "error", "error": f"line: {exc}", "ref": t})
        except EventError as exc:  # would make an event outside the contract
            await send_json(ws, {"t": "error", "error": f"line: {exc.reason}", "ref": t})

    def _apply_state(self, cam: Camera, state: dict[str, Any]) -> None:
        changed: dict[str, Any] = {}
        for name in ("facing", "thermal"):
            if isinstance(state.get(name), str) and len(state[name]) > MAX_HELLO_TEXT:
                raise ValueError(f"state: '{name}' is longer than {MAX_HELLO_TEXT} characters")
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
                raise ValueError(f"pose: unknown joint {unknown[0][:64]!r}")
            for name, value in joints.items():
                if value is not None and not _joint(value):
                    raise ValueError(f"pose: joint {name!r} must be [x, y, confidence] (numbers) or null")
        t = cam.clock.to_server(float(device_ts))
        self.hub.emit("pose.sample", {"camera": cam.camera, "t": round(t, 6), "joints": joints,
                                      "device_ts": device_ts, "clock_offset_s": cam.clock.offset_s})  # fmt: skip

    async def _on_frame(self, cam: Camera, ws: web.WebSocketResponse, data: bytes, now: float) -> None:
        if data[:2] != b"\xff\xd8":
            await send_json(ws, {"t": "error", "error": "line: a binary message must be a JPEG preview frame", "ref": None})
            return
        cam.set_frame(bytes(data), now)
        self._frame_arrived(cam)


def _joint(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(not isinstance(v, bool) and isinstance(v, (int, float)) for v in value))  # fmt: skip


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _num(value: Any, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return value
