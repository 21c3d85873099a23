"""mmx serve against raw aiohttp WebSocket/HTTP clients speaking docs/device-protocol.md.

The server runs for real on a free 127.0.0.1 port in a background thread with its own event
loop; each test drives it from its own loop with `asyncio.run`, so every byte crosses a real
loopback socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from PIL import Image

from mmx.events import JOINT_NAMES, new_id
from mmx.serve import ServeConfig, Server
from mmx.serve.coverage import compute_coverage
from mmx.serve.stills import jpeg_size

from .conftest import MMX, free_port

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def jpeg(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30), quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


#: Deadline of this file's waits, in seconds: generous, since they return as soon as the
#: event is there, and a busy machine (scripts/test_under_load.sh) only makes it later.
WAIT_S = 30.0


class ServerThread:
    """A real `Server` on a free loopback port, in a thread with its own event loop."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        settings = dict(device_timeout_s=1.0, ack_timeout_s=0.5, heartbeat_s=0.25)
        settings.update(overrides)
        self.config = ServeConfig(data_dir=data_dir, token=TOKEN, host="127.0.0.1", port=free_port(), **settings)
        self.logs: list[str] = []
        self.server: Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            self.server = Server(self.config, log=self.logs.append)
            self._stop = asyncio.Event()
            loop.run_until_complete(self.server.start())
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_until_complete(self._stop.wait())
        loop.run_until_complete(self.server.stop("shutdown"))
        loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            assert not self._thread.is_alive(), "server did not stop"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.config.port}/v1/devices/ws"


@pytest.fixture
def srv(tmp_path):
    server = ServerThread(tmp_path / "data").start()
    yield server
    # the server stays up through everything a test threw at it
    state = asyncio.run(_get(server, "/v1/state"))
    assert state["mode"] in ("manual", "ghost", "autopilot")
    server.stop()


def make_server(tmp_path, **overrides):
    return ServerThread(tmp_path / "data", **overrides).start()


async def _get(srv: ServerThread, path: str, **params: Any) -> Any:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(srv.url + path, params=params) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


# -- a raw protocol device -----------------------------------------------------------------


class RawDevice:
    """One device speaking the protocol by hand: hello, heartbeats, acks, frames."""

    def __init__(self, srv: ServerThread, http: aiohttp.ClientSession, device: str, *,
                 lenses: dict | None = None, placement: dict | None = None, auto_ack: bool = True,
                 heartbeat: bool = True, clock_skew_s: float = 0.0) -> None:  # fmt: skip
        self.srv, self.http, self.device = srv, http, device
        self.lenses = lenses or {"back": [0.5, 1, 2, 3], "front": [1]}
        self.placement = placement
        self.auto_ack = auto_ack
        self.heartbeat = heartbeat
        self.skew = clock_skew_s
        self.facing, self.zoom = "back", 1
        self.received: list[dict] = []
        self.commands: list[dict] = []
        self.upload_stills = True
        self.closed = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.welcome: dict = {}
        self._tasks: list[asyncio.Task] = []

    def now(self) -> float:
        return time.time() - self.skew

    async def connect(self) -> RawDevice:
        self.ws = await self.http.ws_connect(self.srv.ws_url, headers=AUTH)
        hello = {"t": "hello", "token": TOKEN, "device": self.device, "name": f"Phone {self.device}",
                 "model": "iPhone15,3", "platform": "iOS 18.1", "app": "test 0",
                 "capabilities": {"facings": list(self.lenses), "lenses": self.lenses, "still": True,
                                  "preview": True, "pose": True},
                 "state": {"facing": self.facing, "zoom": self.zoom, "battery": 0.8, "thermal": "nominal"},
                 "ts": self.now()}  # fmt: skip
        if self.placement:
            hello["placement"] = self.placement
        await self.send(hello)
        msg = await self.ws.receive(timeout=5)
        self.welcome = orjson.loads(msg.data)
        assert self.welcome["t"] == "welcome", self.welcome
        self._tasks.append(asyncio.create_task(self._reader()))
        if self.heartbeat:
            self._tasks.append(asyncio.create_task(self._beat()))
        return self

    @property
    def camera(self) -> str:
        return self.welcome["camera"]

    async def send(self, obj: Any) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else orjson.dumps(obj).decode())

    async def _beat(self) -> None:
        while not self.ws.closed:
            await self.send({"t": "heartbeat", "ts": self.now()})
            await asyncio.sleep(0.2)

    async def _reader(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            obj = orjson.loads(msg.data)
            self.received.append(obj)
            if obj.get("t") == "command":
                self.commands.append(obj)
                if self.auto_ack:
                    asyncio.create_task(self._obey(obj))
        self.closed.set()

    async def _obey(self, cmd: dict) -> None:
        ok, error = True, None
        if cmd["command"] == "flip":
            self.facing = "front" if self.facing == "back" else "back"
            if self.zoom not in self.lenses[self.facing]:
                self.zoom = 1
        elif cmd["command"] == "zoom":
            self.zoom = cmd["args"]["zoom"]
        elif cmd["command"] == "still" and self.upload_stills:
            image = jpeg(320, 240)
            status, _ = await upload(self.http, self.srv, camera=self.camera, still=cmd["command_id"], image=image)
            ok = status == 201
        await self.send({"t": "ack", "command_id": cmd["command_id"], "ok": ok, "error": error,
                         "state": {"facing": self.facing, "zoom": self.zoom}})  # fmt: skip

    def of_type(self, t: str) -> list[dict]:
        return [m for m in self.received if m.get("t") == t]

    async def wait_for(self, t: str, count: int = 1, timeout: float = WAIT_S) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.of_type(t)) < count:
            assert time.monotonic() < deadline, f"{self.device}: no {t!r} message; got {self.received}"
            await asyncio.sleep(0.02)
        return self.of_type(t)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()

    def stop_heartbeat(self) -> None:
        for task in self._tasks[1:]:
            task.cancel()


async def upload(http, srv, *, camera, still, image, sha256=None, content_type="image/jpeg", token=TOKEN):
    form = aiohttp.FormData()
    form.add_field("camera", camera)
    form.add_field("still", still)
    form.add_field("sha256", sha256 or hashlib.sha256(image).hexdigest())
    form.add_field("image", image, filename=f"{still}.jpg", content_type=content_type)
    async with http.post(srv.url + "/v1/stills", data=form, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, await resp.json()


async def call(http, srv, method, path, body=None, **params):
    async with http.request(method, srv.url + path, json=body, params=params, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def events(http, srv, since=0, types=None) -> list[dict]:
    params = {"since": str(since), "follow": "0"}
    if types:
        params["types"] = types
    async with http.get(srv.url + "/v1/events", params=params, headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        return [orjson.loads(line) for line in (await resp.read()).splitlines() if line]


async def wait_event(http, srv, pred, timeout=WAIT_S, types=None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for ev in await events(http, srv, types=types):
            if pred(ev):
                return ev
        assert time.monotonic() < deadline, "expected event did not arrive"
        await asyncio.sleep(0.05)


def run(coro):
    return asyncio.run(coro)


# -- registry ------------------------------------------------------------------------------


def test_devices_get_stable_camera_ids_and_state_shows_them(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            a = await RawDevice(srv, http, "dev-a", placement={"label": "front", "azimuth_deg": 0}).connect()
            b = await RawDevice(srv, http, "dev-b").connect()
            assert (a.camera, b.camera) == ("cam-1", "cam-2")
            assert a.welcome["placement"] == {"label": "front", "azimuth_deg": 0}
            assert a.welcome["timeout_s"] == srv.config.device_timeout_s
            state = await _get(srv, "/v1/state")
            cams = {c["camera"]: c for c in state["cameras"]}
            assert cams["cam-1"]["status"] == "live" and cams["cam-1"]["device"] == "dev-a"
            assert cams["cam-2"]["lenses"] == {"back": [0.5, 1, 2, 3], "front": [1]}
            assert set(state) >= {"session", "program", "hold", "mode", "cameras"}
            joined = [e for e in await events(http, srv) if e["type"] == "camera.joined"]
            assert [e["data"]["camera"] for e in joined] == ["cam-1", "cam-2"]
            assert joined[0]["data"]["name"] == "Phone dev-a" and joined[0]["src"] == "serve"
            await a.close()
            await b.close()
            left = await wait_event(http, srv, lambda e: e["type"] == "camera.left" and e["data"]["camera"] == "cam-1")
            assert left["data"]["reason"] == "disconnected"

    run(main())


def test_silent_device_is_lost_within_timeout_and_returns_with_same_camera_and_placement(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-quiet").connect()
            await RawDevice(srv, http, "dev-other").connect()
            status, _ = await call(http, srv, "PUT", f"/v1/cameras/{dev.camera}/placement",
                                   {"label": "stage-right", "azimuth_deg": 60, "distance_m": 2.5})  # fmt: skip
            assert status == 200
            dev.stop_heartbeat()
            ev = await wait_event(http, srv, lambda e: e["type"] == "camera.left" and e["data"]["camera"] == "cam-1")
            assert ev["data"]["reason"] == "timeout"
            state = await _get(srv, "/v1/state")
            assert {c["camera"]: c["status"] for c in state["cameras"]} == {"cam-1": "lost", "cam-2": "live"}
            # lost for its silence, on the server's own clock: not before the timeout
            quiet = next(c for c in state["cameras"] if c["camera"] == "cam-1")
            assert ev["ts"] - quiet["last_seen"] > srv.config.device_timeout_s
            await asyncio.wait_for(dev.closed.wait(), WAIT_S)  # the server closed the socket
            back = await RawDevice(srv, http, "dev-quiet").connect()
            assert back.camera == "cam-1"
            assert back.welcome["placement"] == {"label": "stage-right", "azimuth_deg": 60, "distance_m": 2.5}
            state = await _get(srv, "/v1/state")
            assert {c["camera"]: c["status"] for c in state["cameras"]} == {"cam-1": "live", "cam-2": "live"}

    run(main())


def test_registry_and_placement_survive_a_server_restart(tmp_path):
    first = make_server(tmp_path)

    async def join(server, device, placement=None):
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(server, http, device, placement=placement).connect()
            welcome = dev.welcome
            await dev.close()
            return welcome

    try:
        assert run(join(first, "dev-x"))["camera"] == "cam-1"
        assert run(join(first, "dev-y", {"label": "left", "azimuth_deg": -30}))["camera"] == "cam-2"

        async def place():
            async with aiohttp.ClientSession() as http:
                return await call(http, first, "PUT", "/v1/cameras/cam-2/placement", {"label": "left", "azimuth_deg": -20})

        assert run(place())[0] == 200
        last_seq = run(_get(first, "/v1/state"))["seq"]
    finally:
        first.stop()
    second = make_server(tmp_path)
    try:
        # the hello's placement does not override the operator's stored one
        welcome = run(join(second, "dev-y", {"label": "left", "azimuth_deg": -30}))
        assert welcome["camera"] == "cam-2"
        assert welcome["placement"] == {"label": "left", "azimuth_deg": -20}
        assert run(join(second, "dev-z"))["camera"] == "cam-3"
        assert run(_get(second, "/v1/state"))["seq"] > last_seq  # seq continues across restarts
    finally:
        second.stop()


def test_same_device_connecting_twice_replaces_the_old_socket(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            old = await RawDevice(srv, http, "dev-twin").connect()
            new = await RawDevice(srv, http, "dev-twin").connect()
            assert new.camera == old.camera == "cam-1"
            await asyncio.wait_for(old.closed.wait(), 3)
            assert old.ws.close_code == 4409
            left = [e for e in await events(http, srv) if e["type"] == "camera.left"]
            assert [e["data"]["reason"] for e in left] == ["replaced"]
            status, ack = await call(http, srv, "POST", "/v1/cameras/cam-1/flip", {})
            assert status == 200 and new.commands and not old.commands

    run(main())


# -- commands ------------------------------------------------------------------------------


def test_commands_are_routed_to_the_right_device_and_return_the_ack(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            a = await RawDevice(srv, http, "dev-a").connect()
            b = await RawDevice(srv, http, "dev-b").connect()
            status, ack = await call(http, srv, "POST", "/v1/cameras/cam-2/flip", {})
            assert status == 200, ack
            assert ack["ok"] is True and ack["facing"] == "front" and ack["latency_ms"] >= 0
            assert [c["command"] for c in b.commands] == ["flip"] and a.commands == []
            assert b.commands[0]["command_id"] == ack["command_id"]

            status, ack = await call(http, srv, "POST", "/v1/cameras/cam-1/zoom", {"zoom": 0.5})
            assert status == 200 and ack["zoom"] == 0.5
            assert a.commands[-1]["args"] == {"zoom": 0.5}

            # the front camera of cam-2 has no ultra-wide: refused by the server, never sent
            status, err = await call(http, srv, "POST", "/v1/cameras/cam-2/zoom", {"zoom": 0.5})
            assert status == 422
            assert err["error"] == "cam-2 (front facing) has no 0.5× lens (lenses: 1)"
            assert [c["command"] for c in b.commands] == ["flip"]

            status, err = await call(http, srv, "POST", "/v1/cameras/cam-1/teleport", {})
            assert (status, err["error"]) == (422, "unsupported command 'teleport': use flip, zoom, still")
            status, err = await call(http, srv, "POST", "/v1/cameras/cam-9/flip", {})
            assert (status, err["error"]) == (404, "unknown camera 'cam-9'")

            evs = await events(http, srv)
            kinds = [(e["type"], e["data"].get("camera")) for e in evs if e["type"].startswith("camera.") and e["type"] != "camera.joined"]
            assert kinds[:3] == [("camera.command", "cam-2"), ("camera.ack", "cam-2"), ("camera.changed", "cam-2")]
            changed = [e["data"] for e in evs if e["type"] == "camera.changed"]
            assert {"camera": "cam-2", "facing": "front"} in changed and {"camera": "cam-1", "zoom": 0.5} in changed
            state = await _get(srv, "/v1/state")
            assert {c["camera"]: (c["facing"], c["zoom"]) for c in state["cameras"]} == {
                "cam-1": ("back", 0.5), "cam-2": ("front", 1)}

    run(main())


def test_no_ack_is_504_and_disconnected_camera_is_409(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            mute = await RawDevice(srv, http, "dev-mute", auto_ack=False).connect()
            status, err = await call(http, srv, "POST", f"/v1/cameras/{mute.camera}/flip", {})
            assert status == 504
            assert err["error"] == "cam-1 did not ack flip within 0.5 s"
            acks = [e["data"] for e in await events(http, srv) if e["type"] == "camera.ack"]
            assert acks[-1]["ok"] is False and acks[-1]["error"] == "timeout"
            # a late ack is ignored quietly
            await mute.send({"t": "ack", "command_id": mute.commands[0]["command_id"], "ok": True, "error": None})
            await mute.close()
            await wait_event(http, srv, lambda e: e["type"] == "camera.left")
            status, err = await call(http, srv, "POST", "/v1/cameras/cam-1/zoom", {"zoom": 2})
            assert (status, err["error"]) == (409, "cam-1 is not connected")

    run(main())


def test_device_refusal_is_422_with_its_error(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-r", auto_ack=False).connect()

            async def refuse():
                while not dev.commands:
                    await asyncio.sleep(0.01)
                await dev.send({"t": "ack", "command_id": dev.commands[0]["command_id"], "ok": False,
                                "error": "camera busy"})  # fmt: skip

            task = asyncio.create_task(refuse())
            status, err = await call(http, srv, "POST", "/v1/cameras/cam-1/flip", {})
            await task
            assert (status, err["error"], err["ok"]) == (422, "camera busy", False)

    run(main())


# -- stills --------------------------------------------------------------------------------


def test_still_uploads_checked_and_stored_once(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-s").connect()
            status, session = await call(http, srv, "POST", "/v1/session/start", {"title": "stills"})
            assert status == 201
            image = jpeg(320, 240)
            status, body = await upload(http, srv, camera=dev.camera, still="still-1", image=image)
            assert status == 201, body
            path = Path(body["path"])
            assert path == Path(session["path"]) / "stills" / "cam-1" / "still-1.jpg"
            assert path.read_bytes() == image
            assert (body["width"], body["height"], body["bytes"]) == (320, 240, len(image))
            # the same still again: stored once, no second event
            status, again = await upload(http, srv, camera=dev.camera, still="still-1", image=image)
            assert (status, again["duplicate"]) == (200, True)
            captured = [e for e in await events(http, srv) if e["type"] == "still.captured"]
            assert len(captured) == 1
            assert captured[0]["data"] == {"still": "still-1", "camera": "cam-1", "path": str(path),
                                           "sha256": hashlib.sha256(image).hexdigest(), "bytes": len(image),
                                           "width": 320, "height": 240}  # fmt: skip
            assert captured[0]["session"] == session["session"]
            # same id, other bytes: a conflict, the stored file untouched
            status, err = await upload(http, srv, camera=dev.camera, still="still-1", image=jpeg(color=(0, 0, 255)))
            assert status == 409 and path.read_bytes() == image

            status, err = await upload(http, srv, camera=dev.camera, still="still-2", image=image, sha256="0" * 64)
            assert status == 422
            assert err["error"].startswith(f"sha256 mismatch: the image hashes to {hashlib.sha256(image).hexdigest()}")
            status, err = await upload(http, srv, camera=dev.camera, still="still-3", image=b"GIF89a....", content_type="image/gif")
            assert (status, err["error"]) == (415, "image content type 'image/gif' is not JPEG or HEIC (send image/jpeg or image/heic)")
            status, err = await upload(http, srv, camera="cam-7", still="still-4", image=image)
            assert status == 404
            status, err = await upload(http, srv, camera=dev.camera, still="../../etc", image=image)
            assert status == 400
            status, err = await upload(http, srv, camera=dev.camera, still="still-5", image=image, token="nope")
            assert (status, err["error"]) == (401, "wrong token")
            stored = sorted(p.name for p in path.parent.iterdir())
            assert stored == ["still-1.jpg"]
            assert list((srv.config.data_dir / "tmp").iterdir()) == []  # no temp file left behind

    run(main())


def test_oversize_still_is_413(tmp_path):
    server = make_server(tmp_path, max_still_bytes=10_000)
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                await RawDevice(server, http, "dev-big").connect()
                big = jpeg(800, 600, quality=95) + os.urandom(20_000)
                status, err = await upload(http, server, camera="cam-1", still="big", image=big)
                assert (status, err["error"]) == (413, "the still is larger than the limit of 10000 bytes")
                small = jpeg(32, 32)
                status, _ = await upload(http, server, camera="cam-1", still="small", image=small)
                assert status == 201
                assert not (server.config.data_dir / "stills" / "cam-1" / "big.jpg").exists()
                assert (server.config.data_dir / "stills" / "cam-1" / "small.jpg").read_bytes() == small

        run(main())
    finally:
        server.stop()


def test_still_command_end_to_end(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-still").connect()
            status, ack = await call(http, srv, "POST", "/v1/cameras/cam-1/still", {})
            assert status == 200, ack
            assert ack["still"] == ack["command_id"] == dev.commands[0]["command_id"]
            assert Path(ack["path"]).read_bytes() and hashlib.sha256(Path(ack["path"]).read_bytes()).hexdigest() == ack["sha256"]
            evs = [e["type"] for e in await events(http, srv) if e["type"] in ("camera.command", "still.captured", "camera.ack")]
            assert evs == ["camera.command", "still.captured", "camera.ack"]

    run(main())


def test_jpeg_size_reads_the_frame_header():
    assert jpeg_size(jpeg(123, 45)) == (123, 45)
    assert jpeg_size(b"not a jpeg") is None


# -- preview -------------------------------------------------------------------------------


async def read_parts(resp, count: int, timeout: float = 5.0) -> list[tuple[int, bytes]]:
    """Read ``count`` MJPEG parts: (X-Frame-Seq, JPEG bytes)."""
    parts = []
    deadline = time.monotonic() + timeout
    while len(parts) < count:
        assert time.monotonic() < deadline
        line = await asyncio.wait_for(resp.content.readline(), timeout)
        if line.strip() != b"--mmxframe":
            continue
        headers = {}
        while (h := (await resp.content.readline()).strip()):
            k, v = h.decode().split(":", 1)
            headers[k.lower()] = v.strip()
        body = await resp.content.readexactly(int(headers["content-length"]))
        parts.append((int(headers["x-frame-seq"]), body))
    return parts


def test_mjpeg_preview_to_two_viewers_and_latest_jpeg(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-p").connect()
            status, err = await call(http, srv, "GET", "/v1/cameras/cam-1/preview.jpg")
            assert (status, err["error"]) == (404, "no preview frame from cam-1 yet")
            frames = [jpeg(color=(i * 40, 0, 0)) for i in range(4)]
            await dev.ws.send_bytes(frames[0])
            url = srv.url + "/v1/cameras/cam-1/preview.mjpeg"
            async with aiohttp.ClientSession() as v1, aiohttp.ClientSession() as v2:
                r1 = await v1.get(url, headers=AUTH)
                r2 = await v2.get(url, params={"token": TOKEN})  # the <img> style
                assert r1.status == r2.status == 200
                assert r1.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=mmxframe"
                first1, first2 = (await read_parts(r1, 1))[0], (await read_parts(r2, 1))[0]
                assert first1 == first2 == (1, frames[0])
                for frame in frames[1:]:
                    await dev.ws.send_bytes(frame)
                    got1, got2 = (await read_parts(r1, 1))[0], (await read_parts(r2, 1))[0]
                    assert got1[1] == got2[1] == frame
                r1.close()
                r2.close()
            async with http.get(srv.url + "/v1/cameras/cam-1/preview.jpg", headers=AUTH) as resp:
                assert resp.content_type == "image/jpeg" and await resp.read() == frames[-1]
            async with http.get(url) as resp:
                assert resp.status == 401
            await dev.ws.send_bytes(b"not a jpeg")
            err = await dev.wait_for("error")
            assert err[-1]["error"] == "line: a binary message must be a JPEG preview frame"

    run(main())


def test_slow_mjpeg_viewer_skips_frames(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-fast").connect()
            frame = jpeg(16, 16) + b"\x00" * 200_000  # JPEG decoders ignore bytes after EOI
            await dev.ws.send_bytes(frame)
            reader = aiohttp.TCPConnector(limit=1)
            async with aiohttp.ClientSession(connector=reader, read_bufsize=2**16) as viewer:
                resp = await viewer.get(srv.url + "/v1/cameras/cam-1/preview.mjpeg", headers=AUTH)
                assert (await read_parts(resp, 1))[0][0] == 1
                n = 150  # 30 MB pushed while the viewer reads nothing
                for _ in range(n):
                    await dev.ws.send_bytes(frame)
                deadline = time.monotonic() + 10
                while (await _get(srv, "/v1/cameras/cam-1"))["preview_frames"] < n + 1:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                seqs = []
                deadline = time.monotonic() + 10
                while not seqs or seqs[-1] < n + 1:
                    assert time.monotonic() < deadline
                    seqs.append((await read_parts(resp, 1))[0][0])
                resp.close()
            # the viewer reached the newest frame without being sent every one in between
            assert len(seqs) < n / 2, seqs
            assert seqs == sorted(seqs)

    run(main())


# -- placement and coverage ----------------------------------------------------------------


def test_coverage_follows_placement_changes(tmp_path):
    server = make_server(tmp_path, duplicate_angle_deg=10.0)
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                devs = [await RawDevice(server, http, f"dev-{i}").connect() for i in range(3)]
                cov = await _get(server, "/v1/coverage")
                assert cov["unplaced"] == ["cam-1", "cam-2", "cam-3"] and cov["largest_gap"]["width_deg"] == 360
                for cam, az in (("cam-1", -45), ("cam-2", 45), ("cam-3", 50)):
                    status, body = await call(http, server, "PUT", f"/v1/cameras/{cam}/placement", {"azimuth_deg": az, "label": cam})
                    assert status == 200 and body["placement"]["azimuth_deg"] == az
                cov = await _get(server, "/v1/coverage")
                assert [c["camera"] for c in cov["covered"]] == ["cam-1", "cam-2", "cam-3"]
                assert cov["duplicates"] == [{"cameras": ["cam-2", "cam-3"], "apart_deg": 5.0}]
                assert cov["largest_gap"] == {"from": "cam-3", "to": "cam-1", "start_deg": 50.0, "end_deg": -45.0,
                                              "width_deg": 265.0, "center_deg": -177.5}  # fmt: skip
                # the device is told, and the change is an event
                await devs[2].wait_for("placement")
                assert devs[2].of_type("placement")[-1]["placement"] == {"azimuth_deg": 50, "label": "cam-3"}
                status, _ = await call(http, server, "PUT", "/v1/cameras/cam-3/placement", {"azimuth_deg": 180})
                cov = await _get(server, "/v1/coverage")
                assert cov["duplicates"] == []
                assert cov["largest_gap"]["width_deg"] == 135.0
                status, err = await call(http, server, "PUT", "/v1/cameras/cam-3/placement", {"azimuth_deg": "north"})
                assert (status, err["error"]) == (422, "placement field 'azimuth_deg' must be a number, got a string")
                changed = [e["data"] for e in await events(http, server) if e["type"] == "camera.changed"]
                assert changed[-1] == {"camera": "cam-3", "placement": {"azimuth_deg": 180}}
                # a lost camera leaves the live coverage
                await devs[0].close()
                await wait_event(http, server, lambda e: e["type"] == "camera.left")
                cov = await _get(server, "/v1/coverage")
                assert [(c["camera"], c["azimuth_deg"]) for c in cov["covered"]] == [("cam-3", -180.0), ("cam-2", 45.0)]

        run(main())
    finally:
        server.stop()


def test_compute_coverage_wraps_around():
    cov = compute_coverage([("a", {"azimuth_deg": 170}), ("b", {"azimuth_deg": -175}), ("c", {})], duplicate_angle_deg=20)
    assert cov["duplicates"] == [{"cameras": ["b", "a"], "apart_deg": 15.0}]
    assert cov["unplaced"] == ["c"]
    assert cov["largest_gap"]["from"] == "b" and cov["largest_gap"]["width_deg"] == 345.0


# -- director ------------------------------------------------------------------------------


def test_hold_blocks_cut_force_passes_and_tally_follows(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            a = await RawDevice(srv, http, "dev-a").connect()
            b = await RawDevice(srv, http, "dev-b").connect()
            status, st = await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-1"})
            assert (status, st["program"]) == (200, "cam-1")
            assert (await a.wait_for("tally"))[-1] == {"t": "tally", "program": True, "preview": False}
            status, st = await call(http, srv, "POST", "/v1/director/hold", {})
            assert (status, st["hold"]) == (200, "cam-1")
            status, err = await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-2", "by": "ghost"})
            assert (status, err["error"]) == (423, "program is held on cam-1; release it or cut with force")
            assert (await _get(srv, "/v1/state"))["program"] == "cam-1"
            status, st = await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-2", "force": True})
            assert (status, st["program"], st["hold"]) == (200, "cam-2", "cam-1")
            assert (await b.wait_for("tally"))[-1]["program"] is True
            assert (await a.wait_for("tally", 2))[-1]["program"] is False
            status, st = await call(http, srv, "POST", "/v1/director/release", {})
            assert st["hold"] is None
            status, st = await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-1", "by": "ghost", "proposal": "p-1"})
            assert (status, st["program"]) == (200, "cam-1")
            status, st = await call(http, srv, "POST", "/v1/director/mode", {"mode": "ghost"})
            assert st["mode"] == "ghost"
            status, err = await call(http, srv, "POST", "/v1/director/mode", {"mode": "chaos"})
            assert status == 422
            status, err = await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-5"})
            assert status == 404
            director = [(e["type"], e["data"]) for e in await events(http, srv, types="director.*")]
            assert director == [
                ("director.cut", {"from": None, "to": "cam-1", "by": "operator"}),
                ("director.hold", {"camera": "cam-1", "by": "operator"}),
                ("director.cut", {"from": "cam-1", "to": "cam-2", "by": "operator", "force": True}),
                ("director.release", {"camera": "cam-1", "by": "operator"}),
                ("director.cut", {"from": "cam-2", "to": "cam-1", "by": "ghost", "proposal": "p-1"}),
                ("director.mode", {"mode": "ghost", "previous": "manual", "by": "operator"}),
            ]

    run(main())


def test_losing_the_program_camera_cuts_to_the_fallback(tmp_path):
    server = make_server(tmp_path, fallback_camera="cam-1")
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                await RawDevice(server, http, "dev-a").connect()
                b = await RawDevice(server, http, "dev-b").connect()
                await call(http, server, "POST", "/v1/director/cut", {"to": "cam-2"})
                await call(http, server, "POST", "/v1/director/hold", {})
                await b.close()
                lost = await wait_event(http, server, lambda e: e["type"] == "director.program_lost")
                assert lost["data"]["camera"] == "cam-2" and lost["data"]["fallback"] == "cam-1"
                state = await _get(server, "/v1/state")
                assert (state["program"], state["hold"]) == ("cam-1", None)
                cut = [e["data"] for e in await events(http, server, types="director.cut")][-1]
                assert cut == {"from": "cam-2", "to": "cam-1", "by": "serve", "reason": "program_lost", "force": True}

        run(main())
    finally:
        server.stop()


def test_losing_the_program_camera_without_fallback_cuts_to_nothing(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            a = await RawDevice(srv, http, "dev-a").connect()
            await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-1"})
            await a.close()
            await wait_event(http, srv, lambda e: e["type"] == "director.program_lost")
            assert (await _get(srv, "/v1/state"))["program"] is None

    run(main())


# -- session -------------------------------------------------------------------------------


def test_session_start_stop_writes_the_capture_directory(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-a", placement={"label": "front", "azimuth_deg": 0}).connect()
            status, session = await call(http, srv, "POST", "/v1/session/start", {"title": "Look 1", "notes": "warm-up"})
            assert status == 201
            sid = session["session"]
            await dev.wait_for("session")
            assert dev.of_type("session")[-1] == {"t": "session", "session": sid}
            status, err = await call(http, srv, "POST", "/v1/session/start", {"title": "again"})
            assert (status, err["error"]) == (409, f"session {sid} is already active; stop it first")
            await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-1"})
            joints = {name: [0.5, 0.5, 0.9] for name in JOINT_NAMES}
            await dev.send({"t": "pose", "ts": time.time(), "joints": joints})
            cue = {"v": 1, "id": new_id(), "ts": time.time(), "type": "music.cue", "session": None, "src": "operator",
                   "data": {"track": "ab" * 32, "title": "Song", "started_at": time.time(), "offset_s": 0.0}}  # fmt: skip
            status, _ = await call(http, srv, "POST", "/v1/events", cue)
            assert status == 202
            await wait_event(http, srv, lambda e: e["type"] == "pose.sample", types="pose.sample")
            status, done = await call(http, srv, "POST", "/v1/session/stop", {})
            assert status == 200 and done["status"] == "completed" and done["cuts"] == 1
            status, err = await call(http, srv, "POST", "/v1/session/stop", {})
            assert (status, err["error"]) == (409, "no session is active")

            capture = srv.config.data_dir / "sessions" / sid
            meta = orjson.loads((capture / "session.json").read_bytes())
            assert meta["status"] == "completed" and meta["end_reason"] == "operator"
            assert (meta["title"], meta["notes"], meta["kind"]) == ("Look 1", "warm-up", "photoshoot_performance")
            assert meta["cameras"][0]["camera"] == "cam-1" and meta["cameras"][0]["placement"]["label"] == "front"
            assert meta["clock"]["cameras"]["cam-1"]["samples"] >= 1
            lines = [orjson.loads(x) for x in (capture / "events.jsonl").read_bytes().splitlines()]
            types = [e["type"] for e in lines]
            assert types[0] == "session.started" and types[-1] == "session.ended"
            for wanted in ("camera.joined", "director.cut", "pose.sample", "music.cue"):
                assert wanted in types
            assert all(e["session"] == sid for e in lines)
            seqs = [e["seq"] for e in lines]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            music = next(e for e in lines if e["type"] == "music.cue")
            assert (music["id"], music["ts"], music["src"], music["data"]) == (cue["id"], cue["ts"], "operator", cue["data"])
            assert (capture / "stills").is_dir()
            assert dev.of_type("session")[-1] == {"t": "session", "session": None} or await dev.wait_for("session", 2)

    run(main())


def test_crashed_session_is_recovered_at_start(tmp_path):
    capture = tmp_path / "data" / "sessions" / "01CRASHED0000000000000000"
    capture.mkdir(parents=True)
    (capture / "session.json").write_bytes(orjson.dumps({"session": "01CRASHED0000000000000000", "status": "active"}))
    (capture / "events.jsonl").write_bytes(b'{"v":1,"id":"x1","seq":41,"ts":1.0,"type":"session.started","session":"01CRASHED0000000000000000","src":"serve","data":{}}\n{"v":1,"id":"x2","se')
    server = make_server(tmp_path)
    try:
        meta = orjson.loads((capture / "session.json").read_bytes())
        assert (meta["status"], meta["end_reason"]) == ("completed", "recovered")
        last = orjson.loads((capture / "events.jsonl").read_bytes().splitlines()[-1])
        assert last["type"] == "session.ended" and last["seq"] == 42 and last["data"]["reason"] == "recovered"
    finally:
        server.stop()


# -- events --------------------------------------------------------------------------------


def test_events_resume_filter_and_pose_only_when_asked(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-a").connect()
            for i in range(3):
                await dev.send({"t": "pose", "ts": time.time(), "joints": None})
            await call(http, srv, "POST", "/v1/director/cut", {"to": "cam-1"})
            await call(http, srv, "POST", "/v1/director/mode", {"mode": "autopilot"})
            everything = await events(http, srv)
            assert "pose.sample" not in [e["type"] for e in everything]
            poses = await events(http, srv, types="pose.*")
            assert [e["type"] for e in poses] == ["pose.sample"] * 3
            assert [e["type"] for e in await events(http, srv, types="*")] == [e["type"] for e in everything]
            both = await events(http, srv, types="pose.sample,director.mode")
            assert [e["type"] for e in both] == ["pose.sample"] * 3 + ["director.mode"]
            cut_seq = next(e["seq"] for e in everything if e["type"] == "director.cut")
            resumed = await events(http, srv, since=cut_seq)
            assert [e["type"] for e in resumed] == ["director.mode"]
            assert await events(http, srv, since=10**9) == []
            assert [e["type"] for e in await events(http, srv, types="director.*,camera.joined")] == [
                "camera.joined", "director.cut", "director.mode"]

            # a live stream: history first, then new events as they happen
            async with http.get(srv.url + "/v1/events", params={"since": str(cut_seq), "types": "director.*"}, headers=AUTH) as resp:
                first = orjson.loads(await asyncio.wait_for(resp.content.readline(), 3))
                assert first["type"] == "director.mode"
                await call(http, srv, "POST", "/v1/director/hold", {})
                live = orjson.loads(await asyncio.wait_for(resp.content.readline(), 3))
                assert live["type"] == "director.hold" and live["seq"] > first["seq"]
            status, err = await call(http, srv, "GET", "/v1/events", since="x")
            assert (status, err["error"]) == (400, "since must be a whole number (an event seq), got 'x'")

    run(main())


def test_old_events_come_back_from_the_capture_file(tmp_path):
    server = make_server(tmp_path, ring_size=4)
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                await RawDevice(server, http, "dev-a").connect()
                await RawDevice(server, http, "dev-b").connect()
                status, session = await call(http, server, "POST", "/v1/session/start", {"title": "ring"})
                for cam in ("cam-1", "cam-2") * 4:
                    await call(http, server, "POST", "/v1/director/cut", {"to": cam})
                all_events = await events(http, server, types="director.cut,session.started")
                assert [e["type"] for e in all_events] == ["session.started"] + ["director.cut"] * 8
                assert [e["seq"] for e in all_events] == sorted(e["seq"] for e in all_events)

        run(main())
    finally:
        server.stop()


def test_a_reader_that_falls_behind_catches_up_without_gaps(tmp_path):
    server = make_server(tmp_path, ring_size=50, pose_ring_size=50, stream_queue_size=8)
    try:
        async def main():
            async with aiohttp.ClientSession() as http:
                dev = await RawDevice(server, http, "dev-flood").connect()
                await call(http, server, "POST", "/v1/session/start", {"title": "flood"})
                n = 3000
                async with http.get(server.url + "/v1/events", params={"types": "pose.sample"}, headers=AUTH) as resp:
                    # subscribed: GET /v1/events subscribes before it sends its headers
                    for i in range(n):
                        await dev.ws.send_str(orjson.dumps({"t": "pose", "ts": 1000.0 + i, "joints": None}).decode())
                    got = []
                    while len(got) < n:
                        try:
                            line = await asyncio.wait_for(resp.content.readline(), 10)
                        except TimeoutError:
                            raise AssertionError((len(got), got[-1]["seq"] if got else None, (await _get(server, "/v1/state"))["seq"], server.logs[-5:]))
                        got.append(orjson.loads(line))
                assert [e["data"]["device_ts"] for e in got] == [1000.0 + i for i in range(n)]
                seqs = [e["seq"] for e in got]
                assert seqs == sorted(set(seqs))
                assert (await _get(server, "/v1/state"))["server"]["event_lag_recoveries"] >= 1

        run(main())
    finally:
        server.stop()


def test_posted_events_keep_their_envelope_and_get_the_server_seq(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            await call(http, srv, "POST", "/v1/session/start", {"title": "t"})
            marker = {"v": 1, "id": "uuid-from-the-app-1", "ts": 1795264000.5, "type": "still.marker", "session": None,
                      "src": "operator", "seq": 999, "data": {"label": "nice", "camera": "cam-1"}}  # fmt: skip
            status, body = await call(http, srv, "POST", "/v1/events", marker)
            assert status == 202 and body["duplicate"] is False
            status, again = await call(http, srv, "POST", "/v1/events", marker)
            assert status == 202 and again == {"id": "uuid-from-the-app-1", "seq": body["seq"], "duplicate": True}
            ghost = {"id": new_id(), "ts": time.time(), "type": "ghost.proposed", "src": "ghost",
                     "data": {"proposal": "p1", "to": "cam-2", "score": 0.7}}  # fmt: skip
            assert (await call(http, srv, "POST", "/v1/events", ghost))[0] == 202
            assert (await call(http, srv, "POST", "/v1/events", {"type": "lighting.scene", "data": {"scene": 3}}))[0] == 202
            evs = {e["type"]: e for e in await events(http, srv)}
            got = evs["still.marker"]
            assert (got["id"], got["ts"], got["src"], got["data"]) == (marker["id"], marker["ts"], "operator", marker["data"])
            assert got["seq"] == body["seq"] != 999 and got["session"] == evs["session.started"]["session"]
            assert evs["ghost.proposed"]["src"] == "ghost" and evs["lighting.scene"]["src"] == "operator"
            status, err = await call(http, srv, "POST", "/v1/events", {"type": "director.cut", "data": {"to": "cam-1"}})
            assert (status, err["error"]) == (422, "director.cut is made by the server itself; use its endpoint instead of POST /v1/events")
            status, err = await call(http, srv, "POST", "/v1/events", {"type": "music.cue", "data": {"track": 5}})
            assert (status, err["error"]) == (422, "music.cue: data field 'track' must be a string, got a number")
            async with http.post(srv.url + "/v1/events", data=b"{nope", headers=AUTH) as resp:
                assert resp.status == 400 and (await resp.json())["error"].startswith("the body is not JSON")

    run(main())


# -- pose clock ----------------------------------------------------------------------------


def test_pose_time_is_mapped_onto_the_server_clock(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-skew", clock_skew_s=100.0).connect()  # device clock 100 s behind
            # heartbeats until the estimate (the least receive-minus-send difference) is
            # within 50 ms of the true 100 s: a loaded loop delays some of them, not all
            deadline = time.monotonic() + WAIT_S
            while (offset := (await _get(srv, "/v1/cameras/cam-1"))["clock_offset_s"]) is None or offset - 100.0 >= 0.05:
                assert time.monotonic() < deadline, f"clock offset estimate {offset}"
                await asyncio.sleep(0.05)
            captured = dev.now() - 0.05
            await dev.send({"t": "pose", "ts": captured, "joints": {"nose": [0.5, 0.25, 0.9]}})
            ev = await wait_event(http, srv, lambda e: True, types="pose.sample")
            assert ev["data"]["device_ts"] == captured
            assert ev["data"]["t"] == pytest.approx(captured + ev["data"]["clock_offset_s"], abs=1e-6)
            assert 100.0 - 0.01 < ev["data"]["clock_offset_s"] < 100.0 + 0.05
            await dev.send({"t": "pose", "ts": captured, "joints": {"tail": [0, 0, 1]}})
            assert (await dev.wait_for("error"))[-1] == {"t": "error", "error": "line: pose: unknown joint 'tail'", "ref": "pose"}

    run(main())


# -- bad input -----------------------------------------------------------------------------


def test_malformed_websocket_messages_get_errors_and_the_connection_stays_up(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            dev = await RawDevice(srv, http, "dev-bad").connect()
            await dev.send("{not json")
            await dev.send("[1, 2]")
            await dev.send({"t": "selfie"})
            await dev.send({"t": "pose", "joints": None})
            errors = await dev.wait_for("error", 4)
            assert errors[0]["error"].startswith("line: not JSON:") and errors[0]["ref"] is None
            assert errors[1] == {"t": "error", "error": "line: expected a JSON object with a 't' field", "ref": None}
            assert errors[2] == {"t": "error", "error": "line: unknown message type 'selfie'", "ref": "selfie"}
            assert errors[3]["ref"] == "pose"
            assert not dev.ws.closed
            status, ack = await call(http, srv, "POST", "/v1/cameras/cam-1/flip", {})
            assert status == 200 and ack["ok"]

    run(main())


def test_bad_hellos_and_tokens_are_refused(srv):
    async def main():
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(srv.ws_url, headers={"Authorization": "Bearer wrong"})
            assert info.value.status == 401
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(srv.ws_url)
            ws = await http.ws_connect(srv.ws_url, params={"token": TOKEN})
            await ws.send_str(orjson.dumps({"t": "hello", "token": "wrong", "device": "d"}).decode())
            msg = orjson.loads((await ws.receive(timeout=WAIT_S)).data)
            assert msg == {"t": "error", "error": "hello: wrong token", "ref": "hello"}
            await ws.receive(timeout=WAIT_S)
            assert ws.close_code == 4401
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            await ws.send_str('{"t": "hello", "name": "no id"}')
            msg = orjson.loads((await ws.receive(timeout=WAIT_S)).data)
            assert msg["error"] == "hello: missing 'device' (a stable device id of 1 to 128 characters)"
            await ws.receive(timeout=WAIT_S)
            assert ws.close_code == 4400
            ws = await http.ws_connect(srv.ws_url, headers=AUTH)
            await ws.send_str("hello?")
            assert orjson.loads((await ws.receive(timeout=WAIT_S)).data)["error"].startswith("hello: not JSON")
            async with http.get(srv.url + "/v1/state", headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401 and await resp.json() == {"error": "wrong token"}
            async with http.get(srv.url + "/v1/state") as resp:
                assert resp.status == 401
                assert (await resp.json())["error"] == "missing token: send 'Authorization: Bearer <token>' or ?token=<token>"
            async with http.get(srv.url + "/v1/nothing", headers=AUTH) as resp:
                assert resp.status == 404 and "error" in await resp.json()
            assert (await _get(srv, "/v1/state"))["cameras"] == []

    run(main())


# -- zeroconf ------------------------------------------------------------------------------


def test_lan_advertisement_record_is_built_without_advertising():
    from mmx.serve.advertise import SERVICE_TYPE, service_info

    info = service_info(8750, name="mmx test", addresses=["192.168.1.20"])
    assert info.type == SERVICE_TYPE == "_mmx._tcp.local."
    assert info.name == "mmx test._mmx._tcp.local."
    assert info.port == 8750
    assert info.parsed_addresses() == ["192.168.1.20"]
    assert info.properties[b"path"] == b"/v1"
    assert all(b"token" not in key for key in info.properties)


# -- the command ---------------------------------------------------------------------------


def start_cli(tmp_path, *args, stdout=subprocess.PIPE):
    port = free_port()
    proc = subprocess.Popen([*MMX, "serve", "--port", str(port), "--data", str(tmp_path / "cli-data"), *args],
                            stdout=stdout, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 20
    lines = []
    while True:
        assert time.monotonic() < deadline, lines
        line = proc.stderr.readline().decode()
        assert line, f"mmx serve exited: {lines}"
        lines.append(line)
        if line.startswith("listening on "):
            return proc, line.split()[-1], lines


def test_cli_prints_token_and_address_streams_events_and_shuts_down_cleanly(tmp_path):
    proc, url, lines = start_cli(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        token = next(ln.split()[-1] for ln in lines if ln.startswith("token: "))
        assert len(token) >= 20
        import httpx

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5) as client:
            started = client.post("/v1/session/start", json={"title": "cli"})
            assert started.status_code == 201
            sid = started.json()["session"]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    evs = [orjson.loads(x) for x in out.splitlines()]
    # the session's recording take is armed with it and disarmed before it ends
    assert [e["type"] for e in evs] == ["session.started", "recording.armed", "recording.disarmed", "session.ended"]
    assert evs[-1]["data"]["reason"] == "shutdown"
    meta = orjson.loads((tmp_path / "cli-data" / "sessions" / sid / "session.json").read_bytes())
    assert (meta["status"], meta["end_reason"]) == ("completed", "shutdown")


def test_cli_events_to_a_file_and_port_in_use(tmp_path):
    target = tmp_path / "events.jsonl"
    proc, url, _ = start_cli(tmp_path, "--token", "tk", "--events", str(target), stdout=subprocess.DEVNULL)
    try:
        port = url.rsplit(":", 1)[1]
        clash = subprocess.run([*MMX, "serve", "--port", port, "--token", "tk", "--data", str(tmp_path / "d2")],
                               capture_output=True, text=True, timeout=30)  # fmt: skip
        assert clash.returncode == 74
        assert f"Error: cannot listen on 127.0.0.1:{port}" in clash.stderr
        import httpx

        httpx.post(url + "/v1/director/mode", json={"mode": "ghost"}, headers={"Authorization": "Bearer tk"}, timeout=5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert [orjson.loads(x)["type"] for x in target.read_bytes().splitlines()] == ["director.mode"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
