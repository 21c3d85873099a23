"""Publishing a device's video to `mmx relay` over WHIP (``POST {relay}/whip/{camera}``).

The track shows the same picture as the previews (`DeviceClient.current_view`: the video or
test pattern with the current zoom crop and front-facing mirror), rendered at the preview
size. Publishing waits until the server has given the device its camera id, and starts
over with backoff when the relay is unreachable, refuses, or the peer connection fails.
The WHIP client itself is `mmx.relay.client.whip_publish` (loopback host candidates only,
no STUN/TURN).

A connection can stay up while no media gets through (issue 17 item 9: a feed at 0 fps for
good, its previews fine). `MediaWatch` looks at what the device itself can see — the RTP
packets its sender has sent, and the relay's RTCP receiver reports, whose highest sequence
number says what the relay got (RFC 3550 section 6.4.2) — and after ``STALL_AFTER_S`` (2 s)
without progress on either the device drops the session and publishes anew (a new WHIP
session), so the feed is back within ~3 s of the stall. A frame the picture source fails
to render is replaced by the last good one rather than ending the track.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket, is_rtcp

from mmx.errors import MmxError

#: RTP video clock (RFC 3551): 90 kHz.
VIDEO_CLOCK_HZ = 90000
#: Seconds without media progress (packets sent, or packets the relay reports received)
#: after which the device republishes. aiortc's receivers report every 0.5–1.5 s, so the
#: last report that showed progress is at most 1.5 s old when media stops.
STALL_AFTER_S = 2.0
#: How often the publication is checked (s).
CHECK_INTERVAL_S = 0.25


class MediaWatch:
    """Says when a WHIP publication has stalled, from the device's side of it.

    Feed it ``sent(seq, now)`` each check (the RTP sequence number of the last packet sent,
    None before the first) and ``report(highest_seq, now)`` for each RTCP receiver report
    from the relay about this stream, ``now`` in `time.monotonic` seconds. A report says
    which packet the relay got last; the watch dates it by when that packet was sent, so the
    relay's silence is timed from the loss itself, not from a report that came up to 1.5 s
    later. ``stalled(now)`` returns the reason once ``stall_after_s`` has passed without
    progress, else None:

    - ``"no RTP sent"``: nothing sent (the track produced no frame: a hung picture source,
      an ended sender loop);
    - ``"relay received nothing"``: the relay's reports stay on a packet sent that long ago
      while newer ones went out (lost on the way, or the relay's receiver is stuck);
    - ``"no receiver report"``: the same, and the relay never reported at all.

    The clock starts at ``start`` (the second the connection came up).
    """

    def __init__(self, start: float, *, stall_after_s: float = STALL_AFTER_S) -> None:
        self.stall_after_s = stall_after_s
        self.last_seq: int | None = None
        self.sent_at = start  # when the last sent seq last moved
        self.highest_seq: int | None = None
        self.reports = 0
        self.acked_at = start  # when the packet the relay last reported was sent (or the start)
        self._sent: deque[tuple[float, int]] = deque(maxlen=128)  # (time, last seq sent by then)

    def sent(self, seq: int | None, now: float) -> None:
        if seq is not None and seq != self.last_seq:
            self.last_seq, self.sent_at = seq, now
            self._sent.append((now, seq))

    def report(self, highest_seq: int, now: float) -> None:
        self.reports += 1
        if highest_seq == self.highest_seq:
            return
        self.highest_seq = highest_seq
        # the first check by which that packet had gone out (RTP numbers wrap at 2**16)
        self.acked_at = next((t for t, seq in self._sent if (seq - highest_seq) & 0xFFFF < 0x8000), now)

    def stalled(self, now: float) -> str | None:
        if now - self.sent_at >= self.stall_after_s:
            return "no RTP sent"
        if now - self.acked_at >= self.stall_after_s and self.last_seq != self.highest_seq:
            return "relay received nothing" if self.reports else "no receiver report"
        return None


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
        self._last_image: Any = None
        self.frames_sent = 0
        self.render_errors = 0

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
        try:
            image = await asyncio.to_thread(self._render)
            self._last_image = image
        except Exception:
            # an exception here would end aiortc's sender loop for good while the
            # connection stays up: keep the picture going with the last good frame
            if self._last_image is None:
                raise
            self.render_errors += 1
            image = self._last_image
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

    Republishes when the camera id changes (a new server registry), the connection fails,
    or media stops getting through (`MediaWatch`). Reports ``relay`` events through ``emit``
    (``published``, ``failed``, ``stalled`` with the ``error`` reason).
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
            emit("relay", status="published", url=whip_url(relay, camera))
            done = asyncio.Event()

            @session.pc.on("connectionstatechange")
            def _on_state() -> None:
                if session.pc.connectionState in ("failed", "closed"):
                    done.set()

            sender = next(s for s in session.pc.getSenders() if s.track is track)
            watch: MediaWatch | None = None
            reports, rtp = _watch_reports(sender), _watch_rtp(sender)
            stalled = None
            while not stopping.is_set() and not done.is_set() and client.camera == camera:
                await _wait(stopping, done.wait(), CHECK_INTERVAL_S)
                if session.pc.connectionState != "connected":
                    continue
                now = time.monotonic()
                if watch is None:
                    watch = MediaWatch(now)
                    reports.watch = watch
                watch.sent(rtp.last_seq, now)
                if watch.highest_seq is not None:
                    failures = 0  # media got through: the next trouble starts the backoff afresh
                stalled = "video track ended" if track.readyState != "live" else watch.stalled(now)
                if stalled:
                    break
            if done.is_set():
                failures += 1
                emit("relay", status="failed", error=f"peer connection {session.pc.connectionState}")
            elif stalled and not stopping.is_set():
                failures += 1
                emit("relay", status="stalled", error=stalled, url=whip_url(relay, camera))
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


class _RtpTap:
    """Notes the sequence number of each RTP packet ``sender`` sends (RFC 3550 section 5.1)."""

    def __init__(self, sender: Any) -> None:
        self.last_seq: int | None = None
        self._ssrc = sender._ssrc.to_bytes(4, "big")
        self._send = sender.transport._send_rtp

    async def __call__(self, data: bytes) -> None:
        if len(data) >= 12 and data[8:12] == self._ssrc and not is_rtcp(data):
            self.last_seq = (data[2] << 8) | data[3]
        await self._send(data)


def _watch_rtp(sender: Any) -> _RtpTap:
    # one video sender per connection: its DTLS transport carries only this stream's RTP
    tap = _RtpTap(sender)
    sender.transport._send_rtp = tap
    return tap


class _ReportTap:
    """Hands the relay's RTCP receiver reports about ``sender``'s stream to a `MediaWatch`."""

    def __init__(self, sender: Any) -> None:
        self.watch: MediaWatch | None = None
        self._sender = sender
        self._handle = sender._handle_rtcp_packet

    async def __call__(self, packet: Any) -> None:
        if self.watch is not None and isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self._sender._ssrc:
                    self.watch.report(report.highest_sequence, time.monotonic())
        await self._handle(packet)


def _watch_reports(sender: Any) -> _ReportTap:
    # aiortc's DTLS transport routes each RTCP packet to ``recipient._handle_rtcp_packet``
    # (aiortc 1.16 rtcdtlstransport.py), looked up on the instance: wrap it there
    tap = _ReportTap(sender)
    sender._handle_rtcp_packet = tap
    return tap


async def _wait(stopping: asyncio.Event, aw: Any, timeout: float | None) -> None:
    """Wait for ``aw`` or ``stopping``, at most ``timeout`` seconds."""
    task = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stop):
            t.cancel()
