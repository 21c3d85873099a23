"""The live device registry: device ids → stable camera ids, placement, liveness, clock offset.

The registry file (``<data>/registry.json``) maps each device id ever seen to its camera id
(``cam-N``, numbered in order of first registration) and its placement, and keeps the
server's last event ``seq``. It is rewritten atomically (temp file, fsync, rename) on every
change, so a restarted server gives a reconnecting phone its old camera id and placement.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mmx.errors import IOFailure
from mmx.fileio import atomic_write

REGISTRY_FILE = "registry.json"
#: How many clock samples the offset estimate looks back over.
CLOCK_WINDOW = 32


class ClockOffset:
    """Offset of a device clock from the server clock, in seconds (server = device + offset_s).

    Each sample is ``server receive time - device send time`` of a message carrying the
    device's clock (``hello.ts``, ``heartbeat.ts``). That difference is the true offset plus
    the one-way network delay, which is never negative, so the minimum over the last
    `CLOCK_WINDOW` samples is the best estimate (the filter of NTP's clock-select and
    Cristian's algorithm, without the round trip: devices only send).
    """

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=CLOCK_WINDOW)
        self.count = 0

    def add(self, device_ts: Any, server_ts: float) -> None:
        if isinstance(device_ts, bool) or not isinstance(device_ts, (int, float)):
            return
        diff = server_ts - float(device_ts)
        if diff != diff or abs(diff) > 10 * 365 * 86400:  # NaN or nonsense
            return
        self._samples.append(diff)
        self.count += 1

    @property
    def offset_s(self) -> float | None:
        return min(self._samples) if self._samples else None

    def to_server(self, device_t: float) -> float:
        """``device_t`` on the server's clock (unchanged while no sample has arrived)."""
        offset = self.offset_s
        return device_t + offset if offset is not None else device_t

    def facts(self) -> dict[str, Any]:
        return {"offset_s": self.offset_s, "samples": self.count,
                "method": f"min(server receive - device ts) over the last {CLOCK_WINDOW} hello/heartbeat messages"}  # fmt: skip


@dataclass(eq=False)
class Camera:
    """One camera (a registered device) and its live state.

    The object lives as long as the server: a reconnecting device gets the same object back,
    so MJPEG viewers keep watching across a reconnect.
    """

    camera: str
    device: str
    name: str = ""
    model: str = ""
    platform: str = ""
    app: str = ""
    capabilities: dict[str, Any] = field(default_factory=dict)
    facing: str | None = None
    zoom: float | None = None
    battery: float | None = None
    thermal: str | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    status: str = "lost"
    last_seen: float | None = None
    connected_at: float | None = None
    clock: ClockOffset = field(default_factory=ClockOffset)
    ws: Any = None
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    frame: bytes | None = None
    frame_seq: int = 0
    frame_ts: float | None = None
    #: capture time of the current frame on the server clock: the device's ``frame.ts``
    #: mapped with the clock offset, or the receive time when the device sent none
    frame_capture_t: float | None = None
    #: a ``frame`` message's capture time, waiting for its binary frame
    next_capture_t: float | None = None
    _frame_event: asyncio.Event | None = None

    @property
    def live(self) -> bool:
        return self.status == "live"

    @property
    def lenses(self) -> dict[str, list[float]]:
        lenses = self.capabilities.get("lenses")
        return lenses if isinstance(lenses, dict) else {}

    @property
    def facings(self) -> list[str]:
        facings = self.capabilities.get("facings")
        if isinstance(facings, list) and facings:
            return [f for f in facings if isinstance(f, str)]
        return list(self.lenses) or ([self.facing] if self.facing else [])

    def lenses_for(self, facing: str | None) -> list[float]:
        values = self.lenses.get(facing or "", [])
        if not isinstance(values, list):  # normalised at hello (mmx.serve.limits); never iterate a number
            return []
        return sorted(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))

    def zoom_refusal(self, zoom: Any) -> str | None:
        """Why ``zoom`` cannot be set on the current facing, or None when it can.

        Allowed: one of the facing's lenses, or a digital zoom above 1 up to its largest lens
        (docs/device-protocol.md "Command semantics"); 0.5 only with an ultra-wide lens.
        """
        if isinstance(zoom, bool) or not isinstance(zoom, (int, float)) or zoom != zoom:
            return "zoom must be a number such as 0.5, 1 or 2"
        lenses = self.lenses_for(self.facing)
        shown = ", ".join(_fmt(v) for v in lenses) or "none reported"
        if any(abs(zoom - lens) < 1e-6 for lens in lenses):
            return None
        if lenses and 1 < zoom <= max(lenses) + 1e-6:
            return None
        return f"{self.camera} ({self.facing or 'unknown'} facing) has no {_fmt(zoom)}× lens (lenses: {shown})"

    # -- preview frames --------------------------------------------------------------------

    def set_frame(self, data: bytes, ts: float) -> None:
        """Keep only the newest JPEG (received at ``ts``, server clock) and wake every viewer.

        Its capture time is the pending ``frame`` message's (`next_capture_t`, already on the
        server clock) when the device sent one, else ``ts``.
        """
        self.frame = data
        self.frame_ts = ts
        capture_t, self.next_capture_t = self.next_capture_t, None
        # a capture time after the receipt is a clock estimate off by the one-way delay
        self.frame_capture_t = min(capture_t, ts) if capture_t is not None else ts
        self.frame_seq += 1
        self.wake_viewers()

    def wake_viewers(self) -> None:
        event = self._frame_event
        self._frame_event = None
        if event is not None:
            event.set()

    async def wait_frame(self, timeout: float) -> None:
        """Return when a newer frame arrives, or after ``timeout`` seconds."""
        if self._frame_event is None:
            self._frame_event = asyncio.Event()
        try:
            await asyncio.wait_for(self._frame_event.wait(), timeout)
        except TimeoutError:
            pass

    def public(self) -> dict[str, Any]:
        """This camera in the ``GET /v1/state`` shape of DESIGN.md (plus a few extras)."""
        return {
            "camera": self.camera, "device": self.device, "name": self.name, "status": self.status,
            "facing": self.facing, "zoom": self.zoom, "lenses": self.lenses, "placement": self.placement,
            "battery": self.battery, "last_seen": self.last_seen, "model": self.model, "platform": self.platform,
            "thermal": self.thermal, "role": self.role, "capabilities": self.capabilities,
            "clock_offset_s": self.clock.offset_s, "preview_frames": self.frame_seq,
        }  # fmt: skip

    def identity(self) -> dict[str, Any]:
        """The ``camera.joined`` data of DESIGN.md."""
        return {
            "camera": self.camera, "device": self.device, "name": self.name, "model": self.model,
            "role": self.role, "facing": self.facing, "zoom": self.zoom, "lenses": self.lenses,
            "placement": self.placement,
        }  # fmt: skip


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


#: A camera id a device may ask for in its hello (``camera``): ``cam-N``, the ids the
#: registry itself gives.
CAMERA_ID = re.compile(r"cam-[1-9][0-9]{0,5}")


class CameraTaken(Exception):
    """A hello asked for a camera id another device holds (or not the one this device has)."""


class Registry:
    """Cameras by id and by device id, persisted in ``<data_dir>/registry.json``."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / REGISTRY_FILE
        self.file = DurableFile(self.path)
        self.cameras: dict[str, Camera] = {}
        self._devices: dict[str, dict[str, Any]] = {}
        self._next = 1
        self.last_seq = 0
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise IOFailure(f"{self.path} is not valid JSON: {exc}",
                            hint="move it away to start with an empty registry") from None  # fmt: skip
        self._devices = {k: v for k, v in (obj.get("devices") or {}).items() if isinstance(v, dict)}
        self._next = int(obj.get("next_camera") or 1)
        self.last_seq = int(obj.get("last_seq") or 0)

    def snapshot(self, last_seq: int | None = None) -> tuple[int, bytes]:
        """``(version, body)`` of the registry file as of now, for `DurableFile.write`."""
        if last_seq is not None:
            self.last_seq = max(self.last_seq, last_seq)
        for cam in self.cameras.values():
            entry = self._devices.setdefault(cam.device, {})
            entry.update(camera=cam.camera, name=cam.name, model=cam.model, placement=cam.placement)
        body = orjson.dumps({"version": 1, "next_camera": self._next, "last_seq": self.last_seq,
                             "devices": self._devices}, option=orjson.OPT_INDENT_2)  # fmt: skip
        return self.file.next_version(), body

    def save(self, last_seq: int | None = None) -> None:
        """Rewrite the registry file atomically, now, in this thread. Raises IOFailure."""
        self.file.write(*self.snapshot(last_seq))

    def camera_for(self, device: str, wanted: str | None = None) -> tuple[Camera, bool]:
        """The camera of ``device`` (created and numbered on first sight); True when new.

        ``wanted`` (a hello's ``camera``): the camera id the device asks for, so ids do not
        depend on the order devices first connect. A new device gets it when no other device
        holds it; a known device must ask for the id it has. Raises CameraTaken otherwise.
        """
        entry = self._devices.get(device)
        known = entry.get("camera") if entry and isinstance(entry.get("camera"), str) else None
        if wanted is not None and known is not None and wanted != known:
            raise CameraTaken(f"device {device} is {known} in this server's registry, not {wanted}")
        if known in self.cameras:
            return self.cameras[known], False
        if known is not None:
            cam = Camera(camera=known, device=device, placement=dict(entry.get("placement") or {}))  # type: ignore[union-attr]
            self.cameras[cam.camera] = cam
            return cam, False
        if wanted is not None:
            holder = next((d for d, e in self._devices.items() if e.get("camera") == wanted), None)
            if holder is None and wanted in self.cameras:
                holder = self.cameras[wanted].device
            if holder is not None:
                raise CameraTaken(f"camera {wanted} belongs to device {holder}")
            cam = Camera(camera=wanted, device=device)
            self._devices[device] = {"camera": cam.camera, "first_seen": time.time()}
            self.cameras[cam.camera] = cam
            return cam, True
        while f"cam-{self._next}" in self.cameras or any(e.get("camera") == f"cam-{self._next}" for e in self._devices.values()):
            self._next += 1
        cam = Camera(camera=f"cam-{self._next}", device=device)
        self._next += 1
        self._devices[device] = {"camera": cam.camera, "first_seen": time.time()}
        self.cameras[cam.camera] = cam
        return cam, True

    def get(self, camera: str) -> Camera | None:
        return self.cameras.get(camera)

    def live(self) -> list[Camera]:
        return [c for c in self.cameras.values() if c.live]


class DurableFile:
    """Atomic rewrites of one file from any thread; the newest snapshot always wins.

    Snapshots are numbered in the event loop (`next_version`) and written from worker
    threads (`write`), so an fsync (tens of ms on some disks) never stalls the loop; a write
    older than what is on disk already is skipped, so many quick changes cost few writes.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._version = 0
        self._written = 0
        self.closed = False

    def next_version(self) -> int:
        self._version += 1
        return self._version

    def write(self, version: int, body: bytes, *, final: bool = False) -> bool:
        """Write ``body`` unless a newer snapshot is on disk (or the file was finalised). Raises IOFailure."""
        with self._lock:
            if version <= self._written or (self.closed and not final):
                return False
            atomic_write(self.path, body)
            self._written = version
            self.closed = self.closed or final
            return True
