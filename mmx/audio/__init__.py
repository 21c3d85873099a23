"""Audio features for the training-data lane (`mmx features`).

`mmx.audio.artifact` (numpy only) writes, reads and finds the ``.npz`` feature artifacts;
`mmx.audio.features` computes them with librosa; `mmx.audio.batch` runs many files in
worker processes. The readers are re-exported here without importing librosa.
"""

from mmx.audio.artifact import (
    REQUIRED_KEYS,
    artifact_name,
    find_features,
    load_beat_grid,
    read_features,
    read_header,
    sha256_file,
    write_features,
)

__all__ = [
    "REQUIRED_KEYS",
    "artifact_name",
    "find_features",
    "load_beat_grid",
    "read_features",
    "read_header",
    "sha256_file",
    "write_features",
]
