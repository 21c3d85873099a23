"""The relay's HTTP side (aiohttp): WHIP ingest, WHEP egress, the viewer and publish pages.

Routes (token on every one: ``Authorization: Bearer T`` or ``?token=T``, compared in
constant time; no token configured means no check):

- ``POST /whip/{camera}`` SDP offer (``application/sdp``) → ``201`` answer + ``Location``
- ``DELETE /whip/{camera}/{session}`` → ``204``
- ``POST /whep/hero`` (follows the program) or ``/whep/{camera}`` → ``201`` answer + ``Location``
- ``DELETE /whep/{name}/{session}`` → ``204``
- ``GET /`` viewer page (hero feed, camera name, latency), ``GET /publish/{camera}`` a page
  that publishes the browser's camera, ``GET /status`` JSON (program, cameras — ``live``,
  ``stalled`` or ``lost`` —, viewers, and ``recording``: the armed take and its files,
  `mmx.relay.record`).

A publisher that is connected but sends no media for 2 s is reported as ``relay.stalled``,
and ``relay.resumed`` when media is back (`mmx.relay.stall`); with ``post_event`` set (mmx
serve's ``POST /v1/events``, `mmx.relay.record.ServePoster`) the events reach serve's stream.

Errors answer ``{"error": "<reason>"}``: 400 bad SDP or name, 401 token, 404 unknown session,
415 not ``application/sdp``. Every peer connection uses no STUN/TURN servers and host
candidates on ``ice_hosts`` only.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.resources
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCIceServer, RTCSessionDescription
from aiortc.codecs import is_rtx
from aiortc.sdp import SessionDescription

from mmx.errors import InputMissingError, ServiceUnavailableError
from mmx.relay.fastsend import install_fast_rtp
from mmx.relay.hub import FanoutTrack, Hub
from mmx.relay.jitter import bound_decoder_queues, install_marker_release
from mmx.relay.net import HostRestrictedPeerConnection
from mmx.relay.record import RelayRecording
from mmx.relay.stall import STALL_AFTER_S, StallWatch

StatusFn = Callable[[dict[str, Any]], None]
PostFn = Callable[[str, dict[str, Any]], Any]
CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
HERO = "hero"
#: A peer connection that has not connected within this many seconds is dropped.
CONNECT_TIMEOUT_S = 30.0


@dataclass
class PeerSession:
    """One WHIP publisher or WHEP viewer."""

    id: str
    kind: str  # "whip" | "whep"
    name: str  # camera, or "hero"
    pc: HostRestrictedPeerConnection
    created: float = field(default_factory=time.monotonic)
    connected_at: float | None = None  # time.monotonic() when the connection came up
    track: FanoutTrack | None = None
    channel: Any = None
    last_meta_at: float = 0.0
    last_camera: Any = ""
    decoder_queues: list = field(default_factory=list)


class RelayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=_CORS)


_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Expose-Headers": "Location",
}


def _page(name: str) -> str:
    return importlib.resources.files("mmx.relay").joinpath("static", name).read_text(encoding="utf-8")


def check_offer(sdp: str, *, need_vp8: bool) -> None:
    """Raise `RelayError` 400 with the reason when ``sdp`` is not a usable video offer."""
    if not sdp.strip():
        raise RelayError(400, "bad SDP offer: empty body")
    if not sdp.lstrip().startswith("v="):
        raise RelayError(400, "bad SDP offer: does not start with 'v='")
    try:
        parsed = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises assorted errors on garbage
        raise RelayError(400, f"bad SDP offer: {type(exc).__name__}: {exc}") from None
    video = [m for m in parsed.media if m.kind == "video"]
    if not video:
        raise RelayError(400, "bad SDP offer: no video m-line")
    if not video[0].ice.usernameFragment or not video[0].ice.password:
        raise RelayError(400, "bad SDP offer: missing ICE credentials (a=ice-ufrag / a=ice-pwd)")
    if not video[0].dtls or not video[0].dtls.fingerprints:
        raise RelayError(400, "bad SDP offer: missing DTLS fingerprint (a=fingerprint)")
    if need_vp8 and not any(c.mimeType.lower() == "video/vp8" for c in video[0].rtp.codecs):
        raise RelayError(400, "bad SDP offer: no VP8 video codec (the relay sends VP8)")


async def _drain(track: Any) -> None:
    """Read and drop a track's frames until it ends (aiortc queues them without bound)."""
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


class Relay:
    """One relay: the hub, the peer sessions and the aiohttp application.

    ``token`` None disables the check. ``ice_servers`` are STUN/TURN URLs (``stun:host:port``;
    none by default). ``ice_hosts`` restricts host candidates (empty: every
    interface as aioice chooses). ``on_status`` receives one dict per notable change.
    ``fast_rtp`` sends viewers' packets with `mmx.relay.fastsend` (False: aiortc's own loop).
    ``post_event(type, data)`` receives the relay's events for mmx serve (``recording.*``,
    ``relay.stalled``, ``relay.resumed``); ``recording`` (`mmx.relay.record`) writes the ISOs
    and the program while a take is armed; ``stall_after_s`` is the silence after which a
    publisher is stalled.
    """

    def __init__(self, *, token: str | None = None, ice_hosts: Sequence[str] = ("127.0.0.1",),
                 ice_servers: Sequence[str] = (),
                 on_status: StatusFn | None = None, lost_after_s: float = 1.0, fast_rtp: bool = True,
                 post_event: PostFn | None = None, stall_after_s: float = STALL_AFTER_S) -> None:
        install_marker_release()
        self.token = token
        self.fast_rtp = fast_rtp
        self.ice_hosts = list(ice_hosts)
        self.ice_servers = [RTCIceServer(urls=url) for url in ice_servers]
        self.on_status = on_status or (lambda record: None)
        self.hub = Hub(lost_after_s=lost_after_s, report=self.on_status)
        self.sessions: dict[str, PeerSession] = {}
        self.post_event = post_event or (lambda type, data: None)
        self.recording = RelayRecording(self.hub, post=lambda type, data: self.post_event(type, data),
                                        report=self.on_status)
        self.hub.on_program.append(self.recording.program_changed)
        self.stalls = StallWatch(self.hub, on_change=self._stall_changed, stall_after_s=stall_after_s,
                                 is_current=lambda session: self.sessions.get(session.id) is session)
        self.app = self._make_app()

    # ------------------------------------------------------------------ app
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware], client_max_size=256 * 1024)
        app.add_routes([
            web.get("/", self.viewer_page),
            web.get("/publish/{camera}", self.publish_page),
            web.get("/status", self.status),
            web.post("/whip/{camera}", self.whip),
            web.delete("/whip/{camera}/{session}", self.delete_session),
            web.post("/whep/{name}", self.whep),
            web.delete("/whep/{name}/{session}", self.delete_session),
            web.patch("/whip/{camera}/{session}", self.no_trickle),
            web.patch("/whep/{name}/{session}", self.no_trickle),
        ])
        app.on_shutdown.append(lambda _app: self.close())
        return app

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_CORS)
        if self.token is not None:
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            try:
                raw = given.encode("utf-8")
            except UnicodeEncodeError:  # a non-UTF-8 header (aiohttp keeps its bytes surrogate-escaped): wrong
                raw = None
            if raw is None or not hmac.compare_digest(raw, self.token.encode()):
                return _json_error(401, "missing or wrong token")
        try:
            return await handler(request)
        except RelayError as exc:
            return _json_error(exc.status, exc.message)

    async def viewer_page(self, request: web.Request) -> web.Response:
        return web.Response(text=_page("index.html"), content_type="text/html")

    async def publish_page(self, request: web.Request) -> web.Response:
        self._check_camera(request.match_info["camera"])
        return web.Response(text=_page("publish.html"), content_type="text/html")

    async def status(self, request: web.Request) -> web.Response:
        body = self.hub.status()
        body["recording"] = self.recording.status()
        body["sessions"] = [{"session": s.id, "kind": s.kind, "name": s.name,
                             "state": s.pc.connectionState} for s in self.sessions.values()]
        return web.json_response(body, headers=_CORS)

    async def no_trickle(self, request: web.Request) -> web.Response:
        return _json_error(405, "trickle ICE is not supported: send the complete offer")

    # ------------------------------------------------------------------ sessions
    @staticmethod
    def _check_camera(name: str) -> None:
        if not CAMERA_RE.match(name) or name == HERO:
            raise RelayError(400, f"bad camera name {name!r}: letters, digits, '_', '.', ':', '-', up to 64, not 'hero'")

    async def _read_offer(self, request: web.Request, *, need_vp8: bool) -> str:
        if request.content_type != "application/sdp":
            raise RelayError(415, f"expected Content-Type application/sdp, got {request.content_type or 'none'}")
        try:
            sdp = await request.text()
        except UnicodeDecodeError:
            raise RelayError(400, "bad SDP offer: not UTF-8 text") from None
        check_offer(sdp, need_vp8=need_vp8)
        return sdp

    def _new_session(self, kind: str, name: str) -> PeerSession:
        pc = HostRestrictedPeerConnection(ice_hosts=self.ice_hosts, ice_servers=self.ice_servers)
        session = PeerSession(id=secrets.token_urlsafe(12), kind=kind, name=name, pc=pc)
        self.sessions[session.id] = session

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            state = pc.connectionState
            if state in ("failed", "closed"):
                await self._end(session, reason=state)
            elif state == "connected":
                session.connected_at = time.monotonic()
                self.on_status({"status": f"{kind}_connected", "name": name, "session": session.id})

        asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._drop_if_unconnected, session)
        return session

    def _drop_if_unconnected(self, session: PeerSession) -> None:
        if session.id in self.sessions and session.pc.connectionState != "connected":
            asyncio.ensure_future(self._end(session, reason="connect timeout"))

    async def _answer(self, session: PeerSession, offer: str) -> str:
        try:
            await session.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            await self._end(session, reason="bad offer", quiet=True)
            raise RelayError(400, f"bad SDP offer: {exc}") from None
        if session.kind == "whep":
            self._limit_to_vp8(session)
        else:
            session.decoder_queues = bound_decoder_queues(session.pc)
        await session.pc.setLocalDescription(await session.pc.createAnswer())
        return session.pc.localDescription.sdp

    @staticmethod
    def _limit_to_vp8(session: PeerSession) -> None:
        # the shared encoder produces VP8; the sender only packetizes it, so no other codec
        # may be negotiated (aiortc has no public API for this on an answering transceiver)
        for transceiver in session.pc.getTransceivers():
            if transceiver.kind != "video":
                continue
            vp8 = [c for c in transceiver._codecs if c.mimeType.lower() == "video/vp8"]
            pts = {c.payloadType for c in vp8}
            rtx = [c for c in transceiver._codecs if is_rtx(c) and c.parameters.get("apt") in pts]
            transceiver._codecs = vp8[:1] + [r for r in rtx if r.parameters.get("apt") == vp8[0].payloadType][:1]

    def _created(self, request: web.Request, session: PeerSession, answer: str) -> web.Response:
        location = f"/{session.kind}/{session.name}/{session.id}"
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={**_CORS, "Location": location})

    async def whip(self, request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        self._check_camera(camera)
        offer = await self._read_offer(request, need_vp8=False)
        session = self._new_session("whip", camera)
        feed = self.hub.feed(camera)
        previous = feed.session
        self.stalls.start()

        @session.pc.on("track")
        def _on_track(track: Any) -> None:
            if track.kind == "video":
                asyncio.ensure_future(self.hub.pump(feed, track, session))
            else:  # audio is not relayed; read it anyway so aiortc's queue stays empty
                asyncio.ensure_future(_drain(track))

        answer = await self._answer(session, offer)
        feed.session = session  # a new publisher for the camera replaces the old one
        feed.decoder_queues = session.decoder_queues
        self.recording.publisher(camera, session.id, session.decoder_queues)
        if isinstance(previous, PeerSession) and previous.id in self.sessions:
            asyncio.ensure_future(self._end(previous, reason="replaced"))
        self.on_status({"status": "publisher", "camera": camera, "session": session.id})
        return self._created(request, session, answer)

    async def whep(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != HERO:
            self._check_camera(name)
        offer = await self._read_offer(request, need_vp8=True)
        session = self._new_session("whep", name)
        encoder = self.hub.encoder_for(None if name == HERO else name)
        track = encoder.attach()
        session.track = track
        track.on_frame = lambda entry: self._meta(session, entry)

        @session.pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            session.channel = channel

        session.pc.addTrack(track)
        try:
            answer = await self._answer(session, offer)
        except BaseException:
            track.stop()
            raise
        for sender in session.pc.getSenders():
            if sender.track is track:
                # PLI/FIR from this viewer: one keyframe for everyone (rate-limited)
                sender._send_keyframe = encoder.request_keyframe
                if self.fast_rtp:
                    install_fast_rtp(sender, track)
        self.on_status({"status": "viewer", "name": name, "session": session.id, "viewers": encoder.viewers})
        return self._created(request, session, answer)

    def _meta(self, session: PeerSession, entry: Any) -> None:
        """Tell a viewer page which camera it is seeing and how long the relay held the frame."""
        channel = session.channel
        if channel is None or channel.readyState != "open":
            return
        now = time.monotonic()
        if entry.camera == session.last_camera and now - session.last_meta_at < 0.5:
            return
        session.last_camera, session.last_meta_at = entry.camera, now
        try:
            channel.send(json.dumps({"camera": entry.camera, "program": self.hub.program,
                                     "relay_ms": round(entry.relay_ms, 1), "ts": time.time()}))
        except Exception:  # a closing channel must not disturb the media path
            pass

    async def delete_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["session"])
        name = request.match_info.get("camera") or request.match_info.get("name")
        if session is None or session.name != name:
            raise RelayError(404, "no such session")
        await self._end(session, reason="deleted")
        return web.Response(status=204, headers=_CORS)

    async def _end(self, session: PeerSession, *, reason: str, quiet: bool = False) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        if session.track is not None:
            session.track.stop()
        if session.kind == "whip":
            feed = self.hub.cameras.get(session.name)
            if feed is not None and feed.session is session:
                feed.live = False
                self.hub.frame_arrived(feed)
        await session.pc.close()
        if not quiet:
            self.on_status({"status": f"{session.kind}_closed", "name": session.name,
                            "session": session.id, "reason": reason})

    def _stall_changed(self, kind: str, data: dict[str, Any]) -> None:
        self.on_status({"status": kind, **data})
        self.post_event(f"relay.{kind}", data)

    async def close(self) -> None:
        await self.stalls.close()
        await self.recording.close()
        for session in list(self.sessions.values()):
            await self._end(session, reason="shutdown", quiet=True)
        await self.hub.close()


async def serve_relay(relay: Relay, *, host: str = "127.0.0.1", port: int = 8760) -> web.AppRunner:
    """Start ``relay`` listening on ``host:port``; returns the runner (``await runner.cleanup()`` stops).

    Raises `ServiceUnavailableError` when the address cannot be bound.
    """
    runner = web.AppRunner(relay.app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceUnavailableError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                                      hint="pick another --port or stop what is using it") from None
    return runner


async def run_relay(*, server: str | None, host: str = "127.0.0.1", port: int = 8760, token: str | None = None,
                    ice_hosts: Sequence[str] = ("127.0.0.1",), ice_servers: Sequence[str] = (),
                    events: str | None = None,
                    on_status: StatusFn | None = None, on_error: Callable[[Any], None] | None = None,
                    stop: asyncio.Event | None = None, status_interval_s: float = 5.0) -> None:
    """Run a relay until ``stop`` is set: serve HTTP, follow cuts, report status.

    Cuts come from ``events`` (``'-'`` stdin, or a JSON Lines file path) when given, else from
    mmx serve at ``server``, which then also receives the relay's events (``relay.stalled``,
    ``relay.resumed``) on ``POST /v1/events``. ``on_status`` gets ``{"status": "listening", "url": …}`` first,
    then changes and a ``{"status": "stats", …}`` record every ``status_interval_s``.
    Raises `ServiceUnavailableError` when ``host:port`` cannot be bound, `InputMissingError`
    when the events file does not exist.
    """
    from mmx.events import read_events, stdin_reader
    from mmx.relay.director import apply_event, follow_server, follow_stream
    from mmx.relay.record import ServePoster

    report = on_status or (lambda record: None)
    stop = stop or asyncio.Event()
    # the relay's own events go where its cuts come from: to serve, when it follows serve
    poster = ServePoster(server, token=token, report=report) if server and not events else None
    relay = Relay(token=token, ice_hosts=ice_hosts, ice_servers=ice_servers, on_status=report,
                  post_event=poster.post if poster else None)
    runner = await serve_relay(relay, host=host, port=port)
    report({"status": "listening", "url": f"http://{host}:{port}"})
    tasks: list[asyncio.Task] = []
    try:
        if poster is not None:
            tasks.append(asyncio.ensure_future(poster.run()))
        if events == "-":
            reader = await stdin_reader()
            # `mmx serve | mmx relay --events -`: the takes come on the same stream
            tasks.append(asyncio.ensure_future(follow_stream(relay.hub, reader, on_status=report, on_error=on_error,
                                                             on_event=relay.recording.handle)))
        elif events:
            try:
                fp = open(events, "rb")
            except OSError as exc:
                raise InputMissingError(f"cannot read {events}: {exc.strerror}") from None
            with fp:
                for event in read_events(fp, on_error=on_error):
                    apply_event(relay.hub, event, report)
        elif server:
            tasks.append(asyncio.ensure_future(follow_server(
                relay.hub, server, token=token, on_status=report, on_error=on_error, types="director.*,recording.*",
                on_event=relay.recording.handle, on_state=relay.recording.handle_state)))

        async def stats() -> None:
            while True:
                await asyncio.sleep(status_interval_s)
                report({"status": "stats", **relay.hub.status()})

        tasks.append(asyncio.ensure_future(stats()))
        await stop.wait()
        await relay.stalls.close()
        await relay.recording.close()  # trailers and sha256, then recording.stopped for serve
        if poster is not None:
            await poster.flush()  # the last recording.stopped or relay.stalled still lands
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await relay.close()
        await runner.cleanup()
