"""`mmx serve`: run the live coordination server (thin: options → `mmx.serve.Server`)."""

from __future__ import annotations

import secrets
import signal
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer

from mmx.commands._common import console
from mmx.errors import IOFailure
from mmx.events import Event
from mmx.paths import mmx_home
from mmx.serve.config import ServeConfig
from mmx.serve.config import DEFAULT_HOST, DEFAULT_PORT

if TYPE_CHECKING:
    from rich.live import Live

    from mmx.serve.app import Server
    from mmx.serve.tls import Certificate


def serve(
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="TCP port (0 picks a free one)."),
    lan: bool = typer.Option(False, "--lan", help="Serve the LAN over HTTPS (every LAN address; loopback stays plain HTTP on --host) and advertise _mmx._tcp over mDNS."),
    cert: Path = typer.Option(None, "--cert", help="With --lan: the studio's own PEM certificate (chain), e.g. mkcert's, instead of the generated one."),
    key: Path = typer.Option(None, "--key", help="With --lan: the private key (PEM) of --cert."),
    public_url: str = typer.Option(None, "--public-url", help="Base URL phones reach this server at, for camera links [default: the first HTTPS address with --lan, else the listening URL]."),
    qr: bool = typer.Option(None, "--qr/--no-qr", help="Print the camera link's QR code on stderr [default: when stderr is a terminal]."),
    data: Path = typer.Option(None, "--data", help="Data directory: registry and session capture directories [default: $MMX_HOME/serve]."),
    token: str = typer.Option(None, "--token", envvar="MMX_TOKEN", help="Access token for devices and operators [default: generated and printed]."),
    events: str = typer.Option(None, "--events", help="Write every event as JSON Lines to FILE or '-' (stdout) [default: '-' when stdout is not a terminal]."),
    device_timeout: float = typer.Option(3.0, "--device-timeout", min=0.2, help="Seconds of silence before a device is lost."),
    ack_timeout: float = typer.Option(2.0, "--ack-timeout", min=0.05, help="Seconds a command waits for the device's ack (504 after)."),
    max_still_bytes: int = typer.Option(50 * 1024 * 1024, "--max-still-bytes", min=1, help="Largest accepted still upload in bytes (413 above)."),
    fallback: str = typer.Option(None, "--fallback", help="Camera to cut to when the program camera is lost [default: none]."),
    duplicate_angle_deg: float = typer.Option(15.0, "--duplicate-angle-deg", min=0.0, help="Cameras closer than this azimuth are duplicate coverage."),
    record: bool = typer.Option(True, "--record/--no-record", help="Record every production session (proxy files of the previews here; mmx relay records the ISOs and the program)."),
    relay: str = typer.Option(None, "--relay", help="URL of the mmx relay that camera pages publish their hero feed to (WHIP through this server) [default: none]."),
    relay_token: str = typer.Option(None, "--relay-token", envvar="MMX_RELAY_TOKEN", help="The relay's token, kept on this server (camera pages never see it)."),
    record_min_free_mb: float = typer.Option(256.0, "--record-min-free-mb", min=0.0, help="Stop recording (reason disk_full) when the disk has less than this many MB free."),
) -> None:
    """Run the live multi-camera coordination server.

    Capture devices (the iPhone app or `mmx device`) connect over a WebSocket; operators,
    `mmx ghost` and `mmx demo` use the HTTP API under /v1 (DESIGN.md). The server is the one
    authority over live state: which cameras are connected, what is on program, hold, mode
    and the production session.

    stdout: every event as compact JSON Lines (with --events - or when stdout is not a
    terminal), so `mmx serve | mmx ledger push` records the shoot. stderr: the token (when
    generated), a "listening on URL" line per address, the "tls:" fingerprints (--lan), the
    "console:" and "camera:" links and the camera link's QR code, then a live status view on
    a terminal or plain log lines otherwise. SIGINT/SIGTERM end the active session with reason
    "shutdown", close the devices and flush every file.

    Without --lan the server listens on 127.0.0.1 only, plain HTTP. Every request needs the
    token: "Authorization: Bearer T" or ?token=T (for <img> MJPEG URLs).

    Pairing: phones join with a camera token, never the operator's. At start the server
    prints the "camera:" link of its default pairing (kept in DATA/pairings.json, so a
    printed code keeps working) and, on a terminal or with --qr, its QR code; the phone
    scans it and opens /camera#token=CAMERA_TOKEN (in the fragment, which never reaches a
    server log or a Referer header). A camera token may open the device WebSocket and
    upload stills for its own cameras; everything else answers 403. POST /v1/pairings
    {"name"} makes one more ({"id", "token", "url"}), GET /v1/pairings lists them without
    their tokens, GET /v1/pairings/ID shows one with its link, GET /v1/pairings/ID/qr.svg is
    its QR code, DELETE /v1/pairings/ID revokes it: the sockets opened with it are closed
    at once with code 4401 ("pairing revoked"). The console shows the QR code (P).

    HTTPS (--lan): a phone's browser allows the camera only over HTTPS. --lan serves every
    LAN address over HTTPS (loopback stays plain HTTP on --host, same port, for local
    tools) with a certificate made on first run under $MMX_HOME/tls/ by a local CA, or the
    studio's own with --cert/--key (e.g. mkcert's). The certificate's and the CA's SHA-256
    fingerprints are printed; phones trust the CA once from /ca.crt
    (examples/live-shoot/README.md shows how on iOS and Android).

    The operator console (Live Director) is served at / : open the "console:" URL printed
    at start (it carries the token when the token was generated), or open / and enter the
    token once; it is kept in an HttpOnly, SameSite=Strict cookie. Keys: 1-9 cut to the Nth
    camera, H hold/release, Enter/A accept and Esc/V veto the ghost's proposal, P pair a
    phone (a new pairing's QR code). POST
    /v1/ghost/PROPOSAL/accept and /veto answer a proposal from any client.

    GET /v1/events streams application/x-ndjson: with since=SEQ it first replays every
    kept event after SEQ (memory, then the capture files), without since only new ones;
    types=a.*,b filters (pose.sample only when named); follow=0 ends after the replay.
    When the program camera is lost the server emits director.program_lost and cuts to
    --fallback (or to nothing). Devices silent for --device-timeout seconds are
    camera.left with reason "timeout".

    Pose for cameras without their own: POST /v1/pose {"camera", "t", "joints", ...}
    (what mmx pose sends) becomes a pose.sample; GET /v1/state's "pose_fps" is every
    camera's pose rate (device-sent ones too), "pose_dropped" what mmx pose skipped.

    Recording: each production session is recorded unless --no-record (POST
    /v1/record/start and /v1/record/stop start and stop a take by hand, also outside a
    session). The server writes every camera's preview JPEGs into
    video/CAMERA.proxy.mkv (MJPEG, no re-encode); mmx relay, following the same events,
    writes each published camera's ISO video/CAMERA.mkv and video/program.mkv. Every file's
    timestamps are seconds since the session start. GET /v1/state's "recording" shows free
    space, the write rate and the minutes left (a warning under 10); under
    --record-min-free-mb the take stops cleanly with reason disk_full.

    Examples:

    \b
        mmx serve --token s3cret | mmx ledger push
        mmx serve --lan --data ~/shoots --fallback cam-1     # then open the console: URL on an iPad
        mmx serve --lan --cert studio.pem --key studio-key.pem   # mkcert's certificate
        curl -s -X POST -H 'Authorization: Bearer s3cret' localhost:8750/v1/pairings -d '{"name": "cam B"}'
        curl -H 'Authorization: Bearer s3cret' localhost:8750/v1/state
        curl -N -H 'Authorization: Bearer s3cret' 'localhost:8750/v1/events?since=0&types=director.*'

    Files:

    \b
        DATA/registry.json                        device id -> camera id and placement
        DATA/pairings.json                        camera tokens (mode 0600)
        $MMX_HOME/tls/ca.pem, ca-key.pem          the local CA phones trust (--lan)
        $MMX_HOME/tls/cert.pem, key.pem           its certificate for this machine
        DATA/sessions/ID/session.json             session metadata, cameras, clock facts
        DATA/sessions/ID/events.jsonl             every event of the session
        DATA/sessions/ID/stills/CAMERA/STILL.jpg  uploaded stills
        DATA/sessions/ID/video/CAMERA.proxy.mkv   the camera's previews (MJPEG)
        DATA/sessions/ID/video/CAMERA.mkv         its ISO, written by mmx relay
        DATA/sessions/ID/video/program.mkv        the program, written by mmx relay
        DATA/recordings/TAKE/video/               takes recorded outside a session

    Environment:

    \b
        MMX_TOKEN   the access token (same as --token)
        MMX_HOME    where the TLS files live (tls/)

    See also:

    \b
        mmx-device(1), mmx-ledger-push(1), mmx-ghost(1)
    """
    if (cert is None) != (key is None):
        raise typer.BadParameter("--cert and --key go together", param_hint="--cert/--key")
    if cert is not None and not lan:
        raise typer.BadParameter("--cert/--key serve the LAN over HTTPS: add --lan", param_hint="--cert/--key")
    if public_url is not None and not public_url.startswith(("http://", "https://")):
        raise typer.BadParameter("must start with http:// or https://", param_hint="--public-url")
    if relay is not None and not relay.startswith(("http://", "https://")):
        raise typer.BadParameter("must start with http:// or https://", param_hint="--relay")
    data_dir = data if data is not None else mmx_home() / "serve"
    generated = not token
    token = token or secrets.token_urlsafe(24)
    config = ServeConfig(
        data_dir=data_dir, token=token, host=host, port=port, public_url=public_url, device_timeout_s=device_timeout,
        ack_timeout_s=ack_timeout, max_still_bytes=max_still_bytes, fallback_camera=fallback,
        duplicate_angle_deg=duplicate_angle_deg, record=record,
        record_min_free_bytes=int(record_min_free_mb * 1024 * 1024), relay_url=relay, relay_token=relay_token,
    )  # fmt: skip
    if events is None and not sys.stdout.isatty():
        events = "-"
    interactive = sys.stderr.isatty()
    certificate = None
    if lan:
        certificate = _lan_tls(config, cert=cert, key=key)
    import asyncio

    asyncio.run(_run(config, events=events, certificate=certificate, interactive=interactive, generated=generated,
                     qr=interactive if qr is None else qr))  # fmt: skip


def _lan_tls(config: ServeConfig, *, cert: Path | None, key: Path | None) -> Certificate:
    """Set ``config`` up for --lan: HTTPS on every LAN address, with the studio's certificate or ours."""
    from mmx.serve.advertise import lan_addresses
    from mmx.serve.tls import TLS_DIR, ensure_certificate, load_certificate

    addresses = lan_addresses()
    if cert is not None and key is not None:
        certificate = load_certificate(cert, key)
    else:
        certificate = ensure_certificate(mmx_home() / TLS_DIR, addresses=addresses)
    config.tls_hosts = tuple(addresses)
    config.tls_cert, config.tls_key, config.tls_ca = certificate.cert, certificate.key, certificate.ca
    return certificate


def _open_events(target: str | None) -> IO[bytes] | None:
    if target is None:
        return None
    if target == "-":
        return sys.stdout.buffer
    try:
        return open(target, "ab")
    except OSError as exc:
        raise IOFailure(f"cannot write events to {target}: {exc.strerror}") from None


async def _run(config: ServeConfig, *, events: str | None, certificate: Certificate | None, interactive: bool,
               generated: bool, qr: bool) -> None:  # fmt: skip
    live: Live | None = None

    def log(message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        if live is not None:
            live.console.print(f"{stamp} {message}", markup=False, highlight=False, soft_wrap=True)
        else:
            console.print(f"{stamp} {message}", markup=False, highlight=False, soft_wrap=True)

    from rich.live import Live

    from mmx.serve.app import Server

    server = Server(config, log=log)
    out = _open_events(events)
    if out is not None:

        def to_stream(event: Event, line: bytes) -> None:
            try:
                out.write(line)
                out.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                server.hub.remove_sink(to_stream)
                log(f"warning: event output closed ({type(exc).__name__}); events still go to the capture files")

        server.hub.add_sink(to_stream)

    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    advertiser = None
    await server.start()
    try:
        if generated:
            say(f"token: {config.token}")
        for address in server.urls:
            say(f"listening on {address}")
        if certificate is not None:
            if not config.tls_hosts:
                log("warning: no LAN address found: serving loopback only (plain HTTP)")
            made = "made now" if certificate.made else "kept"
            say(f"tls: certificate SHA-256 {certificate.sha256} ({made}; {', '.join(certificate.names + certificate.addresses)})")
            if certificate.ca_sha256 is not None:
                say(f"tls: local CA SHA-256 {certificate.ca_sha256} (phones trust it once: {server.camera_base}/ca.crt)")
        say(f"console: {server.camera_base}/" + (f"?token={config.token}" if generated else ""))
        pairing = await server.default_pairing()
        say(f"camera: {server.pairing_link(pairing)}")
        if qr:
            from mmx.serve.qr import terminal_qr

            console.print(terminal_qr(server.pairing_link(pairing)), markup=False, highlight=False, end="", soft_wrap=True)
        if certificate is not None:
            from mmx.serve.advertise import Advertiser, service_info

            addresses = list(config.tls_hosts)
            tls = {"scheme": "https", "sha256": certificate.sha256.replace(":", "").lower()} if config.tls_hosts else {}
            advertiser = Advertiser(service_info(server.port or config.port, addresses=addresses, properties=tls))
            try:
                await advertiser.start()
                console.print(f"advertising _mmx._tcp on {', '.join(addresses) or 'no LAN address'}", markup=False)
            except Exception as exc:  # noqa: BLE001 - mDNS is a convenience; serving goes on
                advertiser = None
                log(f"warning: cannot advertise over mDNS: {exc}")
        if interactive:
            from rich.live import Live

            with Live(_status(server), console=console, refresh_per_second=2, transient=True) as live_view:
                live = live_view
                while not stop.is_set():
                    live_view.update(_status(server))
                    try:
                        await asyncio.wait_for(stop.wait(), 0.5)
                    except TimeoutError:
                        pass
            live = None
        else:
            await stop.wait()
    finally:
        log("shutting down")
        if advertiser is not None:
            await advertiser.stop()
        await server.stop("shutdown")
        if out is not None and out is not sys.stdout.buffer:
            out.close()
        log(f"stopped after {server.hub.seq - server.hub.first_seq + 1} events")


def say(text: str) -> None:
    """One line for humans on stderr, as is (no markup: URLs and tokens hold brackets and colons)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _status(server: Server) -> Any:
    from rich.table import Table
    from rich.text import Text

    state = server.state()
    head = Text.assemble(
        ("mmx serve ", "bold"), (server.url or "", "cyan"),
        f"   session: {state['session'] or '-'}   program: {state['program'] or '-'}"
        f"   hold: {state['hold'] or '-'}   mode: {state['mode']}   events: {state['seq']}",
    )  # fmt: skip
    table = Table(title=head, title_justify="left", expand=False)
    for column in ("camera", "name", "status", "facing", "zoom", "battery", "placement", "seen"):
        table.add_column(column)
    now = time.time()
    for cam in state["cameras"]:
        placement = cam["placement"] or {}
        where = placement.get("label") or ""
        if placement.get("azimuth_deg") is not None:
            where = f"{where} {placement['azimuth_deg']:g}°".strip()
        seen = f"{now - cam['last_seen']:.1f}s ago" if cam["last_seen"] else "-"
        style = "green" if cam["status"] == "live" else "red"
        on_air = " ●" if cam["camera"] == state["program"] else ""
        table.add_row(cam["camera"] + on_air, cam["name"], Text(cam["status"], style=style), cam["facing"] or "-",
                      f"{cam['zoom']:g}×" if cam["zoom"] is not None else "-",
                      f"{cam['battery']:.0%}" if cam["battery"] is not None else "-", where or "-", seen)  # fmt: skip
    return table
