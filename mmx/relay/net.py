"""Peer connections for the relay and its clients: no STUN/TURN unless configured, host
candidates only on chosen addresses.

aioice 0.13 gathers host candidates from every interface (``aioice.ice.get_host_addresses``,
which even skips 127.0.0.1) and offers no per-connection filter (aiortc/aioice#2, #57), so
`HostRestrictedPeerConnection` replaces each of its ICE connections' ``gather_candidates``
just before gathering starts with one that binds only the given addresses. Nothing
process-wide is changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection


def _restricted_gather(connection: Any, addresses: list[str]):
    async def gather_candidates() -> None:
        if connection._local_candidates_start:
            return
        connection._local_candidates_start = True
        for component in connection._components:
            connection._local_candidates += await connection.get_component_candidates(
                component=component, addresses=addresses
            )
        connection._local_candidates_end = True

    return gather_candidates


class HostRestrictedPeerConnection(RTCPeerConnection):
    """An `RTCPeerConnection` whose host candidates are bound to ``ice_hosts`` only.

    ``ice_hosts`` empty or None keeps aioice's own choice (every interface but loopback).
    ``ice_servers`` defaults to none at all (aiortc would otherwise reach a public STUN server).
    """

    def __init__(self, *, ice_hosts: Sequence[str] | None = ("127.0.0.1",),
                 ice_servers: Sequence[RTCIceServer] | None = None) -> None:
        super().__init__(RTCConfiguration(iceServers=list(ice_servers or [])))
        self._ice_hosts = list(ice_hosts or [])

    def _restrict(self) -> None:
        if not self._ice_hosts:
            return
        for transport in getattr(self, "_RTCPeerConnection__iceTransports", ()):
            connection = transport.iceGatherer._connection
            if not getattr(connection, "_mmx_restricted", False):
                connection.gather_candidates = _restricted_gather(connection, self._ice_hosts)
                connection._mmx_restricted = True

    async def setLocalDescription(self, sessionDescription=None):  # noqa: N802 - aiortc's name
        self._restrict()
        return await super().setLocalDescription(sessionDescription)
