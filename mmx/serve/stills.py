"""Still uploads: accepted content types, safe ids, and the JPEG frame size."""

from __future__ import annotations

import re
import struct

#: Accepted image content types → file extension. DESIGN.md stores JPEG as ``<still>.jpg``.
STILL_TYPES = {"image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg",
               "image/heic": ".heic", "image/heif": ".heic"}  # fmt: skip
#: Still and camera ids become file names: letters, digits, ``.``, ``_``, ``-``; no leading dot.
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")

_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(head: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the first start-of-frame segment of JPEG bytes, else None.

    Walks the marker segments (ITU T.81, B.1.1.2): each is ``FF xx`` then a big-endian length
    including itself; SOFn carries precision (1 byte), height, width (2 bytes each).
    """
    if len(head) < 4 or head[0:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if marker in _SOF_MARKERS and i + 9 <= len(head):
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan: no SOF before it
            return None
        i += 2 + length
    return None
