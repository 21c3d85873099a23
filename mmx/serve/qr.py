"""QR codes of camera links (segno): as text for a terminal and as SVG for the console.

Error correction M (15 % of the code may be damaged: a phone at an angle, a glare on the
screen) with segno's ``boost_error`` off, so the code stays as small as the link allows; a
camera link of about 90 characters is a version 5 or 6 code (37–41 modules a side).
"""

from __future__ import annotations

import io

import segno

#: QR error correction level (ISO/IEC 18004: L 7 %, M 15 %, Q 25 %, H 30 % recoverable).
ERROR = "m"


def _make(text: str) -> segno.QRCode:
    return segno.make_qr(text, error=ERROR, boost_error=False)


def terminal_qr(text: str, *, border: int = 2) -> str:
    """``text`` as a QR code drawn with Unicode half blocks, two modules a character row.

    Light modules are drawn (``█``), dark ones left blank, which reads on the usual dark
    terminal; ``border`` quiet-zone modules on each side (the standard asks for 4; 2 is
    enough for phone cameras and keeps the code on a laptop screen). Lines end with ``\\n``.
    """
    out = io.StringIO()
    _make(text).terminal(out=out, compact=True, border=border)
    return out.getvalue()


def svg_qr(text: str, *, scale: int = 8, border: int = 4) -> bytes:
    """``text`` as a standalone SVG document (UTF-8 bytes): black on white, ``scale`` px a module."""
    out = io.BytesIO()
    _make(text).save(out, kind="svg", scale=scale, border=border, dark="#000", light="#fff",
                     xmldecl=False, svgclass=None, lineclass=None, title="camera link")  # fmt: skip
    return out.getvalue()
