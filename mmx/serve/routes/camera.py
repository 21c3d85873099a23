"""The camera page (any phone's browser as a camera) and its WHIP proxy to `mmx relay`.

- ``GET /camera`` and ``/static/camera/*``: the page (vanilla JS modules and CSS shipped in
  the package). Public: the page holds no data; its token travels in the URL fragment
  (``/camera#token=…``), which browsers never send to a server, and it speaks the device
  protocol (docs/device-protocol.md) over ``GET /v1/devices/ws`` like the iPhone app.
- ``POST /v1/relay/whip/{camera}`` (SDP offer → answer, 201 with ``Location``) and
  ``DELETE /v1/relay/whip/{camera}/{resource}``: the page's hero feed, handed on to the relay
  of ``mmx serve --relay URL`` with the relay's own token (``--relay-token``), which never
  reaches the page. A camera token may publish only as a camera that joined with it (403);
  without ``--relay`` these answer 404. Media flows between the browser and the relay
  directly; only the offer and answer pass through serve.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from aiohttp import web

from mmx.serve.api import ApiError
from mmx.serve.auth import PRINCIPAL, Principal
from mmx.serve.routes.console import CONTENT_TYPES, PAGE_HEADERS

STATIC_PREFIX = "/static/camera/"
WHIP_PREFIX = "/v1/relay/whip/"
#: The largest SDP offer handed on (a browser's offer is a few KiB).
MAX_SDP_BYTES = 64 * 1024
#: How long the relay may take to answer an offer, seconds.
RELAY_TIMEOUT_S = 10.0


def camera_static_dir() -> Any:
    """The package folder of the camera page's files (`importlib.resources` traversable)."""
    return resources.files("mmx.serve") / "static" / "camera"


class CameraPageRoutes:
    """``GET /camera``, ``/static/camera/*`` and the WHIP proxy (mixed into `Server`)."""

    def _add_camera_page_routes(self, r: web.UrlDispatcher) -> None:
        self.auth.public.add("/camera")
        self.auth.public_prefixes.append(STATIC_PREFIX)
        r.add_get("/camera", self._camera_page)
        r.add_get(STATIC_PREFIX + "{name}", self._camera_static)
        r.add_post(WHIP_PREFIX + "{camera}", self._whip_offer)
        r.add_delete(WHIP_PREFIX + "{camera}/{resource}", self._whip_delete)

    async def _camera_page(self, request: web.Request) -> web.Response:
        body = (camera_static_dir() / "index.html").read_bytes()
        return web.Response(body=body, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)

    async def _camera_static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = CONTENT_TYPES.get(name[name.rfind("."):] if "." in name else "")
        entry = camera_static_dir() / name
        if kind is None or "/" in name or name.startswith(".") or not entry.is_file():
            raise ApiError(404, f"no such camera page file: {name}")
        return web.Response(body=entry.read_bytes(), content_type=kind,
                            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})  # fmt: skip

    def _relay_target(self, request: web.Request) -> tuple[str, str]:
        """(the relay's base URL, the camera) for a proxy request. Raises ApiError 404/403."""
        relay = self.config.relay_url
        if not relay:
            raise ApiError(404, "no relay: start mmx serve with --relay URL to publish the hero feed")
        camera = request.match_info["camera"]
        self._camera(camera)
        principal: Principal | None = request.get(PRINCIPAL)
        if principal is not None and principal.kind == "camera":
            pairing = self.pairings.get(principal.pairing or "")
            if pairing is None or camera not in pairing.cameras:
                raise ApiError(403, f"this camera token may publish only as its own cameras, not {camera!r}")
        return relay.rstrip("/"), camera

    def _relay_headers(self, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.config.relay_token:
            headers["Authorization"] = f"Bearer {self.config.relay_token}"
        return headers

    async def _whip_offer(self, request: web.Request) -> web.Response:
        relay, camera = self._relay_target(request)
        offer = await request.content.read(MAX_SDP_BYTES + 1)
        if len(offer) > MAX_SDP_BYTES or not offer.startswith(b"v=0"):
            raise ApiError(400, "the body must be an SDP offer (application/sdp, at most 64 KiB)")
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)) as http:
                async with http.post(f"{relay}/whip/{camera}", data=offer,
                                     headers=self._relay_headers(**{"Content-Type": "application/sdp"})) as resp:  # fmt: skip
                    answer = await resp.read()
                    location = resp.headers.get("Location", "")
                    if resp.status not in (200, 201):
                        raise ApiError(502, f"the relay refused the offer: {resp.status} {answer[:200].decode(errors='replace')}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(502, f"the relay at {relay} did not answer: {exc or type(exc).__name__}") from None
        resource = location.rstrip("/").rsplit("/", 1)[-1] if location else ""
        headers = {"Location": f"{WHIP_PREFIX}{camera}/{resource}"} if resource else {}
        self.log(f"{camera} publishes its hero feed to the relay")
        return web.Response(status=201, body=answer, content_type="application/sdp", headers=headers)

    async def _whip_delete(self, request: web.Request) -> web.Response:
        relay, camera = self._relay_target(request)
        resource = request.match_info["resource"]
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)) as http:
                async with http.delete(f"{relay}/whip/{camera}/{resource}", headers=self._relay_headers()) as resp:
                    return web.Response(status=resp.status if resp.status < 500 else 502)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(502, f"the relay at {relay} did not answer: {exc or type(exc).__name__}") from None
