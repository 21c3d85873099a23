"""Recording the shoot on the server side: takes, proxy files of the previews, the disk.

A **take** is a span of recording: by default one per production session (armed when the
session starts, disarmed just before it ends), or started and stopped by the operator with
``POST /v1/record/start|stop`` (a rehearsal without a session records into
``DATA/recordings/<take>/video/``). While a take is armed:

- every camera's preview JPEGs are muxed, as they arrive, into
  ``<capture dir>/video/<camera>.proxy.mkv`` (MJPEG in Matroska, no re-encode; `mmx.mkv`
  says how time and crash safety work). The proxy is the recording of a camera without
  WebRTC video and a low-resolution fallback for the others. A camera that drops out and
  rejoins continues in the same file with a gap; a take stopped and started again in the
  same session writes new numbered files (``cam-1.proxy.2.mkv``).
- ``mmx relay`` records each publishing camera's ISO (``video/<camera>.mkv``) and the
  program (``video/program.mkv``): it learns of the take from ``recording.armed`` /
  ``recording.disarmed`` (and ``GET /v1/state``'s ``recording`` when it (re)connects) and
  posts its ``recording.started`` / ``recording.stopped`` to ``POST /v1/events``.
- the disk is watched once a second: free space of the take's file system and the rate the
  take's directory grows at (every writer's files, the relay's included when they land
  there), over the last 10 s. Under ``warn_minutes`` (10) of recording left, ``GET /v1/state``
  carries a warning and ``recording.disk_low`` is emitted once; under ``min_free_bytes`` the
  take is stopped cleanly (trailers written, files closed) with reason ``disk_full``, said
  in ``recording.stopped`` per file and in ``recording.disarmed``.

Events (session clock: ``origin_ts`` is the session start, the time zero of every file):

- ``recording.armed``: ``take``, ``session``, ``path`` (the video directory, absolute),
  ``dir`` (relative to the data directory), ``origin_ts``, ``reason``;
- ``recording.started``: ``camera``, ``path``, ``codec``, ``kind`` (``proxy`` here; the relay's
  ``iso``/``program``), ``started_at`` and ``first_frame_ts`` (wall time of the first frame),
  ``start_s`` (its session-clock time), ``origin_ts``, ``width``, ``height``, ``take``;
- ``recording.stopped``: those plus ``bytes``, ``duration_s``, ``frames``, ``dropped``,
  ``sha256``, ``end_s``, ``reason`` (``session_ended``, ``operator``, ``shutdown``,
  ``disk_full``, ``error``, ``writer_lost``: a relay file whose stop never came, closed by the
  server from the file as it is);
- ``recording.disarmed``: ``take``, ``reason``; ``recording.disk_low``: ``free_bytes``,
  ``rate_bytes_s``, ``minutes_left``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmx.events import Event, new_id
from mmx.mkv import Recorder, Track, numbered_path, probe, sha256_file

#: Where takes outside a production session go, under the data directory.
TAKES_DIR = "recordings"
#: How long a disarm waits for the relay's ``recording.stopped`` before closing its files itself.
OTHERS_WAIT_S = 8.0
#: The window the write rate is measured over, in seconds.
RATE_WINDOW_S = 10.0

Emit = Callable[..., Event]


@dataclass
class Take:
    """One armed span of recording."""

    take: str
    session: str | None
    video_dir: Path
    rel_dir: str
    origin_ts: float
    started_at: float
    reason: str
    proxies: dict[str, Track] = field(default_factory=dict)
    #: files other writers (the relay) announced and have not stopped: path → started data
    others: dict[str, dict[str, Any]] = field(default_factory=dict)
    low_warned: bool = False


class ServeRecording:
    """The server's recording state: the armed take, its proxy files, the disk watch.

    ``emit(type, data, session=…)`` publishes a server event; ``log`` takes human lines.
    ``min_free_bytes``: below this much free space the take stops (``disk_full``);
    ``warn_minutes``: a warning when fewer minutes are left at the current rate.
    """

    def __init__(self, data_dir: Path, *, emit: Emit, log: Callable[[str], None], min_free_bytes: int,
                 warn_minutes: float = 10.0) -> None:  # fmt: skip
        self.data_dir = Path(data_dir)
        self.emit = emit
        self.log = log
        self.min_free_bytes = min_free_bytes
        self.warn_minutes = warn_minutes
        self.take: Take | None = None
        self._recorder: Recorder | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch: asyncio.Task | None = None
        self._disarming: asyncio.Task | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._disk: dict[str, Any] = {"free_bytes": None, "rate_bytes_s": 0.0, "minutes_left": None, "warning": None}

    # -- arming ---------------------------------------------------------------------------

    @property
    def armed(self) -> bool:
        return self.take is not None

    def arm(self, *, session: str | None, video_dir: Path, origin_ts: float, reason: str) -> dict[str, Any]:
        """Start a take writing into ``video_dir``; emits ``recording.armed`` and returns its data.

        Raises OSError when the directory cannot be made (the caller answers it).
        """
        assert self.take is None, "a take is already armed"
        self._loop = asyncio.get_running_loop()
        video_dir.mkdir(parents=True, exist_ok=True)
        try:
            rel = str(video_dir.relative_to(self.data_dir))
        except ValueError:
            rel = str(video_dir)
        take = Take(take=new_id(), session=session, video_dir=video_dir, rel_dir=rel, origin_ts=origin_ts,
                    started_at=time.time(), reason=reason)  # fmt: skip
        self.take = take
        self._samples.clear()
        if self._recorder is None:
            self._recorder = Recorder(on_started=self._file_started)
        data = {"take": take.take, "session": session, "path": str(video_dir), "dir": rel, "origin_ts": origin_ts,
                "reason": reason}  # fmt: skip
        self.emit("recording.armed", data, session=session)
        self._watch = asyncio.ensure_future(self._watch_disk(take))
        self.log(f"recording armed ({reason}) into {video_dir}")
        return data

    def take_dir(self) -> Path:
        """A new directory for a take outside any session: ``DATA/recordings/<id>/video``."""
        return self.data_dir / TAKES_DIR / new_id() / "video"

    def preview(self, camera: str, jpeg: bytes | None, ts: float | None) -> None:
        """One preview JPEG of ``camera`` received at ``ts``: into its proxy file when armed."""
        take = self.take
        if take is None or jpeg is None or ts is None or self._recorder is None:
            return
        track = take.proxies.get(camera)
        if track is None:
            path = numbered_path(take.video_dir, f"{camera}.proxy")
            track = self._recorder.open(path, codec="mjpeg", origin_ts=take.origin_ts, camera=camera, kind="proxy",
                                        info={"take": take.take, "session": take.session})  # fmt: skip
            take.proxies[camera] = track
        self._recorder.write(track, jpeg, ts, True)

    def _file_started(self, track: Track, ts: float) -> None:
        # the writer thread made the file: announce it on the event loop
        data = {"camera": track.camera, "path": str(track.path), "codec": track.codec, "kind": track.kind,
                "started_at": ts, "first_frame_ts": ts, "start_s": round(ts - track.origin_ts, 3),
                "origin_ts": track.origin_ts, "width": track.width, "height": track.height,
                "take": track.info.get("take")}  # fmt: skip
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self.emit("recording.started", data, session=track.info.get("session")))

    async def disarm(self, reason: str, *, others_wait_s: float = OTHERS_WAIT_S) -> list[dict[str, Any]]:
        """Stop the take: ``recording.disarmed``, close every proxy file (``recording.stopped``
        each, with its sha256), wait up to ``others_wait_s`` for the relay's files to stop,
        then close what is still open itself (``writer_lost``). Returns the stopped data."""
        if self._disarming is not None:
            return await asyncio.shield(self._disarming)
        if self.take is None:
            return []
        self._disarming = asyncio.ensure_future(self._disarm(self.take, reason, others_wait_s))
        try:
            return await asyncio.shield(self._disarming)
        finally:
            self._disarming = None

    async def _disarm(self, take: Take, reason: str, others_wait_s: float) -> list[dict[str, Any]]:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.emit("recording.disarmed", {"take": take.take, "reason": reason}, session=take.session)
        stopped = []
        assert self._recorder is not None
        futures = [(track, self._recorder.close(track, reason)) for track in take.proxies.values()]
        for track, future in futures:
            data = await asyncio.wrap_future(future)
            if data is None:
                continue  # no frame ever arrived: no file
            data["take"] = take.take
            self.emit("recording.stopped", data, session=take.session)
            stopped.append(data)
        deadline = time.monotonic() + others_wait_s
        while take.others and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for path, started in list(take.others.items()):
            data = await asyncio.to_thread(_finish_lost, Path(path), started)
            data["take"] = take.take
            self.emit("recording.stopped", data, session=take.session)
            stopped.append(data)
        take.others.clear()
        self.take = None
        self.log(f"recording stopped ({reason}): {len(stopped)} file{'s' if len(stopped) != 1 else ''}")
        return stopped

    def observe(self, event: Event, _line: bytes) -> None:
        """Hub sink: follow other writers' ``recording.started``/``stopped`` of the armed take."""
        take = self.take
        if take is None or event.src == "serve" or not event.type.startswith("recording."):
            return
        data = event.data or {}
        path = data.get("path")
        if not isinstance(path, str) or (data.get("take") not in (None, take.take)):
            return
        if event.type == "recording.started":
            take.others[path] = dict(data)
        elif event.type == "recording.stopped":
            take.others.pop(path, None)

    async def close(self) -> None:
        """Stop the writer thread (after `disarm`)."""
        if self._recorder is not None:
            await asyncio.to_thread(self._recorder.shutdown)
            self._recorder = None

    # -- the disk -------------------------------------------------------------------------

    def sample_disk(self, take: Take | None = None) -> dict[str, Any]:
        """Free space, the take's write rate and the minutes left; updates `status`."""
        target = take.video_dir if take is not None else self.data_dir
        try:
            free = shutil.disk_usage(target).free
        except OSError:
            free = None
        now = time.monotonic()
        rate = 0.0
        if take is not None:
            used = _dir_bytes(take.video_dir)
            self._samples.append((now, used))
            while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW_S:
                self._samples.popleft()
            t0, u0 = self._samples[0]
            if now - t0 > 0.5:
                rate = max(0.0, (used - u0) / (now - t0))
        minutes_left = None
        warning = None
        if free is not None and rate > 0:
            minutes_left = max(0.0, free - self.min_free_bytes) / rate / 60
            if minutes_left < self.warn_minutes:
                warning = (f"disk: {minutes_left:.1f} min of recording left at {rate / 1e6:.2f} MB/s "
                           f"({free / 1e9:.2f} GB free)")  # fmt: skip
        if free is not None and take is not None and free < self.min_free_bytes:
            warning = f"disk full: {free / 1e6:.0f} MB free, under the {self.min_free_bytes / 1e6:.0f} MB reserve"
        self._disk = {"free_bytes": free, "rate_bytes_s": round(rate, 1),
                      "minutes_left": round(minutes_left, 2) if minutes_left is not None else None,
                      "warning": warning}  # fmt: skip
        return self._disk

    async def _watch_disk(self, take: Take) -> None:
        while self.take is take:
            disk = await asyncio.to_thread(self.sample_disk, take)
            full = disk["free_bytes"] is not None and disk["free_bytes"] < self.min_free_bytes
            full = full or any(t.disk_full for t in take.proxies.values())
            if full:
                self.log(f"error: {disk['warning'] or 'disk full'}: stopping the recording")
                asyncio.ensure_future(self.disarm("disk_full"))
                return
            low = disk["warning"] is not None
            if low and not take.low_warned:
                self.log(f"warning: {disk['warning']}")
                self.emit("recording.disk_low", {"free_bytes": disk["free_bytes"], "rate_bytes_s": disk["rate_bytes_s"],
                                                 "minutes_left": disk["minutes_left"], "take": take.take},
                          session=take.session)  # fmt: skip
            take.low_warned = low
            await asyncio.sleep(1.0)

    # -- state ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``recording`` object of ``GET /v1/state``."""
        take = self.take
        out: dict[str, Any] = {"armed": take is not None, "min_free_bytes": self.min_free_bytes, **self._disk}
        if take is None:
            return out
        out.update(take=take.take, session=take.session, path=str(take.video_dir), dir=take.rel_dir,
                   origin_ts=take.origin_ts, started_at=take.started_at,
                   files=[{"camera": t.camera, "kind": t.kind, "path": str(t.path), "frames": t.frames,
                           "dropped": t.dropped, "error": t.error} for t in take.proxies.values() if t.started]
                   + [{"camera": d.get("camera"), "kind": d.get("kind"), "path": p, "frames": None, "dropped": None,
                       "error": None} for p, d in take.others.items()])  # fmt: skip
        return out


def _dir_bytes(directory: Path) -> int:
    total = 0
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    pass
    except OSError:
        pass
    return total


def _finish_lost(path: Path, started: dict[str, Any]) -> dict[str, Any]:
    """``recording.stopped`` data for a file whose writer never stopped it (read as it is)."""
    data = {k: started.get(k) for k in ("camera", "path", "codec", "kind", "first_frame_ts", "origin_ts", "width",
                                        "height")}  # fmt: skip
    data.update(reason="writer_lost", bytes=None, sha256=None, frames=None, dropped=None, duration_s=None,
                start_s=started.get("start_s"), end_s=None)  # fmt: skip
    try:
        data["bytes"] = path.stat().st_size
        data["sha256"] = sha256_file(path)
        facts = probe(path)
        data.update(frames=facts["frames"], duration_s=round(facts["duration_s"], 3),
                    start_s=round(facts["start_s"], 3) if facts["start_s"] is not None else data["start_s"],
                    end_s=round(facts["end_s"], 3) if facts["end_s"] is not None else None)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - whatever is left of the file, the stop is recorded
        data["error"] = f"{type(exc).__name__}: {exc}"
    return data
