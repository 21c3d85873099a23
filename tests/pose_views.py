"""Real pose for ghost tests: the shared ``vtest.pose.jsonl`` seen by three distinct cameras.

The shared file is the body pose of the most prominent pedestrian in every frame of the
OpenCV sample video (10 fps, 79.5 s, nobody seen in 366 of 795 frames). Each `View` crops a
region of the frame (a tighter lens: the subject larger, people outside the region unseen),
may mirror it, and starts at its own offset into the looping recording, so the three cameras
see different people at different sizes at any moment — real detector noise, real gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from mmx.events import Event
from mmx.ghost.simulate import EventFactory

from .conftest import SHARED_DATA

VTEST_POSE = SHARED_DATA / "pose" / "vtest.pose.jsonl"
FPS = 10.0


@dataclass(frozen=True)
class View:
    """A camera's view of the recording: crop ``(x0, y0, width, height)`` in normalized
    coordinates, ``offset_s`` into the recording, ``mirror`` left-right."""

    crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    offset_s: float = 0.0
    mirror: bool = False


#: Three distinct cameras: the whole frame (subjects small), a tight left region and a
#: tight, mirrored right region, each at its own place in the recording.
VIEWS: dict[str, View] = {
    "cam-1": View((0.0, 0.0, 1.0, 1.0), 17.0),
    "cam-2": View((0.1, 0.15, 0.5, 0.6), 29.0),
    "cam-3": View((0.45, 0.2, 0.5, 0.5), 43.0, mirror=True),
}
PLACEMENTS = {"cam-1": 0.0, "cam-2": -70.0, "cam-3": 70.0}


@lru_cache(maxsize=2)
def frames(path: Path = VTEST_POSE) -> tuple[tuple[float, Any], ...]:
    """``(t, joints or None)`` per frame of the pose file (the header line skipped)."""
    out = []
    for line in Path(path).read_bytes().splitlines():
        obj = orjson.loads(line)
        if "header" in obj:
            continue
        out.append((float(obj["t"]), obj["joints"]))
    return tuple(out)


def view_joints(joints: dict[str, list[float]] | None, view: View) -> dict[str, list[float]] | None:
    """The joints as ``view`` sees them: cropped (joints outside the crop dropped), mirrored;
    None when no joint is left."""
    if not joints:
        return None
    x0, y0, w, h = view.crop
    out = {}
    for name, (x, y, c) in joints.items():
        u, v = (x - x0) / w, (y - y0) / h
        if 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0:
            if view.mirror:
                u = 1.0 - u
                name = name.replace("left", "\0").replace("right", "left").replace("\0", "right")
            out[name] = [round(u, 5), round(v, 5), c]
    return out or None


def view_frame(view: View, k: int) -> dict[str, list[float]] | None:
    """Frame ``k`` (from the view's start, looping) of the recording through ``view``."""
    fr = frames()
    start = int(round(view.offset_s * FPS))
    return view_joints(fr[(start + k) % len(fr)][1], view)


def pose_events(t0: float, duration_s: float, make: EventFactory, views: dict[str, View] | None = None,
                start_s: float = 0.0) -> Iterator[Event]:  # fmt: skip
    """``pose.sample`` events at 10 Hz for each camera of ``views`` from ``t0 + start_s``
    for ``duration_s`` seconds, frame k of each view at ``t0 + k / 10``."""
    views = views or VIEWS
    names = sorted(views)
    k0 = int(round(start_s * FPS))
    for k in range(k0, k0 + int(round(duration_s * FPS))):
        t = round(t0 + k / FPS, 6)
        for name in names:
            yield make("pose.sample", {"camera": name, "t": t, "joints": view_frame(views[name], k)}, t)


def write_view(path: Path, view: View, *, seconds: float | None = None) -> Path:
    """A pose file in the shared file's format for ``mmx device --pose``: the recording as
    ``view`` sees it from its offset (looping to ``seconds``, default one pass)."""
    n = len(frames()) if seconds is None else int(round(seconds * FPS))
    with open(path, "wb") as fp:
        fp.write(orjson.dumps({"header": {"source": "vtest.pose.jsonl", "fps": FPS, "view": view.__dict__}}) + b"\n")
        for k in range(n):
            fp.write(orjson.dumps({"frame": k, "t": round(k / FPS, 6), "joints": view_frame(view, k)}) + b"\n")
    return path
