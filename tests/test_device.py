"""mmx device: picture sources, optics, pose stepping, identity, and the client against a
small aiohttp server that speaks the device side of docs/device-protocol.md."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import subprocess
import threading
import time

import numpy as np
import orjson
import pytest
from aiohttp import WSMsgType, web
from PIL import Image

from mmx.device import (
    CameraState, CommandRefused, DeviceClient, DeviceConfig, PoseTrack, TestPattern, VideoSource,
    backoff_delay, load_device_id, parse_lenses, parse_placement, parse_size, render_view, state_file,
)  # fmt: skip
from mmx.device.client import http_url, ws_url
from mmx.errors import DataError, EventError, ServiceUnavailableError

from .conftest import MMX, free_port

TOKEN = "s3cret"


# -- a protocol peer ---------------------------------------------------------------------


class FakeServe:
    """The server side of the device protocol, recording what devices send."""

    def __init__(self, port: int, token: str = TOKEN) -> None:
        self.port, self.token = port, token
        self.hellos: list[dict] = []
        self.messages: list[dict] = []
        self.frames: list[bytes] = []
        self.stills: dict[str, dict] = {}
        self.cameras: dict[str, str] = {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self._acks: dict[str, asyncio.Future] = {}
        self._runner: web.AppRunner | None = None
        self.hello_seen = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/devices/ws", self._ws)
        app.router.add_post("/v1/stills", self._still)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        for ws in list(self.sockets.values()):  # aiohttp leaves open WebSockets to the app
            await ws.close(code=1001, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.sockets.clear()

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}" or request.query.get("token") == self.token

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response({"error": "wrong token"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        hello = orjson.loads((await ws.receive(timeout=5)).data)
        if hello.get("t") != "hello" or not hello.get("device"):
            await ws.send_str('{"t":"error","error":"malformed hello","ref":null}')
            await ws.close(code=4400)
            return ws
        self.hellos.append(hello)
        camera = self.cameras.setdefault(hello["device"], f"cam-{len(self.cameras) + 1}")
        self.sockets[camera] = ws
        await ws.send_str(orjson.dumps({"t": "welcome", "camera": camera, "session": None, "placement": hello.get("placement"),
                                        "heartbeat_s": 1.0, "timeout_s": 3.0, "server_time": time.time(),
                                        "program": False}).decode())  # fmt: skip
        self.hello_seen.set()
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                self.frames.append(msg.data)
            elif msg.type == WSMsgType.TEXT:
                obj = orjson.loads(msg.data)
                obj["_camera"] = camera
                self.messages.append(obj)
                if obj.get("t") == "ack" and obj.get("command_id") in self._acks:
                    self._acks.pop(obj["command_id"]).set_result(obj)
        return ws

    async def _still(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "wrong token"}, status=401)
        fields = {}
        async for part in await request.multipart():
            fields[part.name] = (await part.read(), part.headers.get("Content-Type"))
        image = fields["image"][0]
        if hashlib.sha256(image).hexdigest() != fields["sha256"][0].decode():
            return web.json_response({"error": "sha256 does not match the image"}, status=422)
        self.stills[fields["still"][0].decode()] = {"camera": fields["camera"][0].decode(), "image": image,
                                                    "sha256": fields["sha256"][0].decode(),
                                                    "content_type": fields["image"][1]}  # fmt: skip
        return web.json_response({"still": fields["still"][0].decode()}, status=201)

    async def command(self, camera: str, command: str, args: dict | None = None, timeout: float = 5.0) -> dict:
        command_id = f"cmd-{len(self._acks)}-{time.monotonic_ns()}"
        fut = asyncio.get_running_loop().create_future()
        self._acks[command_id] = fut
        await self.sockets[camera].send_str(orjson.dumps({"t": "command", "command_id": command_id, "command": command,
                                                          "args": args or {}}).decode())  # fmt: skip
        return await asyncio.wait_for(fut, timeout)

    def of_type(self, t: str) -> list[dict]:
        return [m for m in self.messages if m.get("t") == t]


def run(coro, timeout: float = 30.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def wait_until(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


def config(port: int, **kw) -> DeviceConfig:
    kw.setdefault("device_id", "dev-test-1")
    return DeviceConfig(server=f"http://127.0.0.1:{port}", token=kw.pop("token", TOKEN), name=kw.pop("name", "A"), **kw)


# -- pictures ----------------------------------------------------------------------------


def test_real_video_frames_decode_at_the_requested_size(shared_data):
    src = VideoSource(shared_data / "video" / "vtest.avi")
    assert src.size == (768, 576) and src.fps == 10 and src.n_frames == 795
    first = np.asarray(src.frame_at(0.0))
    later = np.asarray(src.frame_at(1.0))
    assert first.shape == (576, 768, 3) and not np.array_equal(first, later)
    # looping: one video duration later is the same frame again, after going far ahead
    assert np.array_equal(np.asarray(src.frame_at(79.5 + 1.0)), later)
    view = render_view(src.frame_at(2.0), size=(640, 360))
    assert view.size == (640, 360)
    jpeg = io.BytesIO()
    view.save(jpeg, "JPEG")
    assert Image.open(io.BytesIO(jpeg.getvalue())).size == (640, 360)
    src.close()


def test_missing_or_bad_video_is_a_clear_error(tmp_path):
    with pytest.raises(Exception) as missing:
        VideoSource(tmp_path / "nope.avi")
    assert "no such video file" in str(missing.value)
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(DataError, match="not a video file PyAV can decode"):
        VideoSource(bad)


def test_test_pattern_moves_counts_and_loops():
    tp = TestPattern(size=(320, 180), fps=10, duration_s=4.0)
    a, b = np.asarray(tp.frame_at(0.0)).copy(), np.asarray(tp.frame_at(0.5)).copy()
    assert a.shape == (180, 320, 3) and not np.array_equal(a, b)
    assert np.array_equal(np.asarray(tp.frame_at(4.5)), b)  # loops every duration_s
    assert np.array_equal(np.asarray(tp.frame_at(0.51)), b)  # same frame within 1/fps


def test_flip_mirrors_the_picture():
    img = TestPattern(size=(640, 360)).frame_at(1.3)
    back = np.asarray(render_view(img, size=(320, 180)))
    front = np.asarray(render_view(img, size=(320, 180), mirror=True))
    assert np.array_equal(front, back[:, ::-1])
    assert not np.array_equal(front, back)


def test_zoom_crops_the_centre():
    img = TestPattern(size=(640, 360)).frame_at(2.0)
    zoomed = np.asarray(render_view(img, size=(320, 180), zoom=2.0)).astype(int)
    centre = img.crop((160, 90, 480, 270))  # the middle half in each direction
    assert np.abs(zoomed - np.asarray(centre).astype(int)).mean() < 3
    whole = np.asarray(render_view(img, size=(320, 180), zoom=1.0)).astype(int)
    assert np.abs(zoomed - whole).mean() > 20
    # 0.5× cannot widen beyond the source: it shows the whole picture like 1×
    assert np.array_equal(np.asarray(render_view(img, size=(320, 180), zoom=0.5)), whole)


def test_aspect_crop_fills_the_preview():
    img = Image.new("RGB", (400, 300), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 400, 20))  # a blue band at the top, outside a 16:9 centre crop
    view = np.asarray(render_view(img, size=(160, 90)))
    assert view.shape == (90, 160, 3) and view[..., 2].max() < 30


def test_parse_size_lenses_placement():
    assert parse_size("640x360") == (640, 360)
    with pytest.raises(DataError, match="is not WIDTHxHEIGHT"):
        parse_size("640by360")
    assert parse_lenses("2, 0.5,1,1") == [0.5, 1.0, 2.0]
    with pytest.raises(DataError, match="lens 'wide' is not a number"):
        parse_lenses("0.5,wide")
    assert parse_placement("label=front-left,azimuth_deg=-45,distance_m=3") == {
        "label": "front-left", "azimuth_deg": -45, "distance_m": 3}
    assert parse_placement('{"label": "side", "azimuth_deg": 90.5}') == {"label": "side", "azimuth_deg": 90.5}
    with pytest.raises(DataError, match="placement field 'azimuth_deg' must be a number, got 'left'"):
        parse_placement("azimuth_deg=left")
    with pytest.raises(DataError, match="placement field 'distance_m' must be a number"):
        parse_placement('{"distance_m": "far"}')


# -- optics ------------------------------------------------------------------------------


def test_zoom_rules_and_half_x_refused_on_front():
    cam = CameraState(lenses={"back": [0.5, 1, 2], "front": [1]})
    cam.set_zoom(0.5)
    assert cam.report()["zoom"] == 0.5 and cam.crop_factor() == 1.0
    cam.set_zoom(1.5)  # digital zoom between lenses
    assert cam.crop_factor() == 1.5
    with pytest.raises(CommandRefused, match=r"zoom 3 is not available on the back camera \(lenses: 0.5, 1, 2\)"):
        cam.set_zoom(3)
    cam.set_zoom(0.5)
    cam.flip()  # the front camera lacks the ultra-wide: zoom becomes 1
    assert (cam.facing, cam.zoom) == ("front", 1.0)
    with pytest.raises(CommandRefused, match=r"zoom 0.5 is not available on the front camera \(lenses: 1\)"):
        cam.set_zoom(0.5)
    with pytest.raises(CommandRefused, match="zoom must be a number"):
        cam.set_zoom("2")
    cam.flip()
    assert cam.facing == "back"
    assert cam.capabilities() == {"facings": ["back", "front"], "lenses": {"back": [0.5, 1, 2], "front": [1]}}


# -- pose --------------------------------------------------------------------------------


def _pose_file(path, n=20, fps=10.0, bad_line=None):
    lines = [orjson.dumps({"header": {"fps": fps}})]
    for i in range(n):
        lines.append(orjson.dumps({"frame": i, "t": round(i / fps, 6), "joints": {"nose": [i / 100, 0.5, 0.9]}}))
    if bad_line is not None:
        lines.insert(bad_line - 1, b'{"frame": 99, "t": "soon", "joints": null}')
        lines.insert(bad_line, b"{not json")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_pose_file_reports_malformed_lines_with_numbers_and_skips_them(tmp_path):
    errors: list[EventError] = []
    track = PoseTrack.from_file(_pose_file(tmp_path / "p.jsonl", bad_line=4), on_error=errors.append)
    assert [e.message for e in errors] == [
        "line 4: field 't' must be a non-negative number of seconds",
        "line 5: not JSON: " + errors[1].reason[len("not JSON: "):],
    ]
    assert len(track.samples) == 20 and track.fps == 10 and track.duration_s == pytest.approx(2.0)
    with pytest.raises(EventError, match="line 4:"):
        PoseTrack.from_file(tmp_path / "p.jsonl")


def test_pose_stepping_follows_the_clock_and_loops(tmp_path):
    track = PoseTrack.from_file(_pose_file(tmp_path / "p.jsonl"))
    frames = [s.frame for _u, s in track.between(0.05, 0.35)]
    assert frames == [1, 2, 3]
    # across the loop point (2.0 s): 1.9 then 0.0, 0.1 of the next pass
    got = track.between(1.85, 2.15)
    assert [(round(u, 2), s.frame) for u, s in got] == [(1.9, 19), (2.0, 0), (2.1, 1)]
    # a loop set by the video (1.5 s) cuts the pose file short
    assert [s.frame for _u, s in track.between(1.35, 1.65, loop_s=1.5)] == [14, 0, 1]
    # a long stall never replays more than one loop
    assert len(track.between(0.0, 100.0)) == 20


def test_real_pose_file_reads_whole(shared_data):
    errors: list = []
    track = PoseTrack.from_file(shared_data / "pose" / "vtest.pose.jsonl", on_error=errors.append)
    assert errors == [] and len(track.samples) == 795 and track.duration_s == pytest.approx(79.5)
    assert sum(s.joints is None for s in track.samples) == 366


# -- identity ----------------------------------------------------------------------------


def test_state_file_keeps_the_device_id_across_restarts(tmp_path):
    first = load_device_id(tmp_path, "cam A")
    assert first.startswith("dev-") and load_device_id(tmp_path, "cam A") == first
    assert orjson.loads(state_file(tmp_path, "cam A").read_bytes()) == {"device": first, "name": "cam A"}
    assert load_device_id(tmp_path, "cam B") != first
    # an explicit id is used as is and leaves the stored identity alone
    assert load_device_id(tmp_path, "cam A", device_id="dev-given") == "dev-given"
    assert load_device_id(tmp_path, "cam A") == first
    assert not state_file(tmp_path, "cam C").exists() and load_device_id(tmp_path, "cam C", device_id="x") == "x"
    assert not state_file(tmp_path, "cam C").exists()
    state_file(tmp_path, "broken").write_text("{oops")
    with pytest.raises(DataError, match="not a device state file"):
        load_device_id(tmp_path, "broken")


def test_urls():
    assert ws_url("http://127.0.0.1:8750") == "ws://127.0.0.1:8750/v1/devices/ws"
    assert ws_url("127.0.0.1:8750/") == "ws://127.0.0.1:8750/v1/devices/ws"
    assert http_url("ws://127.0.0.1:1/v1/devices/ws", "/v1/stills") == "http://127.0.0.1:1/v1/stills"
    with pytest.raises(DataError):
        ws_url("ftp://x")


def test_backoff_doubles_to_five_seconds_with_jitter():
    import random

    rng = random.Random(7)
    for attempt, base in [(0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 5.0), (40, 5.0)]:
        delays = [backoff_delay(attempt, rng=rng) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered


# -- the client against a protocol peer ----------------------------------------------------


def test_client_hello_heartbeat_state_previews_and_pose(tmp_path, port):
    track = PoseTrack.from_file(_pose_file(tmp_path / "p.jsonl", n=30))

    async def main():
        srv = FakeServe(port)
        await srv.start()
        client = DeviceClient(config(port, placement={"label": "front"}, pose_offset_s=1.0, size=(320, 180)),
                              source=TestPattern(size=(640, 360)), pose=track)  # fmt: skip
        task = asyncio.create_task(client.run())
        await wait_until(lambda: len(srv.frames) >= 5 and len(srv.of_type("pose")) >= 8 and srv.of_type("heartbeat"))
        client.stop()
        await task
        await srv.stop()
        return srv, client

    srv, client = run(main())
    hello = srv.hellos[0]
    assert hello["device"] == "dev-test-1" and hello["token"] == TOKEN and hello["placement"] == {"label": "front"}
    assert hello["capabilities"]["lenses"] == {"back": [0.5, 1, 2], "front": [1]}
    assert hello["state"] == {"facing": "back", "zoom": 1, "battery": 1.0, "thermal": "nominal"}
    assert client.camera == "cam-1"
    assert srv.of_type("state")[0]["facing"] == "back"
    assert Image.open(io.BytesIO(srv.frames[0])).size == (320, 180)
    poses = srv.of_type("pose")
    # played in order on the video clock, starting at the offset (1.0 s = frame 10), no gaps
    frames = [round(p["joints"]["nose"][0] * 100) for p in poses]
    assert 9 <= frames[0] <= 12 and frames == list(range(frames[0], frames[0] + len(frames)))
    ts = [p["ts"] for p in poses]
    assert ts == sorted(ts) and abs(ts[0] - time.time()) < 30


def test_commands_flip_zoom_refusal_tally_and_still(port):
    async def main():
        srv = FakeServe(port)
        await srv.start()
        events: list[dict] = []
        client = DeviceClient(config(port), source=TestPattern(size=(800, 600)), on_event=events.append)
        task = asyncio.create_task(client.run())
        await srv.hello_seen.wait()
        await wait_until(lambda: "cam-1" in srv.sockets and client.connected.is_set())
        acks = {
            "zoom_half_back": await srv.command("cam-1", "zoom", {"zoom": 0.5}),
            "flip": await srv.command("cam-1", "flip"),
            "zoom_half_front": await srv.command("cam-1", "zoom", {"zoom": 0.5}),
            "bogus": await srv.command("cam-1", "levitate"),
            "still": await srv.command("cam-1", "still"),
        }
        await srv.sockets["cam-1"].send_str('{"t":"tally","program":true,"preview":false}')
        await wait_until(lambda: client.program)
        client.stop()
        await task
        await srv.stop()
        return srv, acks, events

    srv, acks, events = run(main())
    assert acks["zoom_half_back"]["ok"] is True and acks["zoom_half_back"]["state"]["zoom"] == 0.5
    assert acks["flip"]["ok"] is True and acks["flip"]["state"]["facing"] == "front"
    assert acks["flip"]["state"]["zoom"] == 1  # the front camera lacks 0.5×
    assert acks["zoom_half_front"] == {**acks["zoom_half_front"], "ok": False,
                                       "error": "zoom 0.5 is not available on the front camera (lenses: 1)"}
    assert acks["bogus"]["ok"] is False and acks["bogus"]["error"] == "unsupported command 'levitate'"
    assert acks["still"]["ok"] is True and acks["still"]["error"] is None
    still = srv.stills[acks["still"]["command_id"]]
    assert still["camera"] == "cam-1" and still["content_type"] == "image/jpeg"
    assert hashlib.sha256(still["image"]).hexdigest() == still["sha256"]
    assert Image.open(io.BytesIO(still["image"])).size == (800, 600)  # full resolution
    ready = srv.of_type("still.ready")[0]
    assert ready["sha256"] == still["sha256"] and ready["bytes"] == len(still["image"])
    assert [e["event"] for e in events if e["event"] == "tally"] == ["tally"]


def test_still_upload_refused_is_a_failed_ack(port):
    async def main():
        srv = FakeServe(port)
        await srv.start()
        client = DeviceClient(config(port), source=TestPattern(size=(320, 180)))
        task = asyncio.create_task(client.run())
        await wait_until(lambda: "cam-1" in srv.sockets and client.connected.is_set())
        srv.token = "rotated"  # uploads are now refused with 401
        ack = await srv.command("cam-1", "still")
        client.stop()
        await task
        await srv.stop()
        return ack

    ack = run(main())
    assert ack["ok"] is False and ack["error"] == "still failed: upload answered HTTP 401: wrong token"


def test_reconnects_with_backoff_after_the_server_goes_away(port):
    async def main():
        events: list[dict] = []
        srv = FakeServe(port)
        await srv.start()
        client = DeviceClient(config(port), source=TestPattern(size=(160, 90)), on_event=events.append)
        task = asyncio.create_task(client.run())
        await wait_until(client.connected.is_set)
        await srv.stop()  # the server goes away
        await wait_until(lambda: sum(e["event"] == "retry" for e in events) >= 3)
        srv2 = FakeServe(port)
        srv2.cameras = dict(srv.cameras)  # the registry survives a server restart
        await srv2.start()
        await wait_until(lambda: srv2.hellos and client.connected.is_set(), timeout=15)
        await wait_until(lambda: len(srv2.frames) >= 1)
        client.stop()
        await task
        await srv2.stop()
        return srv, srv2, client, events

    srv, srv2, client, events = run(main())
    assert srv2.hellos[0]["device"] == srv.hellos[0]["device"] == "dev-test-1"
    assert client.camera == "cam-1"
    retries = [e for e in events if e["event"] == "retry"]
    assert all(0.125 <= r["delay_s"] <= 5.0 for r in retries)
    # consecutive failures back off: the third wait is drawn from [0.5, 1.0] s, the first from [0.125, 0.25]
    assert retries[0]["delay_s"] <= 0.25 and retries[2]["delay_s"] >= 0.5
    kinds = [e["event"] for e in events]
    assert kinds.count("connected") == 2 and "disconnected" in kinds


def test_gives_up_after_max_retries(port):
    async def main():
        events: list[dict] = []
        client = DeviceClient(config(port, max_retries=2), on_event=events.append)
        with pytest.raises(ServiceUnavailableError, match=r"cannot reach http://127.0.0.1:\d+ after 3 attempts"):
            await client.run()
        return events

    events = run(main())
    assert [e["attempt"] for e in events if e["event"] == "retry"] == [2, 3]


def test_wrong_token_is_fatal_not_retried(port):
    async def main():
        srv = FakeServe(port)
        await srv.start()
        client = DeviceClient(config(port, token="wrong"))
        try:
            with pytest.raises(ServiceUnavailableError, match=r"refused the token \(HTTP 401\)"):
                await client.run()
        finally:
            await srv.stop()

    run(main())


# -- the command ---------------------------------------------------------------------------


class ThreadedServe:
    """FakeServe on its own event loop in a thread, for subprocess tests."""

    def __init__(self, port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.srv = FakeServe(port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.srv.start())

    def call(self, coro, timeout: float = 10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.srv.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def _wait(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_command_keeps_its_identity_logs_to_stderr_and_stops_on_sigterm(tmp_path, port):
    ts = ThreadedServe(port)
    try:
        cmd = [*MMX, "device", "--server", f"http://127.0.0.1:{port}", "--token", TOKEN, "--name", "rig 1",
               "--state-dir", str(tmp_path / "state"), "--fps", "5", "--size", "160x90",
               "--placement", "label=left,azimuth_deg=-30"]  # fmt: skip
        for run_no in range(2):
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _wait(lambda: len(ts.srv.hellos) > run_no and len(ts.srv.frames) > 0)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err.decode()
            assert out == b""
            assert "connected as cam-1" in err.decode()
        first, second = ts.srv.hellos
        assert first["device"] == second["device"] and first["device"].startswith("dev-")
        assert first["name"] == "rig 1" and first["placement"] == {"label": "left", "azimuth_deg": -30}
        assert (tmp_path / "state" / "device-rig-1.json").exists()
    finally:
        ts.close()


def test_command_json_events_and_bad_pose_lines(tmp_path, port):
    pose = _pose_file(tmp_path / "p.jsonl", bad_line=3)
    ts = ThreadedServe(port)
    try:
        proc = subprocess.Popen([*MMX, "device", "--server", f"http://127.0.0.1:{port}", "--token", TOKEN,
                                 "--name", "j", "--state-dir", str(tmp_path), "--fps", "0", "--pose", "-",
                                 "--json"], stdin=open(pose, "rb"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        _wait(lambda: "cam-1" in ts.srv.sockets and ts.srv.of_type("pose"))
        ack = ts.call(ts.srv.command("cam-1", "zoom", {"zoom": 2}))
        assert ack["ok"] is True
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 130
        events = [orjson.loads(line) for line in out.splitlines()]
        assert [e["event"] for e in events][:2] == ["connected", "command"]
        assert events[1]["command"] == "zoom" and events[1]["ok"] is True and events[1]["camera"] == "cam-1"
        assert "warning: line 3: field 't' must be a non-negative number of seconds" in " ".join(err.decode().split())
        assert ts.srv.frames == []  # --fps 0: no previews
    finally:
        ts.close()


def test_command_unreachable_server_exits_69(tmp_path):
    port = free_port()
    result = subprocess.run([*MMX, "device", "--server", f"http://127.0.0.1:{port}", "--token", "T", "--name", "x",
                             "--state-dir", str(tmp_path), "--max-retries", "1"],
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 69
    assert "Error: cannot reach" in result.stderr and result.stdout == ""
