"""Coverage around the subject, derived from camera placement azimuths.

Azimuth follows DESIGN.md: 0° faces the subject head-on, positive clockwise seen from above;
angles are normalised to [-180, 180). Each placed camera covers its azimuth; neighbouring
cameras (sorted by azimuth, wrapping around) bound the uncovered arcs between them; two
cameras closer than ``duplicate_angle_deg`` see nearly the same picture (duplicate coverage).

Field of view: each camera also gets a wedge from its lens and zoom, `horizontal_fov_deg`
(the device's own ``fov_deg`` when it reports one). Its covered arc is the ring of viewing
directions ``azimuth ± fov/2`` around the subject: an assumption (a wider lens takes in more
of the set around the subject, so neighbouring angles overlap its picture), stated in the
answer as ``fov_model``. The union of the arcs gives ``covered_arcs``, the rest
``uncovered_arcs``; the widest uncovered arc is ``largest_uncovered``.
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


#: Horizontal field of view assumed per lens (zoom factor → degrees) of a phone camera:
#: ultra-wide 0.5× ≈ 120°, wide 1× ≈ 70°, tele 2× ≈ 40° (iPhone-class lenses, rounded).
LENS_FOV_DEG = {0.5: 120.0, 1.0: 70.0, 2.0: 40.0}
FOV_MODEL = ("horizontal FOV per zoom: 0.5x 120 deg, 1x 70 deg, 2x 40 deg, log-linear between, "
             "2*atan(tan(20 deg)*2/zoom) above 2x, or the device's fov_deg; covered arc = azimuth +/- fov/2")  # fmt: skip


def horizontal_fov_deg(zoom: float | None, device_fov_deg: float | None = None) -> float:
    """Horizontal field of view in degrees for ``zoom`` (None: 1×), see `LENS_FOV_DEG`.

    Between table points the FOV is interpolated linearly in log2(zoom); below 0.5× it stays
    120°; above 2× (digital zoom on the tele lens) it narrows as 2·atan(tan(20°)·2/zoom).
    ``device_fov_deg`` (a device's own figure for its current lens) wins when given.
    """
    if isinstance(device_fov_deg, (int, float)) and not isinstance(device_fov_deg, bool) and 0 < device_fov_deg < 180:
        return float(device_fov_deg)
    z = 1.0 if zoom is None or isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or not zoom > 0 else float(zoom)
    if z <= 0.5:
        return LENS_FOV_DEG[0.5]
    if z > 2.0:
        return math.degrees(2 * math.atan(math.tan(math.radians(20.0)) * 2.0 / z))
    lo, hi = (0.5, 1.0) if z <= 1.0 else (1.0, 2.0)
    f = (math.log2(z) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
    return LENS_FOV_DEG[lo] + f * (LENS_FOV_DEG[hi] - LENS_FOV_DEG[lo])


def _union_arcs(arcs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Merge ``(start_deg, width_deg)`` arcs on the circle; returns merged ``(start, width)``."""
    if not arcs:
        return []
    if any(w >= 360.0 for _s, w in arcs):
        return [(-180.0, 360.0)]
    spans = sorted(((s % 360.0), (s % 360.0) + w) for s, w in arcs)
    merged: list[list[float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    if len(merged) > 1 and merged[-1][1] - 360.0 >= merged[0][0]:  # wraps onto the first
        merged[0][0] = merged[-1][0] - 360.0
        merged[0][1] = max(merged[0][1], merged[-1][1] - 360.0)
        merged.pop()
    if merged and merged[0][1] - merged[0][0] >= 360.0:
        return [(-180.0, 360.0)]
    return [(normalize_deg(a), b - a) for a, b in merged]


def fov_coverage(placed: list[dict[str, Any]]) -> dict[str, Any]:
    """Arcs of ``placed`` cameras (``{"camera", "azimuth_deg", "fov_deg"}``): per camera,
    their union and the uncovered rest, each ``{"start_deg", "end_deg", "width_deg"}``."""
    def arc(start: float, width: float) -> dict[str, Any]:
        return {"start_deg": round(normalize_deg(start), 6), "end_deg": round(normalize_deg(start + width), 6),
                "width_deg": round(width, 6), "center_deg": round(normalize_deg(start + width / 2), 6)}  # fmt: skip

    per_camera = [{"camera": c["camera"], "fov_deg": round(c["fov_deg"], 3),
                   **arc(c["azimuth_deg"] - c["fov_deg"] / 2, c["fov_deg"])} for c in placed]  # fmt: skip
    union = _union_arcs([(c["azimuth_deg"] - c["fov_deg"] / 2, c["fov_deg"]) for c in placed])
    covered = [arc(s, w) for s, w in union]
    if not union:
        uncovered = [arc(-180.0, 360.0)]
    elif union[0][1] >= 360.0:
        uncovered = []
    else:
        order = sorted(union, key=lambda sw: sw[0])
        uncovered = []
        for i, (s, w) in enumerate(order):
            ns = order[(i + 1) % len(order)][0]
            gap = (ns - (s + w)) % 360.0
            if gap > 1e-9:
                uncovered.append(arc(s + w, gap))
    total = sum(w for _s, w in union)
    return {"arcs": per_camera, "covered_arcs": covered, "uncovered_arcs": uncovered,
            "covered_deg": round(min(360.0, total), 6),
            "largest_uncovered": max(uncovered, key=lambda a: a["width_deg"]) if uncovered else None,
            "fov_model": FOV_MODEL}  # fmt: skip


def compute_coverage(cameras: Iterable[tuple[str, dict[str, Any]]], *, duplicate_angle_deg: float = 15.0,
                     zooms: dict[str, float | None] | None = None,
                     device_fovs: dict[str, float | None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Coverage of ``(camera_id, placement)`` pairs.

    Returns ``{"covered": [{"camera", "azimuth_deg", "label"}] (sorted by azimuth),
    "unplaced": [camera ids without azimuth], "duplicates": [{"cameras": [a, b], "apart_deg"}],
    "gaps": [{"from", "to", "start_deg", "end_deg", "width_deg", "center_deg"}] (clockwise from
    one camera to the next), "largest_gap": the widest gap or a 360° gap when fewer than one
    camera is placed, "duplicate_angle_deg"}`` plus the field-of-view arcs of `fov_coverage`
    (``arcs``, ``covered_arcs``, ``uncovered_arcs``, ``covered_deg``, ``largest_uncovered``,
    ``fov_model``) from ``zooms`` and ``device_fovs`` (camera → value; missing: 1×).
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
    fov = fov_coverage([{"camera": c["camera"], "azimuth_deg": c["azimuth_deg"],
                         "fov_deg": horizontal_fov_deg((zooms or {}).get(c["camera"]), (device_fovs or {}).get(c["camera"]))}
                        for c in covered])  # fmt: skip
    return {"covered": covered, "unplaced": unplaced, "duplicates": duplicates, "gaps": gaps,
            "largest_gap": largest, "duplicate_angle_deg": duplicate_angle_deg, **fov}  # fmt: skip
