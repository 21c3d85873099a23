"""``POST /v1/stills``: full-resolution photos from the cameras, stored once, atomically.

A broken multipart body is a 400; an image whose magic bytes are not the JPEG or HEIC its
content type declares is a 415 (`mmx.serve.limits.still_kind`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from mmx.events import new_id
from mmx.fileio import fsync_dir
from mmx.serve.api import BROKEN_BODY_ERRORS, ApiError, broken_body_reason, json_response
from mmx.serve.auth import PRINCIPAL
from mmx.serve.limits import still_kind
from mmx.serve.stills import SAFE_ID, SHA256_HEX, STILL_TYPES, jpeg_size

#: A still id → its stored file, for the still command's answer and duplicate checks.
STILLS_KEPT = 10_000
#: Longest text form field (camera, still, sha256) in bytes.
MAX_FIELD_BYTES = 1024


@dataclass
class _StillForm:
    """What `StillRoutes._read_still_form` read so far (``tmp``: the image's temporary file)."""

    fields: dict[str, str] = field(default_factory=dict)
    tmp: Path | None = None
    image_type: str | None = None
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    head: bytes = b""


class StillRoutes:
    """Still uploads (mixed into `Server`)."""

    def _add_still_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/stills", self._post_still)

    async def _post_still(self, request: web.Request) -> web.Response:
        limit = self.config.max_still_bytes
        if request.content_length is not None and request.content_length > limit + 64 * 1024:
            raise ApiError(413, f"the upload is {request.content_length} bytes; stills are limited to {limit} bytes")
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "POST /v1/stills takes multipart/form-data: camera, still, sha256, image")
        form = _StillForm()
        try:
            try:
                await self._read_still_form(request, form)
            except BROKEN_BODY_ERRORS as exc:
                raise ApiError(400, f"malformed multipart/form-data body: {broken_body_reason(exc)}"[:300]) from None
            fields = form.fields
            for name in ("camera", "still", "sha256"):
                if not fields.get(name):
                    raise ApiError(400, f"missing form field {name!r} (camera, still, sha256, image)")
            if form.tmp is None:
                raise ApiError(400, "missing form field 'image' (the photo's bytes)")
            camera, still, claimed = fields["camera"], fields["still"], fields["sha256"].lower()
            self._camera(camera)
            self._check_still_camera(request.get(PRINCIPAL), camera)
            if not SAFE_ID.match(still):
                raise ApiError(400, "still id may hold only letters, digits, '.', '_' and '-' (at most 128)")
            if not SHA256_HEX.match(claimed):
                raise ApiError(400, "sha256 must be 64 hexadecimal digits")
            ext = STILL_TYPES[form.image_type or "image/jpeg"]
            kind = still_kind(form.head)
            if kind != ("jpeg" if ext == ".jpg" else "heic"):
                found = f"a {kind.upper()} file" if kind else "neither JPEG nor HEIC"
                raise ApiError(415, f"the image is declared {form.image_type} but its bytes are {found} "
                                    "(stills must be JPEG or HEIC by their magic bytes)")  # fmt: skip
            actual = form.digest.hexdigest()
            if actual != claimed:
                raise ApiError(422, f"sha256 mismatch: the image hashes to {actual}, the form says {claimed}")
            key = f"{camera}/{still}"
            lock = self._still_locks.setdefault(key, asyncio.Lock())
            try:
                async with lock:
                    return await self._store_still(form.tmp, camera=camera, still=still, sha256=actual, size=form.size,
                                                   ext=ext, head=form.head)  # fmt: skip
            finally:
                if not lock.locked() and self._still_locks.get(key) is lock:
                    del self._still_locks[key]
        finally:
            if form.tmp is not None and form.tmp.exists():
                form.tmp.unlink()

    async def _read_still_form(self, request: web.Request, form: _StillForm) -> None:
        """Read the multipart body into ``form`` (the image to a temporary file). Raises ApiError
        413/415/400, or the parser's own errors on a broken body."""
        limit = self.config.max_still_bytes
        tmp_dir = self.data_dir / "tmp"
        tmp_dir.mkdir(exist_ok=True)
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "image":
                if form.tmp is not None:
                    raise ApiError(400, "more than one form field 'image'")
                image_type = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if image_type not in STILL_TYPES:
                    raise ApiError(415, f"image content type {image_type[:64] or '(none)'!r} is not JPEG or HEIC "
                                        f"(send image/jpeg or image/heic)")  # fmt: skip
                form.image_type = image_type
                form.tmp = tmp_dir / f"upload-{new_id()}.part"
                with open(form.tmp, "wb") as fp:
                    while chunk := await part.read_chunk(256 * 1024):
                        form.size += len(chunk)
                        if form.size > limit:
                            raise ApiError(413, f"the still is larger than the limit of {limit} bytes")
                        form.digest.update(chunk)
                        if len(form.head) < 65536:
                            form.head += chunk[: 65536 - len(form.head)]
                        fp.write(chunk)
                    fp.flush()
                    os.fsync(fp.fileno())
            elif part.name in ("camera", "still", "sha256"):
                value = b""
                # read_chunk's size must exceed the boundary's length: read in 8 KiB steps
                while chunk := await part.read_chunk(8192):
                    value += chunk
                    if len(value) > MAX_FIELD_BYTES:
                        raise ApiError(400, f"form field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")
                form.fields[part.name] = value.decode("utf-8", "replace").strip()
            else:
                while await part.read_chunk(64 * 1024):
                    pass

    async def _store_still(self, tmp: Path, *, camera: str, still: str, sha256: str, size: int, ext: str,
                           head: bytes) -> web.Response:  # fmt: skip
        key = f"{camera}/{still}"
        known = self._stills.get(key)
        base = self.capture.stills_dir if self.capture is not None else self.data_dir / "stills"
        dest = base / camera / f"{still}{ext}"
        if known is None and dest.exists():
            known = {"path": str(dest), "sha256": await asyncio.to_thread(_sha256_file, dest), "bytes": dest.stat().st_size}
        if known is not None:
            if known["sha256"] != sha256:
                raise ApiError(409, f"still {still} of {camera} is already stored with another sha256", **known)
            return json_response({"still": still, "camera": camera, **known, "duplicate": True}, 200)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        wh = jpeg_size(head) if ext == ".jpg" else None
        record = {"path": str(dest), "sha256": sha256, "bytes": size}
        self._stills[key] = record
        while len(self._stills) > STILLS_KEPT:
            self._stills.popitem(last=False)
        self.hub.emit("still.captured", {"still": still, "camera": camera, **record,
                                         "width": wh[0] if wh else None, "height": wh[1] if wh else None})  # fmt: skip
        self._bump("still.captured")
        self.log(f"still {still} from {camera}: {size} bytes")
        return json_response({"still": still, "camera": camera, **record, "width": wh[0] if wh else None,
                      "height": wh[1] if wh else None, "duplicate": False}, 201)  # fmt: skip



def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
