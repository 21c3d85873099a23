"""The HTTP routes of `mmx serve`, one module per concern, mixed into `mmx.serve.app.Server`.

- `events`: ``GET``/``POST /v1/events`` and the capture sink.
- `session`: ``/v1/session`` start/stop, capture directories.
- `director`: cut, hold, release, mode (the program is the server's alone).
- `cameras`: the camera list, placement, coverage, flip/zoom/still commands.
- `previews`: the latest JPEG, MJPEG per camera, and all cameras over one WebSocket.
- `stills`: ``POST /v1/stills``.
- `devices`: the device WebSocket of docs/device-protocol.md.
- `ghost`: the proposals of `mmx ghost` as the server sees them, ``POST /v1/ghost/{p}/accept|veto``.
- `pose`: ``POST /v1/pose`` (samples from `mmx pose`) and the per-camera pose rates of ``/v1/state``.
- `console`: the operator console page (``/``, ``/console``, ``/static/console/*``) and its login.

Each module holds one mixin class whose ``_add_*_routes(router)`` registers its routes; the
state they share (registry, hub, director state, session) lives on the `Server`.
"""
