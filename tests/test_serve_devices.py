"""mmx serve with several real `mmx device` processes (docs/device-protocol.md end to end)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import MMX
from .test_serve import TOKEN, ServerThread

pytestmark = pytest.mark.slow

DEVICE_TIMEOUT_S = 1.5


@pytest.fixture
def serve(tmp_path):
    server = ServerThread(tmp_path / "data", device_timeout_s=DEVICE_TIMEOUT_S, ack_timeout_s=3.0, heartbeat_s=0.25).start()
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    procs: list[subprocess.Popen] = []

    def device(name: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [*MMX, "device", "--server", server.url, "--token", TOKEN, "--name", name,
             "--state-dir", str(tmp_path / "state"), "--fps", "4", "--size", "160x90", *args],
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{name}.log", "ab"),
        )  # fmt: skip
        procs.append(proc)
        return proc

    server.client = client
    server.device = device
    yield server
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert client.get("/v1/state").status_code == 200  # the server stayed up
    client.close()
    server.stop()


def live_cameras(server, count: int, timeout: float = 30.0) -> dict[str, dict]:
    """Wait until ``count`` cameras are live; {name: camera}."""
    deadline = time.monotonic() + timeout
    while True:
        cams = [c for c in server.client.get("/v1/state").json()["cameras"] if c["status"] == "live"]
        if len(cams) >= count:
            return {c["name"]: c for c in cams}
        assert time.monotonic() < deadline, f"only {len(cams)} of {count} devices registered"
        time.sleep(0.1)


def events(server, types=None, since=0) -> list[dict]:
    params = {"since": since, "follow": 0}
    if types:
        params["types"] = types
    resp = server.client.get("/v1/events", params=params)
    return [orjson.loads(line) for line in resp.content.splitlines() if line]


def wait_event(server, pred, timeout: float = 30.0, types=None) -> dict:
    """The first event matching ``pred``, waiting up to ``timeout`` s (generous: it returns
    as soon as the event is there, and a busy machine only makes it later)."""
    deadline = time.monotonic() + timeout
    while True:
        for ev in events(server, types):
            if pred(ev):
                return ev
        assert time.monotonic() < deadline, "expected event did not arrive"
        time.sleep(0.05)


def test_commands_and_stills_with_real_devices(serve):
    serve.device("A", "--placement", "label=front-left,azimuth_deg=-45")
    serve.device("B", "--placement", "label=front-right,azimuth_deg=45")
    cams = live_cameras(serve, 2)
    a, b = cams["A"]["camera"], cams["B"]["camera"]
    assert {a, b} == {"cam-1", "cam-2"}
    assert cams["A"]["placement"]["azimuth_deg"] == -45

    flip = serve.client.post(f"/v1/cameras/{b}/flip", json={})
    assert flip.status_code == 200, flip.text
    assert flip.json()["facing"] == "front" and flip.json()["ok"] is True
    state = {c["camera"]: c for c in serve.client.get("/v1/state").json()["cameras"]}
    assert (state[a]["facing"], state[b]["facing"]) == ("back", "front")  # only B flipped

    zoom = serve.client.post(f"/v1/cameras/{a}/zoom", json={"zoom": 0.5})
    assert zoom.status_code == 200 and zoom.json()["zoom"] == 0.5
    refused = serve.client.post(f"/v1/cameras/{b}/zoom", json={"zoom": 0.5})
    assert refused.status_code == 422
    assert refused.json()["error"] == f"{b} (front facing) has no 0.5× lens (lenses: 1)"

    serve.client.post("/v1/session/start", json={"title": "devices"})
    still = serve.client.post(f"/v1/cameras/{a}/still", json={})
    assert still.status_code == 200, still.text
    body = still.json()
    path = Path(body["path"])
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8" and hashlib.sha256(data).hexdigest() == body["sha256"]
    assert path.parent == serve.config.data_dir / "sessions" / serve.client.get("/v1/state").json()["session"] / "stills" / a
    captured = [e for e in events(serve, "still.captured")]
    assert [e["data"]["still"] for e in captured] == [body["still"]]
    assert captured[0]["data"]["sha256"] == body["sha256"] and captured[0]["data"]["bytes"] == len(data)

    # previews arrive from both devices
    for cam in (a, b):
        deadline = time.monotonic() + 15
        while (resp := serve.client.get(f"/v1/cameras/{cam}/preview.jpg")).status_code == 404:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.1)
        assert resp.status_code == 200 and resp.content[:2] == b"\xff\xd8"


def test_killed_device_is_lost_and_comes_back_with_its_camera_and_placement(serve):
    proc = serve.device("K", "--placement", "label=back,azimuth_deg=180")
    serve.device("L")
    cams = live_cameras(serve, 2)
    cam = cams["K"]["camera"]
    # the operator moves the camera; the server's placement wins over the device's --placement
    assert serve.client.put(f"/v1/cameras/{cam}/placement", json={"label": "high", "azimuth_deg": 150}).status_code == 200

    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    left = wait_event(serve, lambda e: e["type"] == "camera.left" and e["data"]["camera"] == cam)
    assert left["data"]["reason"] in ("disconnected", "timeout")
    state = {c["camera"]: c for c in serve.client.get("/v1/state").json()["cameras"]}
    assert state[cam]["status"] == "lost"

    serve.device("K", "--placement", "label=back,azimuth_deg=180")
    cams = live_cameras(serve, 2)
    assert cams["K"]["camera"] == cam
    assert cams["K"]["placement"] == {"label": "high", "azimuth_deg": 150}


def test_frozen_device_times_out_and_reconnects(serve):
    proc = serve.device("F")
    cam = live_cameras(serve, 1)["F"]["camera"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        left = wait_event(serve, lambda e: e["type"] == "camera.left")
        assert left["data"] == {"camera": cam, "device": left["data"]["device"], "reason": "timeout"}
        # lost for its silence, on the server's own clock: not before the timeout
        frozen = next(c for c in serve.client.get("/v1/state").json()["cameras"] if c["camera"] == cam)
        assert left["ts"] - frozen["last_seen"] > DEVICE_TIMEOUT_S
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    # the device notices the closed socket and reconnects with backoff as the same camera
    rejoined = wait_event(serve, lambda e: e["type"] == "camera.joined" and e["seq"] > left["seq"])
    assert rejoined["data"]["camera"] == cam


@pytest.mark.shared_data
def test_devices_on_the_shared_video_and_pose(serve, shared_data):
    video, pose = shared_data / "video" / "vtest.avi", shared_data / "pose" / "vtest.pose.jsonl"
    # nobody is detected in the first 16.6 s of vtest.avi: start both where people walk
    serve.device("walker", "--video", str(video), "--pose", str(pose), "--pose-offset-s", "17")
    serve.device("walker-2", "--video", str(video), "--pose", str(pose), "--pose-offset-s", "20")
    cams = live_cameras(serve, 2)
    session = serve.client.post("/v1/session/start", json={"title": "vtest"}).json()
    deadline = time.monotonic() + 30
    while True:
        samples = events(serve, "pose.sample")
        seen = {e["data"]["camera"] for e in samples if e["data"]["joints"]}
        if len(seen) == 2:
            break
        assert time.monotonic() < deadline, f"pose from {seen} only"
        time.sleep(0.2)
    now = time.time()
    for ev in samples:
        assert set(ev["data"]) >= {"camera", "t", "joints"}
        assert abs(ev["data"]["t"] - now) < 30  # on the server's clock
        if ev["data"]["joints"]:
            assert len(ev["data"]["joints"]) <= 19
            assert all(0 <= j[2] <= 1 for j in ev["data"]["joints"].values())
    still = serve.client.post(f"/v1/cameras/{cams['walker']['camera']}/still", json={})
    assert still.status_code == 200, still.text
    assert Path(still.json()["path"]).stat().st_size > 10_000  # a full-resolution video frame
    serve.client.post("/v1/session/stop", json={})
    lines = (serve.config.data_dir / "sessions" / session["session"] / "events.jsonl").read_bytes().splitlines()
    types = {orjson.loads(x)["type"] for x in lines}
    assert {"session.started", "camera.joined", "pose.sample", "still.captured", "session.ended"} <= types
