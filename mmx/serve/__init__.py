"""`mmx serve`: the live multi-camera coordination server (aiohttp).

- `mmx.serve.app.Server`: shared live state, lifecycle and middleware; its HTTP API (DESIGN.md)
  and device WebSocket (docs/device-protocol.md) live in `mmx.serve.routes`, one module per concern.
- `mmx.serve.api`: the error answer and JSON helpers every route module uses.
- `mmx.serve.registry`: devices → stable camera ids, placement, liveness, clock offsets.
- `mmx.serve.hub`: the event stream (seq, history ring, sinks, subscribers, resume).
- `mmx.serve.capture`: session capture directories.
- `mmx.serve.coverage`: coverage from placement azimuths.
- `mmx.serve.advertise`: ``_mmx._tcp`` mDNS advertisement for ``--lan``.
"""

from mmx.serve.config import ServeConfig

__all__ = ["ApiError", "ServeConfig", "Server"]


def __getattr__(name: str):
    # aiohttp and the app load only when a server is wanted, not for `mmx --help`
    if name in ("ApiError", "Server"):
        from mmx.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'mmx.serve' has no attribute {name!r}")
