"""The settings of one `mmx serve` run (every timeout and limit in one place)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Where a server listens unless told otherwise (loopback only; ``--lan`` opens it up).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750
#: Director modes of DESIGN.md.
MODES = ("manual", "ghost", "autopilot")


@dataclass(slots=True)
class ServeConfig:
    """Everything `Server` needs; every field has the CLI's default.

    - ``data_dir``: registry (``registry.json``), ``sessions/<id>/`` capture directories,
      ``stills/`` for stills taken outside a session.
    - ``device_timeout_s``: silence after which a device is lost (``camera.left`` ``timeout``).
    - ``heartbeat_s``: how often devices are asked to send a heartbeat (in ``welcome``).
    - ``ack_timeout_s``: how long an operator command waits for the device's ``ack`` (504 after).
    - ``max_still_bytes``: largest accepted still upload (413 above).
    - ``fallback_camera``: where the program goes when the program camera is lost (None: nowhere).
    - ``duplicate_angle_deg``: two cameras closer than this in azimuth are duplicate coverage.
    - ``record``: arm a recording take with every production session (`mmx.serve.recording`).
    - ``record_min_free_bytes``: free disk space under which recording stops (``disk_full``).
    - ``record_warn_minutes``: warn (``GET /v1/state`` ``recording.warning``) under this many
      minutes of recording left at the current rate.
    - ``host``: the plain-HTTP address (None: no plain listener); ``tls_hosts``: addresses
      served over HTTPS with ``tls_cert``/``tls_key`` (PEM files, `mmx.serve.tls`), all on
      the same ``port``. ``mmx serve --lan`` keeps loopback plain and the LAN addresses HTTPS.
    - ``tls_ca``: the local CA's certificate (PEM) served at ``GET /ca.crt`` for phones to trust.
    - ``public_url``: the base of the camera links in pairings (default: the first HTTPS URL,
      else the server's URL).
    - ``relay_url`` / ``relay_token``: the `mmx relay` that camera pages publish their hero feed
      to, through ``POST /v1/relay/whip/{camera}`` (None: no relay; ``welcome.relay`` false).
    - ``ring_size`` / ``pose_ring_size``: events (other than pose / pose samples) kept in memory
      for ``GET /v1/events?since=``; older ones are read back from the capture files.
    """

    data_dir: Path
    token: str
    host: str | None = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_hosts: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    public_url: str | None = None
    relay_url: str | None = None
    relay_token: str | None = None
    device_timeout_s: float = 3.0
    heartbeat_s: float = 1.0
    ack_timeout_s: float = 2.0
    max_still_bytes: int = 50 * 1024 * 1024
    fallback_camera: str | None = None
    duplicate_angle_deg: float = 15.0
    ring_size: int = 10_000
    pose_ring_size: int = 2_000
    max_preview_bytes: int = 4 * 1024 * 1024
    #: events queued per ``GET /v1/events`` reader before it is marked lagged and catches up
    #: from the history instead (memory per reader stays bounded)
    stream_queue_size: int = 4096
    record: bool = True
    record_min_free_bytes: int = 256 * 1024 * 1024
    record_warn_minutes: float = 10.0
