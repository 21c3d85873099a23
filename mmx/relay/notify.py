"""The relay's own events, posted to mmx serve (``POST {server}/v1/events``, ``src`` ``relay``).

`EventPoster` queues events in order and posts them one at a time with the Bearer token, so
serve puts them on its stream (and the ledger, the console) like any other. While serve is
unreachable or answers 5xx the head of the queue is retried with backoff (0.5 s doubling to
5 s); a 4xx refusal is reported through ``on_status`` (``{"status": "post_refused", …}``) and
that event dropped. At most ``queue_max`` events wait; beyond that the oldest are dropped
and reported (``post_dropped``). The event ``id`` is set once, so a retried post that serve
had in fact stored is acknowledged as a duplicate, not stored twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

from mmx.events import Event, Producer, check_event

StatusFn = Callable[[dict[str, Any]], None]
#: Retry delays while serve is away (s).
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 5.0


class EventPoster:
    """Posts events made by the relay to mmx serve at ``server`` (see the module docstring).

    ``post(type, data)`` is synchronous (safe from any callback on the loop); ``run()`` is the
    task that delivers, until cancelled. ``posted`` counts events serve acknowledged.
    """

    def __init__(self, server: str, *, token: str | None = None, on_status: StatusFn | None = None,
                 queue_max: int = 1000, timeout_s: float = 5.0) -> None:
        self.url = server.rstrip("/") + "/v1/events"
        self.token = token
        self.on_status = on_status or (lambda record: None)
        self.queue_max = queue_max
        self.timeout_s = timeout_s
        self.producer = Producer("relay")
        self.posted = 0
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()

    def post(self, type: str, data: dict[str, Any]) -> Event:
        """Queue a new event of ``type``; returns it. Raises `mmx.errors.EventError` when the
        event breaks the vocabulary (a relay bug, never sent)."""
        event = self.producer.make(type, data, session=None)
        check_event(event)
        if len(self._queue) >= self.queue_max:
            dropped = self._queue.popleft()
            self.on_status({"status": "post_dropped", "type": dropped.type, "id": dropped.id,
                            "reason": "serve away too long"})
        self._queue.append(event)
        self._ready.set()
        return event

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        backoff = BACKOFF_START_S
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as http:
            while True:
                if not self._queue:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                event = self._queue[0]
                try:
                    async with http.post(self.url, json=event.to_dict()) as resp:
                        body = await resp.text()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    status, body = None, f"{type(exc).__name__}: {exc}"
                if status is not None and status < 500:
                    self._queue.popleft()
                    backoff = BACKOFF_START_S
                    if status < 300:
                        self.posted += 1
                    else:
                        self.on_status({"status": "post_refused", "type": event.type, "id": event.id,
                                        "code": status, "reason": body.strip()[:300]})
                    continue
                if backoff == BACKOFF_START_S:  # once per outage, not once per retry
                    self.on_status({"status": "post_retry", "type": event.type, "retry_s": backoff,
                                    "reason": body.strip()[:300] if status is None else f"HTTP {status}"})
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait up to ``timeout_s`` for the queue to empty (``run`` must be running); True when empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._queue and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return not self._queue
