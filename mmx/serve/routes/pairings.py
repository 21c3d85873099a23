"""Camera pairings over HTTP: create, list, show, revoke, the QR code, and the local CA.

Operator token only (a camera token gets 403 here, as everywhere outside
`mmx.serve.auth.CAMERA_ROUTES`):

- ``POST /v1/pairings`` ``{"name"?}`` → 201 ``{"id", "token", "url", "name", "created_at",
  "cameras"}``; ``url`` is the camera link ``<base>/camera#token=<token>``, where base is
  `Server.camera_base` (``--public-url``, else the first HTTPS address, else the server's URL).
- ``GET /v1/pairings`` → ``{"pairings": [{"id", "name", "created_at", "last_used_at",
  "cameras", "connected"}]}``: no tokens (``connected``: device sockets open with it now).
- ``GET /v1/pairings/{id}`` → one pairing *with* ``token`` and ``url`` (to show its link again).
- ``GET /v1/pairings/{id}/qr.svg`` → the camera link as a QR code (``image/svg+xml``, no-store).
- ``DELETE /v1/pairings/{id}`` → ``{"id", "revoked": true, "disconnected": N}``: the token
  stops working at once; every device socket opened with it gets ``camera.left`` (reason
  ``revoked``) and is closed with `CLOSE_BAD_TOKEN` (4401, "pairing revoked"), which `mmx
  device` takes as final (no reconnect). 404 for an unknown id.

Public (no token; certificates are public): ``GET /ca.crt``, the certificate of the local CA
that signed ``--lan``'s certificate (PEM, ``application/x-x509-ca-cert``, which makes iOS
offer it as a profile), 404 when the server has none (plain HTTP, or ``--cert/--key``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mmx.errors import MmxError
from mmx.serve.api import ApiError, json_response, read_json
from mmx.serve.auth import PRINCIPAL, Principal
from mmx.serve.pairings import DEFAULT_NAME, Pairing, PairingStore, camera_link
from mmx.serve.qr import svg_qr
from mmx.serve.registry import Camera
from mmx.serve.routes.devices import CLOSE_BAD_TOKEN

CA_PATH = "/ca.crt"
_NO_STORE = {"Cache-Control": "no-store"}


class PairingRoutes:
    """Camera tokens and their sockets (mixed into `Server`)."""

    def _init_pairings(self) -> None:
        self.pairings = PairingStore(self.data_dir)
        #: pairing id → device sockets opened with its token
        self._pairing_sockets: dict[str, set[web.WebSocketResponse]] = {}
        self.auth.camera_token = self._camera_token

    def _camera_token(self, token: str) -> str | None:
        pairing = self.pairings.lookup(token)
        return pairing.id if pairing is not None else None

    def _add_pairing_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/pairings", self._post_pairing)
        r.add_get("/v1/pairings", self._get_pairings)
        r.add_get("/v1/pairings/{pairing}", self._get_pairing)
        r.add_delete("/v1/pairings/{pairing}", self._delete_pairing)
        r.add_get("/v1/pairings/{pairing}/qr.svg", self._pairing_qr)
        r.add_get(CA_PATH, self._ca_cert)
        self.auth.public.add(CA_PATH)

    # -- the links ---------------------------------------------------------------------------

    @property
    def camera_base(self) -> str:
        """Where phones reach this server: ``--public-url``, else the first HTTPS URL, else `url`."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        https = [u for u in self.urls if u.startswith("https://")]
        base = (https or self.urls or [self.url or ""])[0]
        for wildcard in ("//0.0.0.0:", "//[::]:"):
            if wildcard in base:
                from mmx.serve.advertise import lan_addresses

                base = base.replace(wildcard, f"//{next(iter(lan_addresses()), '127.0.0.1')}:")
        return base

    def pairing_link(self, pairing: Pairing) -> str:
        """The camera link of ``pairing`` (``<camera_base>/camera#token=…``)."""
        return camera_link(self.camera_base, pairing.token)

    def _full(self, pairing: Pairing) -> dict[str, Any]:
        return {**pairing.public(), "token": pairing.token, "url": self.pairing_link(pairing)}

    async def persist_pairings(self) -> None:
        """Write ``pairings.json`` off the event loop (the newest snapshot wins). Raises IOFailure."""
        version, body = self.pairings.snapshot()
        await asyncio.to_thread(self.pairings.file.write, version, body)

    async def default_pairing(self) -> Pairing:
        """The pairing named `DEFAULT_NAME` (made and written on first use). Raises IOFailure."""
        pairing = self.pairings.named(DEFAULT_NAME)
        if pairing is None:
            pairing = self.pairings.create(DEFAULT_NAME)
            await self.persist_pairings()
        return pairing

    # -- routes ------------------------------------------------------------------------------

    def _pairing(self, request: web.Request) -> Pairing:
        pairing_id = request.match_info["pairing"]
        pairing = self.pairings.get(pairing_id)
        if pairing is None:
            raise ApiError(404, f"unknown pairing {pairing_id!r}", pairings=[p.id for p in self.pairings.all()])
        return pairing

    async def _post_pairing(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        name = body.get("name", "")
        if not isinstance(name, str):
            raise ApiError(400, "name must be a string")
        try:
            pairing = self.pairings.create(name.strip())
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            await self.persist_pairings()
        except MmxError:
            self.pairings.revoke(pairing.id)  # a token nobody can count on after a restart is not handed out
            raise
        self.log(f"pairing {pairing.id} made ({pairing.name or 'no name'})")
        return json_response(self._full(pairing), 201, _NO_STORE)

    async def _get_pairings(self, request: web.Request) -> web.Response:
        items = [{**p.public(), "connected": len(self._pairing_sockets.get(p.id, ()))} for p in self.pairings.all()]
        return json_response({"pairings": items})

    async def _get_pairing(self, request: web.Request) -> web.Response:
        pairing = self._pairing(request)
        return json_response({**self._full(pairing), "connected": len(self._pairing_sockets.get(pairing.id, ()))},
                             headers=_NO_STORE)  # fmt: skip

    async def _pairing_qr(self, request: web.Request) -> web.Response:
        pairing = self._pairing(request)
        return web.Response(body=svg_qr(self.pairing_link(pairing)), content_type="image/svg+xml",
                            headers={**_NO_STORE, "X-Content-Type-Options": "nosniff"})  # fmt: skip

    async def _delete_pairing(self, request: web.Request) -> web.Response:
        pairing = self._pairing(request)
        self.pairings.revoke(pairing.id)  # refused from now on, before anything is awaited
        sockets = self._pairing_sockets.pop(pairing.id, set())
        for ws in sockets:
            for cam in self.registry.live():
                if cam.ws is ws:
                    self._leave(cam, "revoked")
            self._spawn(self._close_ws(ws, CLOSE_BAD_TOKEN, "pairing revoked"))
        self.log(f"pairing {pairing.id} revoked ({pairing.name or 'no name'}): {len(sockets)} socket(s) closed")
        await self.persist_pairings()
        return json_response({"id": pairing.id, "revoked": True, "disconnected": len(sockets)})

    async def _ca_cert(self, request: web.Request) -> web.Response:
        ca = self.config.tls_ca
        if ca is None:
            raise ApiError(404, "this server has no local CA (it serves plain HTTP, or a certificate of its own)")
        return web.Response(body=ca.read_bytes(), content_type="application/x-x509-ca-cert",
                            headers={"Content-Disposition": 'attachment; filename="mmx-ca.crt"'})  # fmt: skip

    # -- hooks of the device socket and the still upload ------------------------------------

    def _pairing_socket_opened(self, request: web.Request, ws: web.WebSocketResponse) -> bool:
        """Track a device socket opened with a camera token; False when its pairing is gone already."""
        principal = request.get(PRINCIPAL)
        if principal is None or principal.kind != "camera" or principal.pairing is None:
            return True
        if self.pairings.get(principal.pairing) is None:  # revoked while the upgrade was under way
            return False
        self._pairing_sockets.setdefault(principal.pairing, set()).add(ws)
        return True

    def _pairing_socket_closed(self, request: web.Request, ws: web.WebSocketResponse) -> None:
        principal = request.get(PRINCIPAL)
        if principal is not None and principal.pairing is not None:
            sockets = self._pairing_sockets.get(principal.pairing)
            if sockets is not None:
                sockets.discard(ws)
                if not sockets:
                    self._pairing_sockets.pop(principal.pairing, None)

    def _pairing_joined(self, request: web.Request, cam: Camera) -> None:
        """Bind ``cam`` to the pairing its socket was opened with (stills are allowed for it at once).

        No await here (the welcome must go out first); the file is written in the background.
        """
        principal = request.get(PRINCIPAL)
        if principal is None or principal.kind != "camera" or principal.pairing is None:
            return
        self.pairings.used(principal.pairing, cam.camera)
        self._spawn(self._persist_pairings_logged())

    async def _persist_pairings_logged(self) -> None:
        try:
            await self.persist_pairings()
        except MmxError as exc:
            self.log(f"error: {exc.message}")

    def _check_still_camera(self, principal: Principal | None, camera: str) -> None:
        """Raises ApiError 403 when a camera token uploads for a camera that never joined with it."""
        if principal is None or principal.kind != "camera":
            return
        pairing = self.pairings.get(principal.pairing or "")
        if pairing is None or camera not in pairing.cameras:
            raise ApiError(403, f"this camera token may upload stills only for its own cameras, not {camera!r}")
