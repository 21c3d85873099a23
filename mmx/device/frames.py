"""Picture sources for `mmx device`: a looping video (PyAV) or a generated test pattern.

A source is a function of the video clock: ``frame_at(t)`` gives the full-resolution RGB
picture (a Pillow image) at ``t`` seconds into the source, looping at its end. `render_view`
turns it into what the camera shows (aspect crop, zoom crop, front-facing mirror, resize) and
`encode_jpeg` into preview or still bytes.
"""

from __future__ import annotations

import io
import math
import threading
from pathlib import Path
from typing import Protocol

import av
import numpy as np
from PIL import Image, ImageDraw

from mmx.errors import DataError, InputMissingError

#: Preview JPEG quality: small frames for the operator grid; stills use `STILL_QUALITY`.
PREVIEW_QUALITY = 75
STILL_QUALITY = 92


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"640x360"`` into ``(640, 360)``. Raises DataError for anything else."""
    w, sep, h = text.lower().replace("×", "x").partition("x")
    try:
        width, height = int(w), int(h)
    except ValueError:
        width = height = 0
    if not sep or width <= 0 or height <= 0 or width > 8192 or height > 8192:
        raise DataError(f"size {text!r} is not WIDTHxHEIGHT", hint="e.g. --size 640x360")
    return width, height


class FrameSource(Protocol):
    """A picture source on the video clock."""

    fps: float
    duration_s: float
    size: tuple[int, int]

    def frame_at(self, t: float) -> Image.Image: ...

    def close(self) -> None: ...


class VideoSource:
    """A video file decoded with PyAV, looping at its end.

    ``frame_at(t)`` returns frame ``floor(t * fps) mod n_frames`` as an RGB image of the
    file's own size. Decoding goes forward from the last frame; going back (a loop) or far
    ahead seeks. Thread-safe (one lock), so encoding may run in a worker thread.

    Raises InputMissingError when the file does not exist, DataError when it holds no
    decodable video stream.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputMissingError(f"no such video file: {self.path}")
        self._lock = threading.Lock()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise DataError(f"{self.path}: not a video file PyAV can decode ({exc})") from None
        stream.thread_type = "AUTO"
        self._stream = stream
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        n_frames = int(stream.frames or 0)
        if n_frames <= 0:
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else (self._container.duration or 0) / av.time_base)  # fmt: skip
            n_frames = max(1, round(duration * self.fps))
        self.n_frames = n_frames
        self.duration_s = n_frames / self.fps
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._decoder = None
        self._index = -1
        self._image: Image.Image | None = None

    def _restart(self, target: int) -> None:
        # Seek to the key frame at or before the target, then decode forward.
        ts = int(target / self.fps / self._stream.time_base) if target > 0 else 0
        try:
            self._container.seek(max(0, ts), stream=self._stream, backward=True)
        except av.FFmpegError:
            self._container.seek(0, stream=self._stream)
        self._decoder = self._container.decode(self._stream)
        self._index = -1

    def _frame_index(self, frame: av.VideoFrame) -> int:
        if frame.time is None:
            return self._index + 1
        return round(frame.time * self.fps)

    def frame_at(self, t: float) -> Image.Image:
        """The RGB picture at ``t`` seconds (looping). Raises DataError if decoding fails."""
        target = math.floor(t * self.fps + 1e-6) % self.n_frames
        with self._lock:
            if target == self._index and self._image is not None:
                return self._image
            if self._decoder is None or target < self._index or target > self._index + 2 * self.fps:
                self._restart(target)
            # Bounded: at most one loop of the file per call.
            for _ in range(self.n_frames + 1):
                try:
                    frame = next(self._decoder)
                except StopIteration:
                    # The file holds fewer frames than its header says: loop from here.
                    self.n_frames = max(1, self._index + 1)
                    self.duration_s = self.n_frames / self.fps
                    target %= self.n_frames
                    self._restart(target)
                    continue
                except av.FFmpegError as exc:
                    raise DataError(f"{self.path}: cannot decode frame {target}: {exc}") from None
                self._index = self._frame_index(frame)
                if self._index >= target:
                    self._image = frame.to_image()
                    return self._image
            raise DataError(f"{self.path}: frame {target} not found")

    def close(self) -> None:
        with self._lock:
            self._container.close()


#: Test pattern stick figure: joint → offset from the figure's root, in figure heights.
_FIGURE = {
    "nose": (0.0, -0.46), "leftEye": (0.02, -0.48), "rightEye": (-0.02, -0.48),
    "leftEar": (0.04, -0.47), "rightEar": (-0.04, -0.47), "neck": (0.0, -0.36),
    "leftShoulder": (0.1, -0.34), "rightShoulder": (-0.1, -0.34),
    "leftElbow": (0.16, -0.18), "rightElbow": (-0.16, -0.18),
    "leftWrist": (0.2, -0.02), "rightWrist": (-0.2, -0.02),
    "root": (0.0, 0.0), "leftHip": (0.07, 0.0), "rightHip": (-0.07, 0.0),
    "leftKnee": (0.08, 0.24), "rightKnee": (-0.08, 0.24),
    "leftAnkle": (0.09, 0.48), "rightAnkle": (-0.09, 0.48),
}  # fmt: skip
_BONES = [
    ("neck", "nose"), ("neck", "leftShoulder"), ("neck", "rightShoulder"), ("leftShoulder", "leftElbow"),
    ("leftElbow", "leftWrist"), ("rightShoulder", "rightElbow"), ("rightElbow", "rightWrist"),
    ("neck", "root"), ("root", "leftHip"), ("root", "rightHip"), ("leftHip", "leftKnee"),
    ("leftKnee", "leftAnkle"), ("rightHip", "rightKnee"), ("rightKnee", "rightAnkle"),
]  # fmt: skip


def pattern_joints(t: float, period_s: float = 8.0) -> dict[str, list[float]]:
    """The test pattern figure's pose at ``t``: 19 Apple Vision joints → ``[x, y, 1.0]``.

    Normalized image coordinates, origin top-left. The figure walks left and right across
    the picture once per ``period_s`` seconds and waves its arms.
    """
    phase = 2 * math.pi * (t % period_s) / period_s
    cx, cy, height = 0.5 + 0.3 * math.sin(phase), 0.55, 0.7
    wave = 0.06 * math.sin(4 * phase)
    joints = {}
    for name, (dx, dy) in _FIGURE.items():
        if "Wrist" in name or "Elbow" in name:
            dy -= wave * (2 if "Wrist" in name else 1)
        joints[name] = [round(cx + dx * height * 0.6, 4), round(cy + dy * height, 4), 1.0]
    return joints


class TestPattern:
    """A generated picture: colour bars, a walking stick figure (`pattern_joints`) and the
    frame counter, ``size`` pixels at ``fps``, looping every ``duration_s`` seconds.

    The figure's left side is drawn red and right side blue so a mirrored picture is
    recognisable.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float = 30.0, duration_s: float = 8.0) -> None:
        self.size = size
        self.fps = fps
        self.duration_s = duration_s
        w, h = size
        colours = np.array([[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0],
                            [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]], dtype=np.uint8)  # fmt: skip
        bars = colours[(np.arange(w) * len(colours)) // w]
        self._bars = np.broadcast_to(bars, (h, w, 3)).copy()
        self._bars[int(h * 0.8):] //= 3  # darker band at the bottom for the counter
        self._index = -1
        self._image: Image.Image | None = None
        self._lock = threading.Lock()

    def frame_at(self, t: float) -> Image.Image:
        """The pattern's frame ``floor(t * fps)`` (looping) as an RGB image."""
        n_frames = max(1, round(self.duration_s * self.fps))
        index = math.floor(t * self.fps + 1e-6) % n_frames
        with self._lock:
            if index == self._index and self._image is not None:
                return self._image
            w, h = self.size
            shift = (index * w) // n_frames  # the bars scroll once per loop
            img = Image.fromarray(np.roll(self._bars, shift, axis=1))
            draw = ImageDraw.Draw(img)
            joints = pattern_joints(index / self.fps, self.duration_s)
            px = {name: (x * w, y * h) for name, (x, y, _c) in joints.items()}
            width = max(2, h // 80)
            for a, b in _BONES:
                colour = (255, 40, 40) if a.startswith("left") or b.startswith("left") else (
                    (40, 80, 255) if a.startswith("right") or b.startswith("right") else (255, 255, 255))
                draw.line([px[a], px[b]], fill=colour, width=width)
            r = width * 2
            x, y = px["nose"]
            draw.ellipse([x - 2 * r, y - 2 * r, x + 2 * r, y + 2 * r], fill=(255, 255, 255))
            draw.text((w * 0.03, h * 0.85), f"mmx device  frame {index:06d}", fill=(255, 255, 255),
                      font_size=max(10, h // 20))  # fmt: skip
            self._index, self._image = index, img
            return img

    def close(self) -> None:
        pass


def render_view(image: Image.Image, *, size: tuple[int, int], zoom: float = 1.0, mirror: bool = False) -> Image.Image:
    """What the camera shows: the centre crop of ``image`` with the aspect of ``size``,
    narrowed by ``zoom`` (> 1 crops further; ≤ 1 shows the whole crop), resized to ``size``
    and, for the front facing, mirrored left-right.
    """
    src_w, src_h = image.size
    out_w, out_h = size
    crop_w, crop_h = float(src_w), float(src_h)
    if src_w * out_h > src_h * out_w:  # source wider than the output: trim the sides
        crop_w = src_h * out_w / out_h
    else:
        crop_h = src_w * out_h / out_w
    factor = max(1.0, zoom)
    crop_w, crop_h = crop_w / factor, crop_h / factor
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    view = image.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if mirror:
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return view


def encode_jpeg(image: Image.Image, quality: int = PREVIEW_QUALITY) -> bytes:
    """``image`` as baseline JPEG bytes (Pillow/libjpeg)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
