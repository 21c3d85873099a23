"""Fixtures for the `mmx pose` tests: MediaPipe or a clean skip, and clips of the shared video."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
import pytest

from .conftest import SHARED_DATA

#: The last 45 frames of vtest.avi start at its keyframe 750: nobody until frame 776, then
#: one walker. The reference pose file starts fresh there too (no one tracked since 740).
CLIP_START, CLIP_FRAMES = 750, 45


def have_mediapipe() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


needs_mediapipe = pytest.mark.skipif(not have_mediapipe(), reason="mediapipe (the mmx[pose] extra) is not installed")


def remux_clip(src: Path, dst: Path, start: int, count: int) -> Path:
    """Packets ``start`` … ``start + count`` of ``src``'s video copied into ``dst`` unchanged
    (``start`` must be a keyframe), so the clip decodes to exactly those frames of ``src``."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", format="avi") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        for k, packet in enumerate(p for p in inp.demux(stream) if p.dts is not None):
            if k < start:
                continue
            if k >= start + count:
                break
            assert k != start or packet.is_keyframe, f"packet {start} is not a keyframe"
            packet.stream = copy
            packet.pts -= start
            packet.dts -= start
            out.mux(packet)
    return dst


@pytest.fixture
def vtest_clip(tmp_path) -> Path:
    """``clip.avi``: frames 750-794 of the shared vtest.avi (skipped when shared data is absent)."""
    video = SHARED_DATA / "video" / "vtest.avi"
    if not video.exists():
        pytest.skip("../shared/data is absent")
    return remux_clip(video, tmp_path / "clip.avi", CLIP_START, CLIP_FRAMES)


def reference_frames(start: int, count: int) -> list[dict]:
    """Frames ``start`` … of the shared vtest.pose.jsonl (MediaPipe's full model)."""
    lines = (SHARED_DATA / "pose" / "vtest.pose.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines[1 + start:1 + start + count]]


def read_pose_file(path: Path) -> tuple[dict, list[dict]]:
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return lines[0]["header"], lines[1:]
