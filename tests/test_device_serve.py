"""mmx device end to end: `mmx device` processes against a real `mmx serve` process (and
`mmx relay`) on free loopback ports. Focused on the device's side: it obeys, uploads, keeps
its identity, comes back after a crash or a server restart, plays real video and pose."""

from __future__ import annotations

import asyncio
import hashlib
import io
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from PIL import Image

from .conftest import MMX, free_port

TOKEN = "tok-device-e2e"
pytestmark = pytest.mark.slow


def _wait(predicate, timeout=30.0, what="condition"):
    """``predicate()``'s first true value, polled until ``timeout`` s (generous: it returns
    as soon as the condition holds; a busy machine only makes it later)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)


class Serve:
    """A `mmx serve` subprocess with its own data directory."""

    def __init__(self, tmp_path: Path, port: int | None = None, device_timeout: float = 1.0) -> None:
        self.port = port or free_port()
        self.data = tmp_path / "serve-data"
        self.events = tmp_path / f"events-{self.port}-{time.monotonic_ns()}.jsonl"
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        self.proc = subprocess.Popen([*MMX, "serve", "--port", str(self.port), "--token", TOKEN, "--data", str(self.data),
                                      "--events", str(self.events), "--device-timeout", str(device_timeout)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        _wait(self._up, what="mmx serve answering")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.proc.stderr.read().decode()
        try:
            return self.http.get("/v1/state").status_code == 200
        except httpx.TransportError:
            return False

    def state(self) -> dict:
        return self.http.get("/v1/state").json()

    def camera(self, camera: str) -> dict | None:
        return next((c for c in self.state()["cameras"] if c["camera"] == camera), None)

    def live(self) -> list[str]:
        return sorted(c["camera"] for c in self.state()["cameras"] if c["status"] == "live")

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return self.http.post(path, json=body or {})

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.http.close()


class Device:
    """A `mmx device` subprocess with --json events on stdout (read as they come: `lines`)."""

    def __init__(self, serve: Serve, name: str, state_dir: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([*MMX, "device", "--server", serve.url, "--token", TOKEN, "--name", name,
                                      "--state-dir", str(state_dir), "--fps", "5", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.lines: list[bytes] = []
        self._err: list[bytes] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[bytes]) -> None:
        for line in stream:
            into.append(line)

    def events(self) -> list[str]:
        """The ``event`` of each --json line printed so far."""
        return [orjson.loads(line)["event"] for line in list(self.lines) if line.strip()]

    def stop(self, sig=signal.SIGTERM) -> tuple[int, bytes, bytes]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        for reader in self._readers:
            reader.join(5)
        return self.proc.returncode, b"".join(self.lines), b"".join(self._err)


@pytest.fixture
def serve(tmp_path):
    srv = Serve(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def devices():
    started: list[Device] = []
    yield started
    for dev in started:
        dev.stop(signal.SIGKILL)


def _camera_of(serve: Serve, name: str) -> str:
    cams = [c for c in serve.state()["cameras"] if c.get("name") == name and c["status"] == "live"]
    return cams[0]["camera"] if cams else ""


def test_device_obeys_flip_zoom_and_still_from_a_real_server(serve, devices, tmp_path):
    devices.append(Device(serve, "A", tmp_path / "state"))
    devices.append(Device(serve, "B", tmp_path / "state", "--lenses", "1,2"))
    cam_a = _wait(lambda: _camera_of(serve, "A"), what="A registered")
    cam_b = _wait(lambda: _camera_of(serve, "B"), what="B registered")
    assert serve.camera(cam_a)["lenses"] == {"back": [0.5, 1, 2], "front": [1]}
    session = serve.post("/v1/session/start", {"title": "device e2e"}).json()["session"]

    half = serve.post(f"/v1/cameras/{cam_a}/zoom", {"zoom": 0.5})
    assert half.status_code == 200 and half.json()["ok"] is True and half.json()["zoom"] == 0.5
    flip = serve.post(f"/v1/cameras/{cam_a}/flip")
    assert flip.status_code == 200 and (flip.json()["facing"], flip.json()["zoom"]) == ("front", 1)
    assert serve.post(f"/v1/cameras/{cam_a}/zoom", {"zoom": 0.5}).status_code == 422  # no ultra-wide in front
    assert serve.post(f"/v1/cameras/{cam_b}/zoom", {"zoom": 0.5}).status_code == 422  # B has none at all
    two = serve.post(f"/v1/cameras/{cam_b}/zoom", {"zoom": 2})
    assert two.status_code == 200 and two.json()["zoom"] == 2
    assert serve.camera(cam_a)["facing"] == "front" and serve.camera(cam_b)["zoom"] == 2

    still = serve.post(f"/v1/cameras/{cam_a}/still")
    assert still.status_code == 200, still.text
    body = still.json()
    path = Path(body["path"])
    assert path.is_file() and path.parent.parent.parent.name == session
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == body["sha256"] and len(data) == body["bytes"]
    assert Image.open(io.BytesIO(data)).size == (1280, 720)  # the test pattern's full resolution

    preview = _wait(lambda: (r := serve.http.get(f"/v1/cameras/{cam_b}/preview.jpg")).status_code == 200 and r,
                    what="a preview")  # fmt: skip
    assert Image.open(io.BytesIO(preview.content)).size == (640, 360)

    rc, out, err = devices[0].stop()
    assert rc == 0 and out == b""
    log = " ".join(err.decode().split())
    assert f"connected as {cam_a}" in log and "command flip" in log and f"still {body['still']} uploaded" in log


def test_killed_device_comes_back_as_the_same_camera_with_its_placement(serve, devices, tmp_path):
    state = tmp_path / "state"
    devices.append(Device(serve, "crashy", state, "--placement", "label=left,azimuth_deg=-40,distance_m=3"))
    cam = _wait(lambda: _camera_of(serve, "crashy"), what="registered")
    assert serve.camera(cam)["placement"] == {"label": "left", "azimuth_deg": -40, "distance_m": 3}
    moved = {"label": "far-left", "azimuth_deg": -70}
    assert serve.http.put(f"/v1/cameras/{cam}/placement", json=moved).status_code == 200
    devices[0].stop(signal.SIGKILL)
    _wait(lambda: serve.camera(cam)["status"] == "lost", timeout=5, what="marked lost")

    devices.append(Device(serve, "crashy", state, "--placement", "label=left,azimuth_deg=-40,distance_m=3", "--json"))
    _wait(lambda: serve.camera(cam)["status"] == "live", what="back live")
    assert serve.camera(cam)["placement"]["azimuth_deg"] == -70  # the operator's placement survives
    assert [c["camera"] for c in serve.state()["cameras"]] == [cam]  # the same camera, not a new one
    rc, out, _err = devices[1].stop()
    connected = orjson.loads(out.splitlines()[0])
    assert rc == 0 and connected["event"] == "connected" and connected["placement"]["azimuth_deg"] == -70


def test_device_reconnects_when_the_server_restarts(tmp_path, devices):
    first = Serve(tmp_path)
    try:
        devices.append(Device(first, "steady", tmp_path / "state", "--json"))
        cam = _wait(lambda: _camera_of(first, "steady"), what="registered")
        first.stop()
    finally:
        first.stop()
    _wait(lambda: "retry" in devices[0].events(), what="a failed attempt while the server is down")
    second = Serve(tmp_path, port=first.port)
    try:
        _wait(lambda: second.live() == [cam], what="reconnected")
        assert second.post(f"/v1/cameras/{cam}/flip").json()["facing"] == "front"
    finally:
        rc, out, err = devices[0].stop()
        second.stop()
    events = [orjson.loads(line)["event"] for line in out.splitlines()]
    assert rc == 0 and events.count("connected") == 2 and "retry" in events
    assert events.index("retry") < len(events) - 1 - events[::-1].index("connected")


def test_devices_play_real_video_and_pose_staggered(serve, devices, tmp_path, shared_data):
    video, pose = shared_data / "video" / "vtest.avi", shared_data / "pose" / "vtest.pose.jsonl"
    session = serve.post("/v1/session/start", {"title": "real data"}).json()["session"]
    for name, offset in (("walk-a", "20"), ("walk-b", "40")):
        devices.append(Device(serve, name, tmp_path / "state", "--video", str(video), "--pose", str(pose),
                              "--pose-offset-s", offset))  # fmt: skip
    cams = [_wait(lambda n=n: _camera_of(serve, n), timeout=20, what=f"{n} registered") for n in ("walk-a", "walk-b")]
    for cam in cams:  # decoding starts with a seek into the file: the first frame may take a moment
        jpeg = _wait(lambda c=cam: (r := serve.http.get(f"/v1/cameras/{c}/preview.jpg")).status_code == 200 and r,
                     timeout=20, what=f"{cam} preview")  # fmt: skip
        assert Image.open(io.BytesIO(jpeg.content)).size == (640, 360)
    def enough_pose() -> bool:  # 10 samples of each camera in the session
        got = serve.http.get("/v1/events", params={"since": 0, "follow": 0, "types": "pose.sample"})
        cams_seen = [orjson.loads(line)["data"]["camera"] for line in got.content.splitlines() if line.strip()]
        return all(cams_seen.count(cam) >= 10 for cam in cams)

    _wait(enough_pose, what="10 pose samples of each camera")
    assert serve.post("/v1/session/stop").status_code == 200
    events = [orjson.loads(line) for line in (serve.data / "sessions" / session / "events.jsonl").read_bytes().splitlines()]
    samples = {cam: [e["data"] for e in events if e["type"] == "pose.sample" and e["data"]["camera"] == cam] for cam in cams}
    for cam in cams:
        ts = [s["t"] for s in samples[cam]]
        assert len(ts) >= 10 and ts == sorted(ts)
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.1, abs=0.03)  # the file's 10 per s
    # staggered: the two devices play different moments of the same file
    assert [s["joints"] for s in samples[cams[0]][:10]] != [s["joints"] for s in samples[cams[1]][:10]]
    assert any(s["joints"] for s in samples[cams[0]] + samples[cams[1]])


def test_device_publishes_to_the_relay(serve, devices, tmp_path):
    relay_port = free_port()
    relay = subprocess.Popen([*MMX, "relay", "--server", serve.url, "--port", str(relay_port), "--token", TOKEN],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        relay_url = f"http://127.0.0.1:{relay_port}"
        _wait(lambda: _port_open(relay_port), what="relay listening")
        devices.append(Device(serve, "pub", tmp_path / "state", "--relay", relay_url, "--size", "320x180", "--json"))
        cam = _wait(lambda: _camera_of(serve, "pub"), what="registered")

        async def watch():
            from mmx.relay.client import whep_subscribe

            for _ in range(50):  # the device publishes once it has its camera id
                try:
                    pc, track = await whep_subscribe(f"{relay_url}/whep/{cam}", token=TOKEN, timeout_s=10)
                    break
                except Exception:  # noqa: BLE001 - not published yet
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("never published")
            try:
                frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(3)]
            finally:
                await pc.mmx_session.close()
            return frames

        frames = asyncio.run(asyncio.wait_for(watch(), 60))
        assert (frames[-1].width, frames[-1].height) == (320, 180)
        rc, out, _ = devices[0].stop()
        relay_events = [e for e in map(orjson.loads, out.splitlines()) if e["event"] == "relay"]
        assert rc == 0 and relay_events[0]["status"] == "published"
        assert relay_events[0]["url"] == f"{relay_url}/whip/{cam}"
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(15)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
