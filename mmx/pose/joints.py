"""MediaPipe Pose's 33 landmarks → Apple Vision's 19 body joints, in one table.

MediaPipe Pose (BlazePose GHUM, ``pose_landmark_full.tflite``) gives 33 landmarks, each with
``x``, ``y`` normalised to the image (origin top-left, x right, y down — already mmx's
convention, DESIGN.md) and ``visibility`` (0..1, the model's estimate that the point is in
the image and not occluded). Apple Vision's human body pose
(``VNHumanBodyPoseObservation.JointName``) has 19 joints. Fifteen are the same anatomical
point in both; Vision's ``neck`` and ``root`` have no MediaPipe landmark and are the
midpoints of the shoulders and of the hips (Vision defines them so: ``neck`` between the
shoulders, ``root`` between the hips), with the smaller of the two visibilities (a midpoint
is only as sure as its less sure end). Sources: MediaPipe's landmark indices
(``mediapipe/python/solutions/pose.py``, ``PoseLandmark``) and Apple's JointName docs.

========================  ===============================  ==========================
Vision joint              MediaPipe landmark(s)            confidence
========================  ===============================  ==========================
nose                      0  NOSE                          visibility
leftEye                   2  LEFT_EYE                      visibility
rightEye                  5  RIGHT_EYE                     visibility
leftEar                   7  LEFT_EAR                      visibility
rightEar                  8  RIGHT_EAR                     visibility
leftShoulder              11 LEFT_SHOULDER                 visibility
rightShoulder             12 RIGHT_SHOULDER                visibility
leftElbow                 13 LEFT_ELBOW                    visibility
rightElbow                14 RIGHT_ELBOW                   visibility
leftWrist                 15 LEFT_WRIST                    visibility
rightWrist                16 RIGHT_WRIST                   visibility
leftHip                   23 LEFT_HIP                      visibility
rightHip                  24 RIGHT_HIP                     visibility
leftKnee                  25 LEFT_KNEE                     visibility
rightKnee                 26 RIGHT_KNEE                    visibility
leftAnkle                 27 LEFT_ANKLE                    visibility
rightAnkle                28 RIGHT_ANKLE                   visibility
neck                      midpoint of 11 and 12            min of the two visibilities
root                      midpoint of 23 and 24            min of the two visibilities
========================  ===============================  ==========================

MediaPipe's "left" and Vision's "left" are both the subject's own left, so no swap.
Unused: eye inner/outer (1, 3, 4, 6), mouth (9, 10), hands (17-22), heels and foot tips (29-32).
The rounding (x, y to 5 decimals, confidence to 4) is that of ``vtest.pose.jsonl``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Vision joint → the MediaPipe landmark index (one point) or a pair (midpoint).
VISION_FROM_MEDIAPIPE: dict[str, int | tuple[int, int]] = {
    "nose": 0, "leftEye": 2, "rightEye": 5, "leftEar": 7, "rightEar": 8,
    "leftShoulder": 11, "rightShoulder": 12, "leftElbow": 13, "rightElbow": 14,
    "leftWrist": 15, "rightWrist": 16, "leftHip": 23, "rightHip": 24,
    "leftKnee": 25, "rightKnee": 26, "leftAnkle": 27, "rightAnkle": 28,
    "neck": (11, 12), "root": (23, 24),
}  # fmt: skip
#: The order joints are written in (that of ``vtest.pose.jsonl``'s header).
JOINT_ORDER: tuple[str, ...] = tuple(VISION_FROM_MEDIAPIPE)
MEDIAPIPE_LANDMARKS = 33


def vision_joints(landmarks: Sequence[Any]) -> dict[str, list[float]]:
    """The 19 Vision joints ``{name: [x, y, confidence]}`` from MediaPipe's 33 landmarks.

    ``landmarks`` is ``results.pose_landmarks.landmark`` (objects with ``x``, ``y``,
    ``visibility``; normalised image coordinates, origin top-left). Raises ValueError when
    there are not 33.
    """
    if len(landmarks) != MEDIAPIPE_LANDMARKS:
        raise ValueError(f"expected {MEDIAPIPE_LANDMARKS} MediaPipe landmarks, got {len(landmarks)}")
    out: dict[str, list[float]] = {}
    for name, src in VISION_FROM_MEDIAPIPE.items():
        if isinstance(src, int):
            p = landmarks[src]
            out[name] = [round(p.x, 5), round(p.y, 5), round(p.visibility, 4)]
        else:
            a, b = landmarks[src[0]], landmarks[src[1]]
            out[name] = [round((a.x + b.x) / 2, 5), round((a.y + b.y) / 2, 5), round(min(a.visibility, b.visibility), 4)]
    return out
