"""The simulated camera's optics: facing, lenses, zoom, and how `flip`/`zoom` change them.

The rules are those of docs/device-protocol.md ("Command semantics"):

- ``flip`` switches between ``back`` and ``front``; the zoom stays when the new facing can
  do it (one of its lenses, or a digital zoom above 1 up to its largest lens), else it
  becomes 1.
- ``zoom`` accepts one of the lenses of the current facing, or for zoom > 1 a digital zoom
  up to the largest lens; 0.5 (the ultra-wide) only where the facing has that lens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from mmx.errors import DataError, EventError
from mmx.events import PLACEMENT_FIELDS, check_placement

FACINGS = ("back", "front")
#: Default lenses of `mmx device`: an iPhone-like back camera (ultra-wide, wide, 2×) and a
#: front camera with one lens.
DEFAULT_LENSES: dict[str, list[float]] = {"back": [0.5, 1.0, 2.0], "front": [1.0]}
THERMAL_STATES = ("nominal", "fair", "serious", "critical")


class CommandRefused(Exception):
    """A command the camera cannot do; ``str(exc)`` is the ack's ``error``."""


def _num(value: float) -> float | int:
    """1.0 → 1 so lenses and zoom read as on the wire (``[0.5, 1, 2]``)."""
    return int(value) if float(value).is_integer() else float(value)


def parse_lenses(text: str) -> list[float]:
    """Parse ``"0.5,1,2"`` into ``[0.5, 1.0, 2.0]`` (sorted, unique, each > 0).

    Raises DataError naming the bad item.
    """
    lenses: set[float] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item.rstrip("x×"))
        except ValueError:
            raise DataError(f"lens {item!r} is not a number", hint="give lenses like 0.5,1,2") from None
        if not math.isfinite(value) or value <= 0:
            raise DataError(f"lens {item!r} must be a positive number")
        lenses.add(value)
    if not lenses:
        raise DataError("no lenses given", hint="give lenses like 0.5,1,2")
    return sorted(lenses)


def parse_placement(text: str | None) -> dict[str, Any] | None:
    """Parse a placement: a JSON object or ``label=front,azimuth_deg=0,distance_m=3``.

    Numeric fields (``azimuth_deg``, ``elevation_deg``, ``distance_m``, ``height_m``) are
    converted to numbers. Raises DataError for malformed text or a field of the wrong type.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            placement = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"placement is not valid JSON: {exc}") from None
        if not isinstance(placement, dict):
            raise DataError("placement must be a JSON object")
    else:
        placement = {}
        for item in text.split(","):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or not key:
                raise DataError(f"placement item {item.strip()!r} is not key=value",
                                hint="e.g. label=front-left,azimuth_deg=-45,distance_m=3")  # fmt: skip
            if key in PLACEMENT_FIELDS and key != "label":
                try:
                    placement[key] = float(value)
                except ValueError:
                    raise DataError(f"placement field '{key}' must be a number, got {value!r}") from None
                placement[key] = _num(placement[key])
            else:
                placement[key] = value
    try:
        check_placement(placement)
    except EventError as exc:
        raise DataError(exc.message) from None
    return placement


@dataclass
class CameraState:
    """Facing, zoom and lenses of one simulated camera, plus battery and thermal state.

    ``lenses`` maps a facing to its physical lenses (zoom factors). ``battery`` is 0–1,
    ``thermal`` one of `THERMAL_STATES`.
    """

    lenses: dict[str, list[float]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_LENSES.items()})
    facing: str = "back"
    zoom: float = 1.0
    battery: float = 1.0
    thermal: str = "nominal"

    def __post_init__(self) -> None:
        self.lenses = {facing: sorted(set(map(float, lenses))) for facing, lenses in self.lenses.items() if lenses}
        if self.facing not in self.lenses:
            self.facing = next(iter(self.lenses))
        if not self.can_zoom(self.facing, self.zoom):
            self.zoom = 1.0 if self.can_zoom(self.facing, 1.0) else self.lenses[self.facing][0]

    def can_zoom(self, facing: str, zoom: float) -> bool:
        """Whether ``facing`` has lens ``zoom`` or can reach it digitally (1 < zoom ≤ largest lens)."""
        lenses = self.lenses.get(facing)
        if not lenses or not math.isfinite(zoom) or zoom <= 0:
            return False
        if any(math.isclose(zoom, lens) for lens in lenses):
            return True
        return 1.0 < zoom <= max(lenses) + 1e-9

    def flip(self) -> None:
        """Switch to the other facing; zoom becomes 1 if the new facing cannot keep it.

        Raises CommandRefused when the camera has only one facing.
        """
        others = [f for f in FACINGS if f != self.facing and f in self.lenses]
        if not others:
            raise CommandRefused(f"this camera has no facing other than {self.facing}")
        self.facing = others[0]
        if not self.can_zoom(self.facing, self.zoom):
            self.zoom = 1.0 if self.can_zoom(self.facing, 1.0) else self.lenses[self.facing][0]

    def set_zoom(self, zoom: Any) -> None:
        """Set the zoom factor. Raises CommandRefused for a non-number or a lens the facing lacks."""
        if isinstance(zoom, bool) or not isinstance(zoom, (int, float)):
            raise CommandRefused("zoom must be a number")
        zoom = float(zoom)
        if not self.can_zoom(self.facing, zoom):
            lenses = ", ".join(f"{_num(lens)}" for lens in self.lenses[self.facing])
            raise CommandRefused(f"zoom {_num(zoom)} is not available on the {self.facing} camera (lenses: {lenses})")
        self.zoom = zoom

    def crop_factor(self) -> float:
        """How much to crop the source image: the zoom for zoom > 1, else 1 (the widest view)."""
        return max(1.0, self.zoom)

    def capabilities(self) -> dict[str, Any]:
        """The ``capabilities`` of the ``hello`` message (facings and lenses per facing)."""
        return {
            "facings": [f for f in FACINGS if f in self.lenses],
            "lenses": {f: [_num(lens) for lens in self.lenses[f]] for f in FACINGS if f in self.lenses},
        }

    def report(self) -> dict[str, Any]:
        """The ``state`` object: facing, zoom, battery (0–1), thermal."""
        return {"facing": self.facing, "zoom": _num(self.zoom), "battery": round(self.battery, 3), "thermal": self.thermal}
