"""A session's cut list as an editorial timeline: JSON Lines, CSV, OpenTimelineIO, CMX 3600 EDL.

The timeline has one video track, ``program``, with one clip per shot (see
`mmx.ledger.queries.compute_shots`), named after its camera; a shot cut to no camera is a
gap. A clip's source range is where the shot sits in that camera's recording, assuming every
camera records from the session start (``start_s`` of the shot): an editor relinks each
clip to its camera's file and conforms. Frame times are rounded at the shot boundaries
(cumulative, never per duration), so the clip durations add up to the program time rounded
to one frame. EDL goes through OpenTimelineIO's ``cmx_3600`` adapter
(otio-cmx3600-adapter), reel names being the camera names cut to 8 characters.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from typing import TYPE_CHECKING

import orjson

from mmx import __version__
from mmx.errors import DataError

if TYPE_CHECKING:
    import opentimelineio as otio

FORMATS = ("jsonl", "csv", "otio", "edl")
#: Frame rate of the OTIO/EDL timeline (phone cameras record at 30 fps).
DEFAULT_FPS = 30.0
SHOT_FIELDS = ("shot", "camera", "start_s", "end_s", "duration_s", "start", "end", "by", "proposal", "cut_event")


def format_from_path(path: str) -> str | None:
    """The export format implied by a file name's suffix (``.otio``, ``.edl``, …), or None."""
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return {"jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "otio": "otio", "edl": "edl"}.get(suffix)


def reel_name(camera: str) -> str:
    """A CMX 3600 reel name for a camera: letters and digits, upper case, at most 8."""
    reel = re.sub(r"[^A-Za-z0-9]", "", camera).upper()[:8]
    return reel or "AX"


def to_timeline(summary: dict[str, Any], *, fps: float = DEFAULT_FPS) -> otio.schema.Timeline:
    """The OpenTimelineIO timeline of a `mmx.ledger.queries.session_summary`.

    One track ``program``; per shot a Clip named after the camera (MissingReference, with
    ``metadata["mmx"]`` = the shot and ``metadata["cmx_3600"]["reel"]``), or a Gap for a
    shot with no camera. Raises DataError when the session has no cuts.
    """
    import opentimelineio as otio  # loads in ~0.2 s: only when a timeline is wanted
    shots = summary["shots"]
    info = summary["session"]
    if not shots:
        raise DataError(f"session {info['session']} has no cuts to export")
    timeline = otio.schema.Timeline(name=info.get("title") or info["session"])
    timeline.metadata["mmx"] = {
        "session": info["session"], "program_start": summary["program_start"],
        "program_time_s": summary["program_time_s"], "mmx_version": __version__,
    }  # fmt: skip
    track = otio.schema.Track(name="program", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    origin = shots[0]["start"]

    def frame(t: float) -> int:
        return round((t - origin) * fps)

    for shot in shots:
        start_f, end_f = frame(shot["start"]), frame(shot["end"])
        duration = otio.opentime.RationalTime(end_f - start_f, fps)
        if shot["camera"] is None:
            track.append(otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=duration)))
            continue
        source_in = otio.opentime.RationalTime(round(shot["start_s"] * fps), fps)
        clip = otio.schema.Clip(
            name=shot["camera"],
            media_reference=otio.schema.MissingReference(),
            source_range=otio.opentime.TimeRange(start_time=source_in, duration=duration),
            metadata={"mmx": dict(shot), "cmx_3600": {"reel": reel_name(shot["camera"])}},
        )
        track.append(clip)
    return timeline


def export_session(summary: dict[str, Any], fmt: str, *, fps: float = DEFAULT_FPS) -> bytes:
    """The cut list of a session summary in ``fmt`` (one of `FORMATS`), as bytes.

    ``jsonl``: one shot object per line (`SHOT_FIELDS`); ``csv``: the same with a header;
    ``otio``: OTIO JSON of `to_timeline`; ``edl``: CMX 3600 through OTIO's adapter. Raises
    DataError for an unknown format or a session without cuts.
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
    if fmt == "otio":
        return otio.adapters.write_to_string(timeline, "otio_json").encode() + b"\n"
    return otio.adapters.write_to_string(timeline, "cmx_3600").encode()
