"""`mmx pose`: body pose from cameras' previews (live) or from video files (offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mmx.commands._common import console, run_until_signal, write_jsonl
from mmx.errors import EX_DATAERR, EX_INTERRUPTED, EX_NOINPUT, DataError, InputMissingError


def pose(
    videos: list[Path] = typer.Argument(None, metavar="[VIDEO]...", help="Video files to estimate (offline mode; needs -o)."),
    out_dir: Path | None = typer.Option(None, "-o", "--out", help="Directory for the pose files (offline mode)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=64, help="Videos estimated at once, one process each (offline)."),
    force: bool = typer.Option(False, "--force", help="Estimate again even where a finished pose file exists (offline)."),
    server: str | None = typer.Option(None, "--server", help="Base URL of mmx serve (live mode)."),
    token: str | None = typer.Option(None, "--token", envvar="MMX_TOKEN", help="The token mmx serve printed at start."),
    cameras: str | None = typer.Option(None, "--cameras", help="Comma-separated cameras to follow, even ones whose device sends pose (live)."),
    all_without_pose: bool = typer.Option(False, "--all-without-pose", help="Follow every camera whose device sends no pose itself, those joining later too (live; the default)."),
    redetect_after: int = typer.Option(5, "--redetect-after", min=1, help="Frames of a stream gone unseen before tracking restarts with a fresh detection."),
    min_detection_confidence: float = typer.Option(0.5, "--min-detection-confidence", min=0.0, max=1.0, help="MediaPipe's person detection threshold."),
    min_tracking_confidence: float = typer.Option(0.5, "--min-tracking-confidence", min=0.0, max=1.0, help="MediaPipe's tracking threshold (below it: detect again)."),
) -> None:
    """Estimate body pose with MediaPipe Pose: live for cameras of mmx serve, or from video files.

    Live (--server URL --token T): reads the chosen cameras' preview frames over one
    WebSocket (GET /v1/previews/ws), estimates the most prominent person in each and posts
    pose.sample events (POST /v1/pose) in the app's envelope: the 19 Apple Vision joints,
    [x, y, confidence] normalised with the origin top-left, t the frame's capture time on
    the server's clock. Frames arriving faster than the estimator runs are dropped (latest
    frame wins). A camera whose device sends its own pose is left alone unless named in
    --cameras. The rate and drop count per camera go to stderr every 5 s and into GET
    /v1/state (pose_fps, pose_dropped). Runs until SIGINT/SIGTERM; reconnects when the
    server goes away.

    Offline (VIDEO... -o DIR): writes DIR/NAME.pose.jsonl per video in the format of the
    shared vtest.pose.jsonl (a header line, then {"frame", "t", "joints" | null} per frame),
    which mmx discover and mmx pair read. A progress bar on stderr; one JSON line per video
    on stdout (video, output, status done/skipped/failed, frames, detected, seconds,
    error). A rerun skips videos whose pose file is finished for the same video bytes
    (sha256) and estimator parameters. A video that cannot be read (exit 66) or decoded
    (exit 65) is reported by name and the others are still done.

    The estimator is MediaPipe Pose with the full model shipped inside the mediapipe wheel
    (the optional extra: pip install 'mmx[pose]'); confidence is MediaPipe's visibility,
    neck and root are the shoulder and hip midpoints (mmx.pose.joints has the table).
    Without mediapipe the command says how to install it and exits 69.

    Examples:

    \b
        mmx pose --server http://127.0.0.1:8750 --token T
        mmx pose --server http://127.0.0.1:8750 --token T --cameras cam-2,cam-3
        mmx pose recordings/*.mkv -o poses/ --jobs 2 | jq -c '{video, status, detected}'
        mmx pose vtest.avi -o poses/ && mmx discover poses/

    See also:
    mmx-serve(1), mmx-device(1), mmx-ghost(1), mmx-discover(1), mmx-pair(1)
    """
    from mmx.pose import EstimatorParams

    params = EstimatorParams(redetect_after=redetect_after, min_detection_confidence=min_detection_confidence,
                             min_tracking_confidence=min_tracking_confidence)  # fmt: skip
    if videos and server:
        raise typer.BadParameter("give video files (offline) or --server (live), not both")
    if videos:
        if out_dir is None:
            raise typer.BadParameter("offline mode needs -o DIR for the pose files", param_hint="-o")
        if cameras or all_without_pose:
            raise typer.BadParameter("--cameras and --all-without-pose are for live mode (--server)")
        _offline(videos, out_dir, params=params, jobs=jobs, force=force)
        return
    if server is None:
        raise typer.BadParameter("give video files and -o DIR (offline), or --server URL (live)")
    if cameras and all_without_pose:
        raise typer.BadParameter("--cameras and --all-without-pose exclude each other")
    named = [c.strip() for c in cameras.split(",") if c.strip()] if cameras else None
    _live(server, token, named, params)


def _offline(videos: list[Path], out_dir: Path, *, params: Any, jobs: int, force: bool) -> None:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from mmx.pose.estimator import NativeLogFilter
    from mmx.pose.offline import estimate_videos, output_path

    targets: dict[Path, Path] = {}
    for video in videos:
        target = output_path(video, out_dir)
        if target in targets:
            raise typer.BadParameter(f"{targets[target]} and {video} would both write {target}")
        targets[target] = video
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                        TimeRemainingColumn(), console=console, transient=False)  # fmt: skip
    tasks: dict[int, Any] = {}

    def on_progress(i: int, done: int, expected: int) -> None:
        if i not in tasks:
            tasks[i] = progress.add_task(videos[i].name, total=expected or None)
        progress.update(tasks[i], completed=done, total=max(expected, done) or None)

    def on_result(i: int, result: Any) -> None:
        write_jsonl(result.record())
        name = videos[i]
        if result.status == "done":
            progress.console.print(f"{name} → {result.output}: {result.frames} frames, {result.detected} with a person "
                                   f"({result.seconds:.1f} s)", markup=False, highlight=False, soft_wrap=True)  # fmt: skip
            if result.extra.get("warning"):
                progress.console.print(f"[yellow]warning:[/] {escape(result.extra['warning'])}", highlight=False, soft_wrap=True)
        elif result.status == "skipped":
            progress.console.print(f"{name}: skipped, {result.output} is done (same video sha256 and parameters)",
                                   markup=False, highlight=False, soft_wrap=True)  # fmt: skip
        else:
            progress.console.print(f"[red]failed:[/] {escape(result.error)}", highlight=False, soft_wrap=True)

    with NativeLogFilter(), progress:
        results = estimate_videos(videos, out_dir, params=params, jobs=jobs, force=force, progress=on_progress,
                                  on_result=on_result)  # fmt: skip
    failed = [r for r in results if r.status == "failed"]
    if failed:
        names = ", ".join(Path(r.video).name for r in failed)
        message = f"{len(failed)} of {len(results)} videos failed: {names} (the others are done)"
        if any(r.exit_code == EX_NOINPUT for r in failed):
            raise InputMissingError(message)
        if any(r.exit_code == EX_DATAERR for r in failed):
            raise DataError(message)


def _live(server: str, token: str | None, named: list[str] | None, params: Any) -> None:
    from mmx.pose.estimator import NativeLogFilter, load_mediapipe
    from mmx.pose.live import LivePose

    def notify(message: str) -> None:
        console.print(f"pose: {message}", markup=False, highlight=False, soft_wrap=True)

    def on_stats(stats: dict[str, dict[str, Any]], final: bool) -> None:
        if not stats:
            if not final:
                notify("no frames yet")
            return
        parts = [f"{cam} {s['fps']:.1f}/s ({s['detected']}/{s['estimated']} with a person, {s['dropped']} dropped)"
                 for cam, s in stats.items()]  # fmt: skip
        notify(("stopped: " if final else "") + "; ".join(parts))

    load_mediapipe()
    runner = LivePose(server, token, cameras=named, params=params, notify=notify, on_stats=on_stats)
    with NativeLogFilter():
        import asyncio

        interrupted = asyncio.run(run_until_signal(runner.run(), runner.stop))
    if interrupted:
        raise typer.Exit(EX_INTERRUPTED)
