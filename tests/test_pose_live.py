"""`mmx pose` live: real serve, an `mmx device` on the shared video without pose, `mmx ghost`."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from .conftest import MMX
from .pose_fixtures import needs_mediapipe
from .test_ghost_live import TOKEN, _client, events_of, start_serve, stop, wait_for, write_pose

pytestmark = [pytest.mark.slow, pytest.mark.shared_data, needs_mediapipe]


def _mmx_pose_samples(url: str, camera: str | None = None) -> list[dict]:
    return [e for e in events_of(url, "pose.sample")
            if e["data"].get("source") == "mmx pose" and (camera is None or e["data"]["camera"] == camera)]  # fmt: skip


def test_live_pose_feeds_the_ghost_and_its_end_is_seen_as_stale_pose(shared_data, tmp_path, port):
    video = shared_data / "video" / "vtest.avi"
    serve = start_serve(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []
    try:
        # "still" sends its own pose (a person standing still); "walker" only video: the
        # shared pedestrians from 17 s on, where they are in view
        still = write_pose(tmp_path / "still.pose.jsonl", motion=0.0, seconds=30.0)
        for name, extra, az in (("still", ["--pose", str(still), "--fps", "0"], -60),
                                ("walker", ["--video", str(video), "--pose-offset-s", "17", "--fps", "5"], 60)):
            procs.append(subprocess.Popen(
                [*MMX, "device", "--server", url, "--token", TOKEN, "--name", name, *extra,
                 "--state-dir", str(tmp_path / "devices"), "--placement", f"label={name},azimuth_deg={az}"],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"device-{name}.err", "wb")))  # fmt: skip
        with _client(url) as c:
            cams = wait_for(lambda: (lambda s: s if len([x for x in s["cameras"] if x["status"] == "live"]) == 2 else None)(
                c.get("/v1/state").json()), 60, "two live cameras")["cameras"]  # fmt: skip
            by_name = {cam["name"]: cam["camera"] for cam in cams}
            c.post("/v1/director/cut", json={"to": by_name["still"]}).raise_for_status()
            c.post("/v1/director/mode", json={"mode": "ghost"}).raise_for_status()
        walker, still_cam = by_name["walker"], by_name["still"]
        pose_err = tmp_path / "pose.err"
        pose = subprocess.Popen([*MMX, "pose", "--server", url, "--token", TOKEN], stdout=subprocess.DEVNULL,
                                stderr=open(pose_err, "wb"))  # fmt: skip
        procs.append(pose)
        # pose.sample for the camera without pose arrive, stamped with the frame's capture time
        samples = wait_for(lambda: [e for e in _mmx_pose_samples(url) if e["data"]["joints"]], 90,
                           "mmx pose samples with a person")  # fmt: skip
        assert {e["data"]["camera"] for e in _mmx_pose_samples(url)} == {walker}  # "still" has its own: left alone
        first = samples[0]
        assert 0 <= first["ts"] - first["data"]["t"] < 10  # captured before it was estimated and posted
        assert set(first["data"]["joints"]) >= {"nose", "neck", "root", "leftAnkle"}
        assert all(len(v) == 3 and 0 <= v[2] <= 1 for v in first["data"]["joints"].values())
        with _client(url) as c:
            state = wait_for(lambda: (lambda s: s if s["pose_fps"].get(walker, 0) > 0 else None)(c.get("/v1/state").json()),
                             30, "pose_fps of the walker")  # fmt: skip
        assert state["pose_fps"].get(still_cam, 0) > 0  # the device's own samples are counted too
        assert walker in state["pose_dropped"]
        assert f"following {walker}" in pose_err.read_text()
        # the ghost proposes cutting to the walker, whose pose only mmx pose provides
        policy = tmp_path / "quick.toml"
        policy.write_text("[rules]\nmin_shot_s = 1.0\nmax_shot_s = 3.0\nheld_repeat_s = 1.0\n")
        ghost_out = tmp_path / "ghost.out"
        ghost = subprocess.Popen([*MMX, "ghost", "--server", url, "--token", TOKEN, "--policy", str(policy)],
                                 stdout=open(ghost_out, "wb"), stderr=open(tmp_path / "ghost.err", "wb"))  # fmt: skip
        procs.append(ghost)
        proposal = wait_for(lambda: [e for e in events_of(url, "ghost.proposed") if e["data"]["to"] == walker], 90,
                            "a ghost proposal to the walker")[0]  # fmt: skip
        assert proposal["data"]["from"] == still_cam
        # kill mmx pose: its samples stop, the ghost says the walker's pose is stale
        pose.send_signal(signal.SIGKILL)
        pose.wait(10)
        killed_at = time.time()
        wait_for(lambda: (lambda n: n if n == len(_mmx_pose_samples(url, walker)) else None)(len(_mmx_pose_samples(url, walker))),
                 10, "samples to stop", step_s=1.5)  # fmt: skip
        stale = wait_for(lambda: [e for e in events_of(url, "ghost.held") if e["ts"] > killed_at + 1.0 and any(
            r.get("camera") == walker and r.get("why") == "stale" for r in e["data"]["reasons"])], 60,
            "a ghost.held naming the walker's pose stale")[0]  # fmt: skip
        assert any(r.get("text") == f"{walker} sends no pose" for r in stale["data"]["reasons"])
        # nothing else broke: serve answers, both cameras live, the ghost runs, the device's pose goes on
        with _client(url) as c:
            state = c.get("/v1/state").json()
        assert [x["status"] for x in state["cameras"]] == ["live", "live"]
        assert ghost.poll() is None
        before = len([e for e in events_of(url, "pose.sample") if e["data"]["camera"] == still_cam])
        wait_for(lambda: len([e for e in events_of(url, "pose.sample") if e["data"]["camera"] == still_cam]) > before, 10,
                 "the still camera's own pose going on")  # fmt: skip
        with _client(url) as c:
            wait_for(lambda: c.get("/v1/state").json()["pose_fps"].get(walker) == 0, 15, "the walker's pose_fps to fall to 0")
    finally:
        for p in procs:
            stop(p)
        stop(serve)
