"""Augmentations of a window that keep audio and pose on the same frames — numpy only.

A window is the dict `mmx.dataset.open` returns: ``audio`` (T, F), ``pose`` (T, 19, 3) as
(x, y, confidence) in normalized image coordinates (origin top-left), ``dynamics`` (T, 39)
(19 speeds, 19 accelerations, kinetic energy; in torso lengths), ``observed`` (T,) bool,
``beat`` (T,). None of these functions touches ``audio`` or ``beat``: a mirror or a body
normalisation changes the picture, not the time, so every pose frame stays beside its
audio frame. The random window offset is a choice of frames and is applied by the reader
(`mmx.dataset.reader.Dataset.window`), which moves audio and pose together.

    >>> ds = mmx.dataset.open("dataset/", "train")
    >>> aug = Augment(mirror_p=0.5, max_offset_frames=21, normalize_body=True)
    >>> w = aug.apply(ds, 0, np.random.default_rng(0))   # no deep-learning framework needed

`mmx.dataset.torch` uses the same `Augment` inside its PyTorch datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmx.events import JOINT_NAMES

N_JOINTS = len(JOINT_NAMES)
#: The joint each joint becomes in a left/right mirror image (Vision's 19 names:
#: leftEye ↔ rightEye, leftEar ↔ rightEar, leftShoulder ↔ rightShoulder, leftElbow ↔
#: rightElbow, leftWrist ↔ rightWrist, leftHip ↔ rightHip, leftKnee ↔ rightKnee,
#: leftAnkle ↔ rightAnkle; nose, neck and root stay).
MIRROR_PERMUTATION: np.ndarray = np.array([
    JOINT_NAMES.index(n.replace("left", "\0").replace("right", "left").replace("\0", "right")) for n in JOINT_NAMES
])  # fmt: skip
ROOT = JOINT_NAMES.index("root")


def mirror(window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The left/right mirror image of a window: x → 1 − x and left ↔ right joints.

    Only observed frames and joints with confidence > 0 are flipped; unobserved frames keep
    their zeros (and a joint never seen keeps its placeholder), so "missing" stays
    recognisable. Speeds and accelerations are magnitudes, unchanged by the flip: their
    joint columns are swapped like the joints. Returns a new dict (audio and beat shared).
    """
    pose = window["pose"][:, MIRROR_PERMUTATION].copy()
    seen = window["observed"][:, None] & (pose[..., 2] > 0)
    pose[..., 0] = np.where(seen, np.float32(1.0) - pose[..., 0], pose[..., 0])
    dyn = window["dynamics"]
    perm = np.concatenate([MIRROR_PERMUTATION, N_JOINTS + MIRROR_PERMUTATION, [2 * N_JOINTS]])
    return {**window, "pose": pose, "dynamics": dyn[:, perm]}


def normalize_body(window: dict[str, np.ndarray], torso_length: float) -> dict[str, np.ndarray]:
    """Pose in body units: x, y minus the window's root position, divided by its torso length.

    The root position is the median over observed frames of the ``root`` joint (Vision's
    hip centre); ``torso_length`` the window's own body scale (``torso_length`` in
    windows.parquet: median shoulder-midpoint to hip-midpoint distance, normalized image
    units), so a dancer far from the camera and one near it come out the same size.
    Unobserved frames and zero-confidence joints stay 0. Dynamics are already in torso
    lengths (the reader divides them). Raises ValueError for a torso length that is not > 0.
    """
    if not torso_length > 0:
        raise ValueError(f"torso length must be > 0, not {torso_length}")
    pose = window["pose"].copy()
    obs = window["observed"]
    seen = obs[:, None] & (pose[..., 2] > 0)
    root_ok = seen[:, ROOT]
    centre = np.median(pose[root_ok, ROOT, :2], axis=0) if root_ok.any() else np.float32([0.5, 0.5])
    k = np.float32(1.0 / torso_length)
    pose[..., :2] = np.where(seen[..., None], (pose[..., :2] - centre.astype(np.float32)) * k, 0.0)
    return {**window, "pose": pose}


@dataclass(frozen=True)
class Augment:
    """Which augmentations to apply, in this order: random offset, mirror, body normalisation.

    ``max_offset_frames``: the window start moves by a uniform integer in
    [−max, +max] frames (audio frames, 512/22050 s each), clipped to the frames of windows of
    the same segment and split; ``mirror_p``: probability of the left/right mirror;
    ``normalize_body``: `normalize_body` with the window's torso length (always, not random).
    """

    max_offset_frames: int = 0
    mirror_p: float = 0.0
    normalize_body: bool = False

    def __post_init__(self) -> None:
        if self.max_offset_frames < 0:
            raise ValueError("max_offset_frames must be >= 0")
        if not 0.0 <= self.mirror_p <= 1.0:
            raise ValueError("mirror_p must be between 0 and 1")

    def apply(self, ds: Any, i: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Window ``i`` of ``ds`` (a `mmx.dataset.reader.Dataset`) with these augmentations,
        drawing from ``rng``; plus ``mirrored`` (bool) and ``offset`` (the frames drawn,
        before the reader clips them) of what was done."""
        offset = int(rng.integers(-self.max_offset_frames, self.max_offset_frames + 1)) if self.max_offset_frames else 0
        w = ds.window(i, offset=offset)
        flip = bool(self.mirror_p and rng.random() < self.mirror_p)
        if flip:
            w = mirror(w)
        if self.normalize_body:
            w = normalize_body(w, ds.torso_length(i))
        w["mirrored"] = np.bool_(flip)
        w["offset"] = np.int64(offset)
        return w


__all__ = ["MIRROR_PERMUTATION", "Augment", "mirror", "normalize_body"]
