"""One unit of pairing work: a session (or a standalone pose file) → segment files + window rows.

`pair_job` is a plain function of picklable arguments with no shared state, so the same call
runs in this process, in a worker process (``--jobs N``) or on a Dask worker (``--cluster``);
whichever runs it writes the same segment files and returns the same `JobResult`. The
caller merges results in job order, which makes the dataset independent of who ran what.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmx.dataset.inputs import Cue, PoseStream, file_sha256, read_pose_file, read_session_events
from mmx.dataset.segments import CueSpec, Stats, pair_segment
from mmx.dataset.tracks import Track, audio_columns, load_track
from mmx.dataset.windows import hash_split, time_blocks
from mmx.errors import DataError, InputMissingError, IOFailure


@dataclass
class Job:
    """One session (or one standalone pose file) to pair; its data is read only when run."""

    id: str
    kind: str  # "session" | "pose"
    path: Path  # session dir or pose file
    events: Path | None = None
    session_json: Path | None = None
    planned_tracks: list[str] | None = None  # from the inventory / cue file, for split planning
    pose_cues: list[Cue] = field(default_factory=list)
    line: int = 0


@dataclass
class JobContext:
    """What every job needs: parameters, the feature artifacts, the split plan, the output."""

    params: Any  # PairParams
    features: dict[str, list[Path]]  # audio sha256 → artifacts (sorted)
    split_of: dict[str, str]  # planned group → split
    segments_dir: Path


@dataclass
class JobResult:
    """What a job hands back (small: no frame data)."""

    id: str
    problems: list[tuple[str, str | None]] = field(default_factory=list)  # (message, hint)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    input_session: dict[str, Any] | None = None
    input_pose: dict[str, Any] | None = None
    tracks_used: dict[str, dict[str, Any]] = field(default_factory=dict)
    geometry: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)  # file stems written
    stats: Stats = field(default_factory=Stats)


#: The last two feature artifacts loaded in this process (one session usually has one track).
_TRACKS: OrderedDict[tuple[Path, tuple[str, ...]], Track] = OrderedDict()


def _track(path: Path, keys: tuple[str, ...]) -> Track:
    key = (path, keys)
    track = _TRACKS.get(key)
    if track is None:
        track = load_track(path, keys)
        _TRACKS[key] = track
        while len(_TRACKS) > 2:
            _TRACKS.popitem(last=False)
    else:
        _TRACKS.move_to_end(key)
    return track


def geometry_of(track: Track, params: Any) -> dict[str, Any]:
    fps = track.sr / track.hop_length
    return {"sr": track.sr, "hop_length": track.hop_length, "fps": fps,
            "window_frames": int(round(params.window_s * fps)), "n_audio": int(track.audio.shape[1]),
            "columns": audio_columns(track.widths, params.audio_features)}  # fmt: skip


def _load(job: Job, res: JobResult, problem: Any) -> tuple[dict[str, PoseStream], list[Cue], str]:
    if job.kind == "session":
        assert job.events is not None and job.session_json is not None
        data = read_session_events(job.events, on_problem=problem)
        res.input_session = {
            "session": job.id, "dir": str(job.path),
            "session_json": {"path": str(job.session_json), "sha256": file_sha256(job.session_json)},
            "events": {"path": str(job.events), "sha256": data.events_sha256},
        }  # fmt: skip
        return data.cameras, data.cues, f"session {job.id}"
    stream, header, sha = read_pose_file(job.path, on_problem=problem)
    res.input_pose = {"session": job.id, "path": str(job.path), "sha256": sha}
    source = header.get("source") if isinstance(header.get("source"), str) else None
    fps = header.get("fps") if type(header.get("fps")) in (float, int) and header["fps"] > 0 else None
    end = float(stream.t[-1]) + (1.0 / fps if fps else 0.0) if stream.t.size else 0.0
    cues = [Cue(c.track, 0.0, c.offset_s, c.line, c.title, ends_at=end) for c in job.pose_cues]
    return {Path(source).stem if source else "pose": stream}, cues, f"pose file {job.path}"


def pair_job(job: Job, ctx: JobContext) -> JobResult:
    """Pair every camera × cue of one job; segment files go to ``ctx.segments_dir``.

    Bad input is returned as problems (never raised); OSError while writing is raised.
    """
    params = ctx.params
    res = JobResult(job.id)

    def problem(exc: DataError) -> None:
        res.problems.append((exc.message, exc.hint))

    try:
        cameras, cues, where = _load(job, res, problem)
    except (InputMissingError, IOFailure, DataError) as exc:
        problem(DataError(f"{job.kind} {job.id}: {exc.message}"))
        res.skipped.append({"session": job.id, "track": None, "reason": exc.message})
        return res
    bounds = None
    if params.split_by == "time" and cues:
        lo = min(c.started_at for c in cues)
        hi = max(c.ends_at for c in cues if math.isfinite(c.ends_at)) if any(math.isfinite(c.ends_at) for c in cues) else lo
        bounds = time_blocks(lo, hi, params.split)
    for cue in cues:
        loc = f"{where} ({'cue file' if job.kind == 'pose' else 'events'} line {cue.line})"
        paths = ctx.features.get(cue.track)
        try:
            if not paths:
                raise DataError(f"{loc} cued track {cue.track} but no features exist for it",
                                hint="run `mmx features` on the track's audio and `mmx discover` again")  # fmt: skip
            track = _track(paths[0], params.audio_features)
            geo = geometry_of(track, params)
            if res.geometry and (geo["sr"], geo["hop_length"]) != (res.geometry["sr"], res.geometry["hop_length"]):
                raise DataError(f"{paths[0]}: sr {track.sr} / hop_length {track.hop_length} differ from "
                                f"{res.geometry['sr']} / {res.geometry['hop_length']} of this session's other tracks")  # fmt: skip
            if res.geometry and geo["n_audio"] != res.geometry["n_audio"]:
                raise DataError(f"{paths[0]}: {geo['n_audio']} audio columns, this session's other tracks have "
                                f"{res.geometry['n_audio']}")  # fmt: skip
        except (DataError, InputMissingError, IOFailure) as exc:
            problem(exc if isinstance(exc, DataError) else DataError(exc.message))
            res.skipped.append({"session": job.id, "track": cue.track, "reason": exc.message})
            continue
        res.geometry = res.geometry or geo
        res.tracks_used.setdefault(cue.track, {"track": cue.track, "path": str(paths[0]), "sha256": track.npz_sha256,
                                               "versions": track.versions})  # fmt: skip
        if cue.ends_at <= cue.started_at:
            res.skipped.append({"session": job.id, "track": cue.track, "reason": "cue has an empty span"})
            continue
        if params.split_by == "time":
            split = None
        else:
            group = job.id if params.split_by == "session" else cue.track
            split = ctx.split_of.get(group) or hash_split(group, params.split, params.seed)
        for camera, stream in cameras.items():
            spec = CueSpec(job.id, camera, cue, split, bounds)
            rows = pair_segment(spec, stream, track, params, res.geometry, ctx.segments_dir, res.stats)
            if rows:
                res.segments.append(rows[0]["segment"])
                res.rows += rows
    return res
