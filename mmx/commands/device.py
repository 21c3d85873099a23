"""`mmx device`: run a simulated camera against `mmx serve`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from mmx.commands._common import console, open_input, report_line_error, run_until_signal, write_jsonl
from mmx.errors import EX_INTERRUPTED


def _render(event: dict[str, Any], name: str) -> None:
    kind = event["event"]
    cam = event.get("camera") or name
    if kind == "connected":
        program = " [bold red](on program)[/]" if event.get("program") else ""
        console.print(f"[green]connected[/] as [bold]{cam}[/] to {event.get('server')} "
                      f"(session {event.get('session') or 'none'}){program}")  # fmt: skip
    elif kind == "disconnected" and event.get("reason") == "stopped":
        console.print(f"{cam}: stopped")
    elif kind == "disconnected":
        console.print(f"[yellow]disconnected[/] {cam} (close code {event.get('close_code')})")
    elif kind == "retry":
        console.print(f"[yellow]retry[/] {event['attempt']} in {event['delay_s']:.2f} s: {event.get('error')}")
    elif kind == "command":
        result = "[green]ok[/]" if event["ok"] else f"[red]refused[/]: {event.get('error')}"
        state = event.get("state") or {}
        console.print(f"{cam}: command [bold]{event['command']}[/] {event.get('args') or ''} → {result} "
                      f"(facing {state.get('facing')}, zoom {state.get('zoom')})")  # fmt: skip
    elif kind == "tally":
        console.print(f"{cam}: tally [bold red]PROGRAM[/]" if event["program"] else f"{cam}: tally off program")
    elif kind == "still":
        console.print(f"{cam}: still {event['still']} uploaded ({event['bytes']} bytes, "
                      f"{event['width']}×{event['height']}, sha256 {event['sha256'][:12]}…)")  # fmt: skip
    elif kind == "placement":
        console.print(f"{cam}: placement {event.get('placement')}")
    elif kind == "session":
        console.print(f"{cam}: session {event.get('session') or 'stopped'}")
    elif kind == "server_error":
        console.print(f"[yellow]server error[/] {event.get('error')} (ref {event.get('ref')})")
    elif kind == "relay":
        detail = event.get("url") if event["status"] == "published" else event.get("error")
        console.print(f"{cam}: relay {event['status']}: {detail}")
    elif kind == "warning":
        console.print(f"[yellow]warning:[/] {event.get('message')}")


#: Where a device looks when mDNS finds no server: mmx serve's default address.
LOCAL_SERVER = "http://127.0.0.1:8750"


def device(
    server: str | None = typer.Option(None, "--server", help="Base URL of mmx serve [default: the one found on the LAN by mDNS, _mmx._tcp]."),
    server_name: str | None = typer.Option(None, "--server-name", metavar="NAME", help="Without --server: the mDNS instance name of the server to use when several advertise (mmx serve prints it)."),
    token: str = typer.Option(..., "--token", envvar="MMX_TOKEN", help="The token mmx serve printed at start."),
    name: str = typer.Option(..., "--name", help="Human name of this camera (also names its state file)."),
    camera: str | None = typer.Option(None, "--camera", metavar="cam-N", help="Ask the server for this camera id, so ids do not depend on the order cameras start in (refused when another device holds it)."),
    device_id: str | None = typer.Option(None, "--device-id", help="Use this device id (the state file is then not used)."),
    video: Path | None = typer.Option(None, "--video", help="Video file to play in a loop (PyAV; a seekable file, not a pipe); default: a test pattern."),
    pose: Path | None = typer.Option(None, "--pose", allow_dash=True, help="Pose file (JSON Lines, format of vtest.pose.jsonl; '-' for stdin) sent in step with the video."),
    placement: str | None = typer.Option(None, "--placement", help="label=front,azimuth_deg=0,distance_m=3 or a JSON object."),
    lenses: str = typer.Option("0.5,1,2", "--lenses", help="Lenses of the back camera (zoom factors)."),
    front_lenses: str = typer.Option("1", "--front-lenses", help="Lenses of the front camera."),
    fps: float = typer.Option(10.0, "--fps", min=0, max=60, help="Preview frames per second (0: no previews)."),
    size: str = typer.Option("640x360", "--size", help="Preview size WIDTHxHEIGHT in pixels."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where the device id is kept [default: the user state dir]."),
    relay: str | None = typer.Option(None, "--relay", help="Also publish the video to mmx relay over WHIP (POST URL/whip/CAMERA)."),
    pose_offset_s: float = typer.Option(0.0, "--pose-offset-s", help="Start this many seconds into the video and pose file."),
    model: str = typer.Option("mmx-device", "--model", help="Device model reported in hello."),
    max_retries: int | None = typer.Option(None, "--max-retries", min=0, help="Give up after this many failed reconnects in a row [default: never]."),
    json_events: bool = typer.Option(False, "--json", help="Write what happens (connected, commands, stills…) to stdout as JSON Lines."),
) -> None:
    """Run a simulated camera: connect to mmx serve, stream previews and pose, obey commands.

    Speaks the capture-device protocol (docs/device-protocol.md) like the phone app does:
    hello with a stable device id, heartbeats every second, state reports (facing, zoom,
    battery, thermal), pose samples from --pose in step with the video clock, and JPEG
    preview frames at --fps and --size from --video (decoded with PyAV, looping) or from a
    generated test pattern. It obeys flip (the front facing mirrors the picture), zoom (a
    centre crop above 1×; 0.5× only where the facing has the ultra-wide, anything else is
    refused) and still (the current full-resolution frame as JPEG, uploaded with its
    sha256 to POST /v1/stills before the ack). When the server goes away it reconnects
    with exponential backoff and jitter (0.25 s doubling to 5 s) until SIGINT/SIGTERM or
    --max-retries. Malformed pose lines are reported as "line N: …" on stderr and skipped.

    With --relay URL the same picture is also published to mmx relay over WHIP (POST
    URL/whip/CAMERA once the server has named the camera; loopback ICE host candidates,
    no STUN/TURN), republished with backoff when the relay goes away.

    Without --server it looks for the server on the LAN by mDNS/DNS-SD (the _mmx._tcp
    service mmx serve --lan advertises) for up to 5 s; an HTTPS server's certificate is
    pinned to the SHA-256 fingerprint in its advertisement. When none answers it tries
    mmx serve's default address on this machine, http://127.0.0.1:8750; several servers
    (without --server-name), or none named --server-name, is exit 69.

    With --camera cam-N the hello asks for that camera id: a new device gets it when no
    other device holds it, so three cameras started at once are cam-1, cam-2, cam-3 as
    asked, not in the order they happened to connect; the server refuses a camera id held
    by another device (or a device asking for another id than the one it has): exit 69.

    Logs go to stderr; stdout stays empty unless --json is given.

    Files:
    STATE_DIR/device-NAME.json holds the device id ({"device": "dev-…", "name": …});
    keep it and a restarted device is the same camera (cam-N) with the same placement.

    Examples:

    \b
        mmx device --token T --name "cam A" --placement label=front-left,azimuth_deg=-45
        mmx device --token T --name front --camera cam-1 --server http://127.0.0.1:8750
        mmx device --token T --name walker --video vtest.avi --pose vtest.pose.jsonl
        mmx device --token T --name B --video vtest.avi --pose-offset-s 20 --json | jq .event

    See also:
    mmx-serve(1), mmx-relay(1)
    """
    from mmx.device import (
        DeviceClient, DeviceConfig, PoseTrack, TestPattern, VideoSource, load_device_id, parse_lenses,
        parse_placement, parse_size,
    )  # fmt: skip
    from mmx.paths import default_state_dir

    preview_size = parse_size(size)
    if camera is not None and not re.fullmatch(r"cam-[1-9][0-9]{0,5}", camera):
        raise typer.BadParameter(f"{camera!r} is not a camera id such as cam-1", param_hint="--camera")
    tls_sha256 = None
    if server is None:
        import asyncio

        from mmx.device.discover import NotFound, find_server

        console.print("looking for mmx serve on the LAN by mDNS (_mmx._tcp) …")
        try:
            found = asyncio.run(find_server(name=server_name))
        except NotFound as exc:
            if server_name is not None:
                raise
            server = LOCAL_SERVER  # a rehearsal on this machine (mmx serve without --lan)
            console.print(f"{exc.message}; trying {server}", soft_wrap=True)
        else:
            server, tls_sha256 = found.url, found.sha256
            pinned = f", certificate SHA-256 {found.sha256[:16]}… pinned" if found.sha256 else ""
            console.print(f"found {found.name!r} at {server} by mDNS{pinned}", soft_wrap=True)
    config = DeviceConfig(
        server=server, token=token, name=name, camera=camera, tls_sha256=tls_sha256,
        device_id=load_device_id(state_dir or default_state_dir(), name, device_id=device_id),
        model=model, placement=parse_placement(placement),
        lenses={"back": parse_lenses(lenses), "front": parse_lenses(front_lenses)},
        fps=fps, size=preview_size, pose_offset_s=pose_offset_s, max_retries=max_retries, relay=relay,
    )  # fmt: skip
    source = VideoSource(video) if video is not None else TestPattern()
    track = None
    if pose is not None:
        with open_input(pose) as fp:
            track = PoseTrack.read(fp, source=str(pose), on_error=lambda exc: report_line_error(exc, str(pose)))
        console.print(f"pose: {len(track.samples)} samples from {pose} ({track.fps:g} per s)")

    def on_event(event: dict[str, Any]) -> None:
        _render(event, name)
        if json_events:
            write_jsonl(event)

    client = DeviceClient(config, source=source, pose=track, on_event=on_event)
    console.print(f"device {config.device_id} ({name}) → {server}")
    import asyncio

    interrupted = asyncio.run(run_until_signal(client.run(), client.stop))
    source.close()
    if interrupted:
        raise typer.Exit(EX_INTERRUPTED)


