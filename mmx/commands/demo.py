"""`mmx demo`: a whole photoshoot rehearsal on this machine, end to end."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from mmx.commands._common import console, write_jsonl

if TYPE_CHECKING:
    from rich.console import Console


def _rel(path: Any, data_dir: str) -> str:
    """``path`` relative to the demo's data directory when inside it (``serve/sessions/…``)."""
    text_path = str(path or "")
    prefix = data_dir.rstrip("/") + "/"
    return text_path[len(prefix):] if data_dir and text_path.startswith(prefix) else text_path or "—"


def _lenses(lenses: Any) -> str:
    """``back 0.5× 1× 2× · front 1×`` from a camera's lenses (facing → zoom factors, or a list)."""
    from mmx.ledger import text

    if isinstance(lenses, dict):
        parts = [f"{facing} " + " ".join(f"{text.number(z)}×" for z in zooms) for facing, zooms in lenses.items() if zooms]
        return " · ".join(parts) or "—"
    if isinstance(lenses, list) and lenses:
        return " ".join(f"{text.number(z)}×" for z in lenses)
    return "—"


def render_report(report: dict[str, Any], out: Console, *, kept: bool) -> None:
    """The demo's report for people, in the manner of ``mmx ledger show``: tables and
    sentences, ``—`` for what is missing (never a Python ``None`` or dict). ``kept``: whether
    the data directory stays (it is named, with the command to look at the ledger) or is
    removed (said so, with how to keep it)."""
    from rich.markup import escape as e
    from rich.table import Table

    from mmx.ledger import text

    ok = report["ok"]
    data_dir = report.get("data_dir") or ""
    out.rule("[bold]mmx demo report[/]" + ("" if ok else " — [red]FAILED[/]"))
    if not ok:
        out.print(f"[red]stage {e(str(report['failed_stage']))} failed:[/] {e(str(report['error']))}", soft_wrap=True)
    summary = report.get("ledger_summary") or {}
    if report.get("session"):
        length = None
        if summary.get("started_at") is not None and summary.get("completed_at") is not None:
            length = summary["completed_at"] - summary["started_at"]
        out.print(f"[bold]{e(str(summary.get('title') or 'mmx demo rehearsal'))}[/]  [dim]{e(report['session'])}[/]  "
                  f"{e(str(summary.get('status') or '—'))} · {text.duration(length)} · "
                  f"{summary.get('events', 0)} events in the ledger", highlight=False, soft_wrap=True)  # fmt: skip
    track = report.get("track") or {}
    if track:
        out.print(f"track {e(Path(track.get('path') or '').name or '—')} · {text.number(track.get('tempo_bpm'))} BPM · "
                  f"{track.get('beats', 0)} beats", highlight=False)  # fmt: skip
    if report.get("cameras"):
        cams = Table(title="cameras and placement", title_justify="left")
        for column in ("camera", "name", "placement", "lenses"):
            cams.add_column(column)
        for cam in report["cameras"]:
            cams.add_row(e(cam["camera"]), e(str(cam.get("name") or "—")), e(text.placement(cam.get("placement"))),
                         _lenses(cam.get("lenses")))  # fmt: skip
        out.print(cams)
    if report.get("cuts"):
        by = ", ".join(f"{n} by {e(who)}" for who, n in sorted(report.get("cuts_by", {}).items()))
        cuts = Table(title=f"cut list ({by})", title_justify="left")
        for column, justify in (("#", "right"), ("track time", "right"), ("from", "left"), ("to", "left"),
                                ("by", "left"), ("from the beat", "right")):  # fmt: skip
            cuts.add_column(column, justify=justify)  # type: ignore[arg-type]
        for i, cut in enumerate(report["cuts"], 1):
            error = cut.get("beat_error_ms")
            cuts.add_row(str(i), text.duration(cut.get("track_time_s")), e(cut.get("from") or "—"), e(cut.get("to") or "—"),
                         e(cut.get("by") or "—"), f"{text.number(error)} ms" if error is not None else "—")  # fmt: skip
        out.print(cuts)
    ghost = report.get("ghost") or {}
    if ghost.get("proposed"):
        held = f", held {ghost['held']} times" if ghost.get("held") else ""
        out.print(f"[bold]ghost director[/]: {ghost['proposed']} proposal{'s' if ghost['proposed'] != 1 else ''} — [green]{ghost.get('accepted', 0)} accepted[/], "
                  f"[red]{ghost.get('vetoed', 0)} vetoed[/], [yellow]{ghost.get('expired', 0)} expired[/]{held}",
                  highlight=False)  # fmt: skip
    errors = report.get("beat_error_ms") or {}
    if errors.get("median") is not None:
        out.print(f"ghost cuts land {text.number(round(errors['median'], 1))} ms from the beat (median), "
                  f"{text.number(round(errors['max'], 1))} ms at most", highlight=False)  # fmt: skip
    if report.get("stills"):
        stills = Table(title="stills", title_justify="left")
        for column in ("still", "camera", "sha256", "path"):
            stills.add_column(column)
        for still in report["stills"]:
            check = "[green]matches[/]" if still.get("hash_ok") else "[red]does not match[/]"
            stills.add_row(e(str(still.get("still") or "—")), e(str(still.get("camera") or "—")), check,
                           e(_rel(still.get("path"), data_dir)))  # fmt: skip
        out.print(stills)
    dataset = report.get("dataset") or {}
    if dataset:
        counts = dataset.get("counts") or {}
        windows = " · ".join(f"{split} {n}" for split, n in counts.items()) or "none"
        dropped = dataset.get("dropped")
        dropped_text = ""
        if isinstance(dropped, dict) and dropped.get("total"):
            reasons = ", ".join(f"{e(str(k)).replace('_', ' ')} {n}" for k, n in (dropped.get("reasons") or {}).items() if n)
            dropped_text = f"; {dropped['total']} dropped" + (f" ({reasons})" if reasons else "")
        elif isinstance(dropped, int | float) and dropped:
            dropped_text = f"; {text.number(dropped)} dropped"
        out.print(f"dataset: {sum(counts.values())} windows ({windows}){dropped_text}", highlight=False, soft_wrap=True)
    if report.get("hero_url"):
        out.print(f"hero feed (while the demo ran): {e(report['hero_url'])}", soft_wrap=True, highlight=False)
    if kept:
        out.print(f"[bold]data kept[/] in {e(data_dir)}: ledger.sqlite, serve/sessions/{e(str(report.get('session') or '…'))} "
                  f"(the capture directory), dataset/, logs/", soft_wrap=True, highlight=False)  # fmt: skip
        if report.get("session"):
            out.print(f"  look at it: mmx ledger show --last --ledger {e(report.get('ledger') or data_dir + '/ledger.sqlite')}",
                      soft_wrap=True, highlight=False)  # fmt: skip
    else:
        out.print(f"[bold]data removed[/]: {e(data_dir)} (the ledger, the capture directory, the dataset and the logs) "
                  "is deleted; keep it with --keep, or write it to a directory of your own with --data DIR",
                  soft_wrap=True, highlight=False)  # fmt: skip


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
    JSON object on stdout (its data_kept says whether DATA stays). Everything it started is
    stopped at the end, also on failure and on Ctrl-C.

    Without --data everything goes to a temporary directory that is removed after a
    successful run (the report says so); --keep keeps it, --data DIR writes to a directory
    that is always kept, and a failed run keeps its data for its logs. The report names
    what it kept and how to look at the ledger (mmx ledger show --last --ledger …).

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
    removal = " (a temporary directory, removed after a successful run unless --keep)" if temporary and not keep else ""
    console.print(f"mmx demo: data in {data_dir}{removal}", soft_wrap=True)
    try:
        report = Demo(config, on_stage=on_stage).run().to_dict()
    finally:
        spinner.stop()
    # a failed run keeps its data whatever was asked: its logs say what went wrong
    kept = not (temporary and not keep and report["ok"])
    report["data_kept"] = kept
    if json_out:
        write_jsonl(report)
    render_report(report, console, kept=kept)
    if not kept:
        shutil.rmtree(data_dir, ignore_errors=True)
    if not report["ok"]:
        raise DemoFailed(f"stage {report['failed_stage']} failed: {report['error']}",
                         hint=f"see the component logs in {report['logs']}")  # fmt: skip
