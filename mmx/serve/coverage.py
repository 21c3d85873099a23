"""Coverage around the subject, derived from camera placement azimuths.

Azimuth follows DESIGN.md: 0° faces the subject head-on, positive clockwise seen from above;
angles are normalised to [-180, 180). Each placed camera covers its azimuth; neighbouring
cameras (sorted by azimuth, wrapping around) bound the uncovered arcs between them; two
cameras closer than ``duplicate_angle_deg`` see nearly the same picture (duplicate coverage).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def normalize_deg(angle: float) -> float:
    """``angle`` in [-180, 180)."""
    return (float(angle) + 180.0) % 360.0 - 180.0


def angular_distance_deg(a: float, b: float) -> float:
    """The smaller angle between two azimuths, in [0, 180]."""
    d = abs(normalize_deg(a) - normalize_deg(b)) % 360.0
    return min(d, 360.0 - d)


def compute_coverage(cameras: Iterable[tuple[str, dict[str, Any]]], *, duplicate_angle_deg: float = 15.0) -> dict[str, Any]:
    """Coverage of ``(camera_id, placement)`` pairs.

    Returns ``{"covered": [{"camera", "azimuth_deg", "label"}] (sorted by azimuth),
    "unplaced": [camera ids without azimuth], "duplicates": [{"cameras": [a, b], "apart_deg"}],
    "gaps": [{"from", "to", "start_deg", "end_deg", "width_deg", "center_deg"}] (clockwise from
    one camera to the next), "largest_gap": the widest gap or a 360° gap when fewer than one
    camera is placed, "duplicate_angle_deg"}``.
    """
    covered: list[dict[str, Any]] = []
    unplaced: list[str] = []
    for camera, placement in cameras:
        az = (placement or {}).get("azimuth_deg")
        if isinstance(az, bool) or not isinstance(az, (int, float)) or not math.isfinite(az):
            unplaced.append(camera)
            continue
        covered.append({"camera": camera, "azimuth_deg": round(normalize_deg(az), 6),
                        "label": (placement or {}).get("label")})  # fmt: skip
    covered.sort(key=lambda c: (c["azimuth_deg"], c["camera"]))

    duplicates = []
    for i, a in enumerate(covered):
        for b in covered[i + 1 :]:
            apart = angular_distance_deg(a["azimuth_deg"], b["azimuth_deg"])
            if apart < duplicate_angle_deg:
                duplicates.append({"cameras": [a["camera"], b["camera"]], "apart_deg": round(apart, 6)})

    gaps = []
    n = len(covered)
    for i, a in enumerate(covered):
        b = covered[(i + 1) % n]
        width = (b["azimuth_deg"] - a["azimuth_deg"]) % 360.0
        if n == 1:
            width = 360.0
        center = normalize_deg(a["azimuth_deg"] + width / 2)
        gaps.append({"from": a["camera"], "to": b["camera"], "start_deg": a["azimuth_deg"],
                     "end_deg": b["azimuth_deg"], "width_deg": round(width, 6), "center_deg": round(center, 6)})  # fmt: skip
    if gaps:
        largest = max(gaps, key=lambda g: g["width_deg"])
    else:
        largest = {"from": None, "to": None, "start_deg": -180.0, "end_deg": 180.0, "width_deg": 360.0, "center_deg": 0.0}
    return {"covered": covered, "unplaced": unplaced, "duplicates": duplicates, "gaps": gaps,
            "largest_gap": largest, "duplicate_angle_deg": duplicate_angle_deg}  # fmt: skip
