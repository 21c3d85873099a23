"""Pose from outside the device: ``POST /v1/pose`` (what `mmx pose` posts) and the pose rates.

A camera whose device estimates no pose itself (a browser camera, a webcam, `mmx device`
without ``--pose``) gets its ``pose.sample`` events from `mmx pose`, which reads the
camera's preview frames over ``GET /v1/previews/ws`` and posts one sample per estimated
frame::

    POST /v1/pose
    {"camera": "cam-2", "t": 1795264000.093, "joints": {...} | null,
     "frame_seq": 42, "dropped": 3, "estimator": "mediapipe 0.10.21 pose_landmark_full"}

``t`` is the frame's capture time on the server clock (the ``capture_t`` of the preview
header), ``joints`` the 19 Apple Vision joints → ``[x, y, confidence]`` or null (nobody seen),
``frame_seq`` the preview frame it was estimated from, ``dropped`` how many frames of this
camera the poster has skipped so far (latest frame wins). The answer is ``202`` with the
event's ``seq``; the event is ``pose.sample`` with ``source: "mmx pose"``.

``GET /v1/state`` then carries ``pose_fps`` (camera → samples per second over the last
`RATE_WINDOW_S`, counting every ``pose.sample``, the device's own too; 0 once they stop) and
``pose_dropped`` (camera → the poster's last ``dropped``).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from aiohttp import web

from mmx.events import JOINT_NAMES, Event
from mmx.serve.api import ApiError, json_response, read_json

#: Seconds of pose samples a camera's rate is measured over.
RATE_WINDOW_S = 2.0
#: Arrival times kept per camera (enough for 120 samples per second over the window).
RATE_KEPT = 256
_JOINTS = frozenset(JOINT_NAMES)


def check_joints(joints: Any) -> dict[str, list[float]] | None:
    """``joints`` of a posted sample, or raise ValueError saying what is wrong with it."""
    if joints is None:
        return None
    if not isinstance(joints, dict):
        raise ValueError("'joints' must be an object of joint name → [x, y, confidence], or null")
    for name, value in joints.items():
        if name not in _JOINTS:
            raise ValueError(f"unknown joint {name!r} (the 19 Apple Vision names)")
        if not (isinstance(value, list) and len(value) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in value)):
            raise ValueError(f"joint {name!r} must be [x, y, confidence] (numbers)")
    return joints


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ApiError(400, f"'{key}' must be a number")
    return float(value)


class PoseRates:
    """Per-camera ``pose.sample`` arrival rate (a hub sink) and the poster's drop counts."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._arrivals: dict[str, deque[float]] = {}
        self._first: dict[str, float] = {}
        self.dropped: dict[str, int] = {}
        self._clock = clock

    def observe(self, event: Event, _line: bytes) -> None:
        if event.type != "pose.sample":
            return
        camera = event.data.get("camera")
        if isinstance(camera, str):
            now = self._clock()
            times = self._arrivals.setdefault(camera, deque(maxlen=RATE_KEPT))
            if not times or now - times[-1] > RATE_WINDOW_S:
                self._first[camera] = now  # (re)started sending
            times.append(now)

    def fps(self) -> dict[str, float]:
        """Camera → samples per second over the last `RATE_WINDOW_S` (0.0 when none arrived)."""
        now = self._clock()
        out: dict[str, float] = {}
        for camera, times in self._arrivals.items():
            recent = [t for t in times if now - t <= RATE_WINDOW_S]
            if times and now - self._first[camera] < RATE_WINDOW_S and len(recent) >= 2 and recent[-1] > recent[0]:
                # sending for less than a window: n samples span n-1 intervals
                out[camera] = round((len(recent) - 1) / (recent[-1] - recent[0]), 2)
            else:
                out[camera] = round(len(recent) / RATE_WINDOW_S, 2)
        return out


class PoseRoutes:
    """``POST /v1/pose`` (mixed into `Server`)."""

    def _init_pose(self) -> None:
        self.pose_rates = PoseRates()
        self.hub.add_sink(self.pose_rates.observe)

    def _add_pose_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/pose", self._post_pose)

    async def _post_pose(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        camera = body.get("camera")
        if not isinstance(camera, str) or not camera:
            raise ApiError(400, "'camera' must be a camera id such as cam-2")
        cam = self._camera(camera)
        t = _number(body, "t")
        try:
            joints = check_joints(body.get("joints"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        data: dict[str, Any] = {"camera": cam.camera, "t": round(t, 6), "joints": joints, "source": "mmx pose"}
        for key in ("frame_seq", "dropped"):
            value = body.get(key)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ApiError(400, f"'{key}' must be a whole number >= 0")
                data[key] = value
        estimator = body.get("estimator")
        if estimator is not None:
            if not isinstance(estimator, str) or len(estimator) > 200:
                raise ApiError(400, "'estimator' must be a string of at most 200 characters")
            data["estimator"] = estimator
        if "dropped" in data:
            self.pose_rates.dropped[cam.camera] = data["dropped"]
        event = self.hub.emit("pose.sample", data)
        return json_response({"seq": event.seq, "id": event.id}, 202)
