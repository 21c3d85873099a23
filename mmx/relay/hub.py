"""The relay's media core: camera feeds in, one shared encoder per output, packets fanned out.

Shape of the data path (one process, one asyncio loop plus one encoder thread):

    WHIP publisher ─► aiortc receiver (decode) ─► CameraFeed.frame   (latest frame only)
                                                      │ wake
    program camera ─► SharedEncoder "hero" ── encode once (VP8) ──► ring of the last
                                                                    RING encoded frames
    each WHEP viewer: its RTCRtpSender sends the *same* encoded frame, packetized once for
    everyone (`EncodedFrame.vp8_payloads`, `mmx.relay.fastsend`); per viewer there is only
    an RTP header, SRTP and a sendto per packet. (With ``fast_rtp`` off, FanoutTrack.recv()
    hands the shared av.Packet to aiortc's own pre-encoded path, ``Encoder.pack``.)

A cut only changes which feed the hero encoder draws from; the viewers' RTP streams (SSRC,
sequence numbers, timestamps from one monotonic clock) go on, so nothing is renegotiated
(Janus ``switch`` does the same with a keyframe request to the new source). The first frame
after a cut is a size-capped keyframe: the picture changes completely, and a capped
keyframe encodes and decodes faster than the huge inter frame libvpx would make. Buffers are
bounded: a feed keeps one frame, an encoder keeps RING encoded frames; a viewer that falls
behind the ring skips to the next keyframe. A program camera without frames for
``lost_after_s`` shows its last frame until then, then a "camera lost" slate.
"""

from __future__ import annotations

import asyncio
import fractions
import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from mmx.relay.pattern import SLATE_SOURCE, draw_stamp

#: RTP video clock (Hz); encoded packets carry pts in this time base.
VIDEO_CLOCK = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
#: Encoded frames kept for viewers that are a little behind (~0.5 s at 30 fps).
RING = 16
#: VP8 bits per pixel per frame for the hero encode (≈ 550 kbit/s at 640×360×30, 2.2 Mbit/s at 720p).
BITS_PER_PIXEL = 0.08
#: A forced keyframe at most this often (s), however many viewers ask (PLI storms).
KEYFRAME_MIN_INTERVAL_S = 0.5


@dataclass
class CameraFeed:
    """One published camera: its latest decoded frame and liveness.

    ``frame_at`` is `time.monotonic()` when the frame arrived; ``frames`` counts arrivals.
    """

    name: str
    frame: VideoFrame | None = None
    frames: int = 0
    frame_at: float = 0.0
    live: bool = False
    session: Any = None
    #: `time.monotonic` second since which the publisher sends no media (`mmx.relay.stall`), or None
    stalled_since: float | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=60))
    decoder_queues: list = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Encoded frames dropped before decoding because the decoder fell behind."""
        return sum(q.dropped for q in self.decoder_queues)

    def fps(self, now: float | None = None) -> float:
        """Frames per second over the last ~2 s of arrivals."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self.arrivals if now - t <= 2.0]
        return round(len(recent) / 2.0, 1)


@dataclass
class EncodedFrame:
    """One encoded frame shared by every viewer of an encoder.

    ``rtp_timestamp`` is the frame's time on the 90 kHz RTP clock (before each viewer's
    random offset); ``vp8_payloads()`` are its RTP payloads, made once for all viewers.
    """

    seq: int
    packet: av.Packet
    keyframe: bool
    camera: str | None  # None for the slate
    relay_ms: float  # frame arrival at the relay → encoded, ms
    rtp_timestamp: int = 0
    _payloads: list[bytes] | None = None

    def vp8_payloads(self) -> list[bytes]:
        """RTP payloads (RFC 7741) with picture id ``seq`` mod 2**15, the same for every viewer."""
        if self._payloads is None:
            self._payloads = Vp8Encoder._packetize(bytes(self.packet), self.seq & 0x7FFF)
        return self._payloads


def _vp8_context(width: int, height: int) -> Any:
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = VIDEO_TIME_BASE
    bitrate = int(BITS_PER_PIXEL * width * height * 30)
    ctx.bit_rate = bitrate
    ctx.gop_size = 3000  # keyframes only when asked for (join, PLI, cut to a new size)
    ctx.qmin, ctx.qmax = 2, 56
    # aiortc's own realtime VP8 settings (aiortc/codecs/vpx.py), with our bitrate
    ctx.options = {
        "bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
        "minrate": str(bitrate), "maxrate": str(bitrate), "noise-sensitivity": "0",
        "overshoot-pct": "15", "partitions": "0", "static-thresh": "1", "undershoot-pct": "100",
        # keyframes (join, PLI, cut) at most 3× an average frame: a cut's first frame must
        # not take several frame intervals to encode, send and decode (libwebrtc caps them too)
        "max-intra-rate": "300",
    }
    # aiortc's rule (1 thread below 4 cores at 720p): a second libvpx thread here made
    # 720p encodes ~10× slower on 2 cores
    ctx.thread_count = number_of_threads(width * height, multiprocessing.cpu_count())
    return ctx


class SharedEncoder:
    """Encodes one output (the hero feed, or one camera) once for all of its viewers.

    ``camera`` None follows the hub's program camera. Runs only while it has viewers.
    """

    def __init__(self, hub: Hub, camera: str | None = None) -> None:
        self.hub = hub
        self.camera = camera
        self.ring: deque[EncodedFrame] = deque(maxlen=RING)
        self.seq = 0
        self.viewers = 0
        self.encoded = 0
        self.keyframes = 0
        self.errors = 0
        self._ctx: Any = None
        self._wake = asyncio.Event()
        self._arrival: asyncio.Future = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task | None = None
        self._force_keyframe = False
        self._last_keyframe_at = 0.0
        self._taken: dict[str, int] = {}
        self._last_out = 0.0
        self._last_camera: str | None = None
        self._pts = -1
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ control
    def source(self) -> str | None:
        """The camera this encoder draws from now."""
        return self.camera if self.camera is not None else self.hub.program

    def wake(self) -> None:
        self._wake.set()

    def request_keyframe(self, *, urgent: bool = False) -> None:
        """Ask for the next encoded frame to be a keyframe (rate-limited unless ``urgent``)."""
        if urgent or time.monotonic() - self._last_keyframe_at >= KEYFRAME_MIN_INTERVAL_S:
            self._force_keyframe = True
            self.wake()

    def attach(self) -> FanoutTrack:
        """A new viewer's track; it starts at a keyframe requested when its sender first reads."""
        self.viewers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return FanoutTrack(self)

    def detach(self) -> None:
        self.viewers = max(0, self.viewers - 1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    # ------------------------------------------------------------------ encoding
    async def _run(self) -> None:
        hub = self.hub
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=hub.slate_interval_s)
            except (asyncio.TimeoutError, TimeoutError):
                pass
            self._wake.clear()
            if self.viewers == 0:
                continue
            name = self.source()
            feed = hub.cameras.get(name) if name else None
            now = time.monotonic()
            if feed is not None and feed.frame is not None and feed.live and self._taken.get(feed.name) != feed.frames:
                self._taken[feed.name] = feed.frames
                frame, camera, arrived = feed.frame, feed.name, feed.frame_at
            elif feed is None or feed.frame is None or now - feed.frame_at > hub.lost_after_s:
                # a feed that just went down (DELETE or vanished) holds its last frame first
                if now - self._last_out < hub.slate_interval_s * 0.9:
                    continue
                size = (self._ctx.width, self._ctx.height) if self._ctx is not None else hub.slate_size
                frame, camera, arrived = hub.slate(name, size), None, now
            else:
                continue  # no new frame yet: viewers stay on the last one
            # a cut replaces the whole picture: a capped keyframe is smaller and quicker than
            # the inter frame libvpx would otherwise spend on it
            force = self._force_keyframe or (camera is not None and camera != self._last_camera)
            self._force_keyframe = False
            self._last_camera = camera
            pts = max(self._pts + 1, int((now - self._t0) * VIDEO_CLOCK))
            self._pts = pts
            try:
                packets = await asyncio.get_running_loop().run_in_executor(
                    hub.executor, self._encode, frame, pts, force)
            except (av.FFmpegError, ValueError) as exc:
                # one bad frame must not stop the feed: start a fresh encoder (a keyframe)
                self._ctx = None
                self.errors += 1
                hub.report({"status": "encode_error", "camera": camera, "error": str(exc)})
                continue
            self._last_out = time.monotonic()
            relay_ms = (self._last_out - arrived) * 1000.0
            for packet in packets:
                packet.pts = pts
                packet.time_base = VIDEO_TIME_BASE
                key = bool(packet.is_keyframe)
                if key:
                    self.keyframes += 1
                    self._last_keyframe_at = self._last_out
                self.ring.append(EncodedFrame(self.seq, packet, key, camera, relay_ms, rtp_timestamp=pts))
                self.seq += 1
                self.encoded += 1
            if packets:
                arrival, self._arrival = self._arrival, asyncio.get_running_loop().create_future()
                arrival.set_result(None)

    def _encode(self, frame: VideoFrame, pts: int, force_keyframe: bool) -> list[av.Packet]:
        # runs on the hub's single encoder thread, so frames shared between encoders are
        # never touched by two threads at once
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if self._ctx is None or (self._ctx.width, self._ctx.height) != (frame.width, frame.height):
            self._ctx = _vp8_context(frame.width, frame.height)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        frame.pict_type = av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        return list(self._ctx.encode(frame))

    # ------------------------------------------------------------------ fan-out
    async def next_for(self, viewer: FanoutTrack) -> EncodedFrame:
        """The next encoded frame for ``viewer`` (waits for one; skips to a keyframe when behind)."""
        if not viewer.started:
            # the sender reads for the first time once DTLS is up: ask for a fresh keyframe
            # now rather than at WHEP time, when it might have left the ring already
            viewer.started = True
            viewer.min_seq = self.seq
            self.request_keyframe(urgent=True)
        while True:
            ring = self.ring
            if viewer.next_seq is not None and ring and viewer.next_seq < ring[0].seq:
                viewer.next_seq = None  # fell behind the ring: resume at a fresh keyframe
                viewer.min_seq = self.seq
                viewer.resyncs += 1
                self.request_keyframe(urgent=True)
            if viewer.next_seq is None:
                for entry in reversed(ring):
                    if entry.seq < viewer.min_seq:
                        break
                    if entry.keyframe:
                        viewer.next_seq = entry.seq
                        break
            if viewer.next_seq is not None and ring and viewer.next_seq <= ring[-1].seq:
                entry = ring[viewer.next_seq - ring[0].seq]
                viewer.next_seq += 1
                return entry
            await asyncio.shield(self._arrival)


class FanoutTrack(MediaStreamTrack):
    """A viewer's video track: yields the shared encoder's `av.Packet` objects (pre-encoded).

    aiortc's `RTCRtpSender` packs anything that is not a `Frame` with its codec's ``pack``
    (packetize only), so per viewer there is no encode. ``on_frame(entry)`` is called for each
    frame handed out (the relay uses it for the viewer's camera-name data channel).
    """

    kind = "video"

    def __init__(self, encoder: SharedEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.next_seq: int | None = None
        self.min_seq = encoder.seq
        self.started = False
        self.resyncs = 0
        self.sent = 0
        self.camera: str | None = None
        self.on_frame: Callable[[EncodedFrame], None] | None = None
        self._detached = False

    async def recv(self) -> av.Packet:  # type: ignore[override]
        return (await self.next_entry()).packet

    async def next_entry(self) -> EncodedFrame:
        """The next shared frame for this viewer (`mmx.relay.fastsend` reads these)."""
        if self.readyState != "live":
            raise MediaStreamError
        entry = await self.encoder.next_for(self)
        self.sent += 1
        self.camera = entry.camera
        if self.on_frame is not None:
            self.on_frame(entry)
        return entry

    def stop(self) -> None:
        super().stop()
        if not self._detached:
            self._detached = True
            self.encoder.detach()


class Hub:
    """Camera feeds, the program camera and the shared encoders of one relay.

    ``lost_after_s``: a program camera without a new frame for this long shows the slate.
    ``slate_fps``: frame rate of the slate. ``slate_size``: (width, height) of the slate
    when no frame was encoded yet. ``report`` receives problems (``encode_error``) as dicts.
    """

    def __init__(self, *, lost_after_s: float = 1.0, slate_fps: float = 10.0,
                 slate_size: tuple[int, int] = (640, 360),
                 report: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cameras: dict[str, CameraFeed] = {}
        self.program: str | None = None
        self.report = report or (lambda record: None)
        self.lost_after_s = lost_after_s
        self.slate_interval_s = 1.0 / slate_fps
        self.slate_size = slate_size
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmx-relay-encode")
        self.hero = SharedEncoder(self)
        self.singles: dict[str, SharedEncoder] = {}
        self.cuts = 0
        #: called with the new program camera on each cut (the recorder, `mmx.relay.record`)
        self.on_program: list[Callable[[str | None], None]] = []
        self._slates: dict[tuple[str | None, tuple[int, int]], np.ndarray] = {}

    def feed(self, name: str) -> CameraFeed:
        if name not in self.cameras:
            self.cameras[name] = CameraFeed(name)
        return self.cameras[name]

    def encoder_for(self, camera: str | None) -> SharedEncoder:
        """The hero encoder (``camera`` None) or the one-camera encoder for ``camera``."""
        if camera is None:
            return self.hero
        if camera not in self.singles:
            self.singles[camera] = SharedEncoder(self, camera)
        return self.singles[camera]

    def set_program(self, camera: str | None) -> bool:
        """Cut the hero feed to ``camera``; True when the program changed."""
        if camera == self.program:
            return False
        self.program = camera
        self.cuts += 1
        self.hero.wake()
        for listener in self.on_program:
            listener(camera)
        return True

    def frame_arrived(self, feed: CameraFeed) -> None:
        """Called on each new frame (and when a feed goes down): wakes encoders drawing from it."""
        if self.program == feed.name:
            self.hero.wake()
        single = self.singles.get(feed.name)
        if single is not None:
            single.wake()

    async def pump(self, feed: CameraFeed, track: MediaStreamTrack, session: Any) -> None:
        """Read ``track`` into ``feed`` with latest-frame semantics until it ends."""
        queue = getattr(track, "_queue", None)
        try:
            while True:
                frame = await track.recv()
                # aiortc's decoded-frame queue is unbounded: keep only the newest frame
                while queue is not None and not queue.empty():
                    newer = queue.get_nowait()
                    if newer is None:
                        raise MediaStreamError
                    frame = newer
                if feed.session is not session:
                    return
                now = time.monotonic()
                feed.frame, feed.frame_at, feed.live = frame, now, True
                feed.frames += 1
                feed.arrivals.append(now)
                self.frame_arrived(feed)
        except MediaStreamError:
            pass
        finally:
            if feed.session is session:
                feed.live = False
                self.frame_arrived(feed)

    def slate(self, camera: str | None, size: tuple[int, int]) -> VideoFrame:
        """The "camera lost" slate for ``camera`` at ``size``, stamped with source 255 and now."""
        key = (camera, size)
        base = self._slates.get(key)
        if base is None:
            base = _render_slate(camera, size)
            if len(self._slates) > 32:
                self._slates.clear()
            self._slates[key] = base
        yuv = base.copy()
        draw_stamp(yuv[: size[1]], SLATE_SOURCE, int(time.time() * 1000))
        return VideoFrame.from_ndarray(yuv, format="yuv420p")

    def status(self) -> dict[str, Any]:
        """Program, cameras (live / stalled / lost, fps, frames), encoder and viewer counts.

        ``stalled``: a publisher is connected but has sent no media for ``stalled_s`` seconds
        (`mmx.relay.stall`); ``lost``: no publisher sending.
        """
        now = time.monotonic()
        return {
            "program": self.program,
            "cuts": self.cuts,
            "cameras": [
                {"camera": f.name, "status": _feed_status(f), "frames": f.frames,
                 "stalled_s": round(now - f.stalled_since, 1) if f.stalled_since is not None else None,
                 "fps": f.fps(now), "dropped": f.dropped, "last_frame_age_ms": round((now - f.frame_at) * 1000, 1) if f.frames else None}
                for f in self.cameras.values()
            ],
            "hero": {"viewers": self.hero.viewers, "encoded": self.hero.encoded, "keyframes": self.hero.keyframes,
                     "errors": self.hero.errors},
            "singles": {name: {"viewers": e.viewers, "encoded": e.encoded} for name, e in self.singles.items()},
        }

    async def close(self) -> None:
        for enc in [self.hero, *self.singles.values()]:
            await enc.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _feed_status(feed: CameraFeed) -> str:
    if feed.stalled_since is not None:
        pc = getattr(feed.session, "pc", None)
        if getattr(pc, "connectionState", None) == "connected":
            return "stalled"
    return "live" if feed.live else "lost"


def _render_slate(camera: str | None, size: tuple[int, int]) -> np.ndarray:
    """A dark slate reading "camera lost: <camera>" (or "no program"), as yuv420p rows."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    image = Image.new("RGB", (width, height), (24, 24, 32))
    draw = ImageDraw.Draw(image)
    text = f"camera lost: {camera}" if camera else "no program camera"
    try:
        font = ImageFont.load_default(size=max(12, height // 12))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    box = draw.textbbox((0, 0), text, font=font)
    draw.text(((width - (box[2] - box[0])) / 2, (height - (box[3] - box[1])) / 2), text,
              fill=(230, 80, 80), font=font)
    frame = VideoFrame.from_image(image).reformat(format="yuv420p")
    return frame.to_ndarray()
