"""Preview frames: the latest JPEG, an MJPEG stream per camera, and every camera over one WebSocket.

``GET /v1/previews/ws?cameras=cam-1,cam-2`` (every camera, those joining later included,
when ``cameras`` is absent) carries the newest preview JPEG of each camera as binary
messages, so a console with 16 tiles needs one connection instead of one MJPEG request per
tile (browsers allow ~6 HTTP/1.1 connections per host). Each binary message is::

    uint32 big-endian N | N bytes of UTF-8 JSON header | JPEG bytes

with the header ``{"camera": "cam-1", "seq": 42, "ts": 1795264000.125, "capture_t": 1795264000.093}``:
``seq`` the camera's preview frame number (``X-Frame-Seq`` of the JPEG routes), ``ts`` the
server's receive time of the frame (Unix seconds, server clock), ``capture_t`` when the frame
was captured on the server clock (the device's ``frame`` message, docs/device-protocol.md,
mapped with its clock offset; ``ts`` when the device sent none) — what `mmx pose` stamps its
``pose.sample`` with. Latest frame wins: a reader that is
slower than the cameras gets each camera's newest frame when its socket can take more, never
a queue of old ones. The client may send ``{"t": "subscribe", "cameras": [...] | null}`` to
change its set; anything else gets ``{"t": "error", ...}``.
"""

from __future__ import annotations

import asyncio
import struct

import orjson
from aiohttp import WSMsgType, web

from mmx.serve.api import ApiError, send_json
from mmx.serve.registry import Camera

MJPEG_BOUNDARY = "mmxframe"
_HEADER_LEN = struct.Struct(">I")


def pack_preview(cam: Camera) -> bytes:
    """One binary message of ``/v1/previews/ws`` with ``cam``'s current frame (see the module docstring)."""
    header = orjson.dumps({"camera": cam.camera, "seq": cam.frame_seq, "ts": cam.frame_ts,
                           "capture_t": cam.frame_capture_t})  # fmt: skip
    return _HEADER_LEN.pack(len(header)) + header + (cam.frame or b"")


def unpack_preview(message: bytes) -> tuple[dict, bytes]:
    """``(header, jpeg)`` of one ``/v1/previews/ws`` binary message. Raises ValueError when malformed."""
    if len(message) < 4:
        raise ValueError("preview message shorter than its length prefix")
    (n,) = _HEADER_LEN.unpack_from(message)
    if 4 + n > len(message):
        raise ValueError("preview header longer than the message")
    return orjson.loads(message[4:4 + n]), message[4 + n:]


def _camera_set(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()] if value.strip() else None
        if value is None:
            return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("cameras must be a list of camera ids, or null for every camera")
    return frozenset(v.strip() for v in value)


class PreviewRoutes:
    """``/v1/cameras/{camera}/preview.*`` (mixed into `Server`)."""

    def _add_preview_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/cameras/{camera}/preview.mjpeg", self._preview_mjpeg)
        r.add_get("/v1/cameras/{camera}/preview.jpg", self._preview_jpg)
        r.add_get("/v1/previews/ws", self._previews_ws)

    def _frame_arrived(self, cam: Camera) -> None:
        """Wake every ``/v1/previews/ws`` reader and record the frame: ``cam`` has a new frame."""
        self.recording.preview(cam.camera, cam.frame, cam.frame_ts)
        for watcher in self._preview_watchers:
            watcher.set()

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

    async def _previews_ws(self, request: web.Request) -> web.WebSocketResponse:
        try:
            wanted = [_camera_set(request.query.get("cameras"))]
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        watcher = asyncio.Event()
        self._preview_watchers.add(watcher)

        async def read() -> None:
            # the client's messages: subscriptions, and its close (which ends the sender too)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    obj = orjson.loads(msg.data)
                    if not isinstance(obj, dict) or obj.get("t") != "subscribe":
                        raise ValueError('send {"t": "subscribe", "cameras": [...] | null}')
                    wanted[0] = _camera_set(obj.get("cameras"))
                    watcher.set()
                except (ValueError, orjson.JSONDecodeError) as exc:
                    await send_json(ws, {"t": "error", "error": f"line: {exc}", "ref": None})
            watcher.set()

        reader = asyncio.ensure_future(read())
        sent: dict[str, int] = {}
        try:
            while not ws.closed and not reader.done() and not self.closing.is_set():
                watcher.clear()
                for cam in list(self.registry.cameras.values()):
                    if cam.frame is None or sent.get(cam.camera) == cam.frame_seq:
                        continue
                    if wanted[0] is not None and cam.camera not in wanted[0]:
                        continue
                    sent[cam.camera] = cam.frame_seq
                    # send_bytes waits while the reader's socket is full; meanwhile newer
                    # frames replace cam.frame, so the next round sends only the newest
                    await ws.send_bytes(pack_preview(cam))
                try:
                    await asyncio.wait_for(watcher.wait(), 1.0)
                except TimeoutError:
                    pass
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self._preview_watchers.discard(watcher)
            self._sockets.discard(ws)
            reader.cancel()
            if not ws.closed:
                await self._close_ws(ws, 1001, "server shutting down")
        return ws
