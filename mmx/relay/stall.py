"""Noticing a publisher that sends no media: ``relay.stalled`` and ``relay.resumed``.

A camera whose WHIP peer connection is up but whose relay feed has had no decoded frame for
``stall_after_s`` (2 s) — counted from its last frame, or from the moment the connection came
up when it has sent none — is *stalled* (issue 17 item 9: a feed at 0 fps for good while
ICE and DTLS stayed connected, so nothing else noticed). `StallWatch` checks every
``CHECK_INTERVAL_S`` and reports each change once through ``on_change(kind, data)``:

- ``("stalled", {"camera", "publisher", "silent_s", "frames", "rtp_age_s"})``: ``publisher``
  is the WHIP session id, ``silent_s`` the seconds without a frame, ``frames`` the feed's
  frame count so far, ``rtp_age_s`` the seconds since the last RTP packet of any kind from
  that publisher (None: none within 10 s, aiortc's horizon) — it tells "no packets at all"
  (the network or the sender) from "packets but no pictures" (the decoder);
- ``("resumed", {"camera", "publisher", "stalled_s"})`` when a frame arrives again, from the
  same publisher or from the new WHIP session the device opened to get out of the stall.

While stalled the relay asks the publisher for a keyframe (PLI) once a second, so a decoder
that waits for one gets it. A camera whose publisher goes away while stalled keeps its stall
until media comes back (its ``GET /status`` entry reads ``lost`` meanwhile, ``stalled`` only
while a publisher is connected).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

#: Seconds without a decoded frame after which a connected publisher is stalled (issue 17).
STALL_AFTER_S = 2.0
#: How often the feeds are looked at (s): a stall is reported at most this late.
CHECK_INTERVAL_S = 0.25
#: While stalled, a keyframe request (PLI) to the publisher at most this often (s).
PLI_INTERVAL_S = 1.0

ChangeFn = Callable[[str, dict[str, Any]], None]


def rtp_age_s(pc: Any) -> float | None:
    """Seconds since the last RTP packet ``pc`` received on any of its receivers (None when
    none within the last 10 s, the horizon of aiortc's ``getSynchronizationSources``)."""
    newest = None
    for receiver in pc.getReceivers():
        for source in receiver.getSynchronizationSources():
            if newest is None or source.timestamp > newest:
                newest = source.timestamp
    if newest is None:
        return None
    return max(0.0, (datetime.datetime.now(datetime.timezone.utc) - newest).total_seconds())


def request_keyframe(pc: Any) -> None:
    """Send a PLI (RFC 4585 section 6.3.1) for every video source ``pc`` receives."""
    for receiver in pc.getReceivers():
        if receiver.track is None or receiver.track.kind != "video":
            continue
        for source in receiver.getSynchronizationSources():
            asyncio.ensure_future(receiver._send_rtcp_pli(source.source))


class StallWatch:
    """Watches the relay's camera feeds for publishers without media (see the module docstring).

    ``hub`` is the relay's `mmx.relay.hub.Hub`: each `CameraFeed` names its publisher in
    ``feed.session`` (a `mmx.relay.server.PeerSession`: ``id``, ``pc``, ``connected_at`` — the
    `time.monotonic` second its connection came up, None before) and its last frame in
    ``feed.frame_at``. The watch sets ``feed.stalled_since`` (monotonic seconds, or None).
    ``is_current(session)`` says whether a session still belongs to the relay.
    """

    def __init__(self, hub: Any, *, on_change: ChangeFn, is_current: Callable[[Any], bool],
                 stall_after_s: float = STALL_AFTER_S) -> None:
        self.hub = hub
        self.on_change = on_change
        self.is_current = is_current
        self.stall_after_s = stall_after_s
        self.stalls = 0
        self._pli_at: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start checking on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL_S)
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must outlive one odd session
                self.hub.report({"status": "stall_watch_error", "error": f"{type(exc).__name__}: {exc}"})

    def check(self, now: float | None = None) -> None:
        """Look at every feed once; report what changed."""
        now = time.monotonic() if now is None else now
        for feed in list(self.hub.cameras.values()):
            session = feed.session
            stalled_since = getattr(feed, "stalled_since", None)
            if stalled_since is not None:
                if feed.frames and feed.frame_at > stalled_since:
                    feed.stalled_since = None
                    self._pli_at.pop(feed.name, None)
                    self.on_change("resumed", {
                        "camera": feed.name, "publisher": getattr(session, "id", None),
                        "stalled_s": round(feed.frame_at - stalled_since, 3)})
                elif self._connected(session) and now - self._pli_at.get(feed.name, 0.0) >= PLI_INTERVAL_S:
                    self._pli_at[feed.name] = now
                    request_keyframe(session.pc)
                continue
            if not self._connected(session):
                continue
            last = max(feed.frame_at if feed.frames else 0.0, session.connected_at)
            if now - last < self.stall_after_s:
                continue
            feed.stalled_since = last
            self.stalls += 1
            self._pli_at[feed.name] = now
            request_keyframe(session.pc)
            age = rtp_age_s(session.pc)
            self.on_change("stalled", {
                "camera": feed.name, "publisher": session.id, "silent_s": round(now - last, 3),
                "frames": feed.frames, "rtp_age_s": None if age is None else round(age, 3)})

    def _connected(self, session: Any) -> bool:
        return (session is not None and getattr(session, "connected_at", None) is not None
                and self.is_current(session) and session.pc.connectionState == "connected")
