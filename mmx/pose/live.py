"""Live pose: preview frames of `mmx serve` cameras in, ``pose.sample`` events out.

One WebSocket (``GET /v1/previews/ws?cameras=…``) brings the newest JPEG of every chosen
camera; each camera has one slot holding its newest unestimated frame, so a frame that
arrives before the estimator got to the previous one replaces it (latest frame wins, the
replaced one counts as dropped, as do frames the server skipped for us: gaps in the
preview ``seq``). One estimator thread takes the waiting frames in turn (the camera that
waited longest first), decodes, estimates with that camera's tracking `PoseEstimator`, and
hands the sample to a poster that sends ``POST /v1/pose`` in order, stamped with the
frame's capture time on the server clock (``capture_t`` of the preview header).

Which cameras: the named ones (``cameras``), or every camera whose device does not send
pose itself (``capabilities.pose`` not true in ``GET /v1/state``), re-read every
`REFRESH_S` so cameras that join later are picked up. When the server goes away the runner
says so and reconnects with backoff; a wrong token is `ServiceUnavailableError` (exit 69).
Library code: human messages go to ``notify``, numbers to ``on_stats``.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import orjson

from mmx.errors import ServiceUnavailableError
from mmx.pose.estimator import EstimatorParams, PoseEstimator

#: Seconds between two reads of ``GET /v1/state`` (which cameras to follow).
REFRESH_S = 2.0
#: Seconds between two stats reports.
STATS_S = 5.0
#: Reconnect backoff: first delay, ceiling (seconds).
BACKOFF_S = (0.25, 5.0)
#: Samples kept for the poster while the server is slow; beyond this the oldest go.
POST_QUEUE_MAX = 1_000


@dataclass
class CameraStats:
    """One camera's counters: frames estimated, dropped (never estimated), samples posted."""

    estimated: int = 0
    dropped: int = 0
    posted: int = 0
    detected: int = 0
    last_seq: int | None = None
    window: list[float] = field(default_factory=list)  # monotonic times of recent estimates

    def fps(self, now: float, span_s: float = STATS_S) -> float:
        self.window = [t for t in self.window if now - t <= span_s]
        return round(len(self.window) / span_s, 2)


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    """(height, width, 3) uint8 RGB from JPEG bytes. Raises ValueError when not decodable.

    OpenCV's decoder when present (MediaPipe brings it; straight to RGB, ~0.7 ms for
    640×360 here against Pillow's ~0.9 ms, the same pixels), else Pillow.
    """
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is not None and hasattr(cv2, "IMREAD_COLOR_RGB"):
        rgb = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)
        if rgb is None:
            raise ValueError("not a decodable JPEG")
        return rgb
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            # a colour JPEG decodes to RGB already; convert() would copy every pixel once more
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a decodable JPEG: {exc}") from None


def unpack_preview(message: bytes) -> tuple[dict[str, Any], bytes]:
    """``(header, jpeg)`` of one ``/v1/previews/ws`` binary message (uint32 BE length, JSON, JPEG)."""
    if len(message) < 4:
        raise ValueError("preview message shorter than its length prefix")
    n = int.from_bytes(message[:4], "big")
    if 4 + n > len(message):
        raise ValueError("preview header longer than the message")
    return orjson.loads(message[4:4 + n]), message[4 + n:]


class LivePose:
    """`mmx pose --server`: follow cameras' previews, post their pose, until `stop`."""

    def __init__(self, server: str, token: str | None, *, cameras: list[str] | None = None,
                 params: EstimatorParams | None = None, notify: Callable[[str], None] | None = None,
                 on_stats: Callable[[dict[str, dict[str, Any]], bool], None] | None = None,
                 stats_s: float = STATS_S) -> None:  # fmt: skip
        self.base = server.rstrip("/") if "://" in server else f"http://{server.rstrip('/')}"
        self.token = token
        self.named = list(cameras) if cameras else None
        self.params = params or EstimatorParams()
        self.notify = notify or (lambda _m: None)
        self.on_stats = on_stats
        self.stats_s = stats_s
        self.stats: dict[str, CameraStats] = {}
        self.following: list[str] = []
        self._slots: dict[str, tuple[dict[str, Any], bytes, float]] = {}
        self._estimators: dict[str, PoseEstimator] = {}
        self._frame_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._posts: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=POST_QUEUE_MAX)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmx-pose")
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def stop(self) -> None:
        self._stop.set()
        self._frame_ready.set()

    # -- the server ------------------------------------------------------------------------

    async def _state(self) -> dict[str, Any]:
        assert self._http is not None
        async with self._http.get(self.base + "/v1/state", timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status == 401:
                raise ServiceUnavailableError(f"{self.base} refused the token",
                                              hint="pass the token mmx serve printed with --token or MMX_TOKEN")  # fmt: skip
            resp.raise_for_status()
            return await resp.json()

    def choose(self, state: dict[str, Any]) -> list[str]:
        """The cameras to follow: the named ones, else those whose device sends no pose."""
        if self.named is not None:
            return list(self.named)
        return [c["camera"] for c in state.get("cameras", []) if not (c.get("capabilities") or {}).get("pose")]

    async def run(self) -> None:
        """Follow and post until `stop`; reconnects when the server goes away. Raises
        ServiceUnavailableError (exit 69) on a wrong token, and when MediaPipe is missing."""
        from mmx.pose.estimator import load_mediapipe

        load_mediapipe()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = aiohttp.ClientSession(headers=headers)
        tasks = [asyncio.create_task(self._estimate_loop()), asyncio.create_task(self._post_loop()),
                 asyncio.create_task(self._stats_loop())]  # fmt: skip
        attempt, was_up = 0, False
        try:
            while not self._stop.is_set():
                try:
                    await self._session()
                    attempt = 0
                    if self._stop.is_set():
                        break
                    self.notify("the server closed the preview stream; reconnecting")
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if attempt == 0:
                        self.notify(f"server unavailable ({type(exc).__name__}: {exc}); retrying" if not was_up
                                    else f"server unavailable ({type(exc).__name__}); reconnecting")  # fmt: skip
                    attempt += 1
                was_up = True
                delay = min(BACKOFF_S[1], BACKOFF_S[0] * 2 ** min(attempt, 8))
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            self._frame_ready.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._http.close()
            self._pool.shutdown(wait=True)
            for estimator in self._estimators.values():
                estimator.close()
            self._report(final=True)

    async def _session(self) -> None:
        """One connection: choose cameras, open the previews socket, read until it closes."""
        assert self._http is not None
        state = await self._state()
        self.following = self.choose(state)
        self.notify(f"connected to {self.base}; following {', '.join(self.following) or 'no camera yet'}")
        ws_url = self.base.replace("http", "ws", 1) + "/v1/previews/ws"
        # "-" names no camera: an empty choice must not subscribe to every camera
        async with self._http.ws_connect(ws_url, params={"cameras": ",".join(self.following) or "-"},
                                         heartbeat=10.0, max_msg_size=16 << 20) as ws:  # fmt: skip
            self._ws = ws
            refresher = asyncio.create_task(self._refresh(ws))
            closer = asyncio.create_task(self._close_on_stop(ws))
            try:
                async for msg in ws:  # ends when the socket closes, by the server or by `stop`
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        self._arrived(msg.data)
            finally:
                refresher.cancel()
                closer.cancel()
                self._ws = None

    async def _close_on_stop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await self._stop.wait()
        await ws.close()

    async def _refresh(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Re-read the camera list; a changed choice becomes a new subscription."""
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                chosen = self.choose(await self._state())
            except (aiohttp.ClientError, OSError, TimeoutError):
                continue
            if chosen != self.following:
                added = sorted(set(chosen) - set(self.following))
                self.following = chosen
                await ws.send_str(orjson.dumps({"t": "subscribe", "cameras": chosen or ["-"]}).decode())
                if added:
                    self.notify(f"following {', '.join(added)} too")

    # -- frames in, samples out ---------------------------------------------------------------

    def _arrived(self, message: bytes) -> None:
        try:
            header, jpeg = unpack_preview(message)
        except (ValueError, orjson.JSONDecodeError):
            return
        camera = header.get("camera")
        if not isinstance(camera, str) or camera not in self.following:
            return
        self.stats.setdefault(camera, CameraStats())
        # latest frame wins: a frame still waiting is replaced (counted by the seq gap)
        self._slots[camera] = (header, jpeg, time.monotonic())
        self._frame_ready.set()

    def _take(self) -> tuple[str, dict[str, Any], bytes] | None:
        if not self._slots:
            return None
        camera = min(self._slots, key=lambda c: self._slots[c][2])  # the longest wait first
        header, jpeg, _ = self._slots.pop(camera)
        return camera, header, jpeg

    def _estimate(self, camera: str, header: dict[str, Any], jpeg: bytes) -> dict[str, Any] | None:
        """In the estimator thread: decode and estimate one frame; the ``POST /v1/pose`` body."""
        estimator = self._estimators.get(camera)
        if estimator is None:
            estimator = self._estimators[camera] = PoseEstimator(self.params)
        try:
            rgb = decode_jpeg(jpeg)
        except ValueError:
            return None
        seq = header.get("seq") if isinstance(header.get("seq"), int) else None
        joints = estimator.estimate(rgb, seq=seq)
        t = header.get("capture_t") if isinstance(header.get("capture_t"), (int, float)) else header.get("ts")
        return {"camera": camera, "t": t, "joints": joints, "frame_seq": seq, "estimator": self.params.estimator}

    async def _estimate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            item = self._take()
            if item is None:
                self._frame_ready.clear()
                await self._frame_ready.wait()
                continue
            camera, header, jpeg = item
            stats = self.stats.setdefault(camera, CameraStats())
            seq = header.get("seq")
            if isinstance(seq, int):
                # every frame between two estimated ones was dropped: replaced in our slot
                # while the estimator was busy, or skipped by the server while our socket was full
                # (a seq that goes back is a restarted server counting from 1 again)
                if stats.last_seq is not None and seq > stats.last_seq + 1:
                    stats.dropped += seq - stats.last_seq - 1
                stats.last_seq = seq
            body = await loop.run_in_executor(self._pool, self._estimate, camera, header, jpeg)
            if body is None or not isinstance(body["t"], (int, float)):
                continue
            stats.estimated += 1
            stats.detected += body["joints"] is not None
            stats.window.append(time.monotonic())
            body["dropped"] = stats.dropped
            if self._posts.full():
                self._posts.get_nowait()
            self._posts.put_nowait(body)

    async def _post_loop(self) -> None:
        assert self._http is not None
        warned = False
        while True:
            body = await self._posts.get()
            try:
                async with self._http.post(self.base + "/v1/pose", json=body,
                                           timeout=aiohttp.ClientTimeout(total=5)) as resp:  # fmt: skip
                    if resp.status == 202:
                        self.stats[body["camera"]].posted += 1
                        warned = False
                    elif not warned:
                        warned = True
                        text = (await resp.text())[:200]
                        self.notify(f"the server refused a pose sample of {body['camera']}: {resp.status} {text}")
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass  # the server is away; the session loop says so and reconnects

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_s)
            self._report()

    def _report(self, final: bool = False) -> None:
        if self.on_stats is None:
            return
        now = time.monotonic()
        snapshot = {cam: {"fps": s.fps(now, self.stats_s), "estimated": s.estimated, "detected": s.detected,
                          "dropped": s.dropped, "posted": s.posted} for cam, s in sorted(self.stats.items())}  # fmt: skip
        self.on_stats(snapshot, final)
