"""mDNS/Bonjour advertisement of ``_mmx._tcp`` so phones on the LAN find the server (``--lan``)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

SERVICE_TYPE = "_mmx._tcp.local."


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback, the likeliest phone-reachable first.

    From the network interfaces (psutil), private ranges first (192.168/16, 10/8,
    172.16/12), then other addresses, then link-local 169.254/16; no traffic is sent.
    """
    import psutil

    found: set[str] = set()
    try:
        for addrs in psutil.net_if_addrs().values():
            found.update(a.address for a in addrs if a.family == socket.AF_INET)
    except OSError:
        pass
    try:
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    except OSError:
        pass

    def rank(addr: str) -> tuple[int, tuple[int, ...]]:
        ip = ipaddress.IPv4Address(addr)
        order = next((i for i, net in enumerate(("192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12"))
                      if ip in ipaddress.IPv4Network(net)), 3)  # fmt: skip
        return (5 if ip.is_link_local else order, tuple(int(p) for p in addr.split(".")))

    return sorted((a for a in found if not ipaddress.IPv4Address(a).is_loopback), key=rank)


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
