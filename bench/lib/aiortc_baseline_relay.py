#!/usr/bin/env python3
"""A hero relay made of stock aiortc only: the baseline side of bench/relay_bench.py.

    python bench/lib/aiortc_baseline_relay.py --port P   # cuts as JSON Lines on stdin

The same doors the bench uses on `mmx relay`: ``POST /whip/{camera}`` and ``POST /whep/hero``
(SDP offer in, ``201`` answer with a ``Location``), ``DELETE`` on that location, ``GET /status``,
and ``director.cut`` events (``{"type": "director.cut", "data": {"to": camera}}``) one per line
on stdin. No token check, no slate, no recording.

Forwarding is the stock way, as in aiortc's ``examples/server/server.py``: aiortc's receiver
decodes each publisher's VP8, `aiortc.contrib.media.MediaRelay` hands the decoded frames of the
program camera to every viewer, and each viewer's `RTCRtpSender` encodes them again with its
own VP8 encoder. The one non-media change: ICE host candidates on 127.0.0.1 only, with no
STUN/TURN servers (aioice offers no per-connection choice and skips loopback, so this process
replaces its address lookup).
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import secrets
import signal
import sys
import time

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # loopback only

CLOCK = 90000


class HeroTrack(MediaStreamTrack):
    """The program camera's decoded frames, re-stamped on one clock so a cut is seamless to the
    viewers' RTP timestamps (each publisher's pts has its own origin)."""

    kind = "video"

    def __init__(self, relay: MediaRelay) -> None:
        super().__init__()
        self.relay = relay
        self.cameras: dict[str, MediaStreamTrack] = {}  # camera → its MediaRelay proxy
        self.program: str | None = None
        self.frames = 0
        self.changed = asyncio.Event()
        self.t0 = time.monotonic()

    def add_camera(self, name: str, track: MediaStreamTrack) -> None:
        # a blackhole keeps every camera read (aiortc's receive queue is unbounded), so the
        # proxy below always holds the camera's latest frame
        blackhole = MediaBlackhole()
        blackhole.addTrack(self.relay.subscribe(track, buffered=False))
        asyncio.ensure_future(blackhole.start())
        self.cameras[name] = self.relay.subscribe(track, buffered=False)
        self.changed.set()

    def cut(self, camera: str) -> None:
        self.program = camera
        self.changed.set()

    async def recv(self):
        while True:
            proxy = self.cameras.get(self.program)
            self.changed.clear()
            if proxy is None or proxy.readyState != "live":
                await self.changed.wait()
                continue
            frame_wait = asyncio.ensure_future(proxy.recv())
            cut_wait = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({frame_wait, cut_wait}, return_when=asyncio.FIRST_COMPLETED)
            cut_wait.cancel()
            if not frame_wait.done():
                frame_wait.cancel()
                continue  # cut while waiting: read the new camera
            try:
                frame = frame_wait.result()
            except MediaStreamError:
                continue
            frame.pts = int((time.monotonic() - self.t0) * CLOCK)
            frame.time_base = fractions.Fraction(1, CLOCK)
            self.frames += 1
            return frame


class BaselineRelay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.hero = HeroTrack(self.relay)
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.app = web.Application()
        self.app.add_routes([
            web.post("/whip/{camera}", self.whip), web.post("/whep/{name}", self.whep),
            web.delete("/{kind}/{name}/{session}", self.delete), web.get("/status", self.status),
        ])

    def _pc(self) -> tuple[str, RTCPeerConnection]:
        session, pc = secrets.token_urlsafe(9), RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs[session] = pc

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.pcs.pop(session, None)
                await pc.close()

        return session, pc

    async def _answer(self, request: web.Request, pc: RTCPeerConnection, location: str) -> web.Response:
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": location})

    async def whip(self, request: web.Request) -> web.Response:
        camera = request.match_info["camera"]
        session, pc = self._pc()

        @pc.on("track")
        def _track(track: MediaStreamTrack) -> None:
            if track.kind == "video":
                self.hero.add_camera(camera, track)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        return await self._answer(request, pc, f"/whip/{camera}/{session}")

    async def whep(self, request: web.Request) -> web.Response:
        session, pc = self._pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        pc.addTrack(self.relay.subscribe(self.hero, buffered=False))
        return await self._answer(request, pc, f"/whep/hero/{session}")

    async def delete(self, request: web.Request) -> web.Response:
        pc = self.pcs.pop(request.match_info["session"], None)
        if pc is None:
            return web.json_response({"error": "no such session"}, status=404)
        await pc.close()
        return web.Response(status=204)

    async def status(self, request: web.Request) -> web.Response:
        # "encoded" counts hero frames handed to the viewers (each viewer encodes them again)
        return web.json_response({"program": self.hero.program, "hero": {"encoded": self.hero.frames},
                                  "cameras": [{"camera": name, "dropped": 0} for name in self.hero.cameras]})

    async def follow_cuts(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") == "director.cut":
                to = (event.get("data") or {}).get("to")
                if isinstance(to, str):
                    self.hero.cut(to)

    async def close(self) -> None:
        await asyncio.gather(*(pc.close() for pc in list(self.pcs.values())), return_exceptions=True)


async def main(port: int) -> None:
    relay = BaselineRelay()
    runner = web.AppRunner(relay.app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"aiortc baseline relay listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cuts = asyncio.ensure_future(relay.follow_cuts())
    await stop.wait()
    cuts.cancel()
    await asyncio.wait_for(relay.close(), 10)
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
