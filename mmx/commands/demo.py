"""`mmx demo`: a whole photoshoot rehearsal on this machine, end to end."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import typer

from mmx.commands._common import console, write_jsonl


def _render_report(report: dict[str, Any]) -> None:
    ok = report["ok"]
    console.rule("[bold]mmx demo report[/]" + ("" if ok else " — [red]FAILED[/]"))
    if not ok:
        console.print(f"[red]stage {report['failed_stage']} failed:[/] {report['error']}", soft_wrap=True)
    from rich.table import Table

    cams = Table(title="cameras", show_edge=False)
    for col in ("camera", "name", "placement", "lenses"):
        cams.add_column(col)
    for cam in report["cameras"]:
        placement = cam.get("placement") or {}
        cams.add_row(cam["camera"], str(cam.get("name")),
                     f"{placement.get('label', '')} {placement.get('azimuth_deg', '')}°", str(cam.get("lenses")))  # fmt: skip
    console.print(cams)
    cuts = Table(title=f"cuts ({report['cuts_by']})", show_edge=False)
    for col in ("track time s", "from", "to", "by", "beat error ms"):
        cuts.add_column(col)
    for cut in report["cuts"]:
        cuts.add_row(str(cut.get("track_time_s", "")), str(cut.get("from")), str(cut.get("to")), str(cut.get("by")),
                     str(cut.get("beat_error_ms", "")))  # fmt: skip
    console.print(cuts)
    console.print(f"ghost decisions: {report['ghost']}; ghost cut beat error (ms): {report['beat_error_ms']}")
    for still in report["stills"]:
        console.print(f"still {still['still']} on {still['camera']}: {still['path']} hash ok={still['hash_ok']}")
    console.print(f"ledger: {report['ledger']}")
    console.print(f"dataset: {report['dataset']}")
    console.print(f"hero feed: {report['hero_url']}")
    console.print(f"logs: {report['logs']}")


def demo(
    music: Path | None = typer.Option(None, "--music", help="Audio file to shoot to (default: a generated 120 BPM beat track).", exists=True, dir_okay=False),
    video: Path | None = typer.Option(None, "--video", help="Video every camera plays (default: a generated dancing figure).", exists=True, dir_okay=False),
    pose: Path | None = typer.Option(None, "--pose", help="Pose file matching --video (format of shared/data/pose/*.pose.jsonl).", exists=True, dir_okay=False),
    cameras: int = typer.Option(3, "--cameras", min=2, max=6, help="How many simulated cameras (mmx device processes)."),
    duration: float = typer.Option(60.0, "--duration", min=5.0, help="Seconds the ghost director cuts for."),
    min_ghost_cuts: int = typer.Option(0, "--min-ghost-cuts", min=0, help="After --duration, keep shooting until the ghost director made this many cuts (at most 120 s more; a stage failure after that)."),
    data: Path | None = typer.Option(None, "--data", help="Directory for everything the demo writes (default: a temporary one)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary data directory after the demo."),
    no_relay: bool = typer.Option(False, "--no-relay", help="Run without mmx relay (no WebRTC hero feed)."),
    json_out: bool = typer.Option(False, "--json", help="Print the final report as one JSON object on stdout."),
) -> None:
    """Run a whole photoshoot rehearsal with the real components on loopback.

    Computes the music's features, starts mmx serve (new token, loopback), mmx relay and
    --cameras mmx device processes playing the video and pose at staggered offsets from
    different placements (front, left 45°, right 60°, ...). The server's events and the ghost
    director's proposals are piped into mmx ledger push. It then starts a production session,
    cues the track, sets mode autopilot, lets the ghost director cut for --duration seconds,
    triggers stills on two cameras, holds and releases once, and ends the session; then runs
    mmx discover and mmx pair on the recording. The report lists cameras and placement, cuts
    (by ghost/operator) and how close they landed to beats, stills, the ledger, dataset windows
    per split and the hero feed URL. Progress goes to stderr; with --json the report is one
    JSON object on stdout. Everything it started is stopped at the end, also on failure and on
    Ctrl-C.

    Exit status:
    70 when a stage failed (the report names it and the component's log).

    Files:
    DATA/media (generated media), DATA/features, DATA/serve/sessions/ID (the capture
    directory), DATA/ledger.sqlite, DATA/inventory.jsonl, DATA/dataset, DATA/logs/*.log
    (each component's stderr).

    Examples:

    \b
        mmx demo --duration 20
        mmx demo --music ../shared/data/music/introzik.ogg --video ../shared/data/video/vtest.avi --pose ../shared/data/pose/vtest.pose.jsonl --duration 40 --json
    """
    from mmx.demo.run import Demo, DemoConfig, DemoFailed

    temporary = data is None
    data_dir = Path(tempfile.mkdtemp(prefix="mmx-demo-")) if data is None else data
    config = DemoConfig(data_dir=data_dir, music=music, video=video, pose=pose, cameras=cameras,
                        duration_s=duration, relay=not no_relay, min_ghost_cuts=min_ghost_cuts)  # fmt: skip

    spinner = console.status("")  # one live line under the stage log (a no-op off a terminal)

    def on_stage(stage: str, status: str, detail: str) -> None:
        if status == "progress":
            spinner.update(f"{stage}: {detail}")
            return
        if status == "start":
            spinner.update(f"{stage} …")
            spinner.start()
        elif status in ("done", "failed"):
            spinner.stop()
        style = {"start": "cyan", "done": "green", "failed": "red", "info": "dim"}.get(status, "white")
        console.print(f"[{style}]{stage:>9} {status}[/] {detail}", soft_wrap=True)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through Demo.run, which stops every child

    signal.signal(signal.SIGTERM, on_sigterm)
    console.print(f"mmx demo: data in {data_dir}")
    try:
        report = Demo(config, on_stage=on_stage).run().to_dict()
    finally:
        spinner.stop()
    if json_out:
        write_jsonl(report)
    _render_report(report)
    if temporary and not keep and report["ok"]:
        shutil.rmtree(data_dir, ignore_errors=True)
    if not report["ok"]:
        raise DemoFailed(f"stage {report['failed_stage']} failed: {report['error']}",
                         hint=f"see the component logs in {report['logs']}")  # fmt: skip
