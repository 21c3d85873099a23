"""The relay's recorder (`mmx.relay.record`) in process: real VP8 / H.264 frames (libvpx,
libx264 through PyAV) handed to it as the relay's decoder queues would, the files read back."""

from __future__ import annotations

import asyncio
import fractions
import random
import time
from pathlib import Path

import av
import numpy as np
import pytest

from mmx.events import Event
from mmx.mkv import probe
from mmx.relay.record import RelayRecording, StreamClock

T0 = 1_795_264_000.0
FPS = 30


def encoded(n: int, codec: str = "libvpx", size=(160, 96), gop: int = 30) -> list[tuple[bytes, bool]]:
    """``n`` encoded frames (a keyframe every ``gop``) of a changing picture, as (data, keyframe)."""
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = size[0], size[1], "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.gop_size = gop
    if codec == "libx264":
        enc.options = {"tune": "zerolatency", "preset": "ultrafast"}
    out = []
    for i in range(n):
        img = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(frame)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(None)]
    return out


class FakeQueue:
    def __init__(self) -> None:
        self.requests = 0

    def request_keyframe(self) -> None:
        self.requests += 1


class FakeHub:
    program: str | None = None


def test_stream_clock_ignores_jitter_follows_skew_and_a_jump():
    rng = random.Random(7)
    clock = StreamClock()
    # a sender clock 200 ppm slow, 5 ms mean exponential network jitter, 10 min at 30 fps
    errors = []
    for i in range(18000):
        t = i / FPS
        rtp = round(t * (1 - 200e-6) * 90000)
        arrival = T0 + t + 0.020 + rng.expovariate(1 / 0.005)
        errors.append(clock.wall(rtp, arrival) - (T0 + t + 0.020))
    assert max(abs(e) for e in errors[30:]) < 0.010  # well within a frame (33 ms)
    assert clock.resets == 0
    # a late burst (1.5 s of network trouble, shorter than RESET_CONFIRM_S) keeps the mapping
    t = 600.0
    wall = clock.wall(round(t * (1 - 200e-6) * 90000), T0 + t + 1.6)
    assert wall - (T0 + t + 0.020) < 0.010 and clock.resets == 0
    # the sender restarts its RTP clock at 0: followed once the jump has lasted 1 s
    for i in range(60):
        t = 601 + i / FPS
        wall = clock.wall(round(i / FPS * 90000), T0 + t + 0.020)
    assert clock.resets == 1 and abs(wall - (T0 + t + 0.020)) < 0.005


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_isos_and_a_program_that_follows_cuts_at_keyframes_with_a_rejoin_and_a_codec_change(tmp_path):
    async def main():
        hub = FakeHub()
        posted: list[tuple[str, dict]] = []
        rec = RelayRecording(hub, post=lambda t, d: posted.append((t, d)), max_pending=10_000)
        qa, qb = FakeQueue(), FakeQueue()
        a = rec.publisher("cam-1", "s1", [qa])
        b = rec.publisher("cam-2", "s2", [qb])
        vp8 = encoded(240, gop=15)
        hub.program = "cam-1"
        rec.program_changed("cam-1")
        video = tmp_path / "video"
        rec.handle(Event(type="recording.armed", data={"take": "T1", "session": "S", "path": str(video),
                                                       "origin_ts": T0}))  # fmt: skip
        await rec.settled()
        assert qa.requests == 1 and qb.requests == 1  # a keyframe asked of every publisher at arm

        def send(pub, i, data, key, *, rtp_base=0):
            rec.frame(pub, "VP8", data, rtp_base + i * 3000, key, arrival=T0 + 1.0 + i / FPS)

        cut_at = {}
        for i in range(120):
            data, key = vp8[i]
            send(a, i, data, key)
            send(b, i, data, key)
            if i == 40:
                hub.program = "cam-2"
                rec.program_changed("cam-2")
                cut_at["cam-2"] = i
        # cam-2 rejoins (a new WHIP session, its RTP clock from 0 again) after a 1 s gap
        b2 = rec.publisher("cam-2", "s3", [FakeQueue()])
        for i in range(150, 240):
            data, key = vp8[i]
            send(a, i, data, key)
            rec.frame(b2, "VP8", data, (i - 150) * 3000, key, arrival=T0 + 1.0 + i / FPS)
        # cam-1 comes back as H.264: its ISO goes on in a new numbered file
        a2 = rec.publisher("cam-1", "s4", [FakeQueue()])
        for j, (data, key) in enumerate(encoded(30, "libx264")):
            rec.frame(a2, "H264", data, j * 3000, key, arrival=T0 + 9.0 + j / FPS)
        await asyncio.sleep(0.2)
        stopped = await rec.close("session_ended")
        return posted, stopped, cut_at, video, [i for i, (_, key) in enumerate(vp8) if key]

    posted, stopped, cut_at, video, keys = run(main())
    by_path = {Path(s["path"]).name: s for s in stopped}
    assert set(by_path) == {"cam-1.mkv", "cam-2.mkv", "program.mkv", "cam-1.2.mkv"}
    assert [t for t, _ in posted].count("recording.started") == 4
    assert [t for t, _ in posted].count("recording.stopped") == 4
    assert by_path["cam-1.mkv"]["reason"] == "codec_changed" and by_path["cam-1.2.mkv"]["codec"] == "h264"
    for name, data in by_path.items():
        facts = probe(video / name)
        assert facts["monotonic"] and facts["frames"] == data["frames"] > 0, name
        assert data["sha256"] and data["take"] == "T1" and data["dropped"] == 0, (name, data)
    # the ISO is on the session clock: frame i arrived 1 + i/30 s after the session start
    assert probe(video / "cam-1.mkv")["start_s"] == pytest.approx(1.0, abs=0.002)
    assert by_path["cam-1.mkv"]["frames"] == 240 - 30  # 0..119 and 150..239
    with av.open(str(video / "cam-2.mkv")) as c:
        pts = [p.pts / 1000 for p in c.demux(video=0) if p.pts is not None]
    rejoined = next(i for i in keys if i >= 150)  # the new stream's first keyframe
    assert max(b - a for a, b in zip(pts, pts[1:])) == pytest.approx((rejoined - 119) / FPS, abs=0.002)  # the gap
    assert pts[-1] == pytest.approx(1.0 + 239 / FPS, abs=0.002)  # the new stream's clock is re-anchored
    # the program: cam-1, then cam-2 from its first keyframe after the cut
    with av.open(str(video / "program.mkv")) as c:
        packets = [(p.pts / 1000, bool(p.is_keyframe)) for p in c.demux(video=0) if p.pts is not None]
    switch = next(t for t, k in packets if k and t > 1.0 + cut_at["cam-2"] / FPS)
    assert switch == pytest.approx(1.0 + next(i for i in keys if i > cut_at["cam-2"]) / FPS, abs=0.002)
    times = [t for t, _ in packets]
    assert len(times) == len(set(times))  # one camera at a time: no frame twice
    with av.open(str(video / "program.mkv")) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(packets)  # every frame decodes


def test_nothing_is_written_unarmed_and_a_bad_directory_is_reported(tmp_path):
    async def main():
        reports = []
        rec = RelayRecording(FakeHub(), report=reports.append)
        pub = rec.publisher("cam-1", "s1", [FakeQueue()])
        for i, (data, key) in enumerate(encoded(10)):
            rec.frame(pub, "VP8", data, i * 3000, key)
        # a replayed events file arms nothing: its takes are history
        rec.handle(Event(type="recording.armed", ts=time.time() - 3600,
                         data={"take": "OLD", "path": str(tmp_path / "old"), "origin_ts": T0}))  # fmt: skip
        await rec.settled()
        assert not rec.armed
        (tmp_path / "file").write_text("x")
        ok = await rec.arm(take="T", session=None, path=str(tmp_path / "file" / "video"), origin_ts=T0)
        await rec.close()
        return ok, reports

    ok, reports = run(main())
    assert not ok and not list(tmp_path.rglob("*.mkv"))
    (err,) = [r for r in reports if r["status"] == "record_error"]
    assert err["take"] == "T" and "cannot make" in err["error"]


def test_a_restarted_relay_arms_from_the_state_into_numbered_files_and_stops_when_serve_has_no_take(tmp_path):
    video = tmp_path / "video"
    video.mkdir()
    (video / "cam-1.mkv").write_bytes(b"left by a killed relay")

    async def main():
        posted = []
        rec = RelayRecording(FakeHub(), post=lambda t, d: posted.append((t, d)))
        pub = rec.publisher("cam-1", "s1", [FakeQueue()])
        state = {"armed": True, "take": "T", "session": "S", "path": str(video), "origin_ts": T0}
        rec.handle_state({"recording": state})
        await rec.settled()
        for i, (data, key) in enumerate(encoded(30)):
            rec.frame(pub, "VP8", data, i * 3000, key, arrival=T0 + i / FPS)
        rec.handle_state({"recording": state})  # the same take again: nothing changes
        rec.handle_state({"recording": {"armed": False}})
        await rec.settled()
        assert not rec.armed
        await rec.close()
        return posted

    posted = run(main())
    assert [(t, Path(d["path"]).name) for t, d in posted] == [("recording.started", "cam-1.2.mkv"),
                                                              ("recording.stopped", "cam-1.2.mkv")]
    assert posted[1][1]["reason"] == "server_disarmed" and posted[1][1]["frames"] == 30


def test_an_h264_publisher_over_webrtc_is_recorded_as_h264_in_matroska(tmp_path):
    from aiortc import RTCRtpSender

    from mmx.relay.client import _exchange
    from mmx.relay.net import HostRestrictedPeerConnection
    from mmx.relay.pattern import pattern_track
    from mmx.relay.server import Relay, serve_relay

    from .conftest import free_port

    async def main():
        relay = Relay(token=None)
        port = free_port()
        runner = await serve_relay(relay, port=port)
        pc = HostRestrictedPeerConnection(ice_hosts=["127.0.0.1"])
        try:
            transceiver = pc.addTransceiver(pattern_track(320, 180, fps=15), direction="sendonly")
            transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                             if c.mimeType.lower() == "video/h264"])  # fmt: skip
            await _exchange(f"http://127.0.0.1:{port}/whip/cam-1", pc, None)
            assert await relay.recording.arm(take="T", session=None, path=str(tmp_path / "video"), origin_ts=T0)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and sum(f["frames"] for f in relay.recording.status()["files"]) < 15:
                await asyncio.sleep(0.1)
            return await relay.recording.disarm("operator")
        finally:
            await pc.close()
            await relay.close()
            await runner.cleanup()

    stopped = run(main())
    (iso,) = [s for s in stopped if s["kind"] == "iso"]
    assert iso["codec"] == "h264" and iso["path"] == str(tmp_path / "video" / "cam-1.mkv") and iso["frames"] >= 15
    with av.open(iso["path"]) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        pictures = [f for f in c.decode(video=0)]
    assert len(pictures) == iso["frames"] and (pictures[0].width, pictures[0].height) == (320, 180)
