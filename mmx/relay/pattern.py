"""The mmx test pattern: a source id and a send time written into a frame's pixels as blocks.

Used by the relay's tests and benchmark (and by any publisher that wants glass-to-glass
latency): 64 bits in two rows of 32 square blocks at the top-left of the luma plane, black
(Y=16) for 0 and white (Y=235) for 1, robust to VP8/H.264 compression because each block is
read as the mean of its centre. Bits, most significant first:

    8 bits magic 0xA5 · 8 bits source id · 40 bits send time in ms (Unix ms mod 2**40) · 8 bits CRC-8

Block side ``b = max(8, width // 40 // 4 * 4)`` pixels (16 at 640 wide, 32 at 1280), margin
``b`` from the top-left corner, so a reader needs only the decoded frame's width. Source id
255 is reserved for the relay's "camera lost" slate. The viewer page decodes the same layout
in JavaScript (static/index.html).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from av import VideoFrame

MAGIC = 0xA5
SLATE_SOURCE = 255
ROWS, COLS = 2, 32
TIME_MOD = 1 << 40
_BLACK, _WHITE, _GRAY = 16, 235, 128


def crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07, init 0) of ``data``."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def block_size(width: int) -> int:
    """Side of one pattern block in pixels for a frame ``width`` pixels wide."""
    return max(8, width // 40 // 4 * 4)


@dataclass(frozen=True)
class Stamp:
    """What a frame's pattern says: ``source`` id (0..255) and ``sent_ms`` (Unix ms mod 2**40)."""

    source: int
    sent_ms: int

    def age_ms(self, now_s: float | None = None) -> float:
        """Milliseconds between the stamp and ``now_s`` (Unix seconds, default now)."""
        now_ms = int((time.time() if now_s is None else now_s) * 1000) % TIME_MOD
        return float((now_ms - self.sent_ms) % TIME_MOD)


def _bits(source: int, sent_ms: int) -> np.ndarray:
    body = bytes([MAGIC, source & 0xFF]) + (sent_ms % TIME_MOD).to_bytes(5, "big")
    word = body + bytes([crc8(body)])
    return np.unpackbits(np.frombuffer(word, dtype=np.uint8))


def draw_stamp(luma: np.ndarray, source: int, sent_ms: int) -> None:
    """Write the pattern for ``source`` and ``sent_ms`` into a luma plane ``(height, width)`` uint8, in place."""
    b = block_size(luma.shape[1])
    bits = _bits(source, sent_ms).reshape(ROWS, COLS)
    for r in range(ROWS):
        for c in range(COLS):
            y, x = b + r * b, b + c * b
            luma[y:y + b, x:x + b] = _WHITE if bits[r, c] else _BLACK


def read_stamp(luma: np.ndarray) -> Stamp | None:
    """Read the pattern from a luma plane ``(height, width)``; None when absent or corrupted (magic or CRC)."""
    h, w = luma.shape[:2]
    b = block_size(w)
    if b * (COLS + 1) > w or b * (ROWS + 1) > h:
        return None
    q = b // 4
    grid = luma[b:b + ROWS * b, b:b + COLS * b].astype(np.float32)
    grid = grid.reshape(ROWS, b, COLS, b)[:, q:b - q, :, q:b - q].mean(axis=(1, 3))
    bits = (grid > (_BLACK + _WHITE) / 2).astype(np.uint8).reshape(-1)
    word = np.packbits(bits).tobytes()
    if word[0] != MAGIC or crc8(word[:7]) != word[7]:
        return None
    return Stamp(source=word[1], sent_ms=int.from_bytes(word[2:7], "big"))


def frame_luma(frame: VideoFrame) -> np.ndarray:
    """The luma plane of a decoded frame as ``(height, width)`` uint8 (no copy of chroma)."""
    if frame.format.name not in ("yuv420p", "yuvj420p", "nv12", "gray"):
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def read_frame(frame: VideoFrame) -> Stamp | None:
    """`read_stamp` on a decoded `av.VideoFrame`."""
    return read_stamp(frame_luma(frame))


_TEXTURES: dict[tuple[int, int], np.ndarray] = {}


def _texture(width: int, height: int) -> np.ndarray:
    key = (width, height)
    if key not in _TEXTURES:
        rng = np.random.default_rng(width * 7919 + height)
        _TEXTURES[key] = rng.integers(40, 216, size=(height, width * 2), dtype=np.uint8)
    return _TEXTURES[key]


def make_frame(width: int, height: int, *, source: int, sent_ms: int | None = None, tick: int = 0,
               detail: bool = False) -> VideoFrame:
    """A yuv420p test frame ``width`` × ``height`` with the pattern and a moving bar (so it is live video).

    ``sent_ms`` defaults to now. ``tick`` moves the bar; ``source`` also tints the background
    so different sources look different to a person. ``detail=True`` adds a scrolling noise
    texture in the lower-left quarter so the encoder has real work and frames are camera-sized
    (otherwise the picture compresses to a few hundred bytes).
    """
    if sent_ms is None:
        sent_ms = int(time.time() * 1000)
    yuv = np.empty((height * 3 // 2, width), dtype=np.uint8)
    luma = yuv[:height]
    luma[:] = 60 + (source * 37) % 120
    bar_w = max(8, width // 16)
    x0 = (tick * max(2, width // 120)) % (width - bar_w)
    luma[height // 2:, x0:x0 + bar_w] = 220
    if detail:
        qh, qw = height // 2, width // 2
        offset = (tick * 4) % qw
        luma[qh:qh + qh, :qw] = _texture(qw, qh)[:, offset:offset + qw]
    draw_stamp(luma, source, sent_ms)
    chroma = yuv[height:]
    chroma[: height // 4] = 128  # U
    chroma[height // 4:] = 90 + (source * 53) % 80  # V
    return VideoFrame.from_ndarray(yuv, format="yuv420p")


def pattern_track(width: int = 640, height: int = 360, *, source: int = 1, fps: float = 30.0,
                  encoded: bool = False, detail: bool = False):
    """An aiortc video track producing test-pattern frames ``width`` × ``height`` at ``fps``.

    Each frame is stamped with ``source`` and the Unix ms at which ``recv()`` returned it
    (just before the sender encodes it). ``track.frames_sent`` counts frames.

    ``encoded=True`` makes the track encode each frame itself (VP8, the relay's realtime
    settings) and hand aiortc's sender the `av.Packet` (its pre-encoded path, packetize only),
    which is cheaper than aiortc's own encoder; ``detail`` as in `make_frame`; call ``track.request_keyframe()`` on PLI (see
    `mmx.relay.client.whip_publish`, which wires it). The sender must negotiate VP8.
    """
    import asyncio
    import fractions

    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class _Track(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.frames_sent = 0
            self._start: float | None = None
            self._origin: float | None = None
            self._pts = -1
            self._ctx = None
            self._keyframe = False

        def request_keyframe(self) -> None:
            self._keyframe = True

        async def recv(self) -> VideoFrame:
            if self.readyState != "live":
                raise MediaStreamError
            now = time.monotonic()
            if self._start is None:
                self._start = self._origin = now
            due = self._start + self.frames_sent / fps
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.5:  # fell far behind (a stalled loop): skip ahead, don't burst
                self._start = now - self.frames_sent / fps
            frame = make_frame(width, height, source=source, tick=self.frames_sent, detail=detail)
            # pts from a fixed origin and strictly increasing: encoders reject a step back
            self._pts = max(self._pts + 1, int((time.monotonic() - self._origin) * 90000))
            frame.pts = self._pts
            frame.time_base = fractions.Fraction(1, 90000)
            self.frames_sent += 1
            if not encoded:
                return frame
            import av

            from mmx.relay.hub import _vp8_context

            if self._ctx is None:
                self._ctx = _vp8_context(width, height)
            frame.pict_type = av.video.frame.PictureType.I if self._keyframe else av.video.frame.PictureType.NONE
            self._keyframe = False
            packets = await asyncio.get_running_loop().run_in_executor(None, lambda: list(self._ctx.encode(frame)))
            packet = packets[0]
            packet.pts, packet.time_base = frame.pts, frame.time_base
            return packet

    return _Track()
