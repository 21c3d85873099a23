"""Recording on the server side: real `mmx serve` and `mmx device` processes on loopback, the
proxy files read back with PyAV, a take by hand, a camera that drops out, a full disk (tmpfs)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mmx.mkv import probe

from .record_fixtures import Serve, _frames, _sha256, _stop, _wait, device, procs  # noqa: F401 - procs is a fixture

pytestmark = pytest.mark.slow


def test_a_session_records_a_proxy_of_a_camera_without_relay_and_a_rejoin_continues_it(tmp_path, procs, shared_data):
    serve = Serve(tmp_path / "data")
    procs.append(serve)
    state_dir = tmp_path / "state"
    procs.append(device(serve, "A", state_dir, "--fps", "10", "--video", str(shared_data / "video" / "vtest.avi")))
    _wait(lambda: [c for c in serve.state()["cameras"] if c["status"] == "live"], what="camera live")
    started = serve.http.post("/v1/session/start", json={"title": "rec"}).json()
    sid = started["session"]
    _wait(lambda: _frames(serve, "cam-1") >= 20, what="20 proxy frames")
    rec = serve.state()["recording"]
    assert rec["armed"] and rec["session"] == sid and rec["free_bytes"] > 0
    _wait(lambda: serve.state()["recording"]["rate_bytes_s"] > 0, what="a write rate")
    # the camera drops out (killed) and rejoins as the same camera: the same file, with a gap
    _stop(procs.pop(), signal.SIGKILL)
    _wait(lambda: not [c for c in serve.state()["cameras"] if c["status"] == "live"], what="camera lost")
    frames_before = _frames(serve, "cam-1")
    time.sleep(1.5)  # the gap to find in the file (a duration, not a wait for a condition)
    procs.append(device(serve, "A", state_dir, "--fps", "10", "--video", str(shared_data / "video" / "vtest.avi")))
    _wait(lambda: _frames(serve, "cam-1") >= frames_before + 20, what="frames after the rejoin")
    assert serve.post("/v1/session/stop").status_code == 200

    (stopped,) = [e for e in serve.of_type("recording.stopped") if e["data"]["kind"] == "proxy"]
    (begun,) = [e for e in serve.of_type("recording.started") if e["data"]["kind"] == "proxy"]
    path = Path(stopped["data"]["path"])
    assert path == tmp_path / "data" / "sessions" / sid / "video" / "cam-1.proxy.mkv"
    assert begun["session"] == stopped["session"] == sid and begun["data"]["path"] == str(path)
    assert stopped["data"]["sha256"] == _sha256(path) and stopped["data"]["bytes"] == path.stat().st_size
    assert stopped["data"]["codec"] == "mjpeg" and stopped["data"]["reason"] == "session_ended"
    facts = probe(path)
    assert facts["monotonic"] and facts["frames"] == stopped["data"]["frames"] >= 40
    assert facts["start_s"] == pytest.approx(stopped["data"]["start_s"], abs=0.002)
    # the file's time is the session clock: its first frame sits where the event says it was seen
    assert facts["start_s"] == pytest.approx(begun["data"]["first_frame_ts"] - started["started_at"], abs=0.002)
    import av

    with av.open(str(path)) as container:
        pts = [p.pts / 1000 for p in container.demux(video=0) if p.pts is not None]
    assert max(b - a for a, b in zip(pts, pts[1:])) > 1.5  # the gap of the drop-out
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (640, 360)
    # the disarm comes before the session ends, so the whole take is in the session's file
    types = [e["type"] for e in serve.read_events() if e["type"].startswith(("recording.", "session."))]
    assert types == ["session.started", "recording.armed", "recording.started", "recording.disarmed",
                     "recording.stopped", "session.ended"]  # fmt: skip


def test_a_take_by_hand_outside_a_session_and_numbered_files_within_one(tmp_path, procs):
    serve = Serve(tmp_path / "data", "--no-record")
    procs.append(serve)
    procs.append(device(serve, "A", tmp_path / "state", "--fps", "15"))
    _wait(lambda: [c for c in serve.state()["cameras"] if c["status"] == "live"], what="camera live")
    assert serve.post("/v1/record/stop").status_code == 409
    take = serve.post("/v1/record/start")
    assert take.status_code == 201 and take.json()["session"] is None
    assert serve.post("/v1/record/start").status_code == 409
    _wait(lambda: _frames(serve, "cam-1") >= 10, what="frames of the rehearsal take")
    stop = serve.post("/v1/record/stop").json()
    (rehearsal,) = stop["stopped"]
    assert Path(rehearsal["path"]).parent.parent.parent == tmp_path / "data" / "recordings"
    assert probe(Path(rehearsal["path"]))["frames"] == rehearsal["frames"] >= 10
    # --no-record: a session records nothing by itself; two takes by hand number their files
    sid = serve.http.post("/v1/session/start", json={}).json()["session"]
    assert serve.state()["recording"]["armed"] is False
    paths = []
    for _ in range(2):
        assert serve.post("/v1/record/start").status_code == 201
        _wait(lambda: _frames(serve, "cam-1") >= 5, what="frames of a take")
        paths += [s["path"] for s in serve.post("/v1/record/stop").json()["stopped"]]
    video = tmp_path / "data" / "sessions" / sid / "video"
    assert paths == [str(video / "cam-1.proxy.mkv"), str(video / "cam-1.proxy.2.mkv")]
    assert all(e["session"] == sid for e in serve.of_type("recording.stopped")[1:])


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs (the test is skipped where mounting is not allowed)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_recording_cleanly_and_says_so(small_disk, tmp_path, procs, shared_data):
    # 24 MiB of disk, 16 MiB kept free: about 8 MiB of previews at ~1280x720, 30 fps
    serve = Serve(small_disk / "data", "--record-min-free-mb", "16")
    procs.append(serve)
    procs.append(device(serve, "A", tmp_path / "state", "--fps", "30", "--size", "1280x720",
                        "--video", str(shared_data / "video" / "vtest.avi")))  # fmt: skip
    _wait(lambda: [c for c in serve.state()["cameras"] if c["status"] == "live"], what="camera live")
    sid = serve.http.post("/v1/session/start", json={}).json()["session"]
    disarmed = _wait(lambda: serve.of_type("recording.disarmed"), timeout=90, what="the recording stopped")
    assert disarmed[0]["data"]["reason"] == "disk_full" and disarmed[0]["session"] == sid
    stopped = _wait(lambda: serve.of_type("recording.stopped"), what="recording.stopped")
    (data,) = [e["data"] for e in stopped]
    assert data["reason"] == "disk_full" and data["sha256"] == _sha256(Path(data["path"]))
    facts = probe(Path(data["path"]))  # closed cleanly: it opens, every frame is there
    assert facts["monotonic"] and facts["frames"] == data["frames"] > 0
    state = serve.state()
    assert state["recording"]["armed"] is False and state["session"] == sid  # the session goes on
    size = Path(data["path"]).stat().st_size
    time.sleep(0.5)
    assert Path(data["path"]).stat().st_size == size
    # no room to start again
    again = serve.post("/v1/record/start")
    assert again.status_code == 507 and "not enough disk space" in again.json()["error"]
    assert os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize >= 8 * 1024 * 1024
