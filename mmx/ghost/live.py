"""The live ghost: runs the policy against `mmx serve` (or events on stdin) on the wall clock.

`GhostRunner` reads events — the server's stream ``GET /v1/events?since=SEQ&types=…`` with
``pose.sample`` named explicitly, or JSON Lines from a file or stdin (``-``) — feeds them to
a `Policy` with ``now = time.time()`` (pose lines through the typed fast path of
`mmx.ghost.reader`, as the replay reads them) and acts on its outputs:

- every proposal and decision is written to ``out`` as JSON Lines (a `Producer` with
  ``src="ghost"``) and, with a server, posted to ``POST /v1/events`` (queued in order, kept
  while the server is away, so the ledger sees them once it is back);
- a cut is executed with ``POST /v1/director/cut {to, by: "ghost", proposal}`` at its
  ``cut_at``: the runner sleeps until the policy's next deadline and dispatches the cut
  ``dispatch_lead_s`` early, the median delay measured between dispatching recent cuts
  and the server's stamp on their ``director.cut`` (a few ms on an idle loopback), so the
  cut lands on its beat;
- when the server goes away the runner says so (``notify``), abandons the pending proposal
  (``ghost.expired``, reason ``server unavailable``), stops proposing and reconnects with
  exponential backoff (0.25 s doubling to 5 s) for up to ``reconnect_for_s`` seconds
  before raising `ServiceUnavailableError`.

What a replay of the recording needs to re-enact this run (``mmx ghost --replay DIR --mode
recorded``) the runner posts itself, so it lands in the session's ``events.jsonl``:
``ghost.online`` whenever it (re)connects and whenever it sees a session start — ``reason``
(``connected``, ``reconnected``, ``session``), ``since_ts`` (from when it could propose),
``since_seq`` (the server seq it read on from), ``policy`` (the whole policy, tables as in
the policy file) and ``policy_sha256``, ``mode_fixed`` (``--mode``, or null when it follows
the server), ``features`` (its ``--features`` directory, absolute) — and ``ghost.offline``
(``reason``) when it loses the server (posted once it is back, with the time it noticed).

Library code: nothing is printed here; human messages go to the ``notify`` callback and
the optional `mmx.ghost.banner.TerminalUI` draws on a rich console the command passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from mmx import __version__
from mmx.errors import EventError, InputMissingError, ServiceUnavailableError
from mmx.events import Event, EventWriter, Producer, decode
from mmx.ghost.banner import TerminalUI  # noqa: F401 (the command's import)
from mmx.ghost.policy import Output, Policy
from mmx.ghost.reader import PoseLine, pose_from_line, read_replay

#: The stream the ghost subscribes to (pose.sample must be named: it is off by default).
STREAM_TYPES = "pose.sample,camera.*,director.*,music.cue,ghost.*,session.*"
BACKOFF_START_S = 0.25
BACKOFF_MAX_S = 5.0
#: Longest sleep of the timer between deadline checks (new events wake it earlier).
TICK_S = 0.1
#: Posts kept while the server is away; beyond this the oldest are dropped (and reported).
POST_QUEUE_MAX = 10_000
#: First guess and ceiling of how early a cut is sent so the server stamps it on the beat.
DISPATCH_LEAD_START_S = 0.004
DISPATCH_LEAD_MAX_S = 0.05
#: The timer wakes this long before a cut's dispatch time and spins to it.
SPIN_S = 0.015
#: How far back (in server seq) the runner looks for the music playing when it connects.
CUE_LOOKBACK = 20_000

Notify = Callable[[str], None]


class ServerGone(Exception):
    """The server cannot be reached or closed the stream (the runner retries)."""


class ServerRefused(Exception):
    """The server answered a request with an error status (``status``, ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class ServerClient:
    """The few calls of the `mmx serve` HTTP API (DESIGN.md) the ghost needs.

    Connection failures raise `ServerGone`; 401 raises `ServiceUnavailableError` (a wrong
    token will not fix itself); other error answers raise `ServerRefused`.
    """

    def __init__(self, base_url: str, token: str | None, *, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers, read_bufsize=1 << 20)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _check(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            message = (await resp.json(content_type=None)).get("error") or resp.reason
        except (ValueError, AttributeError, aiohttp.ClientError):
            message = resp.reason or ""
        if resp.status == 401:
            raise ServiceUnavailableError(f"{self.base_url} refused the token: {message}",
                                          hint="pass the token mmx serve printed with --token or MMX_TOKEN")  # fmt: skip
        raise ServerRefused(resp.status, str(message))

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One JSON request; the decoded JSON answer."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self._http().request(method, self.base_url + path, json=body, timeout=timeout) as resp:
                await self._check(resp)
                return await resp.json(content_type=None)
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None

    async def state(self) -> dict[str, Any]:
        return await self.request("GET", "/v1/state")

    async def post_event(self, event: Event) -> Any:
        return await self.request("POST", "/v1/events", event.to_dict())

    async def director(self, action: str, body: dict[str, Any]) -> Any:
        return await self.request("POST", f"/v1/director/{action}", body)

    async def last_event(self, etype: str, *, before_seq: int, lookback: int = CUE_LOOKBACK) -> Event | None:
        """The latest event of ``etype`` among the ``lookback`` events before ``before_seq``
        (``GET /v1/events?follow=0``), or None."""
        params = {"types": etype, "since": str(max(0, before_seq - lookback)), "follow": "0"}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        last = None
        try:
            async with self._http().get(self.base_url + "/v1/events", params=params, timeout=timeout) as resp:
                await self._check(resp)
                async for line in resp.content:
                    if line.strip():
                        with contextlib.suppress(EventError):
                            event = decode(line)
                            if event.type == etype and (event.seq or 0) <= before_seq:
                                last = event
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError, ValueError) as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        return last

    async def lines(self, since: int | None, types: str = STREAM_TYPES) -> AsyncIterator[bytes]:
        """The lines of ``GET /v1/events`` as they come; raises ServerGone when it ends."""
        params = {"types": types}
        if since is not None:
            params["since"] = str(since)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_connect=self.timeout_s)
        try:
            async with self._http().get(self.base_url + "/v1/events", params=params, timeout=timeout) as resp:
                await self._check(resp)
                while True:
                    line = await resp.content.readline()
                    if not line:
                        raise ServerGone("the event stream ended")
                    yield line
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError, OSError) as exc:
            raise ServerGone(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        except ValueError as exc:  # aiohttp: a line beyond read_bufsize
            raise ServerGone(f"bad stream: {exc}") from None


class GhostRunner:
    """Drives a `Policy` live (see the module docstring).

    ``out`` gets the JSON Lines (None: nowhere); ``client`` is the server (None: no posts,
    cuts are reported as not executed). ``clock`` is injectable for tests.
    """

    def __init__(self, policy: Policy, *, client: ServerClient | None = None, out: IO[bytes] | None = None,
                 notify: Notify | None = None, clock: Callable[[], float] = time.time,
                 reconnect_for_s: float = 600.0) -> None:  # fmt: skip
        self.policy = policy
        self.client = client
        self.writer = EventWriter(out) if out is not None else None
        self.notify = notify or (lambda message: None)
        self.clock = clock
        self.reconnect_for_s = reconnect_for_s
        self.producer = Producer("ghost", clock=clock)
        self.proposing = client is None
        self.connected = asyncio.Event()
        self.stopped = asyncio.Event()
        self._wake = asyncio.Event()
        self._posts: deque[Event] = deque()
        self._post_ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.emitted: list[Event] = []
        self.cuts_sent = 0
        #: how early a due cut is dispatched: the median of the last measured dispatch → server
        #: stamp delays (loopback request plus this process being scheduled late on a busy host)
        self.dispatch_lead_s = DISPATCH_LEAD_START_S
        self._sent_cuts: dict[str, tuple[float, float]] = {}
        self._latencies: deque[float] = deque([DISPATCH_LEAD_START_S], maxlen=9)
        self.cut_errors_s: list[float] = []
        self.bad_lines = 0
        self.output_closed = False
        self.last_error: str | None = None

    # ----------------------------------------------------------------- outputs
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def apply(self, outputs: list[Output]) -> None:
        """Act on policy outputs: emit events, execute cuts, pass notes on."""
        # a cut is dispatched before anything else due at the same moment (e.g. its ghost.accepted)
        for out in sorted(outputs, key=lambda o: o.type != "cut"):
            if out.type == "note":
                self.notify(out.data["message"])
            elif out.type == "cut":
                if self.client is None:
                    self.notify(f"cut to {out.data['to']} due (proposal {out.data['proposal']}): no server to execute it")
                else:
                    self._spawn(self._cut(out))
            elif out.emit:
                event = self.producer.make(out.type, out.data)
                self.emitted.append(event)
                if self.writer is not None:
                    try:
                        self.writer.write(event)
                    except (BrokenPipeError, ValueError):  # the reader went away: end quietly
                        self.writer = None
                        self.output_closed = True
                        self.stop()
                if self.client is not None:
                    if len(self._posts) >= POST_QUEUE_MAX:
                        dropped = self._posts.popleft()
                        self.notify(f"server away too long: dropped {dropped.type} {dropped.id} from the post queue")
                    self._posts.append(event)
                    self._post_ready.set()
        if outputs:
            self._wake.set()

    async def _cut(self, out: Output) -> None:
        body = {"to": out.data["to"], "by": "ghost", "proposal": out.data["proposal"]}
        self._sent_cuts[out.data["proposal"]] = (out.at, self.dispatch_lead_s)
        while len(self._sent_cuts) > 64:
            self._sent_cuts.pop(next(iter(self._sent_cuts)))
        try:
            await self.client.director("cut", body)  # type: ignore[union-attr]
            self.cuts_sent += 1
        except ServerRefused as exc:
            self.notify(f"cut to {body['to']} refused by the server: {exc.message}")
            await self._refresh_state()
        except ServerGone as exc:
            self.notify(f"cut to {body['to']} not executed: server unavailable ({exc})")

    async def _refresh_state(self) -> None:
        try:
            state = await self.client.state()  # type: ignore[union-attr]
        except (ServerGone, ServerRefused):
            return
        self.policy.load_state(state, self.clock())

    async def _poster(self) -> None:
        while not self.stopped.is_set():
            if not self._posts:
                self._post_ready.clear()
                await self._post_ready.wait()
                continue
            await self.connected.wait()
            event = self._posts[0]
            try:
                await self.client.post_event(event)  # type: ignore[union-attr]
            except ServerGone:
                self.connected.clear()
                await asyncio.sleep(BACKOFF_START_S)
                continue
            except ServerRefused as exc:
                self.notify(f"server refused {event.type} {event.id}: {exc.message}")
            self._posts.popleft()

    async def flush_posts(self, timeout_s: float = 5.0) -> bool:
        """Wait (up to ``timeout_s``) until every queued post is delivered; True when done."""
        deadline = time.monotonic() + timeout_s
        while self._posts and time.monotonic() < deadline and self.connected.is_set():
            await asyncio.sleep(0.01)
        return not self._posts

    # ----------------------------------------------------------------- inputs
    def online(self, reason: str, *, since_ts: float, since_seq: int | None = None) -> None:
        """Post ``ghost.online`` (see the module docstring): what a replay needs to re-enact
        this run."""
        policy = self.policy
        features = policy.beats.features_dir
        self.apply([Output("ghost.online", {
            "reason": reason, "since_ts": since_ts, "since_seq": since_seq, "version": __version__,
            "policy": policy.config.as_dict(), "policy_sha256": policy.config.digest(),
            "mode_fixed": None if policy.follow_mode else policy.mode,
            "features": str(Path(features).resolve()) if features is not None else None,
        }, self.clock())])  # fmt: skip

    def feed(self, event: Event) -> None:
        """One event from the stream or the input."""
        if event.type == "session.started":
            self.producer.session = event.session
        elif event.type == "session.ended" and event.session == self.producer.session:
            self.producer.session = None
        elif event.type == "director.cut" and self._sent_cuts:
            self._learn_latency(event)
        # the policy's clock is the later of the wall clock and the event's own time
        self.apply(self.policy.feed(event, now=max(self.clock(), self.policy.event_time(event))))
        if event.type == "session.started" and self.client is not None and self.connected.is_set():
            self.online("session", since_ts=event.ts, since_seq=event.seq)  # the session's record says we were here

    def feed_pose(self, pose: PoseLine) -> None:
        """One pose sample from the typed fast path (`mmx.ghost.reader`): what `feed` does
        with its event, without building it."""
        t = pose.data.t
        self.apply(self.policy.feed_pose(pose.data.camera, t, pose.joints(), now=max(self.clock(), t)))

    def key(self, ch: str) -> None:
        """A key from the terminal: ``a`` accept, ``v`` veto, ``h`` hold, ``r`` release."""
        now = self.clock()
        pending = self.policy.pending
        if ch == "a":
            if pending is None:
                self.notify("nothing to accept")
            else:
                self.apply(self.policy.accept(pending.id, now, by="operator"))
        elif ch == "v":
            if pending is None:
                self.notify("nothing to veto")
            else:
                self.apply(self.policy.veto(pending.id, now, by="operator"))
        elif ch in ("h", "r"):
            if self.client is None:
                (self.policy.hold_on if ch == "h" else self.policy.release)(now)
                self.notify("hold on" if ch == "h" else "hold released")
            else:
                self._spawn(self._hold(ch == "h"))
        self._wake.set()

    async def _hold(self, on: bool) -> None:
        body: dict[str, Any] = {"by": "operator"}
        if on and self.policy.program:
            body["camera"] = self.policy.program
        try:
            await self.client.director("hold" if on else "release", body)  # type: ignore[union-attr]
        except (ServerGone, ServerRefused) as exc:
            self.notify(f"{'hold' if on else 'release'} failed: {exc}")

    async def _timer(self) -> None:
        while not self.stopped.is_set():
            if self.proposing:
                deadline = self.policy.next_deadline()
                if deadline is not None and self._cut_due(deadline):
                    # spin the last few ms: a process that is running when its moment comes is
                    # not at the mercy of the scheduler's wake-up latency on a busy host
                    target = deadline - self.dispatch_lead_s
                    spin_until = min(target, self.clock() + SPIN_S)
                    while self.clock() < spin_until:
                        pass
                now = self.clock()
                # act on a deadline dispatch_lead_s early: the cut then reaches the server on its beat
                if deadline is not None and now >= deadline - self.dispatch_lead_s:
                    now = max(now, deadline)
                self.apply(self.policy.step(now))
            deadline = self.policy.next_deadline()
            wait = TICK_S
            if deadline is not None and self.proposing:
                early = self.dispatch_lead_s + (SPIN_S if self._cut_due(deadline) else 0.0)
                wait = min(TICK_S, max(0.0, deadline - early - self.clock()))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _cut_due(self, deadline: float) -> bool:
        """Whether the policy's next deadline is the execution of a cut (not an expiry)."""
        return self.client is not None and self.policy.next_cut_at() == deadline

    def _learn_latency(self, event: Event) -> None:
        """A cut we sent came back: how late after its dispatch did the server stamp it?"""
        sent = self._sent_cuts.pop(event.data.get("proposal") or "", None)
        if sent is None:
            return
        cut_at, lead = sent
        self._latencies.append(event.ts - (cut_at - lead))
        # the median recent delay centres the stamps on the beat; one spike does not move it
        ordered = sorted(self._latencies)
        self.dispatch_lead_s = min(DISPATCH_LEAD_MAX_S, max(0.0, ordered[(len(ordered) - 1) // 2]))
        self.cut_errors_s.append(event.ts - cut_at)
        self.notify(f"cut to {event.data.get('to')} stamped {1000 * (event.ts - cut_at):+.1f} ms from its cut_at "
                    f"(next dispatch {1000 * self.dispatch_lead_s:.1f} ms early)")  # fmt: skip

    async def _stream(self) -> None:
        backoff = BACKOFF_START_S
        down_since: float | None = None
        client = self.client
        assert client is not None
        while not self.stopped.is_set():
            try:
                state = await client.state()
                now = self.clock()
                self.policy.load_state(state, now)
                self.producer.session = state.get("session")
                since = state.get("seq")
                if isinstance(since, int):  # the music already playing when we connect
                    cue = await client.last_event("music.cue", before_seq=since)
                    if cue is not None:
                        self.feed(cue)
                self.connected.set()
                self.proposing = True
                self.online("reconnected" if down_since is not None else "connected", since_ts=now,
                            since_seq=since if isinstance(since, int) else None)  # fmt: skip
                if down_since is not None:
                    self.notify(f"server back after {time.monotonic() - down_since:.1f} s: proposing again")
                else:
                    self.notify(f"connected to {client.base_url} (mode {self.policy.mode}, program {self.policy.program or '-'})")
                down_since, backoff = None, BACKOFF_START_S
                self._wake.set()
                line_no = 0
                async for line in client.lines(since if isinstance(since, int) else None):
                    line_no += 1
                    if not line.strip():
                        continue
                    pose = pose_from_line(line, self.policy.config.signals)
                    if pose is not None:
                        self.feed_pose(pose)
                        continue
                    try:
                        event = decode(line, line_no=line_no)
                    except EventError as exc:
                        self.notify(f"server stream: {exc.message}")
                        continue
                    self.feed(event)
            except (ServerGone, ServerRefused) as exc:
                self.last_error = str(exc)
                self.connected.clear()
                if self.proposing or down_since is None:
                    self.proposing = False
                    self.apply(self.policy.abandon(self.clock(), "server unavailable"))
                    self.apply([Output("ghost.offline", {"reason": f"server unavailable: {exc}"}, self.clock())])
                    self.notify(f"server unavailable ({exc}): stopped proposing, reconnecting")
                if down_since is None:
                    down_since = time.monotonic()
                elif time.monotonic() - down_since > self.reconnect_for_s:
                    raise ServiceUnavailableError(
                        f"{client.base_url} unavailable for {self.reconnect_for_s:g} s: {exc}",
                        hint="start mmx serve, or check --server") from None  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopped.wait(), backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    async def _input(self, source: str | Path) -> None:
        """Read events from a file or ``-`` (stdin) in a thread; feed them as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | PoseLine | None] = asyncio.Queue(maxsize=10_000)
        errors: list[EventError] = []

        def put(item: Event | PoseLine | None) -> None:
            asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        def on_error(exc: EventError) -> None:
            loop.call_soon_threadsafe(self.notify, f"{'stdin' if str(source) == '-' else source}: {exc.message}")
            errors.append(exc)

        def reader() -> None:
            try:
                params = self.policy.config.signals
                if str(source) == "-":
                    for event in read_replay(sys.stdin.buffer, params, on_error=on_error):
                        put(event)
                else:
                    with open(source, "rb") as fp:
                        for event in read_replay(fp, params, on_error=on_error):
                            put(event)
            except (OSError, RuntimeError) as exc:  # RuntimeError: the loop closed under us
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self.notify, f"input: {exc}")
            finally:
                with contextlib.suppress(RuntimeError):
                    put(None)

        if str(source) != "-" and not Path(source).is_file():
            raise InputMissingError(f"no such events file: {source}")
        threading.Thread(target=reader, name="ghost-input", daemon=True).start()
        while True:
            event = await queue.get()
            if event is None:
                break
            if type(event) is Event:
                self.feed(event)
            else:
                self.feed_pose(event)  # type: ignore[arg-type]
        self.bad_lines = len(errors)
        # let the pending proposal play out (execute or expire) before ending
        p = self.policy.pending
        if p is not None:
            end = p.expires_at + 0.05
            while self.policy.pending is not None and self.clock() < end and not self.stopped.is_set():
                await asyncio.sleep(min(TICK_S, max(0.0, end - self.clock())))

    async def run(self, source: str | Path | None = None) -> None:
        """Run until the input ends (``source``), `stop` is called, or the server stays away
        longer than ``reconnect_for_s`` (ServiceUnavailableError)."""
        self.bad_lines = 0
        workers = [asyncio.create_task(self._timer())]
        if self.client is not None:
            workers.append(asyncio.create_task(self._poster()))
        try:
            if source is not None:
                if self.client is not None:
                    with contextlib.suppress(ServerGone, ServerRefused):
                        state = await self.client.state()
                        self.policy.load_state(state, self.clock())
                        self.producer.session = state.get("session")
                        self.connected.set()
                self.proposing = True
                main = asyncio.create_task(self._input(source))
            else:
                main = asyncio.create_task(self._stream())
            stop = asyncio.create_task(self.stopped.wait())
            done, _ = await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
            if main in done:
                main.result()
            else:
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await main
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=2.0)
            if self.client is not None and self.connected.is_set():
                await self.flush_posts()
        finally:
            self.stopped.set()
            self._post_ready.set()
            for w in workers:
                w.cancel()
            for w in workers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await w
            if self.client is not None:
                await self.client.close()

    def stop(self) -> None:
        self.stopped.set()
