"""Small pieces every route module of `mmx serve` shares: the error answer, JSON in and out.

Errors answer ``{"error": "<message>", ...}`` with the status of DESIGN.md (400 malformed,
401 token, 403 not allowed with this token, 404 unknown, 409 conflict with live state,
413/415/422 bad upload or unsupported, 423 held, 504 device timeout).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from multidict import MultiDictProxy

from mmx.serve.registry import Camera


class ApiError(Exception):
    """An HTTP error answer: ``{"error": message, **extra}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``obj`` as a compact JSON answer (orjson)."""
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)


def wire(obj: dict[str, Any]) -> str:
    """One WebSocket text message: compact JSON."""
    return orjson.dumps(obj).decode()


async def send_json(ws: web.WebSocketResponse | None, msg: dict[str, Any]) -> bool:
    """Send one JSON text message; False when the socket is gone."""
    if ws is None or ws.closed:
        return False
    try:
        await ws.send_str(wire(msg))
        return True
    except (ConnectionError, RuntimeError):
        return False


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object ({} when empty). Raises ApiError 400."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "the body must be a JSON object")
    return obj


#: What aiohttp's form and multipart parsers raise on a broken body (a multipart type without
#: a boundary, a part without headers, bytes that are not UTF-8 in a urlencoded form).
BROKEN_BODY_ERRORS = (ValueError, AssertionError, BadHttpMessage)


def broken_body_reason(exc: BaseException) -> str:
    """The first line of a parser's complaint about a broken body (its type name when empty)."""
    return (getattr(exc, "message", None) or str(exc)).strip().split("\n")[0] or type(exc).__name__


async def read_form(request: web.Request) -> MultiDictProxy:
    """The request body as a form (urlencoded or multipart). Raises ApiError 400 when it is broken."""
    try:
        return await request.post()
    except BROKEN_BODY_ERRORS as exc:
        raise ApiError(400, f"malformed {request.content_type} body: {broken_body_reason(exc)}"[:300]) from None


def id_order(camera: str) -> tuple[int, str]:
    """Sort key of camera ids: ``cam-2`` before ``cam-10``; other names after, by name."""
    tail = camera.rsplit("-", 1)[-1]
    return (int(tail), camera) if tail.isdigit() else (1 << 30, camera)


def cam_order(cam: Camera) -> tuple[int, str]:
    return id_order(cam.camera)
