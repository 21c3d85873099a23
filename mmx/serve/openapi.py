"""``GET /v1/openapi.json``: the OpenAPI 3.1 document of the HTTP API, shipped in the package.

The source is ``docs/openapi.yaml``; ``scripts/gen_openapi.py`` writes the JSON beside this
module (tests/test_openapi.py fails when it is stale, or when a route of `Server` is missing
from it or it names a route the server lacks). The document is public: it holds no live data.
"""

from __future__ import annotations

import functools
import importlib.resources

from aiohttp import web

PATH = "/v1/openapi.json"


@functools.cache
def document_bytes() -> bytes:
    """The shipped ``openapi.json`` (read once)."""
    return importlib.resources.files("mmx.serve").joinpath("openapi.json").read_bytes()


class OpenApiRoutes:
    """``GET /v1/openapi.json`` (mixed into `Server`)."""

    def _add_openapi_routes(self, r: web.UrlDispatcher) -> None:
        self.auth.public.add(PATH)
        r.add_get(PATH, self._get_openapi)

    async def _get_openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=document_bytes(), content_type="application/json",
                            headers={"Cache-Control": "no-cache"})  # fmt: skip
