"""Pair recorded pose with music features into a windowed training dataset (`mmx pair`).

Inputs come from a `mmx discover` inventory (JSON Lines): feature artifacts (``kind:
"features"``, one ``.npz`` per audio file, DESIGN.md "Audio features and alignment"),
session capture directories (``kind: "session"``: ``session.json`` + ``events.jsonl`` with
``pose.sample`` and ``music.cue`` events) and standalone pose files (``kind: "pose"``,
paired through a cue file).

Alignment (DESIGN.md): a ``music.cue`` event says track T started playing at wall time
``started_at`` (Unix s, server clock) from position ``offset_s``; a pose sample taken at wall
time ``w`` sits at ``track_time = w - started_at + offset_s + clock_offset_s`` in the track.
For every session × camera × cue (a *segment*) the pose stream is resampled onto the audio
frame times of the track by linear interpolation (`mmx.dataset.align`); fixed windows
(``window_s``, ``stride_s``) are cut inside the cue's span (`mmx.dataset.segments`).

Output (`mmx.dataset.store` has the file layout): ``segments/*.parquet`` with each segment's
frame streams stored once, ``windows.parquet`` with one row per window pointing into them,
``splits/{train,val,test}.txt`` and ``manifest.json`` (`mmx.dataset.manifest`). It is
written to a sibling temporary directory and renamed into place, so a crash never leaves a
half-written dataset under the final name.

The work is one task per session (`mmx.dataset.job`), run here one after the other, in
``jobs`` worker processes, or on a Dask cluster (`mmx.dataset.cluster`); results are merged
in session order, so every way gives the same bytes.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from mmx.dataset import bas
from mmx.dataset.align import pose_dynamics, resample_pose, torso_length  # noqa: F401  (public API)
from mmx.dataset.inputs import (  # noqa: F401  (public API)
    Inventory,
    PoseStream,
    _hashed_lines,
    file_sha256,
    read_cue_file,
    read_inventory,
    read_pose_file,
    read_session_events,
)
from mmx.dataset.job import Job, JobContext, JobResult, pair_job
from mmx.dataset.manifest import build_manifest
from mmx.dataset.segments import Stats
from mmx.dataset.store import WindowsWriter
from mmx.dataset.tracks import AUDIO_KEYS
from mmx.dataset.windows import SPLITS, assign_splits, empty_split_warning, hash_split, window_starts  # noqa: F401
from mmx.errors import DataError, IOFailure

ProblemHandler = Callable[[DataError], None]
ProgressHandler = Callable[[int, int, str], None]
WarningHandler = Callable[[str], None]


@dataclass(frozen=True)
class PairParams:
    """Every assumption of the pairing, written into the manifest.

    Times in seconds; ``split`` the (train, val, test) fractions summing to 1;
    ``split_by`` "session", "track" or "time" (contiguous blocks of each session);
    ``audio_features`` artifact keys concatenated into the audio columns, in this order;
    ``bas_sigma_s`` σ of the Beat Alignment Score; ``bas_smooth_s`` σ of the smoothing of
    the kinetic velocity before finding motion beats.
    """

    window_s: float = 5.0
    stride_s: float = 0.5
    max_gap_s: float = 0.5
    min_observed: float = 0.5
    clock_offset_s: float = 0.0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_by: str = "session"
    seed: int = 0
    audio_features: tuple[str, ...] = ("onset_env", "mfcc", "chroma")
    bas_sigma_s: float = bas.SIGMA_S
    bas_smooth_s: float = bas.SMOOTH_SIGMA_S

    def check(self) -> None:
        """Raise ValueError naming the first parameter that makes no sense."""
        if not self.window_s > 0:
            raise ValueError("window must be > 0 seconds")
        if not self.stride_s > 0:
            raise ValueError("stride must be > 0 seconds")
        if not self.max_gap_s >= 0:
            raise ValueError("max-gap must be >= 0 seconds")
        if not 0 <= self.min_observed <= 1:
            raise ValueError("min-observed must be between 0 and 1")
        if not math.isfinite(self.clock_offset_s):
            raise ValueError("clock-offset must be a finite number of seconds")
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError("split must be three fractions train/val/test summing to 1, e.g. 0.8/0.1/0.1")
        if self.split_by not in ("session", "track", "time"):
            raise ValueError("split-by must be 'session', 'track' or 'time'")
        if not self.audio_features or any(k not in AUDIO_KEYS for k in self.audio_features):
            raise ValueError(f"audio features must be among {', '.join(AUDIO_KEYS)}")
        if len(set(self.audio_features)) != len(self.audio_features):
            raise ValueError("audio features must not repeat")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        d["audio_features"] = list(self.audio_features)
        return d


def parse_split(text: str) -> tuple[float, float, float]:
    """``"0.8/0.1/0.1"`` → (0.8, 0.1, 0.1). Raises ValueError unless three fractions ≥ 0 sum to 1."""
    parts = text.replace(",", "/").split("/")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"not three numbers: {text!r}") from None
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise ValueError(f"need train/val/test fractions >= 0 summing to 1, got {text!r}")
    return values  # type: ignore[return-value]


def _resolve(path: str, base: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (base / p)


def _session_job(item: dict[str, Any]) -> Job:
    path = Path(item["path"])
    sid = item.get("session") if isinstance(item.get("session"), str) and item.get("session") else path.name
    events = item.get("events_path") if isinstance(item.get("events_path"), str) else None
    sjson = item.get("session_json") if isinstance(item.get("session_json"), str) else None
    tracks = None
    if isinstance(item.get("cues"), list):
        tracks = [c["track"] for c in item["cues"] if isinstance(c, dict) and isinstance(c.get("track"), str)]
    return Job(id=sid, kind="session", path=path,
               events=_resolve(events, path) if events else path / "events.jsonl",
               session_json=_resolve(sjson, path) if sjson else path / "session.json",
               planned_tracks=tracks, line=item.get("_line", 0))  # fmt: skip


def plan_jobs(inv: Inventory, cue_file: Path | None, inventory_name: str,
              problem: ProblemHandler) -> tuple[list[Job], str | None]:  # fmt: skip
    """Sessions from the inventory and pose files from the cue file, sorted by id."""
    jobs: dict[str, Job] = {}
    for item in sorted(inv.sessions, key=lambda it: it["path"]):
        job = _session_job(item)
        if job.id in jobs:
            problem(DataError(f"{inventory_name}: line {job.line}: session {job.id} listed twice "
                              f"({jobs[job.id].path} and {job.path}); keeping the first"))  # fmt: skip
            continue
        jobs[job.id] = job
    cue_sha = None
    if cue_file is not None:
        pose_cues, cue_sha = read_cue_file(cue_file, on_problem=problem)
        for pose_path, cues in sorted(pose_cues.items()):
            item = inv.pose_files.get(str(pose_path), {})
            sha = item.get("sha256") if isinstance(item.get("sha256"), str) else file_sha256(pose_path)
            jid = f"pose:{pose_path.stem.removesuffix('.pose')}:{(sha or 'missing')[:8]}"
            jobs[jid] = Job(id=jid, kind="pose", path=pose_path, planned_tracks=[c.track for c in cues],
                            pose_cues=cues)  # fmt: skip
    return [jobs[k] for k in sorted(jobs)], cue_sha


class _Merge:
    """Takes job results in job order: window rows to windows.parquet, the rest for the manifest."""

    def __init__(self, tmp: Path, problem: ProblemHandler) -> None:
        self.tmp = tmp
        self.problem = problem
        self.windows = WindowsWriter(tmp / "windows.parquet")
        self.stats = Stats()
        self.geometry: dict[str, Any] = {}
        self.skipped: list[dict[str, Any]] = []
        self.sessions: list[dict[str, Any]] = []
        self.pose_files: list[dict[str, Any]] = []
        self.tracks_used: dict[str, dict[str, Any]] = {}

    def add(self, res: JobResult) -> None:
        for message, hint in res.problems:
            self.problem(DataError(message, hint=hint))
        if res.input_session is not None:
            self.sessions.append(res.input_session)
        if res.input_pose is not None:
            self.pose_files.append(res.input_pose)
        self.skipped += res.skipped
        if res.geometry and self.geometry and any(
                res.geometry[k] != self.geometry[k] for k in ("sr", "hop_length", "n_audio")):  # fmt: skip
            geo, mine = res.geometry, self.geometry
            reason = (f"sr {geo['sr']} / hop_length {geo['hop_length']} / {geo['n_audio']} audio columns differ from the "
                      f"dataset's {mine['sr']} / {mine['hop_length']} / {mine['n_audio']}")  # fmt: skip
            self.problem(DataError(f"session {res.id}: {reason}; its windows are left out"))
            self.skipped.append({"session": res.id, "track": None, "reason": reason})
            for name in res.segments:
                (self.tmp / "segments" / f"{name}.parquet").unlink(missing_ok=True)
            return
        if res.geometry and not self.geometry:
            self.geometry = dict(res.geometry)
        for sha, used in res.tracks_used.items():
            self.tracks_used.setdefault(sha, used)
        self.stats.add(res.stats)
        self.windows.add(res.rows)


def _run_local(jobs: list[Job], ctx: JobContext, n_procs: int) -> Iterator[JobResult]:
    if n_procs <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield pair_job(job, ctx)
        return
    with ProcessPoolExecutor(max_workers=n_procs) as pool:
        yield from pool.map(pair_job, jobs, [ctx] * len(jobs))


def pair_dataset(
    inventory: IO[bytes] | BinaryIO,
    out_dir: Path,
    *,
    params: PairParams,
    inventory_name: str = "-",
    inventory_base: Path | None = None,
    cue_file: Path | None = None,
    on_problem: ProblemHandler | None = None,
    on_progress: ProgressHandler | None = None,
    on_warning: WarningHandler | None = None,
    jobs: int = 1,
    cluster: str | None = None,
) -> dict[str, Any]:
    """Build the paired dataset in ``out_dir`` from an inventory stream.

    Bad input (malformed lines, missing features, unreadable files) is reported through
    ``on_problem`` and skipped; the rest is processed. ``on_progress(done, total, label)``
    is called as sessions finish; ``on_warning(text)`` for doubts about the result that are
    not input errors (a split left empty for want of sessions). Sessions run in ``jobs``
    processes, or on the Dask scheduler at ``cluster`` (``tcp://HOST:8786``), whose workers
    must all see ``out_dir``'s parent directory at the same path. The dataset is built in a
    sibling temporary directory and renamed into place at the end; a previous dataset in
    ``out_dir`` stays whole until then. Returns the summary: ``dir``, ``windows`` per split,
    ``dropped``, ``problems``, ``manifest_hash``, ``params_hash``, ``beat_alignment_score``,
    ``warnings``. Raises ValueError for bad parameters, IOFailure when ``out_dir`` cannot be
    written or exists and is not a dataset, ServiceUnavailableError when the cluster cannot
    be reached.
    """
    params.check()
    problems: list[str] = []

    def problem(exc: DataError) -> None:
        problems.append(exc.message)
        if on_problem is not None:
            on_problem(exc)

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists())):
        raise IOFailure(f"{out_dir} exists and is not an mmx dataset; refusing to overwrite it",
                        hint="choose another -o directory or remove it")  # fmt: skip
    base = inventory_base or (Path(inventory_name).parent if inventory_name != "-" else Path.cwd())
    inv = read_inventory(inventory, base=base.absolute(), on_problem=problem if inventory_name == "-" else
                         lambda exc: problem(DataError(f"{inventory_name}: {exc.message}", hint=exc.hint)))  # fmt: skip
    job_list, cue_sha = plan_jobs(inv, cue_file, inventory_name, problem)

    # split planning: whole groups, known up front
    warnings: list[str] = []
    split_of: dict[str, str] = {}
    if params.split_by != "time":
        if params.split_by == "session":
            groups = [j.id for j in job_list if j.planned_tracks is None or any(t in inv.features for t in j.planned_tracks)]
        else:
            groups = sorted({t for j in job_list for t in (j.planned_tracks or []) if t in inv.features})
        split_of = assign_splits(groups, params.split, params.seed)
        warning = empty_split_warning(split_of, params.split, params.split_by)
        if warning:
            warnings.append(warning)
            if on_warning is not None:
                on_warning(warning)

    tmp = (out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}").absolute()
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "segments").mkdir(parents=True)
        (tmp / "splits").mkdir()
    except OSError as exc:
        raise IOFailure(f"cannot create {tmp}: {exc.strerror}") from None
    ctx = JobContext(params=params, features=inv.features, split_of=split_of, segments_dir=tmp / "segments")
    merge = None
    try:
        merge = _Merge(tmp, problem)
        if on_progress is not None:
            on_progress(0, len(job_list), job_list[0].id if job_list else "")
        if cluster:
            from mmx.dataset.cluster import run_on_cluster

            results = run_on_cluster(cluster, job_list, ctx, on_progress=on_progress)
        else:
            results = _run_local(job_list, ctx, jobs)
        for done, res in enumerate(results, 1):
            merge.add(res)
            if on_progress is not None and not cluster:
                on_progress(done, len(job_list), job_list[done].id if done < len(job_list) else "")
        merge.windows.close()
        for stray in (tmp / "segments").glob("*.parquet.tmp-*"):  # a worker lost mid-write left it
            stray.unlink(missing_ok=True)
        stats = merge.stats
        used = {s: sorted(stats.sessions[s] if params.split_by != "track" else stats.tracks[s]) for s in SPLITS}
        for s in SPLITS:
            (tmp / "splits" / f"{s}.txt").write_text("".join(f"{g}\n" for g in used[s]))
        inputs = {
            "inventory": {"path": inventory_name, "sha256": inv.sha256},
            "cues": {"path": str(cue_file), "sha256": cue_sha} if cue_file is not None else None,
            "sessions": merge.sessions,
            "pose_files": merge.pose_files,
            "features": [merge.tracks_used[k] for k in sorted(merge.tracks_used)],
        }
        manifest = build_manifest(params=params, geometry=merge.geometry, stats=stats, inputs=inputs,
                                  skipped=merge.skipped, n_problems=len(problems), groups=used,
                                  split_warnings=warnings)  # fmt: skip
        import orjson

        (tmp / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
        # swap into place: the old dataset stays whole until the new one is complete
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except OSError as exc:
        if merge is not None:
            merge.windows.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise IOFailure(f"cannot write the dataset {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        if merge is not None:
            merge.windows.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "dir": str(out_dir),
        "windows": dict(stats.windows),
        "dropped": dict(stats.dropped),
        "problems": len(problems),
        "manifest_hash": manifest["manifest_hash"],
        "params_hash": manifest["params_hash"],
        "beat_alignment_score": manifest["stats"]["all"]["beat_alignment_score"],
        "warnings": warnings,
    }
