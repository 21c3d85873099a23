"""`mmx ledger`: the production ledger (push, tail, sessions, show, export)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape

from mmx.commands import ledger_sync
from mmx.commands._common import console, open_input, open_output, report_line_error, wants_json, write_jsonl
from mmx.errors import DataError, EventError
from mmx.ledger import queries, text
from mmx.ledger.export import DEFAULT_FPS, FORMATS, export_session, format_from_path
from mmx.ledger.follow import follow as follow_events
from mmx.ledger.store import DEFAULT_BATCH_SIZE, DEFAULT_INTERVAL_MS, BatchResult, Ledger, StoredEvent
from mmx.paths import default_ledger_path

app = typer.Typer(
    help="The production ledger: a durable SQLite history of every session, camera, cut, hold, still and decision.",
    no_args_is_help=True,
)

_LEDGER_HELP = "Ledger file (SQLite). Default: $MMX_HOME/ledger.sqlite."


def _e(value: Any) -> str:
    """A value for rich markup: event data may hold ``[brackets]``."""
    return escape(str(value))


def _ledger_path(path: Path | None) -> Path:
    return path if path is not None else default_ledger_path()


def _summary_of(event: StoredEvent) -> str:
    try:
        data = orjson.loads(event.raw).get("data")
    except (orjson.JSONDecodeError, AttributeError):
        return event.raw[: text.MAX_VALUE_CHARS]
    return text.data_summary(data or {})


_when, _clock, _dur = text.when, text.clock, text.duration



@app.command("push")
def ledger_push(
    file: str = typer.Argument("-", help="JSON Lines events to store; '-' reads stdin.", show_default=True),
    ledger: Path | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
    echo: bool = typer.Option(False, "--echo", help="Write each event to stdout once its batch has committed."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad line (exit 65)."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, help="Commit after this many events …"),
    interval_ms: int = typer.Option(
        DEFAULT_INTERVAL_MS, "--interval-ms", min=0, help="… or this many ms after the first uncommitted event."
    ),
    sync_convex: str | None = typer.Option(None, "--sync-convex", metavar="URL", help="Also send the events to this Convex deployment as they commit (see mmx ledger sync)."),
    deploy_key_env: str = typer.Option("CONVEX_DEPLOY_KEY", "--deploy-key-env", metavar="NAME", help="With --sync-convex: environment variable holding the deploy key."),
) -> None:
    """Store events (JSON Lines) in the production ledger.

    Reads one event per line from FILE or stdin and stores each in the ledger in batched
    SQLite transactions (WAL, synchronous=FULL) that commit after --batch-size events or
    --interval-ms after the first pending event, whichever comes first: a slow live stream
    such as `mmx serve | mmx ledger push` is durable within --interval-ms. An event id
    already in the ledger is stored once (pushing a file twice changes nothing). Sessions,
    cameras, director events (cuts, holds, modes, markers, ghost proposals and decisions) and
    stills are projected into production tables in the same transaction. While a full batch
    commits (on a second thread) the next one is read. Several pushes may write one ledger
    at the same time.

    With --echo each event is written to stdout (compact JSON, as received) only after its
    batch committed, so the echo is a durable acknowledgement. A bad line is reported on
    stderr as `line N: reason`, the rest is stored, and the exit status is 65; --strict
    stops at the first bad line. A summary goes to stderr.

    With --sync-convex URL the same pipe also records remotely: a thread beside the push
    runs `mmx ledger sync` against that Convex deployment, woken by every commit, and drains
    what is left when the input ends. A sync failure is reported at once while the push
    goes on storing locally; the exit status then tells (65, 69, 75 as for mmx ledger sync).

    Exit status:
    65 when any line was bad (the valid lines are stored); 75 when another writer held the
    ledger locked for more than 30 s.

    Examples:

    \b
        mmx ledger push examples/events/shoot.jsonl --ledger shoot.sqlite
        mmx serve | mmx ledger push --echo | mmx ghost
        mmx ghost --server http://127.0.0.1:8750 | mmx ledger push -

    See also:
    mmx-ledger-tail(1), mmx-ledger-show(1), sqlite3(1)
    """
    path = _ledger_path(ledger)
    out = sys.stdout.buffer

    def on_error(error: EventError) -> None:
        report_line_error(error, file)

    def on_commit(batch: BatchResult) -> None:
        # runs after COMMIT returned: what is echoed is durable
        if echo and batch.rows:
            out.write("\n".join(row[6] for row in batch.rows).encode() + b"\n")
            out.flush()

    with open_input(file) as fp, Ledger.open(path) as store, ledger_sync.push_sync(store, sync_convex, deploy_key_env) as syncing:
        # more hooks (a Convex sync) can be appended to store.commit_hooks here
        from mmx.ledger.ingest import push_stream

        stats = push_stream(store, fp, batch_size=batch_size, interval_ms=interval_ms, strict=strict,
                            on_error=on_error, on_commit=on_commit)  # fmt: skip
    seqs = f", seq {stats.first_seq}–{stats.last_seq}" if stats.first_seq is not None else ""
    console.print(
        f"{stats.inserted} new event{'s' if stats.inserted != 1 else ''} stored in {path}{seqs} "
        f"({stats.duplicates} already there, {stats.bad_lines} bad line{'s' if stats.bad_lines != 1 else ''}, "
        f"{stats.batches} batch{'es' if stats.batches != 1 else ''})",
        soft_wrap=True, highlight=False, markup=False,
    )  # fmt: skip
    if syncing is not None:
        syncing.finish()
    if stats.bad_lines:
        raise DataError(f"{stats.bad_lines} bad line{'s' if stats.bad_lines != 1 else ''} in {file} skipped",
                        hint="the other lines are stored; fix the bad lines and push again")  # fmt: skip


@app.command("tail")
def ledger_tail(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new events (Ctrl-C stops)."),
    session: str | None = typer.Option(None, "--session", "-s", help="Only this session (id or unique prefix)."),
    last: bool = typer.Option(False, "--last", help="Only the most recently started session."),
    types: list[str] = typer.Option([], "--type", "-t", help="Only event types matching this glob (director.*); repeatable."),
    since: int | None = typer.Option(None, "--since", min=0, help="Events after this local seq (0: all). Default: the last 10."),
    json_out: bool = typer.Option(False, "--json", help="JSON Lines on stdout (the default when piped)."),
    ledger: Path | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
) -> None:
    """Print the ledger's events in order; with -f follow new ones as they are committed.

    Without --since, the last 10 matching events are printed first (like tail(1));
    --since SEQ starts after that local seq (the first column of the readable view). With
    -f, events committed afterwards by any process are printed within a few ms: the command
    blocks on the kernel's file notifications (inotify/kqueue) for the ledger's WAL, it does
    not poll. On a terminal each event is one readable line on stderr (seq, time, type,
    session, source, data); piped or with --json, stdout gets each event's JSON exactly as
    it was pushed, one per line.

    Examples:

    \b
        mmx ledger tail -f --last --type 'director.*'
        mmx ledger tail --since 0 --json | mmx ledger push --ledger copy.sqlite

    See also:
    mmx-ledger-push(1), mmx-ledger-show(1)
    """
    if session is not None and last:
        raise typer.BadParameter("give --session or --last, not both")
    path = _ledger_path(ledger)
    as_json = wants_json(json_out)
    with Ledger.open(path, create=follow) as store:
        sid = queries.resolve_session(store.conn, session, last=last) if (session or last) else None
        patterns = tuple(types)
        start = since if since is not None else store.seq_before_last(10, session=sid, types=patterns)
        out = sys.stdout.buffer
        for event in follow_events(store, start, session=sid, types=patterns, follow=follow):
            if as_json:
                out.write(event.raw.encode() + b"\n")
                out.flush()
            else:
                console.print(
                    f"[dim]{event.seq:>7}[/] {_clock(event.ts)} [bold]{_e(event.type)}[/] "
                    f"[cyan]{_e((event.session or '-')[:10])}[/] {_e(event.src)} {_e(_summary_of(event))}",
                    soft_wrap=True, highlight=False,
                )  # fmt: skip


@app.command("sessions")
def ledger_sessions(
    json_out: bool = typer.Option(False, "--json", help="JSON Lines on stdout (the default when piped)."),
    ledger: Path | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
) -> None:
    """List the production sessions in the ledger.

    One row per session: id, title, status (active, completed; "inferred" when events
    named a session that never started), start, length, cuts and events, on a terminal as
    a table on stderr. Piped or with --json, one JSON object per session on stdout, with
    the production_sessions columns and the counts of events, cameras, cuts and stills.

    Examples:

    \b
        mmx ledger sessions
        mmx ledger sessions --json | jq -r 'select(.status == "active") | .session'

    See also:
    mmx-ledger-show(1), mmx-ledger-export(1)
    """
    with Ledger.open(_ledger_path(ledger), create=False) as store:
        sessions = queries.list_sessions(store.conn)
    if wants_json(json_out):
        for s in sessions:
            write_jsonl(s)
        return
    if not sessions:
        console.print("no sessions in the ledger yet")
        return
    from rich import box
    from rich.table import Table

    table = Table(title="production sessions", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)  # fmt: skip
    table.add_column("session", no_wrap=True)
    table.add_column("title", ratio=1, min_width=8)
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    for column in ("length", "cuts", "events"):
        table.add_column(column, justify="right", no_wrap=True)
    extra = list(queries.SESSION_FIELDS)
    for name in extra:
        table.add_column(name.replace("_", " "), min_width=6)
    for s in sessions:
        status = s["status"] + (" (inferred)" if s["inferred"] else "")
        started = text.day_minute(s["started_at"])
        table.add_row(
            _e(s["session"]), _e(s["title"] or ""), status, started, _dur(s["duration_s"]),
            str(s["cuts"]), str(s["events"]),
            *(_e(s.get(name, "")) for name in extra),
        )  # fmt: skip
    console.print(table)


def _render_summary(summary: dict[str, Any]) -> None:
    info = summary["session"]
    status = info["status"] + (" (inferred: no session.started)" if info["inferred"] else "")
    console.print(f"[bold]{_e(info['title'] or 'untitled session')}[/]  [dim]{_e(info['session'])}[/]")
    console.print(
        f"{_e(info['kind'])} · {status} · {_when(info['started_at'])} → "
        f"{text.end_when(info['started_at'], info['completed_at'])}"
        f"{' (' + _e(info['end_reason']) + ')' if info['end_reason'] else ''}",
        highlight=False,
    )
    if info["notes"]:
        console.print(f"[dim]{_e(info['notes'])}[/]")
    counts = summary["counts"]
    console.print(
        f"program time [bold]{_dur(summary['program_time_s'])}[/] in {counts['shots']} shots "
        f"({counts['cuts']} cuts) · {counts['events']} events",
        highlight=False,
    )

    from rich.table import Table

    cams = Table(title="cameras and placement", title_justify="left")
    for column in ("camera", "device", "role", "zoom", "placement", "on program"):
        cams.add_column(column)
    share = summary["program_by_camera_s"]
    for cam in summary["cameras"]:
        on = share.get(cam["camera"])
        pct = f"{_dur(on)} ({100 * on / summary['program_time_s']:.0f}%)" if on and summary["program_time_s"] else "—"
        device = cam["model"] or cam["name"] or cam["device"] or "—"
        camera = _e(cam["camera"]) + (" [dim](left)[/]" if cam["status"] == "left" else "")
        cams.add_row(camera, _e(device), _e(cam["role"] or "—"), f"{text.number(cam['zoom'])}×" if cam["zoom"] is not None else "—",
                     _e(text.placement(cam["placement"])), pct)  # fmt: skip
    console.print(cams)

    shots = Table(title="cut list", title_justify="left")
    for column, justify in (("#", "right"), ("camera", "left"), ("at", "right"), ("duration", "right"),
                            ("by", "left"), ("proposal", "left")):  # fmt: skip
        shots.add_column(column, justify=justify)  # type: ignore[arg-type]
    for shot in summary["shots"]:
        shots.add_row(str(shot["shot"]), _e(shot["camera"]) if shot["camera"] else "[dim]black[/]",
                      _dur(shot["start_s"]), _dur(shot["duration_s"]), _e(shot["by"] or "—"),
                      _e((shot["proposal"] or "")[-8:]))  # fmt: skip
    console.print(shots)

    pc = summary["proposal_counts"]
    if pc["proposed"]:
        rate = f" · {100 * pc['accepted'] / pc['proposed']:.0f}% accepted"
        console.print(
            f"[bold]ghost director[/]: {pc['proposed']} proposals — [green]{pc['accepted']} accepted[/], "
            f"[red]{pc['vetoed']} vetoed[/], [yellow]{pc['expired']} expired[/]"
            f"{', ' + str(pc['pending']) + ' pending' if pc['pending'] else ''}{rate}",
            highlight=False,
        )
    for hold in summary["holds"]:
        end = "still held" if hold.get("open") else f"released after {_dur(hold['duration_s'])}"
        console.print(f"[bold]hold[/] on {_e(hold['camera'] or '—')} by {_e(hold['by'] or '—')} at {_clock(hold['start'])}, {end}",
                      highlight=False)  # fmt: skip
    for mode in summary["modes"]:
        console.print(f"[bold]mode[/] {_e(mode['previous'] or '—')} → {_e(mode['mode'])} at {_clock(mode['ts'])}", highlight=False)
    for marker in summary["markers"]:
        console.print(f"[bold]marker[/] {_e(marker['label'] or '')} ({_e(marker['camera'] or '—')}) at {_clock(marker['ts'])}",
                      highlight=False)  # fmt: skip
    if summary["stills"]:
        stills = Table(title="stills", title_justify="left")
        for column in ("still", "camera", "at", "size", "path"):
            stills.add_column(column)
        for s in summary["stills"]:
            size = f"{s['width']}×{s['height']}" if s["width"] and s["height"] else "—"
            stills.add_row(_e(s["still"]), _e(s["camera"]), _clock(s["captured_at"]), size, _e(s["path"] or "—"))
        console.print(stills)
    if summary.get("recordings"):
        recs = Table(title="recordings", title_justify="left")
        for column, justify in (("camera", "left"), ("kind", "left"), ("codec", "left"), ("from", "right"),
                                ("length", "right"), ("frames", "right"), ("dropped", "right"), ("size", "right"),
                                ("status", "left"), ("path", "left")):  # fmt: skip
            recs.add_column(column, justify=justify)  # type: ignore[arg-type]
        for r in summary["recordings"]:
            size = f"{r['bytes'] / 1e6:.1f} MB" if r["bytes"] is not None else "—"
            status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
            recs.add_row(_e(r["camera"] or "—"), _e(r["kind"] or "—"), _e(r["codec"] or "—"),
                         _dur(r["start_s"]), _dur(r["duration_s"]), str(r["frames"] if r["frames"] is not None else "—"),
                         str(r["dropped"] if r["dropped"] is not None else "—"), size, _e(status),
                         _e(r["path"] or "—"))  # fmt: skip
        console.print(recs)


@app.command("show")
def ledger_show(
    session: str | None = typer.Argument(None, help="Session id (or a unique prefix)."),
    last: bool = typer.Option(False, "--last", help="The most recently started session."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object on stdout (the default when piped)."),
    ledger: Path | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
) -> None:
    """Show one session's production summary.

    Cameras with their placement and share of program time, the cut list with shot
    durations, the program time, holds, mode changes, markers, stills, the recorded files
    (each camera's ISO and proxy and the program: codec, first frame on the session clock,
    length, frames, dropped frames, size, why it stopped, path) and the ghost director's
    proposals accepted, vetoed and expired. A rich view on stderr on a terminal; piped or
    with --json, one JSON object on stdout (keys: session, cameras, recordings, shots,
    program_time_s, holds, modes, markers, stills, proposals, proposal_counts, counts).

    Examples:

    \b
        mmx ledger show --last --ledger shoot.sqlite
        mmx ledger show 01JD3J --json | jq '.shots[] | [.camera, .duration_s]'

    See also:
    mmx-ledger-sessions(1), mmx-ledger-export(1)
    """
    if session is not None and last:
        raise typer.BadParameter("give SESSION or --last, not both")
    if session is None and not last:
        raise typer.BadParameter("give a SESSION id or --last")
    with Ledger.open(_ledger_path(ledger), create=False) as store:
        sid = queries.resolve_session(store.conn, session, last=last)
        summary = queries.session_summary(store.conn, sid)
    if wants_json(json_out):
        write_jsonl(summary)
    else:
        _render_summary(summary)


@app.command("export")
def ledger_export(
    session: str | None = typer.Argument(None, help="Session id (or a unique prefix)."),
    fmt: str | None = typer.Option(None, "--format", "-F", help=f"One of {', '.join(FORMATS)}. Default: from the -o suffix (.jsonl .csv .otio .edl .xml .fcpxml), else jsonl."),
    output: str = typer.Option("-", "--output", "-o", help="Output file; '-' is stdout."),
    last: bool = typer.Option(False, "--last", help="The most recently started session."),
    fps: float = typer.Option(DEFAULT_FPS, "--fps", min=1.0, help="Frame rate of the otio/edl/fcp7/fcpx timelines."),
    ledger: Path | None = typer.Option(None, "--ledger", "-l", help=_LEDGER_HELP),
) -> None:
    """Export a session's cut list as an editorial timeline, with its recordings as media.

    One shot per cut (a cut to the camera already on program is not a new shot), each with
    its camera, start and end (Unix seconds and seconds from the session start) and
    duration; the durations add up to the session's program time. Formats: jsonl (one shot
    per line), csv, otio (OpenTimelineIO), edl (CMX 3600), fcp7 (Final Cut Pro 7 XML, which
    Premiere Pro imports) and fcpx (FCPXML for Final Cut Pro); edl, fcp7 and fcpx are written
    by OpenTimelineIO's adapters. DaVinci Resolve imports the .otio file.

    The timeline runs on the session clock: record time 00:00:00:00 is the session start
    and each recording's media time is the same clock, so a clip's source timecode is its
    record timecode. otio/fcp7/fcpx hold one video track per camera (its ISO
    video/CAMERA.mkv as the media reference, its proxy video/CAMERA.proxy.mkv as a second
    one, or the only one for a camera without WebRTC video), the recorded program.mkv
    (disabled) and on top the program track: one clip per shot referencing that camera's
    recording at the cut points, re-cuttable. Stills and operator marks are markers. The
    EDL holds the program track, reels named after the cameras. Without recordings the
    clips have no media (a missing reference). Times are rounded to --fps frames at the
    shot boundaries. The media are referenced where the ledger says they were written
    (file:// URLs); after moving them, relink in the editor.

    Examples:

    \b
        mmx ledger export --last -o shoot.otio
        mmx ledger export --last -o shoot.xml          # FCP 7 XML for Premiere
        mmx ledger export --last -o shoot.fcpxml       # Final Cut Pro
        mmx ledger export 01JD3J --format edl -o shoot.edl
        mmx ledger export --last --format csv | column -s, -t

    See also:
    mmx-ledger-show(1), otiotool(1)
    """
    if session is not None and last:
        raise typer.BadParameter("give SESSION or --last, not both")
    if session is None and not last:
        raise typer.BadParameter("give a SESSION id or --last")
    fmt = fmt or (format_from_path(output) if output != "-" else None) or "jsonl"
    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}", param_hint="--format")
    with Ledger.open(_ledger_path(ledger), create=False) as store:
        sid = queries.resolve_session(store.conn, session, last=last)
        summary = queries.session_summary(store.conn, sid)
    data = export_session(summary, fmt, fps=fps)
    with open_output(output) as fp:
        fp.write(data)
        fp.flush()
    if output != "-":
        console.print(f"{summary['counts']['shots']} shots ({_dur(summary['program_time_s'])} of program) written to {output}",
                      highlight=False)  # fmt: skip


app.command("sync")(ledger_sync.ledger_sync)
