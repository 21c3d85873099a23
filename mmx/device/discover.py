"""Finding `mmx serve` on the LAN by mDNS/DNS-SD: the ``_mmx._tcp`` service that
``mmx serve --lan`` advertises (`mmx.serve.advertise`), for ``mmx device`` without ``--server``.

The service's TXT record carries ``path`` (``/v1``), ``ws`` (the device WebSocket path) and,
for a server on HTTPS, ``scheme=https`` and ``sha256`` (the hex SHA-256 of its certificate,
pinned by the device instead of a CA check: the server's certificate comes from its own
local CA, which the device does not trust otherwise). Never the token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from mmx.errors import ServiceUnavailableError

#: The DNS-SD service type of mmx serve (RFC 6763 ``_service._proto.domain.``).
SERVICE_TYPE = "_mmx._tcp.local."
#: Seconds to browse before giving up (mDNS answers come within ~1 s on a LAN).
DEFAULT_TIMEOUT_S = 5.0
#: Seconds to keep listening after the first server answered, to notice a second one.
SETTLE_S = 1.0


class NotFound(ServiceUnavailableError):
    """No ``_mmx._tcp`` server (of the name asked for) answered in time. Exit 69."""


@dataclass(frozen=True, slots=True)
class FoundServer:
    """One resolved ``_mmx._tcp`` instance.

    ``name`` the instance name (``mmx on studio-mac``); ``url`` the base URL to use
    (``https://192.168.1.20:8750``, the first advertised IPv4 address); ``addresses`` all
    of them; ``sha256`` the certificate's hex SHA-256 fingerprint to pin (None: plain HTTP).
    """

    name: str
    url: str
    addresses: tuple[str, ...]
    port: int
    sha256: str | None


def _text(props: dict[bytes, bytes | None], key: str) -> str | None:
    value = props.get(key.encode())
    return value.decode("utf-8", "replace") if value is not None else None


def _found(info: Any) -> FoundServer | None:
    addresses = tuple(a for a in info.parsed_addresses() if ipaddress.ip_address(a).version == 4)
    if not addresses or not info.port:
        return None
    props = info.properties or {}
    scheme = "https" if _text(props, "scheme") == "https" else "http"
    sha256 = (_text(props, "sha256") or "").replace(":", "").lower() or None
    if scheme == "https" and (sha256 is None or len(sha256) != 64):
        return None  # an HTTPS server whose certificate cannot be pinned is not one to use
    instance = info.name.removesuffix("." + SERVICE_TYPE)
    return FoundServer(name=instance, url=f"{scheme}://{addresses[0]}:{info.port}", addresses=addresses,
                       port=info.port, sha256=sha256 if scheme == "https" else None)  # fmt: skip


async def browse(
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    settle_s: float = SETTLE_S,
    name: str | None = None,
    interfaces: list[str] | None = None,
) -> list[FoundServer]:
    """The ``_mmx._tcp`` servers that answer within ``timeout_s`` seconds.

    Returns as soon as one (named ``name``, when given) resolved and ``settle_s`` more
    seconds brought no other; an empty list when none answered. ``interfaces``: the IPv4
    addresses to browse on (default: all; ``["127.0.0.1"]`` for loopback tests).
    """
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
    if interfaces is not None:
        kwargs["interfaces"] = interfaces
    zc = AsyncZeroconf(**kwargs)
    names: asyncio.Queue[str] = asyncio.Queue()

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            names.put_nowait(name)

    browser = AsyncServiceBrowser(zc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    found: dict[str, FoundServer] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                full = await asyncio.wait_for(names.get(), left)
            except TimeoutError:
                break
            info = AsyncServiceInfo(SERVICE_TYPE, full)
            if not await info.async_request(zc.zeroconf, int(max(left, 0.5) * 1000)):
                continue
            server = _found(info)
            if server is None or (name is not None and server.name != name):
                continue
            if not found:  # the first answer: listen a little longer for another
                deadline = min(deadline, time.monotonic() + settle_s)
            found[server.name] = server
    finally:
        await browser.async_cancel()
        await zc.async_close()
    return sorted(found.values(), key=lambda s: s.name)


async def find_server(
    *, timeout_s: float = DEFAULT_TIMEOUT_S, name: str | None = None, interfaces: list[str] | None = None
) -> FoundServer:
    """The one `mmx serve` advertising ``_mmx._tcp`` (named ``name``, when given).

    Raises NotFound (a ServiceUnavailableError, exit 69) when none answered within
    ``timeout_s`` seconds, ServiceUnavailableError when several did and ``name`` does not
    say which.
    """
    servers = await browse(timeout_s=timeout_s, name=name, interfaces=interfaces)
    if not servers:
        wanted = f" named {name!r}" if name else ""
        raise NotFound(
            f"no mmx server{wanted} found by mDNS (_mmx._tcp) within {timeout_s:g} s",
            hint="start it with mmx serve --lan on this network, or give --server URL",
        )
    if len(servers) > 1:
        listed = ", ".join(f"{s.name!r} at {s.url}" for s in servers)
        raise ServiceUnavailableError(f"several mmx servers found by mDNS: {listed}",
                                      hint="say which with --server-name NAME or --server URL")  # fmt: skip
    return servers[0]
