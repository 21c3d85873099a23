"""The pose estimator: MediaPipe Pose (legacy ``mediapipe.solutions.pose``) with its bundled model.

``mediapipe==0.10.21`` (the ``mmx[pose]`` extra) is the last release on PyPI that ships
``pose_landmark_full.tflite`` and ``pose_detection.tflite`` inside the wheel and keeps the
``solutions.pose`` API (0.10.30 and later ship neither and need a model download), so
nothing is fetched at run time. One `PoseEstimator` follows one stream: MediaPipe tracks the
person from frame to frame (its landmark model crops around the last pose and runs the
person detector only when tracking is lost); after ``redetect_after`` frames of that stream
went by unseen (dropped, latest frame wins), the tracked crop is stale and the estimator
starts over with a fresh detection. The most prominent person is MediaPipe's: the
detector's best-scoring body.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson

from mmx.errors import ServiceUnavailableError
from mmx.pose.joints import vision_joints

#: The version the ``mmx[pose]`` extra pins (see pyproject.toml).
MEDIAPIPE_VERSION = "0.10.21"
INSTALL_HINT = f"install the pose extra: pip install 'mmx[pose]' (mediapipe=={MEDIAPIPE_VERSION}, ~35 MB, model inside)"
#: Written into every pose file; bump when the output for the same input and params changes.
FORMAT_VERSION = 1
_MODEL_NAMES = {0: "pose_landmark_lite", 1: "pose_landmark_full", 2: "pose_landmark_heavy"}


@dataclass(frozen=True)
class EstimatorParams:
    """What decides the estimator's output (and so the rerun key of offline files).

    ``model_complexity`` 1 is the full model (the one inside the wheel; 0 lite and 2 heavy
    are downloaded by MediaPipe at first use, which mmx does not allow); the confidences are
    MediaPipe's (0..1); ``smooth_landmarks`` its temporal filter; ``redetect_after`` frames
    unseen before a fresh detection (live streams).
    """

    model_complexity: int = 1
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    smooth_landmarks: bool = True
    redetect_after: int = 5

    def key(self) -> str:
        """sha256 (hex) of these params, the MediaPipe version and the file format."""
        body = orjson.dumps({**asdict(self), "mediapipe": MEDIAPIPE_VERSION, "format": FORMAT_VERSION},
                            option=orjson.OPT_SORT_KEYS)  # fmt: skip
        return hashlib.sha256(body).hexdigest()

    @property
    def estimator(self) -> str:
        """``"mediapipe 0.10.21 pose_landmark_full"``, as the shared pose file names it."""
        return f"mediapipe {MEDIAPIPE_VERSION} {_MODEL_NAMES.get(self.model_complexity, '?')}"


def load_mediapipe() -> Any:
    """The ``mediapipe.solutions.pose`` module. Raises ServiceUnavailableError (exit 69) when
    mediapipe is missing or is a release without the bundled model and legacy API."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import mediapipe.python.solutions.pose as mp_pose
    except ImportError as exc:
        raise ServiceUnavailableError(f"mmx pose needs MediaPipe, which is not installed ({exc})",
                                      hint=INSTALL_HINT) from None  # fmt: skip
    except AttributeError as exc:  # a mediapipe without the legacy solutions package
        raise ServiceUnavailableError(f"this MediaPipe has no mediapipe.solutions.pose ({exc})", hint=INSTALL_HINT) from None
    model = os.path.join(os.path.dirname(mp_pose.__file__), "..", "..", "modules", "pose_landmark", "pose_landmark_full.tflite")
    if not os.path.exists(model):
        raise ServiceUnavailableError("this MediaPipe does not ship pose_landmark_full.tflite", hint=INSTALL_HINT)
    return mp_pose


class PoseEstimator:
    """MediaPipe Pose on one stream of RGB frames; `estimate` gives the 19 Vision joints.

    Not thread-safe: one estimator per stream, used by one thread at a time. Raises
    ServiceUnavailableError (exit 69) at construction when MediaPipe is missing.
    """

    def __init__(self, params: EstimatorParams | None = None) -> None:
        self.params = params or EstimatorParams()
        if self.params.model_complexity != 1:
            raise ValueError("only model_complexity 1 (pose_landmark_full, inside the wheel) is available")
        mp_pose = load_mediapipe()
        self._pose = mp_pose.Pose(static_image_mode=False, model_complexity=self.params.model_complexity,
                                  smooth_landmarks=self.params.smooth_landmarks,
                                  min_detection_confidence=self.params.min_detection_confidence,
                                  min_tracking_confidence=self.params.min_tracking_confidence)  # fmt: skip
        self._last_seq: int | None = None
        self.frames = 0
        self.detected = 0
        self.redetections = 0

    def estimate(self, rgb: np.ndarray, *, seq: int | None = None) -> dict[str, list[float]] | None:
        """Joints of the most prominent person in ``rgb`` ((height, width, 3) uint8, RGB), or None.

        ``seq`` is the frame's number in its stream; when more than ``redetect_after``
        frames were skipped since the last call, tracking restarts with a fresh detection.
        """
        if seq is not None:
            if self._last_seq is not None and seq - self._last_seq > self.params.redetect_after:
                self._pose.reset()
                self.redetections += 1
            self._last_seq = seq
        results = self._pose.process(rgb)
        self.frames += 1
        if results.pose_landmarks is None:
            return None
        self.detected += 1
        return vision_joints(results.pose_landmarks.landmark)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()


#: Lines MediaPipe's native code (TFLite, absl) writes to fd 2 on its own: noise for a user.
_NOISE = (b"INFO: Created TensorFlow Lite", b"WARNING: All log messages before absl::InitializeLog()",
          b"W0000 ", b"I0000 ")  # fmt: skip


class _NoiseFilter:
    """Drops whole `_NOISE` lines from a byte stream that may arrive in any pieces.

    Native loggers write a line in several calls ("INFO: ", then the text), so a piece at
    the start of a line that could still become a noise line is held until its line ends;
    anything else is passed on at once (a progress bar redraws without newlines).
    """

    def __init__(self) -> None:
        self._held = b""
        self._at_start = True

    def feed(self, chunk: bytes) -> bytes:
        data, self._held = self._held + chunk, b""
        out: list[bytes] = []
        for piece in data.splitlines(keepends=True):
            complete = piece.endswith((b"\n", b"\r"))
            if self._at_start:
                if complete and piece.startswith(_NOISE):
                    continue
                if not complete and any(n.startswith(piece) or piece.startswith(n) for n in _NOISE):
                    self._held = piece
                    continue
            out.append(piece)
            self._at_start = complete
        return b"".join(out)


class NativeLogFilter:
    """Drop MediaPipe's native start-up chatter from file descriptor 2, pass everything else.

    TFLite and absl write straight to fd 2 (not through Python), each time a graph or model
    starts; no setting silences them in this release. While active, fd 2 is a pipe whose
    reader thread forwards every line that is not one of those to the real stderr at once
    (partial lines such as a progress bar's too). When stderr is a terminal the stand-in is a
    pseudo-terminal of the same size without output translation, so whatever asks
    ``isatty(2)`` (rich's progress bar) still sees a terminal. Use it in a command only, never in tests
    under a captured stderr; ``MMX_DEBUG=1`` leaves stderr alone.
    """

    def __init__(self) -> None:
        self._saved: int | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> NativeLogFilter:
        if os.environ.get("MMX_DEBUG", "") not in ("", "0"):
            return self
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
        except (OSError, ValueError):
            return self
        read_fd, write_fd = _terminal_pair() if os.isatty(2) else os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd, self._saved), daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _pump(read_fd: int, out_fd: int) -> None:
        noise = _NoiseFilter()
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                try:
                    chunk = pipe.read(65536)
                except OSError:  # a pseudo-terminal whose other end closed (EIO)
                    break
                if not chunk:
                    break
                kept = noise.feed(chunk)
                if kept:
                    try:
                        os.write(out_fd, kept)
                    except OSError:
                        pass

    def __exit__(self, *_exc: Any) -> None:
        if self._saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._saved, 2)  # closes the pipe's last write end (bar native threads' copies)
        if self._thread is not None:
            self._thread.join(1.0)
        os.close(self._saved)
        self._saved = None


def _terminal_pair() -> tuple[int, int]:
    """(master, slave) of a pseudo-terminal sized like fd 2, passing bytes through unchanged."""
    import fcntl
    import termios

    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # no "\n" → "\r\n": the real terminal does its own
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, fcntl.ioctl(2, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        pass
    return master, slave
