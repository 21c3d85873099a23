"""mDNS/Bonjour advertisement of ``_mmx._tcp`` so phones on the LAN find the server (``--lan``)."""

from __future__ import annotations

import socket
from typing import Any

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

SERVICE_TYPE = "_mmx._tcp.local."


def lan_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback (best effort, no traffic sent)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(info[4][0])
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def service_info(port: int, *, name: str | None = None, addresses: list[str] | None = None,
                 properties: dict[str, Any] | None = None) -> ServiceInfo:  # fmt: skip
    """The ``_mmx._tcp`` record for a server on ``port``.

    ``name`` is the instance name (default ``mmx on <hostname>``); TXT properties carry the
    API prefix and version (never the token).
    """
    instance = name or f"mmx on {socket.gethostname().split('.')[0]}"
    props = {"path": "/v1", "ws": "/v1/devices/ws", **(properties or {})}
    return ServiceInfo(
        SERVICE_TYPE, f"{instance}.{SERVICE_TYPE}", port=port,
        parsed_addresses=addresses if addresses is not None else lan_addresses(),
        properties={k: str(v) for k, v in props.items()}, server=f"{socket.gethostname().split('.')[0]}.local.",
    )  # fmt: skip


class Advertiser:
    """Registers one `ServiceInfo` on the LAN while running (``async with``)."""

    def __init__(self, info: ServiceInfo) -> None:
        self.info = info
        self._zc: AsyncZeroconf | None = None

    async def start(self) -> None:
        self._zc = AsyncZeroconf()
        await self._zc.async_register_service(self.info)

    async def stop(self) -> None:
        if self._zc is not None:
            try:
                await self._zc.async_unregister_service(self.info)
            finally:
                await self._zc.async_close()
                self._zc = None
