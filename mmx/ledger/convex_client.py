"""The Convex HTTP API client of `mmx.ledger.convex`: one call of the ingest mutation.

Wire protocol (docs.convex.dev/http-api): ``POST {url}/api/mutation`` with JSON
``{"path": "production:ingestEvents", "args": {"events": [...]}, "format": "json"}`` and header
``Authorization: Convex <deploy key>``; `ConvexClient` sends one batch and sorts the answer into
an acknowledgement, a function error (`ConvexFunctionError`), a retryable failure or a
refusal; `RetryPolicy` says how long and how often to try again. `mmx.ledger.convex`
re-exports all of it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from mmx.errors import DataError, ServiceUnavailableError
from mmx.ledger.store import StoredEvent
from mmx.ledger.sync_marks import normalize_url

#: The mutation `examples/convex/convex/production.ts` exports.
INGEST_PATH = "production:ingestEvents"
#: Most events per call: the mutation refuses more (`MAX_BATCH` in production.ts).
MAX_BATCH_EVENTS = 500
#: Most JSON bytes of events per call (Convex accepts 16 MiB of arguments; stay well under).
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
#: Convex answers a failed function with this HTTP status (the npm client's STATUS_CODE_UDF_FAILED).
STATUS_UDF_FAILED = 560
#: The envelope fields the mutation's validator accepts (extra fields would fail validation).
ENVELOPE_FIELDS = ("v", "id", "seq", "ts", "type", "session", "src", "data")

_OPEN_HEAD = b'{"path":"' + INGEST_PATH.encode() + b'","format":"json","args":{"events":['
_CLOSE = b"]}}"


class ConvexFunctionError(DataError):
    """The Convex function refused a batch (``{"status": "error"}``): not retried. Exit 65."""

    def __init__(self, message: str, *, hint: str | None = None, error_message: str = "") -> None:
        super().__init__(message, hint=hint)
        self.error_message = error_message


class _Retryable(Exception):
    """A failure worth trying again: network error, timeout, 408/429/5xx."""


class _TooLarge(Exception):
    """HTTP 413: the deployment wants smaller calls."""




def event_json(stored: StoredEvent) -> bytes:
    """One stored event as the mutation's envelope: exactly `ENVELOPE_FIELDS`, compact JSON.

    Fields the producer left out get the envelope's defaults (``v`` 1, ``seq`` and
    ``session`` null, ``src`` "", ``data`` {}); unknown envelope fields stay in the ledger.
    """
    obj = orjson.loads(stored.raw)
    data = obj.get("data")
    return orjson.dumps({
        "v": obj.get("v", 1), "id": stored.id, "seq": obj.get("seq"), "ts": stored.ts, "type": stored.type,
        "session": stored.session, "src": stored.src, "data": data if isinstance(data, dict) else {},
    })  # fmt: skip


def request_body(events: Sequence[bytes]) -> bytes:
    """The ``/api/mutation`` body for a batch of `event_json` encodings."""
    return _OPEN_HEAD + b",".join(events) + _CLOSE


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter: the n-th wait is ``min(cap_s, base_s * 2**n)`` times a
    random factor in [0.5, 1] ("equal jitter"), for at most ``retry_for_s`` seconds per batch
    (None: without end, e.g. ``--follow`` through hours offline)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    retry_for_s: float | None = 300.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int) -> float:
        return min(self.cap_s, self.base_s * (2**attempt)) * self.rng.uniform(0.5, 1.0)


class ConvexClient:
    """Calls ``production:ingestEvents`` on one deployment; one keep-alive connection pool.

    ``timeout_s`` bounds each call (connect, write, read, pool). ``transport`` is for tests.
    """

    def __init__(
        self,
        url: str,
        deploy_key: str,
        *,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"Authorization": f"Convex {deploy_key}", "Content-Type": "application/json"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ConvexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ingest(self, body: bytes) -> Any:
        """One call with a prepared body; returns the mutation's ``value``.

        Raises `_Retryable`, `_TooLarge`, `ConvexFunctionError` (without batch context) or
        ServiceUnavailableError as the module docstring describes.
        """
        try:
            response = self._http.post("/api/mutation", content=body)
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts
            raise _Retryable(f"{type(exc).__name__}: {exc or 'no answer'}") from exc
        status = response.status_code
        if status in (200, STATUS_UDF_FAILED):
            try:
                answer = response.json()
            except ValueError:
                raise _Retryable(f"HTTP {status} with a body that is not JSON: {response.text[:200]!r}") from None
            if isinstance(answer, dict) and answer.get("status") == "success":
                return answer.get("value")
            if isinstance(answer, dict) and answer.get("status") == "error":
                raise ConvexFunctionError(str(answer.get("errorMessage", "")), error_message=str(answer.get("errorMessage", "")))
            raise _Retryable(f"HTTP {status} with an unexpected answer: {response.text[:200]!r}")
        message = _error_text(response)
        if status in (401, 403):
            raise ServiceUnavailableError(
                f"Convex at {self.url} refused the deploy key (HTTP {status}: {message})",
                hint="set the deploy key of this deployment (dashboard → Settings → Deploy keys) in $CONVEX_DEPLOY_KEY "
                "or the variable named by --deploy-key-env",
            )
        if status == 413:
            raise _TooLarge(message)
        if status in (408, 429) or 500 <= status < 600:
            raise _Retryable(f"HTTP {status}: {message}")
        hint = (
            "deploy the functions first: cd examples/convex && npx convex deploy"
            if status == 404
            else "is the URL a Convex deployment (https://<name>.convex.cloud)?"
        )
        raise ServiceUnavailableError(f"Convex at {self.url} answered HTTP {status}: {message}", hint=hint)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        code, message = body.get("code"), body.get("message") or body.get("errorMessage")
        if code and message:
            return f"{code}: {message}"
        if message or code:
            return str(message or code)
    return response.text[:300]
