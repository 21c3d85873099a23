"""The dataset's ``manifest.json``: parameters, inputs with sha256, statistics, assumptions, hashes."""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import numpy as np
import orjson

from mmx import __version__
from mmx.dataset.segments import Stats
from mmx.dataset.store import ROW_GROUP_FRAMES, WINDOW_COLUMNS, WRITE_OPTIONS
from mmx.dataset.windows import SPLITS
from mmx.events import JOINT_NAMES

FORMAT_NAME = "mmx-pair-dataset"
#: 2: Parquet segments + windows index (1 was .npz shards of materialised windows).
FORMAT_VERSION = 2
N_JOINTS = len(JOINT_NAMES)


def content_hash(obj: Any) -> str:
    """sha256 of the compact JSON of ``obj`` with sorted keys."""
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)).hexdigest()


ASSUMPTIONS = [
    "Pose timestamps (pose.sample t) and music cues (music.cue started_at) are on the same clock, the server's; "
    "clock_offset_s is added to every track time to correct a constant difference.",
    "A pose sample taken at wall time w sits at track time w - started_at + offset_s + clock_offset_s.",
    "A cue lasts until the next music.cue of the session, or the session's end (session.ended, else the last "
    "timestamp in events.jsonl); a standalone pose file's cue covers the whole file, with started_at = 0 on the "
    "file's own time axis.",
    "Audio frame k sits at k * hop_length / sr seconds from the start of the track; all windows share one sr and "
    "hop_length (the first artifact's).",
    "Pose is linearly interpolated per joint coordinate and confidence between real samples; joints missing from a "
    "sample count as confidence 0; pose before the first / after the last real sample is held.",
    "A frame is observed when a real pose sample (joints not null) lies within max_gap_s seconds; unobserved "
    "frames hold zeros in pose and dynamics.",
    "Window k of a cue starts at frame f0 + round(k * stride_s * fps) and spans round(window_s * fps) frames; "
    "windows with an observed share below min_observed are dropped.",
    "Speed and acceleration are in torso lengths per second (per second squared): the torso length is the median, "
    "over the window's observed frames, of the distance between the shoulder midpoint and the hip midpoint in "
    "normalized image coordinates (the cue's median when the window has none); image aspect ratio is ignored.",
    "Splits are by session (or by track): every window of a group is on the same side. With split_by time, each "
    "session's cued time (first cue start to last cue end, wall clock) is cut into three contiguous blocks by the "
    "fractions; a window belongs to the block it lies in, windows straddling a boundary are dropped "
    "(split_boundary), so no frame is in windows of two splits.",
]


BEAT_ALIGNMENT_DEFINITION = (
    "motion beats = strict local minima of the mean joint speed (kinetic velocity) after Gaussian smoothing with "
    "sigma smooth_sigma_s; beat_alignment_score = mean over music beats (observed frames) of exp(-d^2 / (2 sigma_s^2)), "
    "d the distance in seconds to the nearest motion beat (Bailando/EDGE); beat_alignment_score_fact averages over "
    "motion beats instead (FACT's alignment_score); each cue x camera is one sequence, scores are means over sequences"
)


def build_manifest(*, params: Any, geometry: dict[str, Any], stats: Stats, inputs: dict[str, Any],
                   skipped: list[dict[str, Any]], n_problems: int, groups: dict[str, list[str]],
                   split_warnings: list[str]) -> dict[str, Any]:  # fmt: skip
    """The manifest dict, ``manifest_hash`` last (sha256 of everything else)."""
    import pyarrow

    t = geometry.get("window_frames")
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "params": params.as_dict(),
        "params_hash": content_hash(params.as_dict()),
        "frames": {"sr": geometry.get("sr"), "hop_length": geometry.get("hop_length"), "fps": geometry.get("fps"),
                   "window_frames": t},
        "files": {
            "windows": "windows.parquet",
            "segments": "segments/*.parquet",
            "windows_columns": list(WINDOW_COLUMNS),
            "segment_columns": ["frame", "time_s", "audio", "pose", "speed", "accel", "kinetic_energy", "observed",
                                "beat"],
            "segment_row_group_frames": ROW_GROUP_FRAMES,
            "parquet_options": WRITE_OPTIONS,
            "window_slice": "window w = rows [w.row, w.row + w.frames) of segments/{w.segment}.parquet",
        },
        "arrays": {
            "audio": {"shape": ["N", t, geometry.get("n_audio")], "dtype": "float32",
                      "columns": geometry.get("columns", [])},
            "pose": {"shape": ["N", t, N_JOINTS, 3], "dtype": "float32", "joints": list(JOINT_NAMES),
                     "channels": ["x", "y", "confidence"],
                     "units": "normalized image coordinates, origin top-left; zeros where unobserved"},
            "dynamics": {"shape": ["N", t, 2 * N_JOINTS + 1], "dtype": "float32",
                         "columns": [f"speed[{j}]" for j in JOINT_NAMES] + [f"accel[{j}]" for j in JOINT_NAMES]
                         + ["kinetic_energy"],
                         "units": "speed in torso lengths/s, accel in torso lengths/s^2, kinetic_energy = "
                                  "0.5 * mean over joints of speed^2 (torso lengths^2/s^2); zeros where unobserved; "
                                  "stored in image units in the segments, divided by the window's torso_length "
                                  "(squared for kinetic_energy) on read"},
            "observed": {"shape": ["N", t], "dtype": "bool"},
            "beat": {"shape": ["N", t], "dtype": "float32", "units": "1.0 at the artifact's beat_frames, else 0.0"},
        },
        "inputs": inputs,
        "versions": {"mmx": __version__, "numpy": np.__version__, "pyarrow": pyarrow.__version__,
                     "python": platform.python_version()},
        "counts": {"windows": dict(stats.windows), "segments": stats.segments},
        "dropped": {"total": sum(stats.dropped.values()), "reasons": dict(stats.dropped)},
        "skipped": skipped,
        "problems": n_problems,
        "splits": {"by": params.split_by, "seed": params.seed, "fractions": list(params.split), "groups": groups,
                   "warnings": split_warnings},
        "stats": stats.summary(),
        "beat_alignment": {"definition": BEAT_ALIGNMENT_DEFINITION, "sigma_s": params.bas_sigma_s,
                           "smooth_sigma_s": params.bas_smooth_s},
        "assumptions": ASSUMPTIONS,
    }  # fmt: skip
    manifest["manifest_hash"] = content_hash(manifest)
    return manifest


__all__ = ["ASSUMPTIONS", "FORMAT_NAME", "FORMAT_VERSION", "SPLITS", "build_manifest", "content_hash"]
