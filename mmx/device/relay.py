"""Publishing a device's video to `mmx relay` over WHIP (``POST {relay}/whip/{camera}``).

The track shows the same picture as the previews (`DeviceClient.current_view`: the video or
test pattern with the current zoom crop and front-facing mirror), rendered at the preview
size. Publishing waits until the server has given the device its camera id, and starts
over with backoff when the relay is unreachable, refuses, or the peer connection fails.
The WHIP client itself is `mmx.relay.client.whip_publish` (loopback host candidates only,
no STUN/TURN).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from mmx.errors import MmxError

#: RTP video clock (RFC 3551): 90 kHz.
VIDEO_CLOCK_HZ = 90000


class DeviceVideoTrack(MediaStreamTrack):
    """An aiortc video track fed by ``render()`` (a Pillow image) at ``fps`` frames per second.

    Rendering runs in a worker thread so the device's acks are never held up by it. A late
    frame is dropped, not queued (a stalled loop does not burst).
    """

    kind = "video"

    def __init__(self, render: Callable[[], Any], fps: float) -> None:
        super().__init__()
        self._render = render
        self._fps = fps if fps > 0 else 15.0
        self._start: float | None = None
        self.frames_sent = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self.frames_sent / self._fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.5:
            self._start = now - self.frames_sent / self._fps
        image = await asyncio.to_thread(self._render)
        frame = av.VideoFrame.from_image(image)
        frame.pts = int((time.monotonic() - self._start) * VIDEO_CLOCK_HZ)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_HZ)
        self.frames_sent += 1
        return frame


def whip_url(relay: str, camera: str) -> str:
    """``{relay}/whip/{camera}`` (a trailing slash on ``relay`` is dropped)."""
    return f"{relay.rstrip('/')}/whip/{camera}"


async def publish_to_relay(client: Any, relay: str, *, token: str | None, stopping: asyncio.Event,
                           emit: Callable[..., None], backoff: Callable[[int], float]) -> None:  # fmt: skip
    """Keep ``client``'s video published at ``relay`` until ``stopping`` is set.

    Republishes when the camera id changes (a new server registry) or the connection fails.
    Reports ``relay`` events through ``emit`` (``published``, ``failed``).
    """
    from mmx.relay.client import whip_publish

    failures = 0
    while not stopping.is_set():
        if client.camera is None:
            await _wait(stopping, client.connected.wait(), 5.0)
            continue
        camera = client.camera
        track = DeviceVideoTrack(client.current_view, client.config.fps or 15.0)
        session = None
        try:
            session = await whip_publish(whip_url(relay, camera), track, token=token)
            failures = 0
            emit("relay", status="published", url=whip_url(relay, camera))
            done = asyncio.Event()

            @session.pc.on("connectionstatechange")
            def _on_state() -> None:
                if session.pc.connectionState in ("failed", "closed"):
                    done.set()

            while not stopping.is_set() and not done.is_set() and client.camera == camera:
                await _wait(stopping, done.wait(), 1.0)
            if done.is_set():
                failures += 1
                emit("relay", status="failed", error=f"peer connection {session.pc.connectionState}")
        except MmxError as exc:
            failures += 1
            emit("relay", status="failed", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - aiortc/aioice errors must not end the camera
            failures += 1
            emit("relay", status="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            track.stop()
            if session is not None:
                await session.close()
        if not stopping.is_set() and failures:
            await _wait(stopping, asyncio.sleep(backoff(failures - 1)), None)


async def _wait(stopping: asyncio.Event, aw: Any, timeout: float | None) -> None:
    """Wait for ``aw`` or ``stopping``, at most ``timeout`` seconds."""
    task = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stop):
            t.cancel()
