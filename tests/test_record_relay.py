"""Recording in the relay: real `mmx serve`, `mmx relay` and two `mmx device --relay` on the
shared video, a session with cuts; the ISOs and the program read back with PyAV, the
session exported from a real ledger and read back with OpenTimelineIO; a SIGKILLed relay."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import av
import opentimelineio as otio
import pytest

from mmx.mkv import probe

from .conftest import MMX
from .record_fixtures import Relay, Serve, _sha256, _wait, device, procs  # noqa: F401 - procs is a fixture

pytestmark = pytest.mark.slow
FPS = 15


def _start(tmp_path: Path, procs: list, shared_data: Path) -> tuple[Serve, Relay, list[str]]:
    serve = Serve(tmp_path / "data")
    procs.append(serve)
    relay = Relay(serve, tmp_path / "relay.log")
    procs.append(relay)
    for name in ("A", "B"):
        procs.append(device(serve, name, tmp_path / "state", "--fps", str(FPS), "--size", "320x180",
                            "--video", str(shared_data / "video" / "vtest.avi"), "--relay", relay.url))  # fmt: skip
    cams = _wait(lambda: c if len(c := sorted(x["camera"] for x in serve.state()["cameras"] if x["status"] == "live")) == 2
                 else None, what="two live cameras")  # fmt: skip
    _wait(lambda: sum(c["status"] == "live" and c["fps"] > 0 for c in relay.status()["cameras"]) == 2,
          what="both cameras publishing to the relay")  # fmt: skip
    return serve, relay, cams


def _relay_files(relay: Relay) -> dict[str, int]:
    rec = relay.status()["recording"]
    return {Path(f["path"]).name: f["frames"] for f in rec.get("files", [])} if rec["armed"] else {}


def _packets(path: Path) -> list[tuple[float, bool, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts / 1000, bool(p.is_keyframe), bytes(p)) for p in c.demux(video=0) if p.pts is not None]


def test_a_session_records_isos_and_a_program_that_export_as_an_edit(tmp_path, procs, shared_data):
    serve, relay, cams = _start(tmp_path, procs, shared_data)
    serve.http.post("/v1/director/cut", json={"to": cams[0]})
    started = serve.http.post("/v1/session/start", json={"title": "iso"}).json()
    sid, t0 = started["session"], started["started_at"]
    _wait(lambda: len(_relay_files(relay)) == 3, what="two ISOs and the program recording")
    for to in (cams[1], cams[0], cams[1]):
        time.sleep(3.0)  # a shot's length (a duration, not a wait for a condition)
        assert serve.http.post("/v1/director/cut", json={"to": to}).status_code == 200
    time.sleep(3.0)
    assert serve.post("/v1/session/stop").status_code == 200

    events = serve.read_events()
    (disarmed,) = [e for e in events if e["type"] == "recording.disarmed"]
    session_s = disarmed["ts"] - t0
    stopped = {Path(e["data"]["path"]).name: e for e in events if e["type"] == "recording.stopped"}
    cut_s = [e["ts"] - t0 for e in events if e["type"] == "director.cut" and e["session"] == sid]
    assert set(stopped) >= {f"{c}.mkv" for c in cams} | {"program.mkv"}
    video = tmp_path / "data" / "sessions" / sid / "video"
    isos = {}
    for name in [f"{c}.mkv" for c in cams] + ["program.mkv"]:
        event = stopped[name]
        data, path = event["data"], video / name
        assert event["src"] == "relay" and event["session"] == sid and data["reason"] == "session_ended"
        assert data["codec"] == "vp8" and data["bytes"] == path.stat().st_size and data["sha256"] == _sha256(path)
        facts = probe(path)
        assert facts["monotonic"] and facts["frames"] == data["frames"], name
        # from before the first cut (the files existed then) to after the last one, within the
        # session: its last frame may have begun just before the stop, and ends a frame later
        assert 0 <= facts["start_s"] < cut_s[0] < cut_s[-1] < facts["end_s"] <= session_s + 1 / FPS + 0.05, (name, facts)
        assert facts["end_s"] == pytest.approx(data["end_s"], abs=0.002)
        packets = _packets(path)
        isos[name] = {payload: t for t, _, payload in packets}
        with av.open(str(path)) as c:
            assert sum(1 for _ in c.decode(video=0)) == len(packets)  # every frame decodes
    # the program holds the ISOs' own frames (no re-encode), the camera of each cut, from its
    # keyframe just after the cut
    cuts = [(e["ts"] - t0, e["data"]["to"]) for e in events if e["type"] == "director.cut" and e["session"] == sid]
    assert [to for _, to in cuts] == [cams[1], cams[0], cams[1]]
    program = _packets(video / "program.mkv")
    shown, before = [], None
    for t, key, payload in program:
        # a frame of an ISO: both cameras play the same video, so the same frame can be in both
        # ISOs; then it is the one nearest in time, the camera on program on a tie
        owners = [c for c in cams if payload in isos[f"{c}.mkv"]]
        assert owners, f"program frame at {t:.3f} s is in no ISO"
        current = shown[-1][1] if shown else None
        camera = min(owners, key=lambda c: (abs(isos[f"{c}.mkv"][payload] - t), c != current))
        # at the same time as in its ISO, or 1 ms after the frame before it: just after a switch
        # the new camera's keyframe can be older than the old camera's last frame (the more so
        # on a busy machine), and pts stay increasing (mmx.mkv)
        iso_t = isos[f"{camera}.mkv"][payload]
        assert round(t * 1000) == round(iso_t * 1000) or (
            before is not None and round(t * 1000) == round(before * 1000) + 1 and iso_t < t
        ), f"program frame at {t:.3f} s is {camera}'s frame at {iso_t:.3f} s"
        before = t
        if not shown or shown[-1][1] != camera:
            assert key, f"the program switches to {camera} at {t:.3f} s on an inter frame"
            shown.append((t, camera, iso_t))
    assert [c for _, c, _ in shown] == [cams[0]] + [to for _, to in cuts]
    keyframes = {c: sorted(t for t, key, _ in _packets(video / f"{c}.mkv") if key) for c in cams}
    for (at, to), (_, camera, switched) in zip(cuts, shown[1:]):
        # on the keyframe asked for at the cut: the new camera's first keyframe after it
        assert switched >= at - 0.05 and not [k for k in keyframes[to] if at <= k < switched], (at, switched)

    # the ledger, and the session exported as an OTIO timeline
    ledger = tmp_path / "ledger.sqlite"
    with open(serve.events, "rb") as fp:
        subprocess.run([*MMX, "ledger", "push", "--ledger", str(ledger)], stdin=fp, check=True, capture_output=True)
    out = tmp_path / "session.otio"
    subprocess.run([*MMX, "ledger", "export", sid, "-o", str(out), "--ledger", str(ledger)], check=True,
                   capture_output=True)  # fmt: skip
    timeline = otio.adapters.read_from_file(str(out))
    tracks = {t.name: t for t in timeline.tracks}
    for camera in cams:
        for clip in tracks[camera].find_clips():
            ref = clip.media_reference
            assert isinstance(ref, otio.schema.ExternalReference)
            assert Path(otio.url_utils.filepath_from_url(ref.target_url)) == video / f"{camera}.mkv"
    program_clips = tracks["program"].find_clips()
    assert [c.name for c in program_clips] == [cams[0]] + [to for _, to in cuts]
    rate = program_clips[0].range_in_parent().start_time.rate
    for clip, (at, to) in zip(program_clips[1:], cuts):
        start = clip.range_in_parent().start_time.to_seconds()
        assert abs(start - at) <= 1 / rate  # on the ledger's cut time within one frame
        ref = clip.media_reference
        assert Path(otio.url_utils.filepath_from_url(ref.target_url)) == video / f"{to}.mkv"
        assert clip.source_range.start_time.to_seconds() == pytest.approx(start)


def test_a_sigkilled_relay_leaves_files_playable_up_to_2_s_before_the_kill(tmp_path, procs, shared_data):
    serve, relay, cams = _start(tmp_path, procs, shared_data)
    serve.http.post("/v1/director/cut", json={"to": cams[0]})
    started = serve.http.post("/v1/session/start", json={}).json()
    sid, t0 = started["session"], started["started_at"]
    _wait(lambda: len(files := _relay_files(relay)) == 3 and min(files.values()) >= 4 * FPS, what="4 s recorded")
    killed_at = time.time()
    relay.proc.send_signal(signal.SIGKILL)
    relay.proc.wait(10)
    video = tmp_path / "data" / "sessions" / sid / "video"
    names = [f"{c}.mkv" for c in cams] + ["program.mkv"]
    for name in names:
        facts = probe(video / name)  # plays as it is: no trailer, no index
        assert facts["monotonic"] and facts["frames"] > 0
        assert facts["end_s"] >= killed_at - t0 - 2.0, name  # at most 2 s lost
        with av.open(str(video / name)) as c:
            assert sum(1 for _ in c.decode(video=0)) == facts["frames"]
    # the session ends without the relay: serve closes its files from what is on disk
    assert serve.post("/v1/session/stop").status_code == 200
    stopped = {Path(e["data"]["path"]).name: e["data"] for e in serve.of_type("recording.stopped")}
    for name in names:
        data = stopped[name]
        assert data["reason"] == "writer_lost" and data["sha256"] == _sha256(video / name)
        assert data["frames"] == probe(video / name)["frames"]
