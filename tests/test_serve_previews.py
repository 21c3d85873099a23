"""``GET /v1/previews/ws``: every camera's newest preview JPEG over one WebSocket."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from mmx.serve.routes.previews import unpack_preview

from .test_serve import AUTH, RawDevice, jpeg, srv  # noqa: F401 - srv is a fixture

DEADLINE_S = 20.0


async def _frames_until(ws: aiohttp.ClientWebSocketResponse, done, seen: dict[str, list[tuple[dict, bytes]]]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not done(seen):
        assert time.monotonic() < deadline, f"frames seen so far: { {k: len(v) for k, v in seen.items()} }"
        msg = await ws.receive(timeout=DEADLINE_S)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        header, body = unpack_preview(msg.data)
        seen.setdefault(header["camera"], []).append((header, body))


def test_one_socket_carries_every_cameras_newest_frame(srv):
    async def main() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            a = await RawDevice(srv, http, "dev-a").connect()
            red, blue = jpeg(color=(200, 0, 0)), jpeg(color=(0, 0, 200))
            async with http.ws_connect(srv.url.replace("http", "ws") + "/v1/previews/ws") as ws:
                await a.ws.send_bytes(red)
                seen: dict = {}
                await _frames_until(ws, lambda s: "cam-1" in s, seen)
                header, body = seen["cam-1"][-1]
                assert body == red and header["seq"] >= 1 and abs(header["ts"] - time.time()) < 60
                # a camera that joins later is carried too, without resubscribing
                b = await RawDevice(srv, http, "dev-b").connect()
                await b.ws.send_bytes(blue)
                await _frames_until(ws, lambda s: "cam-2" in s, seen)
                assert seen["cam-2"][-1][1] == blue
                # narrow the subscription to cam-2: cam-1's next frames stop arriving
                await ws.send_str(orjson.dumps({"t": "subscribe", "cameras": ["cam-2"]}).decode())
                await ws.send_str("not json")
                msg = await ws.receive(timeout=DEADLINE_S)
                while msg.type == aiohttp.WSMsgType.BINARY:  # frames sent before the subscribe landed
                    msg = await ws.receive(timeout=DEADLINE_S)
                assert msg.type == aiohttp.WSMsgType.TEXT and orjson.loads(msg.data)["t"] == "error"
                before = len(seen.get("cam-1", []))
                await a.ws.send_bytes(jpeg(color=(0, 200, 0)))
                await b.ws.send_bytes(red)
                await _frames_until(ws, lambda s: s["cam-2"][-1][1] == red, seen)
                assert len(seen.get("cam-1", [])) == before

    asyncio.run(main())


def test_previews_socket_needs_the_token_and_an_upgrade(srv):
    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.url + "/v1/previews/ws") as resp:
                assert resp.status == 401
        async with aiohttp.ClientSession(headers=AUTH) as http:
            async with http.get(srv.url + "/v1/previews/ws", params={"cameras": "cam-1"}) as resp:
                assert resp.status == 400  # a plain GET, not a WebSocket upgrade

    asyncio.run(main())
