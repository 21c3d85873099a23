"""Release video frames from aiortc's jitter buffer as soon as the RTP marker bit completes them.

Stock aiortc (``aiortc.jitterbuffer.JitterBuffer``, 1.16) only knows a frame is complete when
the first packet of the *next* frame arrives (a new RTP timestamp), so every receive hop holds
each frame for about one frame interval (33 ms at 30 fps). For video the RTP marker bit is set
on the last packet of a frame (RFC 7741 section 4.1 for VP8, RFC 6184 section 5.1 for H.264),
so a contiguous run of packets from the buffer's origin that ends in a marked packet is a whole
frame and can go to the decoder at once.

The patch is a subclass plus an explicit installer that swaps the class aiortc's
``RTCRtpReceiver`` instantiates. Audio buffers keep the stock behaviour (for audio the marker
means the start of a talkspurt). aiortc is pinned to ``1.16.*`` in pyproject.toml because the
subclass relies on the buffer's private layout; `install_marker_release` refuses other versions.

`bound_decoder_queues` bounds the other receive-side queue (encoded frames waiting for the
decoder thread), so an overloaded receiver drops to a keyframe instead of falling behind.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from typing import Any, Optional

import aiortc
import aiortc.rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from mmx.errors import InternalError

#: The aiortc minor version whose jitter buffer layout this module was written against.
PATCHED_AIORTC = "1.16"


class MarkerJitterBuffer(JitterBuffer):
    """A `JitterBuffer` that hands out a video frame when its marker-bit packet completes it.

    Frames are still released only from a gap-free run starting at the buffer's origin, so a
    missing packet holds its frame (for NACK retransmission) exactly as the stock buffer does;
    a frame whose marker packet was lost is released by the stock rule (a new timestamp).
    """

    def _remove_frame(self, sequence_number: int) -> Optional[JitterFrame]:
        if not self._is_video or self._prefetch:
            return super()._remove_frame(sequence_number)
        packets = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                # the marker of the previous frame never came: the stock rule applies
                frame = JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]
                self.remove(count)
                return frame
            packets.append(packet)
            if packet.marker:
                frame = JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)  # type: ignore[attr-defined]
                self.remove(count + 1)
                return frame
        return None


def install_marker_release() -> None:
    """Make every `aiortc.RTCRtpReceiver` created from now on use `MarkerJitterBuffer`.

    Idempotent and process-wide. Raises `InternalError` when the installed aiortc is not the
    pinned minor version (the subclass depends on aiortc's private buffer layout).
    """
    if not aiortc.__version__.startswith(PATCHED_AIORTC + "."):
        raise InternalError(
            f"mmx relay patches aiortc {PATCHED_AIORTC}.x, found {aiortc.__version__}",
            hint="install the pinned version: pip install 'aiortc==1.16.*'",
        )
    aiortc.rtcrtpreceiver.JitterBuffer = MarkerJitterBuffer  # type: ignore[misc]


def marker_release_installed() -> bool:
    """True when `install_marker_release` is in effect."""
    return aiortc.rtcrtpreceiver.JitterBuffer is MarkerJitterBuffer


# ---------------------------------------------------------------------------------------------
# A bounded decoder queue: aiortc hands every reassembled frame to its decoder thread through
# an unbounded queue.Queue, so a receiver whose decoder is starved of CPU falls further and
# further behind (seconds of latency). This queue keeps at most ``max_frames``; on overflow it
# drops what is waiting, asks the sender for a keyframe (PLI) and skips frames until one
# arrives, so the picture never breaks and the delay stays bounded.

def is_keyframe(codec_name: str, data: bytes) -> bool | None:
    """Whether an encoded frame is a keyframe: VP8 (RFC 6386 section 9.1, frame tag bit 0
    clear) or H.264 Annex B (an IDR NAL unit, type 5). None for other codecs."""
    if not data:
        return False
    if codec_name == "VP8":
        return not (data[0] & 0x01)
    if codec_name == "H264":
        i = 0
        while True:
            i = data.find(b"\x00\x00\x01", i)
            if i < 0 or i + 3 >= len(data):
                return False
            if data[i + 3] & 0x1F == 5:
                return True
            i += 3
    return None


class BoundedDecoderQueue(queue.Queue):
    """A drop-in for ``RTCRtpReceiver``'s decoder queue holding at most ``max_frames`` frames.

    A full queue drops what the decoder has not reached: a keyframe arriving replaces it all; an
    inter frame arriving is dropped with all but the newest queued keyframe, and the queue then
    drops inter frames until the next keyframe.

    ``request_keyframe()`` is called (on the event loop thread, where aiortc puts frames) when
    frames had to be dropped, at most once per ``min_request_interval_s``; a receiver still
    waiting after that asks again with its next dropped frame. ``dropped`` counts dropped frames.
    ``on_frame(codec, encoded_frame, keyframe)``, when set, sees every frame first, dropped or
    not (the relay's recorder, `mmx.relay.record`).
    """

    def __init__(self, max_frames: int, request_keyframe: Callable[[], None], *,
                 min_request_interval_s: float = 0.5) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.request_keyframe = request_keyframe
        self.min_request_interval_s = min_request_interval_s
        self.dropped = 0
        self._await_keyframe = False
        self._requested_at = -1e9
        self.on_frame: Callable[[Any, Any, bool | None], None] | None = None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # the decoder thread's stop signal
            return super().put(item, block, timeout)
        codec, encoded_frame = item
        key = is_keyframe(codec.name, encoded_frame.data)
        if self.on_frame is not None:
            self.on_frame(codec, encoded_frame, key)
        if self._await_keyframe:
            if key is False:
                self.dropped += 1
                self._ask()
                return
            self._await_keyframe = False
        if self.qsize() >= self.max_frames and key is not None:
            with self.mutex:
                # an inter frame overflowing keeps the newest queued keyframe: a decoder too slow
                # to reach it before the queue fills again would otherwise never decode anything
                newest_key = None if key else next(
                    (queued for queued in reversed(self.queue)
                     if queued is not None and is_keyframe(queued[0].name, queued[1].data)), None)
                kept = [queued for queued in self.queue if queued is None or queued is newest_key]
                flushed = len(self.queue) - len(kept)
                self.queue.clear()
                self.queue.extend(kept)
                self.unfinished_tasks = max(0, self.unfinished_tasks - flushed)
            self.dropped += flushed
            if not key:
                self.dropped += 1
                self._await_keyframe = True
                self._ask()
                return
        super().put(item, block, timeout)

    def _ask(self) -> None:
        # a starved receiver asking for keyframes too often feeds its own starvation
        now = time.monotonic()
        if now - self._requested_at >= self.min_request_interval_s:
            self._requested_at = now
            self.request_keyframe()


def bound_decoder_queues(pc: Any, *, max_frames: int = 5) -> list[BoundedDecoderQueue]:
    """Give every video receiver of ``pc`` not yet started a `BoundedDecoderQueue`.

    Call after the transceivers exist and before the connection is up (aiortc starts the
    decoder thread, which takes the queue, once DTLS is connected). Returns the new queues.
    """
    queues = []
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "video" or getattr(receiver, "_RTCRtpReceiver__decoder_thread", True) is not None:
            continue

        def request(receiver: Any = receiver) -> None:
            for source in receiver.getSynchronizationSources():
                asyncio.ensure_future(receiver._send_rtcp_pli(source.source))

        bounded = BoundedDecoderQueue(max_frames, request)
        receiver._RTCRtpReceiver__decoder_queue = bounded
        queues.append(bounded)
    return queues
