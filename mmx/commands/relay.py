"""`mmx relay`: the low-latency WebRTC hero feed that follows the director's cuts."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

import typer

from mmx.commands._common import console, report_line_error, run_until_signal
from mmx.errors import EX_INTERRUPTED


def _render(record: dict[str, Any]) -> None:
    kind = record.get("status")
    if kind == "listening":
        console.print(f"listening on {record['url']}")
    elif kind == "recording_armed":
        console.print(f"recording take {record['take']} into {record['path']}")
    elif kind == "recording_started":
        console.print(f"recording {record['camera']} ({record['kind']}, {record['codec']}) → {record['path']}")
    elif kind == "recording_stopped":
        console.print(f"recorded {record['path']}: {record.get('frames')} frames, {record.get('duration_s')} s, "
                      f"{record.get('dropped')} dropped ({record.get('reason')})")
    elif kind in ("record_error", "record_unsupported", "post_refused"):
        detail = record.get("error") or record.get("codec") or record.get("reason") or ""
        console.print(f"[yellow]warning:[/] {kind.replace('_', ' ')}: {record.get('camera') or record.get('type') or ''} {detail}")
    elif kind == "cut":
        console.print(f"cut [bold]{record.get('from')}[/] → [bold red]{record['to']}[/] (by {record.get('by')})")
    elif kind == "program":
        console.print(f"program [bold red]{record['camera']}[/]")
    elif kind == "following":
        console.print(f"following director cuts from {record['server']}")
    elif kind == "server_unreachable":
        console.print(f"[yellow]server unreachable[/] {record['server']}: {record['reason']} (retry in {record['retry_s']:g} s)")
    elif kind == "publisher":
        console.print(f"publisher [bold]{record['camera']}[/] joined ({record['session']})")
    elif kind == "viewer":
        console.print(f"viewer of {record['name']} joined ({record['viewers']} on that feed)")
    elif kind in ("whip_closed", "whep_closed"):
        who = "publisher" if kind == "whip_closed" else "viewer of"
        console.print(f"{who} {record['name']} left ({record['reason']})")
    elif kind == "encode_error":
        console.print(f"[yellow]warning:[/] encoding {record.get('camera') or 'the slate'} failed: {record['error']}")
    elif kind == "stalled":
        rtp = "no RTP" if record.get("rtp_age_s") is None else f"last RTP {record['rtp_age_s']:g} s ago"
        console.print(f"[yellow]stalled:[/] {record['camera']} sent no frame for {record['silent_s']:g} s ({rtp})")
    elif kind == "resumed":
        console.print(f"resumed: {record['camera']} after {record['stalled_s']:g} s without media")
    elif kind == "stall_watch_error":
        console.print(f"[yellow]warning:[/] stall watch: {record['error']}")
    elif kind == "stats":
        cams = ", ".join(f"{c['camera']} {c['status']} {c['fps']:g} fps" for c in record["cameras"]) or "no cameras"
        console.print(f"program {record['program']} · {cams} · hero viewers {record['hero']['viewers']}", style="dim")


def relay(
    server: str = typer.Option("http://127.0.0.1:8750", "--server", help="Base URL of mmx serve (its director.cut events drive the hero feed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8760, "--port", min=1, max=65535, help="TCP port to listen on."),
    token: str | None = typer.Option(None, "--token", envvar="MMX_TOKEN", help="Token required on every request (Bearer or ?token=) and sent to mmx serve [default: generated and printed]."),
    ice_host: list[str] = typer.Option(["127.0.0.1"], "--ice-host", help="Address for ICE host candidates; repeat for several (pick the shoot network)."),
    ice_server: list[str] = typer.Option([], "--ice-server", help="A STUN/TURN server URL (stun:HOST:PORT); repeat for several [default: none]."),
    events: str | None = typer.Option(None, "--events", help="Read director.cut events from this JSON Lines file or '-' (stdin) instead of the server."),
) -> None:
    """Relay camera video to viewers over WebRTC; the hero feed follows the director's cuts.

    Cameras publish over WHIP (POST /whip/CAMERA with an SDP offer, 201 with the answer and
    a Location to DELETE); a browser can publish its camera from /publish/CAMERA. Viewers
    subscribe over WHEP: /whep/hero follows the program camera, /whep/CAMERA shows one
    camera. The page at / plays the hero feed with the camera name and the measured
    latency. Every request needs the token (Bearer header, or ?token=T on page URLs); without
    --token (or $MMX_TOKEN) one is generated and printed on stderr.

    The hero feed is decoded and encoded once (VP8) and the same packets go to every
    viewer, so adding viewers adds no encoding; a cut only switches the encoder's source, so
    viewers never renegotiate. A program camera that stops sending stays on its last frame,
    then shows a "camera lost" slate after 1 s until it is back or the director cuts away.
    A publisher that is connected but sends no media for 2 s is reported as stalled (on
    stderr, in GET /status and on the page, and to mmx serve as relay.stalled, then
    relay.resumed when media is back).

    The program follows director.cut events from mmx serve (GET /v1/events, resumed with
    since= after a dropped connection) or, with --events, from a JSON Lines file or stdin;
    bad lines are reported as "line N: …" and skipped. No STUN/TURN servers are used unless
    given with --ice-server; host candidates are bound to the --ice-host addresses only.

    Recording: while mmx serve has a take armed (every production session by default, or
    POST /v1/record/start), the relay writes each publishing camera's ISO into the take's
    video directory, video/CAMERA.mkv, and the program, video/program.mkv, from the encoded
    frames it receives, as they arrived: VP8 (or H.264) in Matroska, no decode or encode.
    Timestamps are on the session clock (0 = the session start), so the ISOs line up with
    each other and with the ledger's cut times. The program file follows the cuts at the new
    camera's next keyframe (asked for at the cut). A camera that drops out and rejoins goes
    on in the same file after a gap; another codec, or a relay restarted during the take,
    starts a numbered file (CAMERA.2.mkv). Clusters are flushed every second: a killed relay
    leaves files that play up to about 1 s before the kill. The relay posts
    recording.started and recording.stopped (path, codec, bytes, duration_s, frames,
    dropped, sha256) to the server's POST /v1/events; it writes where the server says, so
    it runs on the server's machine (or shares its disk). With --events - it records the
    takes in that stream (mmx serve | mmx relay --events -) without posting.

    stdout stays empty; status (listening, publishers, viewers, cuts, recordings, stats
    every 5 s) goes to stderr. Runs until SIGINT/SIGTERM.

    Examples:

    \b
        mmx relay --server http://127.0.0.1:8750 --token T
        mmx relay --events - --ice-host 192.168.1.20 < cuts.jsonl
        mmx serve --token T | mmx relay --events - --token T

    See also:
    mmx-serve(1), mmx-device(1), mmx-ghost(1)
    """
    from mmx.relay.server import run_relay

    for addr in ice_host:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise typer.BadParameter(f"{addr!r} is not an IP address", param_hint="--ice-host") from None

    if not token:
        # like mmx serve: never an open relay; the operator copies the printed token
        token = secrets.token_urlsafe(24)
        console.print(f"token: {token}", markup=False, highlight=False, soft_wrap=True)

    def on_error(exc: Any) -> None:
        report_line_error(exc, events or "server")

    import asyncio

    interrupted = asyncio.run(_run(run_relay, dict(
        server=server, host=host, port=port, token=token, ice_hosts=ice_host, ice_servers=ice_server, events=events,
        on_status=_render, on_error=on_error)))
    if interrupted:
        raise typer.Exit(EX_INTERRUPTED)


async def _run(run_relay: Any, kwargs: dict[str, Any]) -> bool:
    """Run until SIGINT/SIGTERM; returns whether SIGINT stopped it."""
    import asyncio

    stop = asyncio.Event()
    return await run_until_signal(run_relay(stop=stop, **kwargs), stop.set)
