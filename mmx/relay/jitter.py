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
"""

from __future__ import annotations

from typing import Optional

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
