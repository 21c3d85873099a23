"""What `mmx serve` lets in at its doors: a device's hello, placement and lens values, still bytes.

The event contract itself (`mmx.events.validate`: line ≤ 1 MiB, nesting ≤ 32, ``ts`` in
2000–2100, bounded strings) is checked on every event the server publishes
(`mmx.serve.hub.EventHub.publish`). The checks here come first, at the door, so that a
request or a hello that would make a bad event is refused with the field named (HTTP 422,
or a hello error) before any live state changes:

- `check_placement_values`: the known placement fields have the right JSON type and lie in
  `PLACEMENT_RANGES`; ``label`` is at most `MAX_LABEL_LENGTH` characters.
- `normalise_lenses`: ``capabilities.lenses`` is an object of facing → array of zoom factors
  (numbers in (0, `MAX_ZOOM`]); a facing given as null means "no lenses" and is dropped.
- `check_hello_text`: the hello's names are strings of at most `MAX_HELLO_TEXT` characters.
- `still_kind`: a still's own magic bytes say JPEG or HEIC, whatever its content type claims.
"""

from __future__ import annotations

import math
from typing import Any

from mmx.errors import EventError
from mmx.events import PLACEMENT_FIELDS, check_placement

#: Accepted range of each numeric placement field (inclusive). Azimuths are normalised to
#: [-180, 180) by the coverage code, so one turn either way is accepted as given.
PLACEMENT_RANGES: dict[str, tuple[float, float]] = {
    "azimuth_deg": (-360.0, 360.0),
    "elevation_deg": (-90.0, 90.0),
    "distance_m": (0.0, 1000.0),
    "height_m": (-100.0, 1000.0),
}
#: Longest placement ``label`` in characters.
MAX_LABEL_LENGTH = 128
#: Longest hello text field (``name``, ``model``, ``platform``, ``app``, ``role``,
#: ``state.facing``, ``state.thermal``) in characters.
MAX_HELLO_TEXT = 256
#: Most facings a device may report, and lenses per facing.
MAX_FACINGS = 8
MAX_LENSES = 16
#: Largest zoom factor a lens may report.
MAX_ZOOM = 100.0
#: Longest hello message in bytes: a hello is a few hundred bytes; the limit keeps every
#: event made from it (``camera.joined``) far below the ledger's line limit.
MAX_HELLO_BYTES = 64 * 1024
#: Longest free-text field accepted from a request or a device message into an event
#: (titles, notes, an ack's error), in characters.
MAX_TEXT = 4096
#: Longest name-like field (``by``, ``proposal``, a camera id) in characters.
MAX_NAME = 128

_HELLO_TEXT = ("name", "model", "platform", "app", "role")
_STATE_TEXT = ("facing", "thermal")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_placement_values(placement: Any) -> None:
    """Check a placement object: known fields typed (`mmx.events.check_placement`) and in range.

    Raises EventError naming the field: not an object, a field of the wrong type, a number
    outside `PLACEMENT_RANGES`, or a ``label`` longer than `MAX_LABEL_LENGTH`. Unknown fields
    are carried untouched; null fields mean "not known".
    """
    if not isinstance(placement, dict):
        raise EventError("placement must be an object")
    check_placement(placement)
    label = placement.get("label")
    if isinstance(label, str) and len(label) > MAX_LABEL_LENGTH:
        raise EventError(f"placement field 'label' is longer than {MAX_LABEL_LENGTH} characters")
    for name, (lo, hi) in PLACEMENT_RANGES.items():
        value = placement.get(name)
        if value is not None and not lo <= value <= hi:
            raise EventError(f"placement field '{name}' must be from {lo:g} to {hi:g}, got {value:g}")
    for name, value in placement.items():
        if name not in PLACEMENT_FIELDS and isinstance(value, str) and len(value) > MAX_TEXT:
            raise EventError(f"placement field '{name}' is longer than {MAX_TEXT} characters")


def normalise_lenses(capabilities: dict[str, Any]) -> dict[str, Any]:
    """``capabilities`` with ``lenses`` checked and null facings dropped (a new dict).

    Raises EventError naming the field (``capabilities.lenses.back``) when ``lenses`` is not
    an object, a facing's lenses are not an array of numbers in (0, `MAX_ZOOM`], or there are
    more than `MAX_FACINGS` facings or `MAX_LENSES` lenses; ``facings`` must be an array of
    short strings.
    """
    out = dict(capabilities)
    facings = out.get("facings")
    if facings is not None:
        if (not isinstance(facings, list) or len(facings) > MAX_FACINGS
                or not all(isinstance(f, str) and 0 < len(f) <= MAX_NAME for f in facings)):  # fmt: skip
            raise EventError(f"capabilities.facings must be an array of at most {MAX_FACINGS} facing names")
    lenses = out.get("lenses")
    if lenses is None:
        out.pop("lenses", None)
        return out
    if not isinstance(lenses, dict):
        raise EventError("capabilities.lenses must be an object of facing → array of zoom factors")
    if len(lenses) > MAX_FACINGS:
        raise EventError(f"capabilities.lenses: more than {MAX_FACINGS} facings")
    clean: dict[str, list[float]] = {}
    for facing, values in lenses.items():
        where = f"capabilities.lenses.{facing[:MAX_NAME]}"
        if len(facing) > MAX_NAME:
            raise EventError(f"{where}: facing name longer than {MAX_NAME} characters")
        if values is None:
            continue
        if not isinstance(values, list) or len(values) > MAX_LENSES:
            raise EventError(f"{where} must be an array of at most {MAX_LENSES} zoom factors such as [0.5, 1, 2]")
        for value in values:
            if not _number(value) or not 0 < value <= MAX_ZOOM:
                raise EventError(f"{where} must hold zoom factors from above 0 to {MAX_ZOOM:g}, got {value!r}"[:300])
        clean[facing] = values
    out["lenses"] = clean
    return out


def check_hello_text(hello: dict[str, Any]) -> None:
    """Raise EventError naming the first hello text field that is not a string of at most
    `MAX_HELLO_TEXT` characters (absent and null fields pass)."""
    state = hello.get("state") or {}
    for where, obj, names in (("", hello, _HELLO_TEXT), ("state.", state, _STATE_TEXT)):
        for name in names:
            value = obj.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise EventError(f"'{where}{name}' must be a string")
            if len(value) > MAX_HELLO_TEXT:
                raise EventError(f"'{where}{name}' is longer than {MAX_HELLO_TEXT} characters")
    for name in ("zoom", "battery"):
        value = state.get(name)
        if value is not None and not _number(value):
            raise EventError(f"'state.{name}' must be a number")


def bounded_text(value: Any, name: str, limit: int = MAX_TEXT) -> str | None:
    """``value`` when it is None or a string of at most ``limit`` characters.

    Raises EventError naming ``name`` otherwise (for a 422 at the door).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{name} must be a string")
    if len(value) > limit:
        raise EventError(f"{name} is longer than {limit} characters")
    return value


#: HEIF brands (ISO/IEC 23008-12 and Apple's) found at bytes 8–12 of a HEIC/HEIF file's ftyp box.
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def still_kind(head: bytes) -> str | None:
    """``"jpeg"`` or ``"heic"`` from a file's first bytes, else None.

    JPEG: SOI ``FF D8`` then a marker ``FF`` (ITU T.81 B.1.1). HEIC/HEIF: an ISO base media
    ``ftyp`` box first (bytes 4–8) with a HEIF brand (bytes 8–12, `HEIF_BRANDS`).
    """
    if len(head) >= 3 and head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if len(head) >= 12 and head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "heic"
    return None
