"""Camera pairings: random, revocable camera tokens, persisted in ``<data_dir>/pairings.json``.

A pairing is what a phone gets from the QR code: the camera link
``<base>/camera#token=<token>`` (the token in the URL *fragment*, which a browser never
sends to a server, so it stays out of access logs and Referer headers). A camera token may
open the device WebSocket and upload stills for the cameras that joined with it, nothing
else (`mmx.serve.auth.CAMERA_ROUTES`).

- Tokens are `TOKEN_PREFIX` + 32 URL-safe characters (192 random bits, `secrets`). They are
  looked up by their SHA-256 (a dict lookup on a hash: the time taken says nothing about the
  secret) and stored in clear in ``pairings.json`` (mode 0600), because the operator can ask
  for a pairing's link and QR code again (``GET /v1/pairings/{id}``, ``…/qr.svg``).
- ``GET /v1/pairings`` lists pairings *without* their tokens (id, name, times, cameras), so a
  list on a screen or in a log gives nothing away.
- Revoking removes the pairing at once (in memory, then durably); the server closes every
  device socket opened with it (`mmx.serve.routes.pairings`).
- `DEFAULT_NAME` is the pairing ``mmx serve`` prints at start: made on the first run and
  kept, so a printed QR code and the phones paired with it keep working across restarts.

The file is rewritten whole and atomically (`mmx.serve.registry.DurableFile`), off the event
loop, and the answer to a create or revoke is sent only after the file is written.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mmx.errors import IOFailure
from mmx.events import new_id
from mmx.serve.registry import DurableFile

PAIRINGS_FILE = "pairings.json"
#: Camera tokens start with this, so one found in a paste or a log is recognisable as such.
TOKEN_PREFIX = "mmxcam_"
#: The pairing `mmx serve` prints as a QR code at start.
DEFAULT_NAME = "default"
#: The longest pairing name kept (longer ones are refused, 400).
MAX_NAME = 80


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def camera_link(base_url: str, token: str) -> str:
    """The camera page's link for ``token``: ``<base_url>/camera#token=<token>`` (fragment, never query)."""
    return f"{base_url.rstrip('/')}/camera#token={token}"


@dataclass(slots=True)
class Pairing:
    """One camera token. ``cameras``: the camera ids that joined with it (stills allowed for those)."""

    id: str
    name: str
    token: str
    created_at: float
    last_used_at: float | None = None
    cameras: list[str] = field(default_factory=list)

    def public(self) -> dict[str, Any]:
        """The pairing as ``GET /v1/pairings`` lists it: everything but the token."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "last_used_at": self.last_used_at, "cameras": list(self.cameras)}  # fmt: skip


class PairingStore:
    """The pairings of one data directory.

    Raises IOFailure at construction when ``pairings.json`` cannot be read or is not a
    pairing file (nothing is overwritten: move it away to start with no pairings).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / PAIRINGS_FILE
        self.file = DurableFile(self.path)
        self._pairings: dict[str, Pairing] = {}
        self._by_digest: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise IOFailure(f"cannot read {self.path}: {exc.strerror}") from None
        hint = "move it away to start with no pairings (every phone pairs again)"
        try:
            obj = orjson.loads(raw)
            entries = obj["pairings"]
            for entry in entries:
                pairing = Pairing(id=str(entry["id"]), name=str(entry.get("name") or ""), token=str(entry["token"]),
                                  created_at=float(entry["created_at"]), last_used_at=entry.get("last_used_at"),
                                  cameras=[str(c) for c in entry.get("cameras") or []])  # fmt: skip
                self._add(pairing)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IOFailure(f"{self.path} is not a pairings file: {type(exc).__name__}: {exc}", hint=hint) from None

    def _add(self, pairing: Pairing) -> None:
        self._pairings[pairing.id] = pairing
        self._by_digest[_digest(pairing.token)] = pairing.id

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pairings)

    def get(self, pairing_id: str) -> Pairing | None:
        return self._pairings.get(pairing_id)

    def all(self) -> list[Pairing]:
        """Every pairing, oldest first."""
        return sorted(self._pairings.values(), key=lambda p: (p.created_at, p.id))

    def lookup(self, token: str) -> Pairing | None:
        """The pairing whose token is ``token``, or None (unknown or revoked)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        pairing_id = self._by_digest.get(_digest(token))
        return self._pairings.get(pairing_id) if pairing_id is not None else None

    def named(self, name: str) -> Pairing | None:
        """The oldest pairing called ``name``, or None."""
        return next((p for p in self.all() if p.name == name), None)

    # -- changing (in memory; `snapshot` + `file.write` make it durable) -------------------

    def create(self, name: str = "") -> Pairing:
        """A new pairing with a fresh token. Raises ValueError for a name over `MAX_NAME` characters."""
        if len(name) > MAX_NAME:
            raise ValueError(f"name is longer than {MAX_NAME} characters")
        pairing_id = new_id()
        pairing = Pairing(id=pairing_id, name=name, token=TOKEN_PREFIX + secrets.token_urlsafe(24), created_at=time.time())
        self._add(pairing)
        return pairing

    def revoke(self, pairing_id: str) -> Pairing | None:
        """Remove the pairing (its token stops working at once); None when there is no such pairing."""
        pairing = self._pairings.pop(pairing_id, None)
        if pairing is not None:
            self._by_digest.pop(_digest(pairing.token), None)
        return pairing

    def used(self, pairing_id: str, camera: str | None = None) -> bool:
        """Note a use of the pairing (by ``camera`` when given); True when ``camera`` is new to it."""
        pairing = self._pairings.get(pairing_id)
        if pairing is None:
            return False
        pairing.last_used_at = time.time()
        if camera is not None and camera not in pairing.cameras:
            pairing.cameras.append(camera)
            return True
        return False

    def snapshot(self) -> tuple[int, bytes]:
        """``(version, body)`` of the pairings file as of now, for ``file.write``."""
        body = orjson.dumps({"version": 1, "pairings": [asdict(p) for p in self.all()]}, option=orjson.OPT_INDENT_2)
        return self.file.next_version(), body + b"\n"

    def save(self) -> None:
        """Write the file now, in this thread. Raises IOFailure."""
        self.file.write(*self.snapshot())
