"""The relay's recordings: each publishing camera's ISO and the program, as the frames arrived.

While mmx serve has a take armed (`mmx.serve.recording`), the relay writes into the take's
video directory (the ``path`` of ``recording.armed``; the relay and serve share a disk):

- ``<camera>.mkv``: the camera's ISO, every encoded frame the relay received from its WHIP
  publisher, exactly as received (VP8 in Matroska, i.e. WebM's container; H.264 in
  Matroska), written by `mmx.mkv` with PyAV. Nothing is decoded or encoded for it: the
  frames are taken where aiortc hands them to its decoder (`mmx.relay.jitter`'s decoder
  queue), reassembled from RTP and depayloaded.
- ``program.mkv``: the program, built from the same received frames. It follows the cuts
  the relay follows (``director.cut``): on a cut the relay asks the new camera for a keyframe
  (RTCP PLI) and the file switches to it at that keyframe, so the file's cut lands one PLI
  round trip and one encode after the relay learned of it (typically 2–4 frames later than
  the ``director.cut`` time; the exported timeline's program track, cut from the ISOs at the
  ledger's cut times, is exact). Until the keyframe comes the previous camera goes on; a
  camera that sends none within `CUT_WAIT_S` leaves a gap. A cut to a camera of another
  codec starts a new numbered file (``program.2.mkv``). A frame just after a switch may sit a
  few ms later in the program than in its ISO (timestamps stay increasing across cameras
  whose path delays differ). The viewers' hero feed is the
  relay's own VP8 encode and is not what is recorded.

Time. Every frame is stamped with a wall time on the relay's clock and written on the
session clock (wall time minus the take's ``origin_ts``, `mmx.mkv`). The wall time comes
from the frame's RTP timestamp mapped by `StreamClock`: the arrival time of the fastest
frames (a minimum filter over ``arrival - rtp``, allowed to rise by `LEAK` seconds per second
to follow a sender clock slower than ours), so network and event-loop jitter does not reach
the file and the frame spacing is the sender's. The times are therefore when frames reach
the relay, the path's shortest delay (capture, encode, network: usually 20–60 ms) included.
A jump of the RTP clock (a sender that restarted its timestamps) is followed once it has
lasted `RESET_CONFIRM_S`.

A camera that drops out and rejoins (a new WHIP session) continues in the same file with a
gap: the file waits for the new stream's first keyframe (asked for with a PLI). A rejoin
with another codec closes the file and starts a numbered one (``cam-1.2.mkv``); so does a
relay restarted during a take (the first file is then closed by serve, ``writer_lost``).

Crash safety: `mmx.mkv` closes a Matroska cluster every second and flushes every packet, so
a killed relay leaves files that play up to at most ~1 s (one cluster, plus what the writer
queue held, normally nothing) before the kill.

Events, posted to serve (``POST /v1/events``, ``src`` ``relay``): ``recording.started`` when a
file's first keyframe is written (``camera`` — the camera id, or ``program`` —, ``path``,
``codec``, ``kind`` ``iso``/``program``, ``first_frame_ts``, ``start_s``, ``origin_ts``,
``width``, ``height``, ``take``) and ``recording.stopped`` when it is closed (those plus
``bytes``, ``duration_s``, ``frames``, ``dropped``, ``sha256``, ``end_s``, ``reason``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmx.mkv import Recorder, Track

#: RTP video clock (Hz) of the encoded frames' timestamps.
VIDEO_CLOCK = 90000
#: How fast the clock mapping may rise (s per s): follows a sender clock up to 1000 ppm slow.
LEAK = 1e-3
#: A stream whose frames arrive this much later than its mapping says (s) ...
RESET_S = 1.0
#: ... for this long (s) has jumped its RTP clock: the mapping starts afresh.
RESET_CONFIRM_S = 1.0
#: After a cut, how long the previous camera stays in the program file waiting for the new
#: camera's keyframe (s).
CUT_WAIT_S = 1.0
#: Keyframe requests (PLI) to one publisher at most this often (s).
KEYFRAME_REQUEST_INTERVAL_S = 0.5
#: A ``recording.armed`` older than this (s) is history (a replayed file), not a take to
#: record now; a live take missed while away comes from ``GET /v1/state`` (`sync`).
STALE_ARM_S = 30.0
#: aiortc codec names → `mmx.mkv` codec names.
CODECS = {"VP8": "vp8", "H264": "h264"}
PROGRAM = "program"

PostFn = Callable[[str, dict[str, Any]], Any]
StatusFn = Callable[[dict[str, Any]], None]


class StreamClock:
    """Maps one RTP stream's timestamps (90 kHz, counted from its first frame) to wall time.

    ``wall(rtp, arrival)``: ``rtp`` the frame's timestamp, ``arrival`` its arrival (Unix
    seconds); returns the frame's wall time (Unix seconds, never after ``arrival``). See the
    module docstring for the rule; ``resets`` counts RTP clock jumps followed.
    """

    def __init__(self, *, leak: float = LEAK, reset_s: float = RESET_S, confirm_s: float = RESET_CONFIRM_S) -> None:
        self.leak, self.reset_s, self.confirm_s = leak, reset_s, confirm_s
        self.offset: float | None = None
        self.resets = 0
        self._last_rtp_s = 0.0
        self._high_since: float | None = None

    def wall(self, rtp: int, arrival: float) -> float:
        rtp_s = rtp / VIDEO_CLOCK
        delay = arrival - rtp_s
        if self.offset is None:
            self.offset = delay
        else:
            risen = self.offset + self.leak * max(0.0, rtp_s - self._last_rtp_s)
            if delay - self.offset > self.reset_s:
                # late frames: a delay burst (soon over) or a jump of the sender's RTP clock
                if self._high_since is None:
                    self._high_since = arrival
                elif arrival - self._high_since >= self.confirm_s:
                    # from this frame on (the minimum filter then brings it down to the fastest)
                    risen, self._high_since = delay, None
                    self.resets += 1
            else:
                self._high_since = None
            self.offset = min(delay, risen)
        self._last_rtp_s = rtp_s
        return self.offset + rtp_s


@dataclass(eq=False)
class Publisher:
    """One WHIP session of a camera, as the recorder sees it."""

    camera: str
    session: str
    queues: list = field(default_factory=list)
    clock: StreamClock = field(default_factory=StreamClock)
    codec: str | None = None
    frames: int = 0
    need_key: bool = True
    requested_at: float = -1e9

    def request_keyframe(self, *, force: bool = False) -> None:
        """Ask the publisher for a keyframe (RTCP PLI), at most every `KEYFRAME_REQUEST_INTERVAL_S`."""
        now = time.monotonic()
        if not force and now - self.requested_at < KEYFRAME_REQUEST_INTERVAL_S:
            return
        self.requested_at = now
        for q in self.queues:
            request = getattr(q, "request_keyframe", None)
            if request is not None:
                try:
                    request()
                except RuntimeError:  # no event loop any more (shutting down)
                    pass


@dataclass
class RelayTake:
    """The take the relay writes for: serve's ``recording.armed`` data."""

    take: str
    session: str | None
    video_dir: Path
    origin_ts: float
    isos: dict[str, Track] = field(default_factory=dict)
    #: the publisher (session id) whose stream each ISO holds now
    iso_source: dict[str, str] = field(default_factory=dict)
    programs: list[Track] = field(default_factory=list)
    #: the ``recording.stopped`` data of every file closed so far
    stopped: list[dict[str, Any]] = field(default_factory=list)


class RelayRecording:
    """The relay's ISO and program files (see the module docstring).

    ``hub`` is the relay's `mmx.relay.hub.Hub` (its ``program`` is followed);
    ``post(type, data)`` sends an event to serve; ``report`` takes status dicts for stderr.
    Call `publisher` for each new WHIP session, `program_changed` on each cut, `apply`
    with serve's events, `sync` with serve's ``GET /v1/state``, `close` at the end.
    """

    def __init__(self, hub: Any, *, post: PostFn | None = None, report: StatusFn | None = None,
                 max_pending: int | None = None) -> None:  # fmt: skip
        self.hub = hub
        self.post = post or (lambda type, data: None)
        self.report = report or (lambda record: None)
        self.take: RelayTake | None = None
        self.publishers: dict[str, Publisher] = {}
        self._max_pending = max_pending
        self._recorder: Recorder | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._program_source: str | None = None  # camera whose frames go into the program file
        self._program_target: str | None = None  # the program camera (the last cut)
        self._cut_at = 0.0
        self._closing: set[asyncio.Task] = set()
        self._disarming: asyncio.Task | None = None
        self._last_op: asyncio.Future | None = None
        self.unsupported: set[str] = set()

    # -- hooks ----------------------------------------------------------------------------

    def publisher(self, camera: str, session: str, queues: list) -> Publisher:
        """A new WHIP publisher of ``camera``: its decoder queues (`BoundedDecoderQueue`)
        hand every encoded frame to the recorder from now on."""
        pub = Publisher(camera=camera, session=session, queues=list(queues))
        self.publishers[camera] = pub
        for q in pub.queues:
            q.on_frame = lambda codec, frame, key, pub=pub: self._on_frame(pub, codec, frame, key)
        return pub

    def _on_frame(self, pub: Publisher, codec: Any, frame: Any, key: bool | None) -> None:
        try:
            self.frame(pub, codec.name, frame.data, frame.timestamp, key)
        except Exception as exc:  # noqa: BLE001 - a recording bug must never stop the media path
            if "error" not in self.unsupported:
                self.unsupported.add("error")
                self.report({"status": "record_error", "camera": pub.camera, "error": f"{type(exc).__name__}: {exc}"})

    def program_changed(self, camera: str | None) -> None:
        """The relay cut to ``camera``: the program file follows at its next keyframe."""
        self._program_target = camera
        self._cut_at = time.monotonic()
        pub = self.publishers.get(camera) if camera else None
        if self.take is not None and pub is not None:
            pub.request_keyframe(force=True)

    def frame(self, pub: Publisher, codec_name: str, data: bytes, rtp: int, key: bool | None,
              arrival: float | None = None) -> None:  # fmt: skip
        """One encoded frame of ``pub`` (``rtp``: its 90 kHz timestamp; ``arrival``: Unix s, now
        when None). Called on the event loop for every frame received, armed or not."""
        arrival = time.time() if arrival is None else arrival
        ts = pub.clock.wall(rtp, arrival)
        pub.frames += 1
        take = self.take
        if take is None or self.publishers.get(pub.camera) is not pub:
            return
        codec = CODECS.get(codec_name.upper())
        if codec is None:
            if codec_name not in self.unsupported:
                self.unsupported.add(codec_name)
                self.report({"status": "record_unsupported", "camera": pub.camera, "codec": codec_name})
            return
        key = bool(key)
        pub.codec = codec
        if key:
            pub.need_key = False
        elif pub.need_key:
            pub.request_keyframe()  # frames before a stream's first keyframe cannot be shown
            return
        self._write_iso(take, pub, codec, data, ts, key)
        self._write_program(take, pub, codec, data, ts, key)

    # -- files ----------------------------------------------------------------------------

    def _write_iso(self, take: RelayTake, pub: Publisher, codec: str, data: bytes, ts: float, key: bool) -> None:
        assert self._recorder is not None
        track = take.isos.get(pub.camera)
        if track is not None and track.codec != codec:
            self._close_soon(take, track, "codec_changed")
            track = None
        if track is None:
            track = self._open(take, pub.camera, codec, "iso")
            take.isos[pub.camera] = track
            take.iso_source[pub.camera] = pub.session
        elif take.iso_source.get(pub.camera) != pub.session:
            # a rejoin (a new publisher, here at its first keyframe): the same file, after a gap
            take.iso_source[pub.camera] = pub.session
            self._recorder.resync(track)
        if not self._recorder.write(track, data, ts, key):
            pub.need_key = True
            pub.request_keyframe()

    def _write_program(self, take: RelayTake, pub: Publisher, codec: str, data: bytes, ts: float, key: bool) -> None:
        assert self._recorder is not None
        camera = pub.camera
        if self._program_target != self._program_source:
            if self._program_target is None:
                self._program_source = None  # a cut to nothing: a gap
            elif camera == self._program_target:
                if not key:
                    pub.request_keyframe()
                    return
                self._program_source = camera  # the cut, at the new camera's keyframe
            elif camera == self._program_source and time.monotonic() - self._cut_at > CUT_WAIT_S:
                self._program_source = None  # the new camera sends nothing: a gap, not the old one
        if camera != self._program_source:
            return
        track = take.programs[-1] if take.programs else None
        if track is not None and track.codec != codec:
            if track.started:
                self._close_soon(take, track, "codec_changed")
            else:
                take.programs.pop()  # never written: no file
            track = None
        if track is None:
            track = self._open(take, PROGRAM, codec, "program")
            take.programs.append(track)
        self._recorder.write(track, data, ts, key)

    def _open(self, take: RelayTake, camera: str, codec: str, kind: str) -> Track:
        assert self._recorder is not None
        taken = {t.path for t in [*take.isos.values(), *take.programs]}
        path, n = take.video_dir / f"{camera}.mkv", 2
        while path in taken or path.exists():  # a file is made at its first keyframe only
            path, n = take.video_dir / f"{camera}.{n}.mkv", n + 1
        return self._recorder.open(path, codec=codec, origin_ts=take.origin_ts, camera=camera, kind=kind,
                                   info={"take": take.take, "session": take.session})  # fmt: skip

    def _started(self, track: Track, ts: float) -> None:
        # on the writer thread: the file exists now
        data = {"camera": track.camera, "path": str(track.path), "codec": track.codec, "kind": track.kind,
                "started_at": ts, "first_frame_ts": ts, "start_s": round(ts - track.origin_ts, 3),
                "origin_ts": track.origin_ts, "width": track.width, "height": track.height,
                "take": track.info.get("take")}  # fmt: skip
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._announce, data)

    def _announce(self, data: dict[str, Any]) -> None:
        self.report({"status": "recording_started", **data})
        self.post("recording.started", data)

    def _close_soon(self, take: RelayTake, track: Track, reason: str) -> None:
        task = asyncio.ensure_future(self._close_track(take, track, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_track(self, take: RelayTake, track: Track, reason: str) -> dict[str, Any] | None:
        assert self._recorder is not None
        data = await asyncio.wrap_future(self._recorder.close(track, reason))
        if data is None:
            return None  # no frame ever written: no file
        data["take"] = take.take
        take.stopped.append(data)
        self.report({"status": "recording_stopped", **data})
        self.post("recording.stopped", data)
        return data

    # -- the take -------------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        return self.take is not None

    async def arm(self, *, take: str, session: str | None, path: str, origin_ts: float) -> bool:
        """Start writing for ``take`` into ``path`` (a directory). False (reported) when the
        directory cannot be made; an armed other take is stopped first (``replaced``)."""
        if self.take is not None:
            if self.take.take == take:
                return True
            await self.disarm("replaced")
        video_dir = Path(path)
        try:
            await asyncio.to_thread(video_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            self.report({"status": "record_error", "take": take, "path": path,
                         "error": f"cannot make {path}: {exc.strerror or exc}"})  # fmt: skip
            return False
        self._loop = asyncio.get_running_loop()
        if self._recorder is None:
            kwargs = {"max_pending": self._max_pending} if self._max_pending else {}
            self._recorder = Recorder(on_started=self._started, **kwargs)
        self.take = RelayTake(take=take, session=session, video_dir=video_dir, origin_ts=float(origin_ts))
        self._program_source = None
        self._program_target = self.hub.program
        self._cut_at = time.monotonic()
        for pub in self.publishers.values():
            pub.need_key = True
            pub.request_keyframe(force=True)
        self.report({"status": "recording_armed", "take": take, "path": path})
        return True

    async def disarm(self, reason: str) -> list[dict[str, Any]]:
        """Close every file of the take (trailer, sha256) and post ``recording.stopped`` for
        each; returns their data. Nothing happens when no take is armed."""
        if self._disarming is not None:
            return await asyncio.shield(self._disarming)
        if self.take is None:
            return []
        self._disarming = asyncio.ensure_future(self._disarm(self.take, reason))
        try:
            return await asyncio.shield(self._disarming)
        finally:
            self._disarming = None

    async def _disarm(self, take: RelayTake, reason: str) -> list[dict[str, Any]]:
        self.take = None  # frames from now on are not written
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        tracks = [t for t in [*take.isos.values(), *take.programs] if not t.closed]
        await asyncio.gather(*(self._close_track(take, t, reason) for t in tracks))
        stopped = list(take.stopped)
        self.report({"status": "recording_disarmed", "take": take.take, "reason": reason, "files": len(stopped)})
        return stopped

    def handle(self, event: Any) -> None:
        """`apply` ``event`` after what came before it, without waiting (for the event reader)."""
        if event.type in ("recording.armed", "recording.disarmed"):
            self._enqueue(self.apply(event))

    def handle_state(self, state: dict[str, Any]) -> None:
        """`sync` with a ``GET /v1/state`` body, in order with `handle`'s events."""
        self._enqueue(self.sync(state.get("recording")))

    def _enqueue(self, coro: Any) -> None:
        previous = self._last_op

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            try:
                await coro
            except Exception as exc:  # noqa: BLE001 - reported; the next take must still work
                self.report({"status": "record_error", "error": f"{type(exc).__name__}: {exc}"})

        self._last_op = asyncio.ensure_future(run())

    async def settled(self) -> None:
        """Wait for the events handed to `handle` so far to be applied."""
        if self._last_op is not None:
            await asyncio.gather(self._last_op, return_exceptions=True)

    async def apply(self, event: Any) -> None:
        """Follow serve's ``recording.armed`` / ``recording.disarmed`` (other events are ignored;
        so is an armed event older than `STALE_ARM_S`)."""
        data = event.data or {}
        if event.type == "recording.armed":
            if isinstance(event.ts, (int, float)) and time.time() - event.ts > STALE_ARM_S:
                return
            if isinstance(data.get("take"), str) and isinstance(data.get("path"), str) and _number(data.get("origin_ts")):
                await self.arm(take=data["take"], session=data.get("session"), path=data["path"],
                               origin_ts=data["origin_ts"])  # fmt: skip
        elif event.type == "recording.disarmed":
            if self.take is not None and data.get("take") in (None, self.take.take):
                reason = data.get("reason")
                await self.disarm(reason if isinstance(reason, str) and reason else "disarmed")

    async def sync(self, recording: Any) -> None:
        """Match serve's ``recording`` state (``GET /v1/state``) after a (re)connect: arm its
        take, or stop a take serve no longer has (``server_disarmed``)."""
        if not isinstance(recording, dict):
            return
        if recording.get("armed") and isinstance(recording.get("take"), str) and isinstance(recording.get("path"), str) \
                and _number(recording.get("origin_ts")):  # fmt: skip
            await self.arm(take=recording["take"], session=recording.get("session"), path=recording["path"],
                           origin_ts=recording["origin_ts"])  # fmt: skip
        elif not recording.get("armed") and self.take is not None:
            await self.disarm("server_disarmed")

    def status(self) -> dict[str, Any]:
        """The ``recording`` object of the relay's ``GET /status``."""
        take = self.take
        if take is None:
            return {"armed": False}
        return {"armed": True, "take": take.take, "session": take.session, "path": str(take.video_dir),
                "origin_ts": take.origin_ts, "program": self._program_source,
                "files": [{"camera": t.camera, "kind": t.kind, "path": str(t.path), "frames": t.frames,
                           "dropped": t.dropped, "error": t.error}
                          for t in [*take.isos.values(), *take.programs] if t.started]}  # fmt: skip

    async def close(self, reason: str = "shutdown") -> list[dict[str, Any]]:
        """Stop the take (``reason``) and the writer thread."""
        await self.settled()
        stopped = await self.disarm(reason)
        if self._recorder is not None:
            recorder, self._recorder = self._recorder, None
            await asyncio.to_thread(recorder.shutdown)
        return stopped


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ServePoster:
    """Posts the relay's events to mmx serve (``POST {server}/v1/events``, Bearer ``token``),
    in order, one at a time; while serve is away the head is retried (0.5 s doubling to 5 s).

    ``post(type, data)`` queues (synchronous); ``run()`` delivers until cancelled; ``flush``
    waits for the queue to empty. A 4xx refusal is reported (``post_refused``) and dropped.
    The event id is made once, so a retry serve had already stored stays one event.
    """

    def __init__(self, server: str, *, token: str | None = None, report: StatusFn | None = None) -> None:
        from mmx.events import Producer

        self.url = server.rstrip("/") + "/v1/events"
        self.token = token
        self.report = report or (lambda record: None)
        self.producer = Producer("relay")
        self.posted = 0
        self._queue: list[Any] = []
        self._ready = asyncio.Event()

    def post(self, type: str, data: dict[str, Any]) -> None:
        from mmx.events import check_event

        event = self.producer.make(type, data, session=None)
        check_event(event)
        self._queue.append(event)
        self._ready.set()

    async def run(self) -> None:
        import aiohttp

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        backoff = 0.5
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
            while True:
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                event = self._queue[0]
                try:
                    async with http.post(self.url, json=event.to_dict()) as resp:
                        status, body = resp.status, await resp.text()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    status, body = None, f"{type(exc).__name__}: {exc}"
                if status is not None and status < 500:
                    self._queue.pop(0)
                    backoff = 0.5
                    if status < 300:
                        self.posted += 1
                    else:
                        self.report({"status": "post_refused", "type": event.type, "code": status, "reason": body[:300]})
                    continue
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait up to ``timeout_s`` for every queued event to be delivered; True when done."""
        deadline = time.monotonic() + timeout_s
        while self._queue and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self._queue
