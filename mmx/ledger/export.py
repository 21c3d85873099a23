"""A session as an editorial timeline: JSON Lines, CSV, OpenTimelineIO, EDL, FCP 7 XML, FCPXML.

The time of the timeline is the session clock: record time 00:00:00:00 is the session start,
and every recording's media time is the same clock (`mmx.mkv`: a frame at pts ``p`` ms was
seen ``p / 1000`` s after the session started). A clip's source timecode therefore equals its
record timecode: a shot cut at 00:01:02:15 takes the ISO's frame 00:01:02:15 (the earlier
export measured the source from the session start but the record from the first cut, an
offset of the first cut's time in every event).

Tracks (bottom to top, the order of OTIO's ``timeline.tracks``):

- one video track per camera, named after it, holding its recordings as clips at their
  place on the session clock (gaps before and between): each clip's active media reference
  is the camera's ISO (``kind`` ``iso``, an `ExternalReference` to the file), with the proxy
  (the previews, ``proxy``) as a second reference; a camera recorded by proxy only gets it
  as the active one;
- ``program (recorded)``, disabled: the relay's ``program.mkv`` as one clip, for reference;
- ``program``: one clip per shot (`mmx.ledger.queries.compute_shots`), named after its
  camera, referencing that camera's recording at the cut points (so an editor re-cuts it
  from the ISOs); a shot cut to no camera, and the time before the program starts, are gaps.
  Without recordings the clips keep a `MissingReference`.

Stills (``still.captured``, green) and operator marks (``still.marker``, red) are markers on
the timeline's stack. Frame times are rounded at the boundaries (cumulative, never per
duration), so shot durations add up to the program time rounded to one frame and every
boundary is within half a frame of its cut.

EDL (CMX 3600, through OpenTimelineIO's ``cmx_3600`` adapter) holds the program track only
(one track is all an EDL has), reels named after the cameras (`reel_name`) and source
timecodes of the ISOs. FCP 7 XML (``fcp_xml``, otio-fcp-adapter: Premiere Pro, Final Cut 7)
and FCPXML (``fcpx_xml``, otio-fcpx-xml-adapter: Final Cut Pro) hold every track. DaVinci
Resolve imports the ``.otio`` file directly.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mmx import __version__
from mmx.errors import DataError
from mmx.events import TS_MAX, TS_MIN
from mmx.ledger.text import in_range

if TYPE_CHECKING:
    import opentimelineio as otio

FORMATS = ("jsonl", "csv", "otio", "edl", "fcp7", "fcpx")
#: OpenTimelineIO adapter of each timeline format.
ADAPTERS = {"otio": "otio_json", "edl": "cmx_3600", "fcp7": "fcp_xml", "fcpx": "fcpx_xml"}
#: Frame rate of the OTIO/EDL/XML timeline (phone cameras record at 30 fps).
DEFAULT_FPS = 30.0
#: Largest offset on the session clock a timeline holds (the contract's whole ts range).
MAX_OFFSET_S = TS_MAX - TS_MIN
SHOT_FIELDS = ("shot", "camera", "start_s", "end_s", "duration_s", "start", "end", "by", "proposal", "cut_event")
PROGRAM_TRACK = "program"
RECORDED_PROGRAM_TRACK = "program (recorded)"
#: Key of the proxy among a clip's media references (the ISO is OTIO's default key).
PROXY_KEY = "proxy"
_SUFFIXES = {"jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "otio": "otio", "edl": "edl", "xml": "fcp7",
             "fcpxml": "fcpx"}  # fmt: skip


def format_from_path(path: str) -> str | None:
    """The export format implied by a file name's suffix (``.otio``, ``.edl``, ``.xml``,
    ``.fcpxml``, …), or None."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return _SUFFIXES.get(suffix)


def reel_name(camera: str) -> str:
    """A CMX 3600 reel name for a camera: letters and digits, upper case, at most 8."""
    reel = re.sub(r"[^A-Za-z0-9]", "", camera).upper()[:8]
    return reel or "AX"


def _camera_order(camera: str) -> tuple[int, str]:
    tail = camera.rsplit("-", 1)[-1]
    return (int(tail), camera) if tail.isdigit() else (1 << 30, camera)


def _target_url(path: str) -> str:
    p = Path(path)
    return p.as_uri() if p.is_absolute() else path


def _span(rec: dict[str, Any], fallback_end_s: float) -> tuple[float, float] | None:
    """``(start_s, end_s)`` of a recording on the session clock, or None without a start."""
    start, end, length = (_seconds(rec.get(k)) for k in ("start_s", "end_s", "duration_s"))
    if start is None:
        return None
    if end is None and length is not None:
        end = start + length
    return start, end if end is not None and end >= start else max(start, fallback_end_s)


def _seconds(value: Any) -> float | None:
    """A session-clock offset a timeline can hold: a finite number of at most a century."""
    if type(value) not in (int, float) or not abs(value) <= MAX_OFFSET_S:
        return None
    return value


def _media(otio: Any, rec: dict[str, Any], span: tuple[float, float], frame: Any, fps: float) -> Any:
    start_f, end_f = frame(span[0]), frame(span[1])
    return otio.schema.ExternalReference(
        target_url=_target_url(rec["path"]),
        available_range=otio.opentime.TimeRange(otio.opentime.RationalTime(start_f, fps),
                                                otio.opentime.RationalTime(max(end_f - start_f, 1), fps)),
        metadata={"mmx": {k: rec.get(k) for k in ("camera", "kind", "codec", "sha256", "bytes", "frames", "dropped",
                                                  "first_frame_ts", "start_s", "end_s", "width", "height", "src")}},
    )  # fmt: skip


def to_timeline(summary: dict[str, Any], *, fps: float = DEFAULT_FPS) -> otio.schema.Timeline:
    """The OpenTimelineIO timeline of a `mmx.ledger.queries.session_summary` (see the module
    docstring for its tracks, references and markers). Raises DataError without cuts."""
    import opentimelineio as otio  # loads in ~0.2 s: only when a timeline is wanted

    shots = summary["shots"]
    info = summary["session"]
    if not shots:
        raise DataError(f"session {info['session']} has no cuts to export")
    origin = info.get("started_at")
    if not in_range(origin) or origin > shots[0]["start"]:
        origin = shots[0]["start"]
    program_end_s = summary["program_end"] - origin

    def frame(t_s: float) -> int:
        return round(t_s * fps)

    def rt(frames: int) -> Any:
        return otio.opentime.RationalTime(frames, fps)

    timeline = otio.schema.Timeline(name=info.get("title") or info["session"])
    timeline.global_start_time = rt(0)
    timeline.metadata["mmx"] = {
        "session": info["session"], "session_start": origin, "program_start": summary["program_start"],
        "program_time_s": summary["program_time_s"], "mmx_version": __version__, "fps": fps,
        "clock": "record and source time are seconds since the session start",
    }  # fmt: skip

    # the recordings: per camera its files (ISO first, proxy kept as a second reference)
    by_camera: dict[str, dict[str, list[tuple[dict[str, Any], tuple[float, float]]]]] = {}
    for rec in summary.get("recordings", []):
        if not rec.get("path") or not rec.get("camera"):
            continue
        span = _span(rec, program_end_s)
        if span is None:
            continue
        kinds = by_camera.setdefault(rec["camera"], {})
        kinds.setdefault(rec.get("kind") or "iso", []).append((rec, span))

    default_key = otio.schema.Clip.DEFAULT_MEDIA_KEY

    def references(camera: str, at_s: float) -> tuple[dict[str, Any], str] | None:
        """The media references of ``camera`` at session time ``at_s``: its ISO as the
        default one, its proxy beside it (the default when there is no ISO)."""
        refs: dict[str, Any] = {}
        for kind in ("iso", "proxy"):
            files = by_camera.get(camera, {}).get(kind, [])
            # the file covering at_s, else the one nearest to it
            covering = [f for f in files if f[1][0] <= at_s + 0.5 / fps < f[1][1]] or files
            if covering:
                best = min(covering, key=lambda f: min(abs(f[1][0] - at_s), abs(f[1][1] - at_s)))
                refs[default_key if not refs else PROXY_KEY] = _media(otio, best[0], best[1], frame, fps)
        return (refs, default_key) if refs else None

    # one track per camera
    for camera in sorted(by_camera, key=_camera_order):
        if camera == PROGRAM_TRACK:
            continue
        kinds = by_camera[camera]
        files = kinds.get("iso") or kinds.get("proxy") or []
        track = otio.schema.Track(name=camera, kind=otio.schema.TrackKind.Video)
        at = 0
        for rec, span in sorted(files, key=lambda f: f[1][0]):
            start_f, end_f = max(frame(span[0]), at), frame(span[1])
            if end_f <= start_f:
                continue
            if start_f > at:
                track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=rt(start_f - at))))
            found = references(camera, span[0])
            clip = otio.schema.Clip(name=f"{camera} {rec.get('kind') or 'iso'}",
                                    source_range=otio.opentime.TimeRange(rt(start_f), rt(end_f - start_f)),
                                    metadata={"mmx": {"camera": camera, "path": rec["path"]},
                                              "cmx_3600": {"reel": reel_name(camera)}})  # fmt: skip
            if found:
                clip.set_media_references(*found)
            track.append(clip)
            at = end_f
        if len(track):
            timeline.tracks.append(track)

    recorded = by_camera.get(PROGRAM_TRACK, {})
    program_files = [f for files in recorded.values() for f in files]
    if program_files:
        track = otio.schema.Track(name=RECORDED_PROGRAM_TRACK, kind=otio.schema.TrackKind.Video)
        track.enabled = False
        at = 0
        for rec, span in sorted(program_files, key=lambda f: f[1][0]):
            start_f, end_f = max(frame(span[0]), at), frame(span[1])
            if end_f <= start_f:
                continue
            if start_f > at:
                track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=rt(start_f - at))))
            track.append(otio.schema.Clip(name="program", media_reference=_media(otio, rec, span, frame, fps),
                                          source_range=otio.opentime.TimeRange(rt(start_f), rt(end_f - start_f))))
            at = end_f
        timeline.tracks.append(track)

    timeline.tracks.append(_program_track(otio, shots, origin, frame, rt, references))
    _add_markers(otio, timeline, summary, origin, frame, rt)
    return timeline


def _program_track(otio: Any, shots: list[dict[str, Any]], origin: float, frame: Any, rt: Any,
                   references: Any) -> Any:  # fmt: skip
    track = otio.schema.Track(name=PROGRAM_TRACK, kind=otio.schema.TrackKind.Video)
    lead = frame(shots[0]["start"] - origin)
    if lead > 0:
        track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=rt(lead))))
    for shot in shots:
        start_f, end_f = frame(shot["start"] - origin), frame(shot["end"] - origin)
        if end_f <= start_f:
            continue  # shorter than half a frame: it rounds away
        duration = rt(end_f - start_f)
        if shot["camera"] is None:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=duration)))
            continue
        clip = otio.schema.Clip(
            name=shot["camera"],
            media_reference=otio.schema.MissingReference(),
            # source time is the session clock, as the record time is
            source_range=otio.opentime.TimeRange(start_time=rt(start_f), duration=duration),
            metadata={"mmx": dict(shot), "cmx_3600": {"reel": reel_name(shot["camera"])}},
        )
        found = references(shot["camera"], shot["start"] - origin)
        if found:
            clip.set_media_references(*found)
        track.append(clip)
    return track


def _add_markers(otio: Any, timeline: Any, summary: dict[str, Any], origin: float, frame: Any, rt: Any) -> None:
    marks = [(s["captured_at"], f"still {s['still']} ({s['camera']})", otio.schema.MarkerColor.GREEN,
              {"still": s["still"], "camera": s["camera"], "path": s["path"], "sha256": s["sha256"]})
             for s in summary.get("stills", [])]  # fmt: skip
    marks += [(m["ts"], m["label"] or "marker", otio.schema.MarkerColor.RED, {"camera": m["camera"], "event": m["event"]})
              for m in summary.get("markers", [])]  # fmt: skip
    for ts, name, color, meta in sorted(marks, key=lambda m: m[0]):
        at = frame(ts - origin)
        if at < 0:
            continue
        timeline.tracks.markers.append(otio.schema.Marker(
            name=name, color=color, marked_range=otio.opentime.TimeRange(rt(at), rt(0)), metadata={"mmx": meta}))


def _program_only(otio: Any, timeline: Any) -> Any:
    """A copy of ``timeline`` with only its program track (an EDL has one track)."""
    single = otio.schema.Timeline(name=timeline.name, global_start_time=timeline.global_start_time)
    single.metadata.update(timeline.metadata)
    program = next(t for t in timeline.tracks if t.name == PROGRAM_TRACK)
    single.tracks.append(program.deepcopy())
    return single


def export_session(summary: dict[str, Any], fmt: str, *, fps: float = DEFAULT_FPS) -> bytes:
    """A session summary in ``fmt`` (one of `FORMATS`), as bytes.

    ``jsonl``: one shot object per line (`SHOT_FIELDS`); ``csv``: the same with a header;
    ``otio``: OTIO JSON of `to_timeline`; ``edl``: CMX 3600 of its program track; ``fcp7``:
    FCP 7 XML; ``fcpx``: FCPXML (the last three through OTIO's adapters). Raises DataError for
    an unknown format or a session without cuts.
    """
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    shots = summary["shots"]
    if fmt == "jsonl":
        return b"".join(orjson.dumps({k: s[k] for k in SHOT_FIELDS}) + b"\n" for s in shots)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=SHOT_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(shots)
        return buf.getvalue().encode()
    import opentimelineio as otio

    timeline = to_timeline(summary, fps=fps)
    if fmt == "edl":
        timeline = _program_only(otio, timeline)
        if not any(isinstance(item, otio.schema.Clip) for item in timeline.tracks[0]):
            # OTIO's cmx_3600 writer fails on a track without clips
            raise DataError(f"session {summary['session']['session']} has no shot of a frame or longer to export as EDL")
    text = otio.adapters.write_to_string(timeline, ADAPTERS[fmt])
    return text.encode() + (b"\n" if not text.endswith("\n") else b"")
