"""Offline pose: one ``*.pose.jsonl`` per video, in the format of the shared ``vtest.pose.jsonl``.

A pose file is JSON Lines: a header ``{"header": {"source", "fps", "width", "height",
"estimator", "joints", "coords", "source_sha256", "params", "params_key", "mmx"}}``, then one
line per decoded frame ``{"frame": n, "t": seconds_from_video_start, "joints": {...} | null}``
(the 19 Vision joints of `mmx.pose.joints`, ``[x, y, confidence]``, normalised, origin
top-left). `mmx discover` and `mmx pair` read it as a standalone pose stream.

Videos are decoded with PyAV (every frame, in order) and estimated with one tracking
`PoseEstimator` per video. A file is written whole or not at all (temp file, fsync, rename),
so a rerun finds either a finished file or none: a finished file whose header has the
video's sha256 and the same ``params_key`` is skipped. With ``jobs`` > 1 the videos are
spread over that many worker processes (spawned, each with its own MediaPipe), longest first.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mmx import __version__
from mmx.errors import DataError, InputMissingError, IOFailure, MmxError
from mmx.fileio import atomic_file
from mmx.pose.estimator import EstimatorParams, PoseEstimator
from mmx.pose.joints import JOINT_ORDER

COORDS = "normalized image, origin top-left, x right, y down; c = visibility 0..1"
SUFFIX = ".pose.jsonl"
#: Frames between two progress reports of one video.
PROGRESS_EVERY = 10

Progress = Callable[[int, int, int], None]  # (video index, frames done, frames expected)


@dataclass
class VideoResult:
    """What became of one video: ``status`` ``done``, ``skipped`` (already done) or ``failed``.

    ``frames``/``detected`` count decoded frames and those with a person; ``seconds`` the
    wall time spent; ``error`` and ``exit_code`` (65 corrupt, 66 unreadable) when failed.
    """

    video: str
    output: str
    status: str
    sha256: str | None = None
    frames: int = 0
    detected: int = 0
    duration_s: float | None = None
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def output_path(video: Path, out_dir: Path) -> Path:
    """``out_dir/<video name without its last suffix>.pose.jsonl`` (vtest.avi → vtest.pose.jsonl)."""
    return out_dir / (video.stem + SUFFIX)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes. Raises InputMissingError (66) when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fp:
            while block := fp.read(1 << 20):
                digest.update(block)
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputMissingError(f"{path}: is a directory, not a video") from None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot be read: {exc.strerror}") from None
    return digest.hexdigest()


def is_done(target: Path, sha256: str, params: EstimatorParams) -> bool:
    """True when ``target`` is a finished pose file of this video (sha256) with these params."""
    try:
        with open(target, "rb") as fp:
            head = orjson.loads(fp.readline())
    except (OSError, orjson.JSONDecodeError):
        return False
    header = head.get("header") if isinstance(head, dict) else None
    return isinstance(header, dict) and header.get("source_sha256") == sha256 and header.get("params_key") == params.key()


def estimate_video(video: Path, target: Path, *, params: EstimatorParams, sha256: str,
                   progress: Callable[[int, int], None] | None = None) -> VideoResult:  # fmt: skip
    """Decode ``video``, estimate every frame, write ``target`` atomically; the result.

    Raises DataError (65) for a file PyAV cannot decode as video (not a video, no video
    stream, corrupt data), InputMissingError (66) when it cannot be opened, and
    ServiceUnavailableError (69) when MediaPipe is missing. ``progress(done, expected)``
    is called every `PROGRESS_EVERY` frames.
    """
    import av

    started = time.monotonic()
    try:
        container = av.open(str(video))
    except FileNotFoundError:
        raise InputMissingError(f"{video}: no such file") from None
    except PermissionError:
        raise InputMissingError(f"{video}: cannot be read: permission denied") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{video}: not a video PyAV can decode ({_why(exc)})") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{video}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        expected = stream.frames or (int(float(stream.duration * stream.time_base) * fps)
                                     if stream.duration and fps else 0)  # fmt: skip
        header = {"source": video.name, "fps": fps, "width": stream.codec_context.width,
                  "height": stream.codec_context.height, "estimator": params.estimator, "joints": list(JOINT_ORDER),
                  "coords": COORDS, "source_sha256": sha256, "params": asdict(params), "params_key": params.key(),
                  "mmx": __version__}  # fmt: skip
        frames = detected = 0
        first_time: float | None = None
        try:
            with PoseEstimator(params) as estimator, atomic_file(target) as out:
                out.write(orjson.dumps({"header": header}) + b"\n")
                try:
                    for frame in container.decode(stream):
                        rgb = frame.to_ndarray(format="rgb24")
                        joints = estimator.estimate(rgb, seq=frames)
                        if frame.time is not None and first_time is None:
                            first_time = frame.time
                        t = frame.time - first_time if frame.time is not None and first_time is not None else (
                            frames / fps if fps else 0.0)  # fmt: skip
                        out.write(orjson.dumps({"frame": frames, "t": round(t, 4), "joints": joints}) + b"\n")
                        frames += 1
                        detected += joints is not None
                        if progress is not None and frames % PROGRESS_EVERY == 0:
                            progress(frames, max(expected, frames))
                except av.error.FFmpegError as exc:
                    raise DataError(f"{video}: corrupt video data after frame {frames} ({_why(exc)})") from None
                if frames == 0:
                    raise DataError(f"{video}: no frame could be decoded")
        except OSError as exc:
            if isinstance(exc, av.error.FFmpegError):
                raise DataError(f"{video}: corrupt video data after frame {frames} ({_why(exc)})") from None
            raise IOFailure(f"cannot write {target}: {exc.strerror}") from None
    if progress is not None:
        progress(frames, frames)
    result = VideoResult(video=str(video), output=str(target), status="done", sha256=sha256, frames=frames,
                         detected=detected, duration_s=round(frames / fps, 3) if fps else None,
                         seconds=round(time.monotonic() - started, 3))  # fmt: skip
    if stream.frames and frames < stream.frames:
        # the container announced more: a truncated file decodes to its end without an error
        result.extra["warning"] = f"decoded {frames} of the {stream.frames} frames {video.name} announces (truncated?)"
    return result


def _why(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '", 1)[0] if text else type(exc).__name__


def _failed(video: Path, target: Path, exc: MmxError, sha256: str | None = None) -> VideoResult:
    return VideoResult(video=str(video), output=str(target), status="failed", sha256=sha256, error=exc.message,
                       exit_code=exc.exit_code)  # fmt: skip


# -- many videos ------------------------------------------------------------------------------

_progress_queue: Any = None


def _worker_init(queue: Any) -> None:
    global _progress_queue
    _progress_queue = queue


def _worker(index: int, video: str, target: str, params: EstimatorParams, sha256: str) -> VideoResult:
    queue = _progress_queue

    def progress(done: int, expected: int) -> None:
        if queue is not None:
            queue.put((index, done, expected))

    try:
        return estimate_video(Path(video), Path(target), params=params, sha256=sha256, progress=progress)
    except MmxError as exc:
        return _failed(Path(video), Path(target), exc, sha256)


def estimate_videos(videos: Sequence[Path], out_dir: Path, *, params: EstimatorParams | None = None, jobs: int = 1,
                    force: bool = False, progress: Progress | None = None,
                    on_result: Callable[[int, VideoResult], None] | None = None) -> list[VideoResult]:  # fmt: skip
    """Pose files for ``videos`` in ``out_dir`` (made if missing); one `VideoResult` each, in order.

    A video already done (same sha256 and params, unless ``force``) is ``skipped``; one that
    cannot be read or decoded is ``failed`` with its reason and the others still run.
    ``progress(index, done, expected)`` follows each video's frames, ``on_result(index, r)``
    each finished video. Raises ServiceUnavailableError (69) when MediaPipe is missing,
    IOFailure (74) when ``out_dir`` cannot be made.
    """
    from mmx.pose.estimator import load_mediapipe

    params = params or EstimatorParams()
    load_mediapipe()  # exit 69 before any work when it is missing
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IOFailure(f"cannot create {out_dir}: {exc.strerror}") from None
    results: list[VideoResult | None] = [None] * len(videos)
    todo: list[tuple[int, Path, Path, str]] = []

    def finish(i: int, result: VideoResult) -> None:
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    for i, video in enumerate(videos):
        target = output_path(video, out_dir)
        try:
            sha = sha256_of(video)
        except MmxError as exc:
            finish(i, _failed(video, target, exc))
            continue
        if not force and is_done(target, sha, params):
            finish(i, VideoResult(video=str(video), output=str(target), status="skipped", sha256=sha))
            continue
        todo.append((i, video, target, sha))
    if jobs <= 1 or len(todo) <= 1:
        for i, video, target, sha in todo:
            report = (lambda done, expected, i=i: progress(i, done, expected)) if progress else None
            try:
                finish(i, estimate_video(video, target, params=params, sha256=sha, progress=report))
            except MmxError as exc:
                if exc.exit_code not in (65, 66):
                    raise
                finish(i, _failed(video, target, exc, sha))
        return [r for r in results if r is not None]
    # longest first, so one long video does not start last and run alone at the end
    todo.sort(key=lambda item: -_size(item[1]))
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold MediaPipe threads
    queue = ctx.Manager().Queue() if progress is not None else None
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
                             initargs=(queue,)) as pool:  # fmt: skip
        pending = {pool.submit(_worker, i, str(v), str(t), params, sha): i for i, v, t, sha in todo}
        while pending:
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                finish(pending.pop(future), future.result())
        _drain(queue, progress)
    return [r for r in results if r is not None]


def _drain(queue: Any, progress: Progress | None) -> None:
    if queue is None or progress is None:
        return
    while not queue.empty():
        progress(*queue.get_nowait())


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
