"""Body pose from any camera or video: MediaPipe Pose mapped to Apple Vision's 19 joints.

- `joints`: the one table from MediaPipe's 33 landmarks to the 19 Vision joints.
- `estimator`: `PoseEstimator` (MediaPipe Pose, tracking, fresh detection after N unseen
  frames), `EstimatorParams`, and the exit-69 check for the optional ``mmx[pose]`` extra.
- `offline`: one ``*.pose.jsonl`` per video (the shared ``vtest.pose.jsonl`` format), rerun-safe.
- `live`: preview frames of `mmx serve` cameras over one WebSocket in, ``pose.sample`` out.

MediaPipe is imported only when an estimator is made, so importing this package is cheap.
"""

from mmx.pose.estimator import EstimatorParams, PoseEstimator, load_mediapipe
from mmx.pose.joints import JOINT_ORDER, VISION_FROM_MEDIAPIPE, vision_joints
from mmx.pose.offline import VideoResult, estimate_videos, output_path

__all__ = [
    "JOINT_ORDER", "VISION_FROM_MEDIAPIPE", "EstimatorParams", "PoseEstimator", "VideoResult", "estimate_videos",
    "load_mediapipe", "output_path", "vision_joints",
]  # fmt: skip
