"""`mmx device`: a simulated capture camera speaking the device protocol of `mmx serve`.

- `client`: `DeviceClient` (one camera over one WebSocket, reconnecting) and `DeviceConfig`.
- `camera`: facing, lenses and zoom rules for `flip`/`zoom`; placement and lens parsing.
- `frames`: picture sources (PyAV video, generated test pattern), view rendering, JPEG.
- `pose`: pose files read line-numbered and played on the video clock.
- `identity`: the stable device id in a state file.
"""

from mmx.device.camera import CameraState, CommandRefused, parse_lenses, parse_placement
from mmx.device.client import DeviceClient, DeviceConfig, backoff_delay
from mmx.device.frames import TestPattern, VideoSource, encode_jpeg, parse_size, render_view
from mmx.device.identity import load_device_id, state_file
from mmx.device.pose import PoseSample, PoseTrack

__all__ = [
    "CameraState", "CommandRefused", "DeviceClient", "DeviceConfig", "PoseSample", "PoseTrack",
    "TestPattern", "VideoSource", "backoff_delay", "encode_jpeg", "load_device_id",
    "parse_lenses", "parse_placement", "parse_size", "render_view", "state_file",
]  # fmt: skip
