"""Who is asking: the operator's token, a console session cookie, or a camera's pairing token.

Every request of `mmx serve` is authenticated here (the one place), except the few public
paths (the pages themselves and their static files, which hold no live data):

- ``Authorization: Bearer <token>`` or ``?token=<token>`` (for ``<img>`` and WebSocket URLs);
- the console's cookie `SESSION_COOKIE` (HttpOnly, SameSite=Strict), whose value is derived
  from the operator token (`session_cookie_value`) so the cookie never holds the token itself.

A token is compared in constant time (`hmac.compare_digest`) as bytes; a header that is not
valid UTF-8 (aiohttp decodes headers as Latin-1 / surrogate-escaped) is a wrong token, 401,
never a 500.

`Principal.kind` is ``"operator"`` (everything) or ``"camera"`` (a camera's pairing token:
only the routes in `CAMERA_ROUTES`; anything else answers 403). Camera tokens are looked up
through `Authenticator.camera_token`, a callback the pairing store sets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from mmx.serve.api import ApiError

SESSION_COOKIE = "mmx_session"
#: (method, route pattern) a camera token may use; everything else is 403 for it.
CAMERA_ROUTES = frozenset({("GET", "/v1/devices/ws"), ("POST", "/v1/stills"), ("POST", "/v1/relay/whip/{camera}"),
                           ("DELETE", "/v1/relay/whip/{camera}/{resource}")})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: ``kind`` ``"operator"`` or ``"camera"`` (with its ``pairing`` id)."""

    kind: str
    pairing: str | None = None


OPERATOR = Principal("operator")
#: Where the middleware leaves the request's `Principal` (None on a public path).
PRINCIPAL = web.RequestKey("principal", Principal)


def session_cookie_value(token: str) -> str:
    """The console cookie's value for ``token``: HMAC-SHA256(token, "mmx console session v1"), hex."""
    return hmac.new(token.encode(), b"mmx console session v1", hashlib.sha256).hexdigest()


def _bytes(text: str) -> bytes | None:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # surrogate-escaped bytes of a non-UTF-8 header
        return None


class Authenticator:
    """Checks requests against the operator token and, through ``camera_token``, pairings.

    ``public`` holds exact paths and ``public_prefixes`` path prefixes served without a
    token (route modules add their pages). ``camera_token(token) -> pairing id | None``
    answers for camera tokens (None: not a camera token).
    """

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._cookie = session_cookie_value(token).encode()
        self.public: set[str] = set()
        self.public_prefixes: list[str] = []
        self.camera_token: Callable[[str], str | None] = lambda _token: None

    def is_operator_token(self, given: str | None) -> bool:
        """True when ``given`` is the operator token (constant time; False for non-UTF-8)."""
        raw = _bytes(given) if isinstance(given, str) else None
        return raw is not None and hmac.compare_digest(raw, self._token)

    def is_public(self, path: str) -> bool:
        return path in self.public or any(path.startswith(p) for p in self.public_prefixes)

    def identify(self, request: web.Request) -> Principal:
        """The request's `Principal`. Raises ApiError 401 when it has no valid credential."""
        given = None
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif "token" in request.query:
            given = request.query["token"]
        if not given:
            cookie = request.cookies.get(SESSION_COOKIE)
            raw = _bytes(cookie) if cookie else None
            if raw is not None and hmac.compare_digest(raw, self._cookie):
                return OPERATOR
            raise ApiError(401, "missing token: send 'Authorization: Bearer <token>' or ?token=<token>")
        if self.is_operator_token(given):
            return OPERATOR
        if _bytes(given) is not None:
            pairing = self.camera_token(given)
            if pairing is not None:
                return Principal("camera", pairing)
        raise ApiError(401, "wrong token")

    def check(self, request: web.Request) -> Principal | None:
        """Authenticate and authorise ``request``; None for a public path. Raises ApiError 401/403."""
        if self.is_public(request.path):
            return None
        principal = self.identify(request)
        if principal.kind == "camera":
            route = request.match_info.route.resource
            pattern = route.canonical if route is not None else request.path
            if (request.method, pattern) not in CAMERA_ROUTES:
                raise ApiError(403, "a camera token may only open the device WebSocket and upload stills")
        return principal
