"""The operator console (Live Director in the browser): its page, its static files, the login.

The page (``GET /`` and ``GET /console``) and its files under ``/static/console/`` are public:
they hold no live data. Everything live comes from the same authenticated API any script
uses (``/v1/state``, ``/v1/events``, ``/v1/previews/ws``, ``/v1/director/*``, ``/v1/ghost/*``
...), authenticated by the HttpOnly, SameSite=Strict cookie `SESSION_COOKIE` that the login
sets (its value is derived from the token, never the token itself):

- ``POST /v1/login`` ``{"token": T}`` (JSON, or a form field ``token``) → 204 with the cookie,
  401 ``{"error": "wrong token"}``; a form post answers 303 to ``/`` instead of 204.
- ``GET /?token=T`` (the URL or QR code `mmx serve` prints) sets the cookie and answers 303
  to ``/`` so the token leaves the address bar; a wrong one answers 303 to ``/?login=wrong``,
  which the page shows as a message.
- ``POST /v1/logout`` clears the cookie.

The page is plain JavaScript modules and CSS shipped in the package (no CDN, no build step).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from mmx.events import Event
from mmx.serve.api import ApiError, read_form, read_json
from mmx.serve.auth import SESSION_COOKIE, session_cookie_value

STATIC_PREFIX = "/static/console/"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
                 ".png": "image/png"}  # fmt: skip
#: The page may load only its own files and talk only to this server.
CSP = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
       "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")  # fmt: skip
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer"}  # fmt: skip
#: The cookie lives for a working day and a half; the token itself never expires.
COOKIE_MAX_AGE_S = 36 * 3600


def static_dir() -> Any:
    """The package folder of the console's files (`importlib.resources` traversable)."""
    return resources.files("mmx.serve") / "static" / "console"


class ConsoleRoutes:
    """``GET /``, ``/console``, ``/static/console/*``, ``POST /v1/login|logout`` (mixed into `Server`)."""

    def _init_console(self) -> None:
        self.music_cue: dict[str, Any] | None = None
        self.hub.add_sink(self._track_music)

    def _track_music(self, event: Event, _line: bytes) -> None:
        if event.type == "music.cue":
            self.music_cue = {**event.data, "ts": event.ts}

    def _add_console_routes(self, r: web.UrlDispatcher) -> None:
        self.auth.public.update({"/", "/console", "/v1/login", "/v1/logout"})
        self.auth.public_prefixes.append(STATIC_PREFIX)
        r.add_get("/", self._console_page)
        r.add_get("/console", self._console_page)
        r.add_get(STATIC_PREFIX + "{name}", self._console_static)
        r.add_post("/v1/login", self._login)
        r.add_post("/v1/logout", self._logout)

    def _set_cookie(self, resp: web.StreamResponse) -> None:
        resp.set_cookie(SESSION_COOKIE, session_cookie_value(self.config.token), httponly=True, samesite="Strict",
                        path="/", max_age=COOKIE_MAX_AGE_S)  # fmt: skip

    async def _console_page(self, request: web.Request) -> web.StreamResponse:
        if "token" in request.query:
            if self.auth.is_operator_token(request.query["token"]):
                resp = web.Response(status=303, headers={"Location": request.path, "Cache-Control": "no-store"})
                self._set_cookie(resp)
                return resp
            return web.Response(status=303, headers={"Location": f"{request.path}?login=wrong", "Cache-Control": "no-store"})
        body = (static_dir() / "index.html").read_bytes()
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def _console_static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = CONTENT_TYPES.get(name[name.rfind("."):] if "." in name else "")
        entry = static_dir() / name
        if kind is None or "/" in name or name.startswith(".") or not entry.is_file():
            raise ApiError(404, f"no such console file: {name}")
        return web.Response(body=entry.read_bytes(), content_type=kind,
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})  # fmt: skip

    async def _login(self, request: web.Request) -> web.Response:
        form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        if form:
            token = (await read_form(request)).get("token")
        else:
            token = (await read_json(request)).get("token")
        if not isinstance(token, str) or not self.auth.is_operator_token(token):
            if form:
                return web.Response(status=303, headers={"Location": "/?login=wrong"})
            raise ApiError(401, "wrong token: use the token mmx serve printed at start")
        resp = web.Response(status=303, headers={"Location": "/"}) if form else web.Response(status=204)
        self._set_cookie(resp)
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        resp = web.Response(status=204)
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp
