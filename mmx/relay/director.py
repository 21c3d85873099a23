"""Follow ``director.cut`` into the relay's program camera: from mmx serve or a JSON Lines stream.

From the server: ``GET {server}/v1/events?types=director.*`` (``since=SEQ`` when resuming)
streamed as ``application/x-ndjson`` with the Bearer token; once the stream is open,
``GET {server}/v1/state`` gives the current ``program`` (events that arrive meanwhile are
applied after it, so nothing is missed). A dropped connection is retried with backoff
(0.5 s doubling to 5 s) and reported through ``on_status``. ``on_event`` and ``on_state``
hand every event and each state read to others (the recorder follows ``recording.*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from mmx.errors import EventError
from mmx.events import Event, aread_events, decode

StatusFn = Callable[[dict[str, Any]], None]


def apply_event(hub: Any, event: Event, on_status: StatusFn | None = None) -> bool:
    """Apply one event to ``hub``: a ``director.cut`` moves the program to ``data["to"]``.

    ``"to": null`` takes the program off (viewers get the slate). Returns whether it changed.
    """
    if event.type != "director.cut":
        return False
    data = event.data or {}
    to = data.get("to")
    if to is not None and (not isinstance(to, str) or not to):
        return False
    if to is None and "to" not in data:
        return False  # a cut to nothing says so with "to": null
    changed = hub.set_program(to)
    if changed and on_status:
        on_status({"status": "cut", "from": data.get("from"), "to": to, "by": data.get("by")})
    return changed


async def follow_stream(hub: Any, reader: asyncio.StreamReader, *, on_status: StatusFn | None = None,
                        on_error: Callable[[EventError], None] | None = None,
                        on_event: Callable[[Event], None] | None = None) -> None:
    """Apply every ``director.cut`` read from ``reader`` (JSON Lines) until end of input.

    Bad lines go to ``on_error`` (an `EventError` naming the line) and the stream goes on;
    ``on_event`` sees every event after it was applied.
    """
    async for event in aread_events(reader, on_error=on_error):
        apply_event(hub, event, on_status)
        if on_event is not None:
            on_event(event)


async def follow_server(hub: Any, server: str, *, token: str | None = None,
                        on_status: StatusFn | None = None,
                        on_error: Callable[[EventError], None] | None = None,
                        max_backoff_s: float = 5.0, types: str = "director.*",
                        on_event: Callable[[Event], None] | None = None,
                        on_state: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Follow the server's director events forever (cancel the task to stop).

    ``types`` is the stream's filter (``director.*`` at least); ``on_event`` sees every
    event after it was applied, ``on_state`` the ``GET /v1/state`` body of each connection.
    """
    base = server.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    since: int | None = None
    backoff = 0.5
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5)
    while True:
        try:
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
                params = {"types": types}
                if since is not None:
                    params["since"] = str(since)
                async with http.get(f"{base}/v1/events", params=params) as resp:
                    if resp.status != 200:
                        raise ConnectionError(f"GET /v1/events answered {resp.status}")
                    async with http.get(f"{base}/v1/state", timeout=aiohttp.ClientTimeout(total=5)) as sresp:
                        if sresp.status == 200:
                            state = await sresp.json(content_type=None)
                            program = state.get("program") if isinstance(state, dict) else None
                            if isinstance(program, str) and program:
                                if hub.set_program(program) and on_status:
                                    on_status({"status": "program", "camera": program})
                            if on_state is not None and isinstance(state, dict):
                                on_state(state)
                    if on_status:
                        on_status({"status": "following", "server": base})
                    backoff = 0.5
                    line_no = 0
                    while True:
                        line = await resp.content.readline()
                        if not line:
                            break
                        line_no += 1
                        if not line.strip():
                            continue
                        try:
                            event = decode(line, line_no=line_no)
                        except EventError as exc:
                            if on_error:
                                on_error(exc)
                            continue
                        if isinstance(event.seq, int):
                            since = event.seq
                        apply_event(hub, event, on_status)
                        if on_event is not None:
                            on_event(event)
            reason = "event stream ended"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, ConnectionError, OSError, asyncio.TimeoutError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if on_status:
            on_status({"status": "server_unreachable", "server": base, "reason": reason, "retry_s": backoff})
        await asyncio.sleep(backoff)
        backoff = min(max_backoff_s, backoff * 2)
