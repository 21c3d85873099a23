"""``GET /v1/events`` (streamed, resumable with ``since=``) and ``POST /v1/events``."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from mmx.errors import EventError
from mmx.events import Event, from_dict, new_id
from mmx.serve.api import ApiError, json_response, read_json
from mmx.serve.hub import TypeFilter

#: Event types only the server makes; `POST /v1/events` refuses them (use the endpoints).
SERVER_TYPES = frozenset({
    "session.started", "session.ended", "camera.joined", "camera.left", "camera.changed",
    "camera.command", "camera.ack", "director.cut", "director.hold", "director.release",
    "director.mode", "director.program_lost", "still.captured", "pose.sample",
    "recording.armed", "recording.disarmed", "recording.disk_low",
})  # fmt: skip
#: Posted event ids remembered for deduplication (a re-post is acknowledged, not re-broadcast).
POSTED_IDS_KEPT = 50_000


class EventRoutes:
    """The event stream in and out (mixed into `Server`)."""

    def _add_event_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/v1/events", self._get_events)
        r.add_post("/v1/events", self._post_event)

    def _capture_sink(self, event: Event, line: bytes) -> None:
        if self.capture is not None and event.session == self.capture.session:
            try:
                self.capture.write(line)
            except OSError as exc:
                self.log(f"error: cannot write {self.capture.path / 'events.jsonl'}: {exc.strerror}")

    async def _get_events(self, request: web.Request) -> web.StreamResponse:
        since_text = request.query.get("since")
        since: int | None = None
        if since_text is not None:  # an empty since= is no seq either (400), not "from now"
            try:
                since = int(since_text)
            except ValueError:
                raise ApiError(400, f"since must be a whole number (an event seq), got {since_text!r}") from None
            if since < 0:
                raise ApiError(400, "since must not be negative")
        follow = request.query.get("follow", "1").lower() not in ("0", "false", "no")
        type_filter = TypeFilter(request.query.get("types"))
        sub = self.hub.subscribe(type_filter, self.config.stream_queue_size) if follow else None
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        try:
            await resp.prepare(request)
            # a since beyond the newest seq (a reader of an older data directory) starts now
            last = self.hub.seq if since is None else min(since, self.hub.seq)
            if since is not None:
                last = await self._write_events(resp, self.hub.history(since, type_filter), last)
            while sub is not None and not self.closing.is_set():
                if sub.lagged:
                    sub.lagged = False
                    self.hub.lag_recoveries += 1
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    last = await self._write_events(resp, self.hub.history(last, type_filter), last)
                    continue
                try:
                    event = await asyncio.wait_for(sub.queue.get(), 0.5)
                except TimeoutError:
                    continue
                batch = [event]
                while not sub.queue.empty() and len(batch) < 256:
                    batch.append(sub.queue.get_nowait())
                last = await self._write_events(resp, batch, last)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)
        return resp

    async def _write_events(self, resp: web.StreamResponse, events: list[Event], last: int) -> int:
        chunk: list[bytes] = []
        for event in events:
            if (event.seq or 0) <= last:
                continue
            chunk.append(event.encode() + b"\n")
            last = event.seq or last
            if len(chunk) >= 512:
                await resp.write(b"".join(chunk))
                chunk = []
        if chunk:
            await resp.write(b"".join(chunk))
        return last

    async def _post_event(self, request: web.Request) -> web.Response:
        obj = await read_json(request)
        etype = obj.get("type")
        if not isinstance(etype, str) or not etype:
            raise ApiError(400, "the event needs a non-empty string 'type'")
        if etype in SERVER_TYPES:
            raise ApiError(422, f"{etype} is made by the server itself; use its endpoint instead of POST /v1/events")
        obj = dict(obj)
        obj.setdefault("id", new_id())
        if obj.get("ts") is None:
            obj["ts"] = time.time()
        if obj.get("src") in (None, ""):  # any other non-string is refused by from_dict (422)
            obj["src"] = "operator"
        try:
            event = from_dict(obj)
        except EventError as exc:  # well-formed JSON outside the one validation contract
            raise ApiError(422, exc.reason) from None
        if event.id in self._posted:
            return json_response({"id": event.id, "seq": self._posted[event.id], "duplicate": True}, 202)
        published = self.hub.accept(event)  # EventError (422) when the server's seq and session make it too long
        self._posted[event.id] = published.seq or 0
        while len(self._posted) > POSTED_IDS_KEPT:
            self._posted.popitem(last=False)
        return json_response({"id": published.id, "seq": published.seq, "session": published.session, "duplicate": False}, 202)
