"""`mmx ledger export` with media: real Matroska recordings (written by `mmx.mkv`), a real
ledger, and the timeline read back with OpenTimelineIO and its EDL / FCP XML / FCPXML adapters."""

from __future__ import annotations

import fractions
import re
from pathlib import Path

import av
import numpy as np
import opentimelineio as otio
import pytest

from mmx.events import Producer
from mmx.ledger import queries
from mmx.ledger.export import PROGRAM_TRACK, PROXY_KEY, RECORDED_PROGRAM_TRACK, export_session, to_timeline
from mmx.ledger.store import Ledger
from mmx.mkv import Recorder, probe

SESSION = "01JEXPORTMEDIA0000000SESS1"
T0 = 1_795_264_000.0
FPS = 30
#: (time from the session start, camera cut to)
CUTS = [(1.0, "cam-1"), (2.5, "cam-2"), (4.07, "cam-1"), (5.5, "cam-2")]
END_S = 7.0


def vp8_frames(n: int, size=(160, 96)) -> list[tuple[bytes, bool]]:
    """``n`` VP8 frames (a keyframe every 30) of a moving gradient, as (data, keyframe)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = size[0], size[1], "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.gop_size = 30
    out = []
    for i in range(n):
        img = np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(frame)]
    out += [(bytes(p), bool(p.is_keyframe)) for p in enc.encode(None)]
    return out


def jpeg(i: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 36), (i % 255, 40, 90)).save(buf, "JPEG")
    return buf.getvalue()


def record(tmp_path: Path) -> list[tuple[str, dict]]:
    """ISOs of cam-1 and cam-2, cam-2's proxy, cam-3's proxy only, and the program: the
    recording.started / recording.stopped data of each."""
    video = tmp_path / "sessions" / SESSION / "video"
    started: list[dict] = []
    rec = Recorder(max_pending=100_000, on_started=lambda track, ts: started.append({"camera": track.camera, "path": str(track.path),
                                                                   "kind": track.kind, "codec": track.codec,
                                                                   "first_frame_ts": ts,
                                                                   "start_s": ts - track.origin_ts}))  # fmt: skip
    frames = vp8_frames(int((END_S - 0.3) * FPS))
    tracks = {
        "cam-1": rec.open(video / "cam-1.mkv", codec="vp8", origin_ts=T0, camera="cam-1", kind="iso"),
        "cam-2": rec.open(video / "cam-2.mkv", codec="vp8", origin_ts=T0, camera="cam-2", kind="iso"),
        "program": rec.open(video / "program.mkv", codec="vp8", origin_ts=T0, camera="program", kind="program"),
    }
    proxies = {c: rec.open(video / f"{c}.proxy.mkv", codec="mjpeg", origin_ts=T0, camera=c, kind="proxy")
               for c in ("cam-2", "cam-3")}  # fmt: skip
    for i, (data, key) in enumerate(frames):
        ts = T0 + 0.3 + i / FPS
        for track in tracks.values():
            rec.write(track, data, ts, key)
        if i % 3 == 0:
            for track in proxies.values():
                rec.write(track, jpeg(i), ts, True)
    stopped = [rec.close(t, "session_ended").result(30) for t in [*tracks.values(), *proxies.values()]]
    rec.shutdown()
    return [("recording.started", s) for s in started] + [("recording.stopped", s) for s in stopped]


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export-media")
    serve = Producer("serve", session=SESSION)
    events = [serve.make("session.started", {"title": "media"}, ts=T0)]
    events += [serve.make("camera.joined", {"camera": c, "device": c.upper()}, ts=T0 + 0.1) for c in ("cam-1", "cam-2")]
    prev = None
    for at, to in CUTS:
        events.append(serve.make("director.cut", {"from": prev, "to": to, "by": "operator"}, ts=T0 + at))
        prev = to
    events.append(serve.make("still.captured", {"still": "st1", "camera": "cam-2", "path": "stills/cam-2/st1.jpg",
                                                "sha256": "ab" * 32, "bytes": 10}, ts=T0 + 3.0))  # fmt: skip
    events.append(serve.make("still.marker", {"label": "jump", "camera": "cam-1"}, ts=T0 + 4.5))
    relay = Producer("relay", session=SESSION)
    for etype, data in record(tmp_path):
        events.append((serve if data["kind"] == "proxy" else relay).make(etype, data, ts=T0 + END_S - 0.1))
    events.append(serve.make("session.ended", {"reason": "operator"}, ts=T0 + END_S))
    with Ledger.open(tmp_path / "ledger.sqlite") as led:
        led.push(events)
        return queries.session_summary(led.conn, SESSION)


def _path(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(otio.url_utils.filepath_from_url(url))


def test_recordings_reach_the_summary_with_their_facts(summary):
    recs = {(r["camera"], r["kind"]): r for r in summary["recordings"]}
    assert set(recs) == {("cam-1", "iso"), ("cam-2", "iso"), ("cam-2", "proxy"), ("cam-3", "proxy"),
                         ("program", "program")}  # fmt: skip
    iso = recs[("cam-1", "iso")]
    assert iso["status"] == "stopped" and iso["codec"] == "vp8" and iso["src"] == "relay"
    assert iso["start_s"] == pytest.approx(0.3, abs=0.002) and iso["frames"] > 150 and iso["dropped"] == 0
    facts = probe(Path(iso["path"]))
    assert facts["monotonic"] and facts["frames"] == iso["frames"]
    assert facts["start_s"] == pytest.approx(iso["start_s"], abs=0.002)
    assert len(iso["sha256"]) == 64 and summary["counts"]["recordings"] == 5


def test_otio_has_a_track_per_camera_and_a_program_cut_from_the_isos(summary):
    back = otio.adapters.read_from_string(export_session(summary, "otio").decode(), "otio_json")
    names = [t.name for t in back.tracks]
    assert names == ["cam-1", "cam-2", "cam-3", RECORDED_PROGRAM_TRACK, PROGRAM_TRACK]
    by_name = {t.name: t for t in back.tracks}
    for camera in ("cam-1", "cam-2"):
        (clip,) = by_name[camera].find_clips()
        ref = clip.media_reference
        assert isinstance(ref, otio.schema.ExternalReference) and _path(ref.target_url).name == f"{camera}.mkv"
        assert _path(ref.target_url).exists()
        # the clip sits where its first frame was seen on the session clock
        assert clip.range_in_parent().start_time.value == round(0.3 * FPS)
        assert clip.source_range.start_time == clip.range_in_parent().start_time
    (cam3,) = by_name["cam-3"].find_clips()
    assert _path(cam3.media_reference.target_url).name == "cam-3.proxy.mkv"  # proxy only
    assert by_name[RECORDED_PROGRAM_TRACK].enabled is False
    # the program track: a gap until the first cut, then one clip per shot on the cut frames
    program = by_name[PROGRAM_TRACK]
    clips = list(program.find_clips())
    assert [c.name for c in clips] == [to for _, to in CUTS]
    for clip, (at, camera) in zip(clips, CUTS):
        start = clip.range_in_parent().start_time
        assert abs(start.to_seconds() - at) <= 1 / FPS  # on the ledger's cut time within one frame
        assert clip.source_range.start_time == start  # source timecode = record timecode
        iso = clip.media_reference
        assert _path(iso.target_url).name == f"{camera}.mkv" and _path(iso.target_url).exists()
        refs = clip.media_references()
        if camera == "cam-2":
            assert _path(refs[PROXY_KEY].target_url).name == "cam-2.proxy.mkv"
    end = clips[-1].range_in_parent().end_time_exclusive()
    assert abs(end.to_seconds() - END_S) <= 1 / FPS
    # stills and marks are markers on the stack
    markers = {m.name: m for m in back.tracks.markers}
    assert markers["still st1 (cam-2)"].color == otio.schema.MarkerColor.GREEN
    assert markers["still st1 (cam-2)"].marked_range.start_time.value == 3 * FPS
    assert markers["jump"].color == otio.schema.MarkerColor.RED


def test_edl_reels_are_cameras_and_source_timecode_is_record_timecode(summary):
    edl = export_session(summary, "edl").decode()
    events = [ln.split() for ln in edl.splitlines() if re.match(r"^\d{3}\s", ln)]
    assert [e[1] for e in events] == ["CAM1", "CAM2", "CAM1", "CAM2"]
    for e, (at, _) in zip(events, CUTS):
        src_in, src_out, rec_in, rec_out = e[-4:]
        assert (src_in, src_out) == (rec_in, rec_out)
        assert rec_in == otio.opentime.to_timecode(otio.opentime.RationalTime(round(at * FPS), FPS), FPS)
    assert "cam-1.mkv" in edl  # the source file, as a comment the editor relinks by


@pytest.mark.parametrize("fmt,adapter", [("fcp7", "fcp_xml"), ("fcpx", "fcpx_xml")])
def test_fcp_xml_and_fcpxml_parse_with_their_adapters(summary, fmt, adapter):
    text = export_session(summary, fmt).decode()
    back = otio.adapters.read_from_string(text, adapter)
    timelines = [back] if isinstance(back, otio.schema.Timeline) else list(back.find_children(
        descended_from_type=otio.schema.Timeline)) or [t for t in back if isinstance(t, otio.schema.Timeline)]  # fmt: skip
    timeline = timelines[0]
    urls = {c.media_reference.target_url for c in timeline.find_clips()
            if isinstance(c.media_reference, otio.schema.ExternalReference)}  # fmt: skip
    assert {_path(u).name for u in urls} >= {"cam-1.mkv", "cam-2.mkv"}
    program = [t for t in timeline.video_tracks() if len(list(t.find_clips())) == len(CUTS)]
    assert program, [t.name for t in timeline.video_tracks()]
    starts = [c.range_in_parent().start_time.to_seconds() for c in program[-1].find_clips()]
    assert all(abs(s - at) <= 1 / FPS for s, (at, _) in zip(starts, CUTS))


def test_export_without_recordings_keeps_missing_references(tmp_path):
    serve = Producer("serve", session=SESSION)
    events = [serve.make("session.started", {}, ts=T0), serve.make("director.cut", {"to": "cam-1"}, ts=T0 + 2),
              serve.make("director.cut", {"to": "cam-2"}, ts=T0 + 3), serve.make("session.ended", {}, ts=T0 + 4)]
    with Ledger.open(tmp_path / "l.sqlite") as led:
        led.push(events)
        summary = queries.session_summary(led.conn, SESSION)
    timeline = to_timeline(summary, fps=FPS)
    assert [t.name for t in timeline.tracks] == [PROGRAM_TRACK]
    clips = list(timeline.find_clips())
    assert all(isinstance(c.media_reference, otio.schema.MissingReference) for c in clips)
    # the first cut is at 2 s on the record side and on the source side alike
    assert clips[0].range_in_parent().start_time.value == clips[0].source_range.start_time.value == 2 * FPS
