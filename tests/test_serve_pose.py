"""``POST /v1/pose``, the frames' capture time on the previews socket, ``pose_fps`` in the state."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson

from mmx.serve.routes.pose import PoseRates
from mmx.serve.routes.previews import unpack_preview

from .test_serve import AUTH, RawDevice, jpeg, srv  # noqa: F401 - srv is a fixture

DEADLINE_S = 20.0
JOINTS = {"nose": [0.5, 0.2, 0.9], "neck": [0.5, 0.3, 0.8]}


async def _post(http: aiohttp.ClientSession, srv, body) -> tuple[int, dict]:
    async with http.post(srv.url + "/v1/pose", json=body) as resp:
        return resp.status, await resp.json()


async def _events(http: aiohttp.ClientSession, srv, types: str) -> list[dict]:
    async with http.get(srv.url + "/v1/events", params={"since": 0, "types": types, "follow": "0"}) as resp:
        return [orjson.loads(line) for line in (await resp.read()).splitlines() if line.strip()]


def test_a_posted_sample_becomes_pose_sample_and_bad_ones_are_refused(srv):
    async def main() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            dev = await RawDevice(srv, http, "dev-a").connect()
            t = time.time() - 0.05
            status, body = await _post(http, srv, {"camera": dev.camera, "t": t, "joints": JOINTS, "frame_seq": 3,
                                                   "dropped": 2, "estimator": "test"})  # fmt: skip
            assert status == 202 and body["seq"] >= 1
            status, _ = await _post(http, srv, {"camera": dev.camera, "t": t + 0.1, "joints": None, "dropped": 4})
            assert status == 202
            samples = await _events(http, srv, "pose.sample")
            assert [s["data"]["joints"] for s in samples] == [JOINTS, None]
            first = samples[0]["data"]
            assert first == {"camera": dev.camera, "t": round(t, 6), "joints": JOINTS, "source": "mmx pose",
                             "frame_seq": 3, "dropped": 2, "estimator": "test"}  # fmt: skip
            # refused, each with its reason, and nothing emitted for them
            for bad, status_want, text in (
                ({"camera": "cam-9", "t": t, "joints": None}, 404, "unknown camera 'cam-9'"),
                ({"camera": dev.camera, "joints": None}, 400, "'t' must be a number"),
                ({"camera": dev.camera, "t": t, "joints": {"tail": [0, 0, 1]}}, 400, "unknown joint 'tail'"),
                ({"camera": dev.camera, "t": t, "joints": {"nose": [0, 1]}}, 400, "joint 'nose' must be [x, y, confidence]"),
                ({"camera": dev.camera, "t": t, "joints": None, "dropped": -1}, 400, "'dropped' must be a whole number"),
                ({"t": t, "joints": None}, 400, "'camera' must be a camera id"),
            ):  # fmt: skip
                status, body = await _post(http, srv, bad)
                assert status == status_want and body["error"].startswith(text), (bad, body)
            assert len(await _events(http, srv, "pose.sample")) == 2
            async with http.get(srv.url + "/v1/state") as resp:
                state = await resp.json()
            assert state["pose_dropped"] == {dev.camera: 4}
            assert state["pose_fps"][dev.camera] > 0
        async with aiohttp.ClientSession() as http:  # no token
            async with http.post(srv.url + "/v1/pose", json={"camera": "cam-1", "t": 1.0, "joints": None}) as resp:
                assert resp.status == 401

    asyncio.run(main())


def test_the_previews_socket_carries_the_frames_capture_time(srv):
    async def main() -> None:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            dev = await RawDevice(srv, http, "dev-a").connect()
            async with http.ws_connect(srv.url.replace("http", "ws") + "/v1/previews/ws") as ws:
                captured = time.time() - 0.25  # the device says: taken a quarter second ago
                await dev.send({"t": "frame", "ts": captured})
                await dev.ws.send_bytes(jpeg(color=(200, 0, 0)))
                header, _ = await _next_frame(ws)
                # the device's clock is this machine's: the offset is the tiny one-way delay
                assert captured <= header["capture_t"] < captured + 0.2
                assert header["ts"] >= header["capture_t"] + 0.2
                # a frame without a frame message: captured when received
                await dev.ws.send_bytes(jpeg(color=(0, 0, 200)))
                header, _ = await _next_frame(ws)
                assert header["capture_t"] == header["ts"]
                # a frame message without a number is refused, the connection stays
                await dev.send({"t": "frame"})
                await _wait(lambda: any(m.get("t") == "error" and "frame: missing 'ts'" in m["error"] for m in dev.received))

    asyncio.run(main())


async def _next_frame(ws) -> tuple[dict, bytes]:
    msg = await ws.receive(timeout=DEADLINE_S)
    assert msg.type == aiohttp.WSMsgType.BINARY, msg
    return unpack_preview(msg.data)


async def _wait(predicate) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pose_rates_per_camera_fall_to_zero_when_samples_stop():
    from mmx.events import Event

    clock = _Clock()
    rates = PoseRates(clock=clock)
    for k in range(40):  # 4 s at 10 per second
        rates.observe(Event(type="pose.sample", data={"camera": "cam-1", "t": 0.0, "joints": None}), b"")
        clock.now += 0.1
    rates.observe(Event(type="director.cut", data={"to": "cam-1"}), b"")
    assert 9.0 <= rates.fps()["cam-1"] <= 10.5
    clock.now += 2.5
    assert rates.fps() == {"cam-1": 0.0}
    # started a moment ago: the rate of the few samples so far, not diluted over the window
    for _ in range(3):
        rates.observe(Event(type="pose.sample", data={"camera": "cam-2", "t": 0.0, "joints": None}), b"")
        clock.now += 0.05
    assert 19.0 <= rates.fps()["cam-2"] <= 21.0
