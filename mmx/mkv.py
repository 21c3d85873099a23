"""Recording files: pre-encoded video frames muxed into Matroska on the session clock.

Both recorders of a shoot use this module: `mmx serve` for the proxy of each camera's
preview JPEGs (MJPEG) and `mmx relay` for the ISO of each camera's WebRTC video (VP8 or
H.264, exactly the frames the relay received) and for the program. Nothing is decoded or
encoded: every frame goes into the container as the packet it arrived as (PyAV's
``add_mux_stream``, a stream without a codec context); only an H.264 file's first keyframe
is decoded once, for the picture size the Matroska header needs.

Time. A frame's timestamp is its wall time (Unix seconds on the recording host's clock,
``ts``) minus the take's origin (``origin_ts``, the session start), in milliseconds
(Matroska's default timestamp scale). Every file of a session is therefore on one clock:
a frame at pts ``p`` ms was seen ``p / 1000`` s after the session started, whichever file it
is in, so ISOs line up with each other and with ``director.cut`` times without an offset
table. A file's first frame is usually not at 0 (recording starts at the first keyframe);
its wall time is kept (``first_frame_ts``). Timestamps are made strictly increasing (a frame
not later than the one before gets the previous pts + 1 ms). A camera that drops out and
comes back continues in the same file: the frames in between are missing, which players
show as the last picture held (a gap in time, not in the file's numbering).

Crash safety. The muxer closes a cluster at least every `CLUSTER_MS` (1 s) and flushes
every packet to the OS (``flush_packets``), so a killed process leaves a file that plays up
to at most about one second (one cluster) before the kill; only the index (Cues) and the
header's duration are missing, which demuxers do without. `close` writes them.

Threads. `Recorder` owns one writer thread for all its files: ``write`` only queues the
frame (bounded: above `MAX_PENDING` frames waiting, new frames are dropped, and an inter
frame's file then skips to the next keyframe so it never holds a broken picture), so the
event loop never waits for the disk. ``close`` returns a future of the file's final facts,
its sha256 included.
"""

from __future__ import annotations

import errno
import fractions
import hashlib
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Matroska's default timestamp scale: 1 ms.
TIME_BASE = fractions.Fraction(1, 1000)
#: Longest cluster in ms: at most this much (plus one frame) is lost when the writer is killed.
CLUSTER_MS = 1000
#: Frames queued for the writer thread (all files together) before new frames are dropped.
MAX_PENDING = 600
#: ffmpeg codec names this module muxes, by the names callers use (aiortc's and ours).
CODECS = {"mjpeg": "mjpeg", "jpeg": "mjpeg", "vp8": "vp8", "h264": "h264"}


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a VP8 keyframe (RFC 6386 section 9.1), else None.

    A keyframe's 3-byte frame tag has bit 0 clear and is followed by the start code
    ``9d 01 2a`` and two little-endian 16-bit fields whose low 14 bits are width and height.
    """
    if len(data) < 10 or data[0] & 0x01 or data[3:6] != b"\x9d\x01\x2a":
        return None
    return int.from_bytes(data[6:8], "little") & 0x3FFF, int.from_bytes(data[8:10], "little") & 0x3FFF


def h264_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an H.264 Annex B keyframe, by decoding that one frame (PyAV)."""
    import av

    try:
        ctx = av.CodecContext.create("h264", "r")
        frames = list(ctx.decode(av.Packet(data))) + list(ctx.decode(None))
    except (av.FFmpegError, ValueError):
        return None
    return (frames[0].width, frames[0].height) if frames else None


def frame_size(codec: str, data: bytes) -> tuple[int, int] | None:
    """The picture size carried by a keyframe of ``codec`` (``mjpeg``, ``vp8``, ``h264``)."""
    if codec == "mjpeg":
        from mmx.serve.stills import jpeg_size

        return jpeg_size(data[:65536])
    if codec == "vp8":
        return vp8_size(data)
    if codec == "h264":
        return h264_size(data)
    return None


def numbered_path(directory: Path, stem: str, suffix: str = ".mkv") -> Path:
    """``DIR/STEM.mkv``, or ``DIR/STEM.2.mkv``, ``.3``, … when that file exists already."""
    path = directory / f"{stem}{suffix}"
    n = 2
    while path.exists():
        path = directory / f"{stem}.{n}{suffix}"
        n += 1
    return path


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(eq=False)
class Track:
    """One recording file and its counters (touched by the writer thread only, except
    ``pending_drop`` and ``dropped``, which `Recorder.write` sets on the caller's thread)."""

    path: Path
    codec: str
    origin_ts: float
    camera: str
    kind: str
    info: dict[str, Any] = field(default_factory=dict)
    container: Any = None
    stream: Any = None
    frames: int = 0
    dropped: int = 0
    waiting_for_key: bool = True
    pending_drop: bool = False
    first_ts: float | None = None
    first_pts: int | None = None
    last_pts: int | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    disk_full: bool = False
    closed: bool = False
    payload_bytes: int = 0

    @property
    def started(self) -> bool:
        """True once the file exists (its first keyframe was written)."""
        return self.container is not None


def facts(track: Track, *, reason: str, sha256: str | None) -> dict[str, Any]:
    """The ``recording.stopped`` data of a closed track."""
    try:
        size = track.path.stat().st_size
    except OSError:
        size = None
    start_s = track.first_pts / 1000 if track.first_pts is not None else None
    end_s = track.last_pts / 1000 if track.last_pts is not None else None
    if start_s is not None and end_s is not None and track.frames > 1:
        # the last frame lasts one mean frame interval
        duration_s = (end_s - start_s) * track.frames / (track.frames - 1)
    else:
        duration_s = 0.0 if start_s is not None else None
    return {
        "camera": track.camera, "path": str(track.path), "codec": track.codec, "kind": track.kind,
        "bytes": size, "duration_s": round(duration_s, 3) if duration_s is not None else None,
        "frames": track.frames, "dropped": track.dropped, "sha256": sha256, "reason": reason,
        "first_frame_ts": track.first_ts, "start_s": start_s,
        "end_s": round(start_s + duration_s, 3) if start_s is not None and duration_s is not None else None,
        "width": track.width, "height": track.height, "origin_ts": track.origin_ts,
        **({"error": track.error} if track.error else {}),
    }  # fmt: skip


class Recorder:
    """Pre-encoded frames → Matroska files, written on one background thread.

    ``on_started(track)`` is called on the writer thread when a file's first keyframe was
    written (the file exists); callers hop back to their event loop themselves. Use
    ``open`` → ``write``… → ``close`` per file, and ``shutdown`` at the end.
    """

    def __init__(self, *, on_started: Any = None, max_pending: int = MAX_PENDING) -> None:
        self.on_started = on_started
        self.max_pending = max_pending
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mmx-record", daemon=True)
        self._thread.start()
        self.bytes_written = 0

    def open(self, path: Path, *, codec: str, origin_ts: float, camera: str, kind: str,
             info: dict[str, Any] | None = None) -> Track:  # fmt: skip
        """A new file at ``path`` for ``codec`` frames; created at its first keyframe.

        ``origin_ts`` is the take's time zero (Unix seconds); ``info`` is carried into the
        events. Raises ValueError for a codec this module does not mux.
        """
        if codec not in CODECS:
            raise ValueError(f"cannot record codec {codec!r}: use one of {', '.join(sorted(CODECS))}")
        return Track(path=Path(path), codec=CODECS[codec], origin_ts=origin_ts, camera=camera, kind=kind,
                     info=dict(info or {}))  # fmt: skip

    def write(self, track: Track, data: bytes, ts: float, keyframe: bool) -> bool:
        """Queue one encoded frame (its wall time ``ts``, Unix seconds). False when dropped."""
        if track.closed or track.error:
            return False
        with self._lock:
            if self._pending >= self.max_pending:
                track.dropped += 1
                track.pending_drop = True  # the writer skips to the next keyframe
                return False
            if track.pending_drop:
                if not keyframe:
                    track.dropped += 1
                    return False
                track.pending_drop = False
            self._pending += 1
        self._queue.put(("frame", track, data, ts, keyframe))
        return True

    def resync(self, track: Track) -> None:
        """Make the file skip to the next keyframe (a new publisher's stream starts over)."""
        self._queue.put(("resync", track, None, None, None))

    def close(self, track: Track, reason: str) -> Future:
        """Finish the file (trailer, sha256) after its queued frames; a future of its facts
        (None when no frame was ever written, so no file exists)."""
        future: Future = Future()
        self._queue.put(("close", track, reason, future, None))
        return future

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop the writer thread after what is queued (open files stay as they are)."""
        self._queue.put(None)
        self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._pending

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, track, a, b, c = item
            if what == "close":
                try:
                    self._finish(track, a, b)
                except Exception as exc:  # noqa: BLE001 - the caller waits on the future
                    track.error = track.error or f"{type(exc).__name__}: {exc}"
                    if not b.done():
                        b.set_result(facts(track, reason="error", sha256=None))
            elif what == "resync":
                track.waiting_for_key = True
            else:
                with self._lock:
                    self._pending -= 1
                try:
                    self._mux(track, a, b, c)
                except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
                    self._fail(track, exc)

    def _mux(self, track: Track, data: bytes, ts: float, keyframe: bool) -> None:
        import av

        if track.closed or track.error:
            return
        if track.waiting_for_key:
            if not keyframe:
                track.dropped += 1
                return
            if track.container is None and not self._create(track, data, ts):
                return
            track.waiting_for_key = False
        pts = round((ts - track.origin_ts) * 1000)
        if track.last_pts is not None and pts <= track.last_pts:
            pts = track.last_pts + 1
        packet = av.Packet(data)
        packet.stream = track.stream
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        packet.is_keyframe = keyframe
        track.container.mux(packet)
        if track.first_pts is None:
            track.first_pts, track.first_ts = pts, ts
        track.last_pts = pts
        track.frames += 1
        track.payload_bytes += len(data)
        self.bytes_written += len(data)

    def _create(self, track: Track, data: bytes, ts: float) -> bool:
        import av

        size = frame_size(track.codec, data)
        if size is None:
            track.dropped += 1
            return False
        track.width, track.height = size
        track.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(track.path), "w", format="matroska",
                            options={"cluster_time_limit": str(CLUSTER_MS)},
                            container_options={"flush_packets": "1"})  # fmt: skip
        try:
            stream = container.add_mux_stream(track.codec, width=size[0], height=size[1])
            stream.time_base = TIME_BASE
            container.metadata["title"] = f"{track.camera} ({track.kind})"
            container.metadata["mmx_origin_ts"] = f"{track.origin_ts:.6f}"
            container.metadata["mmx_first_frame_ts"] = f"{ts:.6f}"
        except Exception:
            container.close()
            raise
        track.container, track.stream = container, stream
        if self.on_started is not None:
            self.on_started(track, ts)
        return True

    def _fail(self, track: Track, exc: BaseException) -> None:
        no_space = getattr(exc, "errno", None) == errno.ENOSPC or "No space" in str(exc)
        track.disk_full = track.disk_full or no_space
        track.error = "disk full" if no_space else f"{type(exc).__name__}: {exc}"
        self._close_container(track)

    def _close_container(self, track: Track) -> None:
        container, track.container = track.container, None
        if container is not None:
            try:
                container.close()
            except Exception as exc:  # noqa: BLE001 - a full disk fails the trailer: the clusters stay readable
                track.error = track.error or f"{type(exc).__name__}: {exc}"
                if getattr(exc, "errno", None) == errno.ENOSPC:
                    track.disk_full = True

    def _finish(self, track: Track, reason: str, future: Future) -> None:
        existed = track.container is not None or track.path.exists()
        track.closed = True
        self._close_container(track)
        sha = None
        if existed and track.path.exists():
            try:
                with open(track.path, "rb") as fp:
                    os.fsync(fp.fileno())
                sha = sha256_file(track.path)
            except OSError as exc:
                track.error = track.error or f"cannot hash {track.path}: {exc.strerror}"
        if track.disk_full:
            reason = "disk_full"
        elif track.error and reason in ("stop", "session_ended"):
            reason = "error"
        future.set_result(facts(track, reason=reason, sha256=sha) if existed else None)


def probe(path: Path) -> dict[str, Any]:
    """Frames, first/last pts (s) and monotonicity of a recording, by demuxing it (no decode).

    For files a writer left behind unfinished (a killed relay): ``{"frames", "start_s",
    "end_s", "duration_s", "monotonic"}``. Raises OSError / av errors for unreadable files.
    """
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base)
        pts = [p.pts for p in container.demux(stream) if p.pts is not None]
    if not pts:
        return {"frames": 0, "start_s": None, "end_s": None, "duration_s": 0.0, "monotonic": True}
    start, end = pts[0] * tb, pts[-1] * tb
    duration = (end - start) * len(pts) / (len(pts) - 1) if len(pts) > 1 else 0.0
    return {"frames": len(pts), "start_s": start, "end_s": start + duration, "duration_s": duration,
            "monotonic": all(b > a for a, b in zip(pts, pts[1:]))}  # fmt: skip

