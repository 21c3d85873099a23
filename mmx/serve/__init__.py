"""`mmx serve`: the live multi-camera coordination server (aiohttp).

- `mmx.serve.app.Server`: HTTP API (DESIGN.md) and device WebSocket (docs/device-protocol.md).
- `mmx.serve.registry`: devices → stable camera ids, placement, liveness, clock offsets.
- `mmx.serve.hub`: the event stream (seq, history ring, sinks, subscribers, resume).
- `mmx.serve.capture`: session capture directories.
- `mmx.serve.coverage`: coverage from placement azimuths.
- `mmx.serve.advertise`: ``_mmx._tcp`` mDNS advertisement for ``--lan``.
"""

from mmx.serve.app import ApiError, Server
from mmx.serve.config import ServeConfig

__all__ = ["ApiError", "ServeConfig", "Server"]
