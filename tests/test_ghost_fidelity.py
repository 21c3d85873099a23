"""(d) A replay of a recorded live run reproduces the live run's proposals.

A real `mmx serve`, three `mmx device` cameras playing the shared real pose through three
distinct crops, a music cue with a beat grid, `mmx ghost` in ghost mode answered by an
operator over the API (accept, veto, leave unanswered, in turn) and then in autopilot. The
capture directory alone — what the server recorded, including the ghost.online the ghost
posted — is replayed with ``--mode recorded``: at least 90 % of the live proposals come back
with the same camera and a cut_at within one beat.
"""

from __future__ import annotations

import subprocess
import threading
import time

import orjson
import pytest
from typer.testing import CliRunner

from mmx.cli import app
from mmx.ghost.replay import replay
from mmx.ghost.simulate import beat_grid_npz

from .conftest import MMX
from .pose_views import PLACEMENTS, VIEWS, write_view
from .test_ghost_live import TOKEN, _client, events_of, start_serve, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

TRACK = "f" * 64


def _loud_quiet(t: float) -> float:
    return 3.0 if (t // 8) % 2 == 0 else 0.5


def test_d_replay_reproduces_the_live_run(tmp_path, port):
    serve = start_serve(tmp_path, port)
    url = f"http://127.0.0.1:{port}"
    feats = tmp_path / "features"
    feats.mkdir()
    beat_grid_npz(feats / f"song-{TRACK[:12]}.npz", track=TRACK, bpm=120.0, duration_s=600.0, energy=_loud_quiet)
    policy = tmp_path / "quick.toml"
    policy.write_text("[rules]\nmin_shot_s = 1.5\nmax_shot_s = 5.0\nmax_proposals_per_min = 12\n")
    procs: list[subprocess.Popen] = []
    answered: dict[str, str] = {}
    stop_operator = threading.Event()
    try:
        for name, view in VIEWS.items():
            pose = write_view(tmp_path / f"{name}.pose.jsonl", view)
            procs.append(subprocess.Popen(
                [*MMX, "device", "--server", url, "--token", TOKEN, "--name", name, "--pose", str(pose), "--fps", "0",
                 "--state-dir", str(tmp_path / "devices"), "--placement", f"label={name},azimuth_deg={PLACEMENTS[name]}"],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"device-{name}.err", "wb"),
            ))  # fmt: skip
        with _client(url) as c:
            wait_for(lambda: len([x for x in c.get("/v1/state").json()["cameras"] if x["status"] == "live"]) == 3, 60,
                     "three live cameras")  # fmt: skip
        err = tmp_path / "ghost.err"
        ghost = subprocess.Popen([*MMX, "ghost", "--server", url, "--token", TOKEN, "--features", str(feats),
                                  "--policy", str(policy)], stdout=subprocess.DEVNULL, stderr=open(err, "wb"))  # fmt: skip
        procs.append(ghost)
        wait_for(lambda: "connected to" in err.read_text(), 30, "the ghost to connect")
        with _client(url) as c:
            c.post("/v1/director/mode", json={"mode": "ghost"}).raise_for_status()
            session = c.post("/v1/session/start", json={"title": "fidelity"}).json()["session"]
            cams = {x["name"]: x["camera"] for x in c.get("/v1/state").json()["cameras"]}
            c.post("/v1/director/cut", json={"to": cams["cam-1"], "by": "operator"}).raise_for_status()
            c.post("/v1/events", json={"type": "music.cue", "src": "operator", "data": {
                "track": TRACK, "title": "song", "started_at": time.time() + 0.2, "offset_s": 0.0}}).raise_for_status()  # fmt: skip

        def operator() -> None:
            """Answers each proposal a moment after it comes: accept, veto, none, in turn."""
            with _client(url) as c:
                n = 0
                while not stop_operator.is_set():
                    for e in events_of(url, "ghost.proposed"):
                        pid = e["data"]["proposal"]
                        if pid in answered:
                            continue
                        kind = ("accept", "veto", "none")[n % 3]
                        n += 1
                        answered[pid] = kind
                        if kind != "none":
                            c.post("/v1/events", json={"type": f"ghost.{'accepted' if kind == 'accept' else 'vetoed'}",
                                                       "src": "operator", "data": {"proposal": pid, "by": "operator"}})  # fmt: skip
                    stop_operator.wait(0.15)

        thread = threading.Thread(target=operator, daemon=True)
        thread.start()
        wait_for(lambda: len(answered) >= 5, 90, "five proposals in ghost mode")
        with _client(url) as c:
            c.post("/v1/director/mode", json={"mode": "autopilot"}).raise_for_status()
        stop_operator.set()
        thread.join(5)
        wait_for(lambda: len([e for e in events_of(url, "director.cut") if e["data"].get("by") == "ghost"]) >= 5, 90,
                 "autopilot cuts")  # fmt: skip
        with _client(url) as c:
            c.post("/v1/session/stop", json={}).raise_for_status()
        assert stop(ghost) == 0, err.read_text()
    finally:
        stop_operator.set()
        for p in procs:
            stop(p)
        stop(serve)
    capture = tmp_path / "serve" / "sessions" / session
    recorded = [orjson.loads(line) for line in (capture / "events.jsonl").read_bytes().splitlines()]
    live = [e for e in recorded if e["type"] == "ghost.proposed"]
    assert len(live) >= 6
    online = [e for e in recorded if e["type"] == "ghost.online"]
    assert online and online[0]["data"]["reason"] == "session" and online[0]["data"]["features"] == str(feats.resolve())
    assert {e["data"]["by"] for e in recorded if e["type"] in ("ghost.accepted", "ghost.vetoed")} >= {"operator", "autopilot"}

    # the capture directory alone: its recorded policy and features, the recorded mode,
    # cuts and the operator's answers
    result = CliRunner().invoke(app, ["ghost", "--replay", str(capture), "--mode", "recorded", "--eval", "--json"])
    assert result.exit_code == 0, result.output
    assert "replaying with the recorded policy" in result.stderr
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    fid = report["fidelity"]
    detail = _detail(capture)
    assert fid["live_proposals"] == len(live)
    assert fid["share"] >= 0.9, (fid, detail, err.read_text()[-3000:])
    # the operator's decisions are the reference: their cut and the proposals they accepted
    accepted = [pid for pid, kind in answered.items() if kind == "accept"]
    ghost_cuts = [e for e in recorded if e["type"] == "director.cut" and e["data"].get("by") == "ghost"]
    operator_cuts = 1 + sum(1 for c in ghost_cuts if c["data"]["proposal"] in accepted)
    assert report["reference_cuts"] == operator_cuts
    assert report["reference_left_out"] == len([e for e in recorded if e["type"] == "director.cut"]) - operator_cuts


def _detail(capture) -> list:
    """Each live proposal and the replayed one it was paired with (for a failure message)."""
    r = replay(capture, mode="recorded")
    by_live = {v: k for k, v in r.proposal_map.items()}
    replayed = {p["proposal"]: p for p in r.replayed}
    out = []
    for lp in r.live_proposals:
        rp = replayed.get(by_live.get(lp["proposal"]))
        out.append((round(lp["ts"] % 1000, 3), lp["to"], round(lp["cut_at"] % 1000, 3),
                    rp and (round(rp["at"] % 1000, 3), rp["to"], round(rp["cut_at"] % 1000, 3))))  # fmt: skip
    return out
