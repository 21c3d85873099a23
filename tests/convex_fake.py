"""A loopback stand-in for a Convex deployment's HTTP API, for `production:ingestEvents` only.

It speaks the documented wire protocol of ``POST /api/mutation`` (docs.convex.dev/http-api):

- request: JSON ``{"path": "production:ingestEvents", "args": {"events": [...]}, "format": "json"}``
  with header ``Authorization: Convex <deploy key>``;
- success: HTTP 200 ``{"status": "success", "value": {"inserted": n, "skipped": m}, "logLines": []}``;
- function error: HTTP 560 (what the Convex backend answers for a failed function, and what the
  ``convex`` npm client's ``STATUS_CODE_UDF_FAILED`` expects; ``error_status=200`` makes it
  answer 200 instead) ``{"status": "error", "errorMessage": "...", "logLines": []}``;
- wrong or missing deploy key: HTTP 401 ``{"code": "BadAdminKey", "message": "The provided
  admin key was invalid for this instance"}`` (the backend's unauthenticated error);
- unknown function: HTTP 404 ``{"code": "FunctionNotFound", "message": ...}``;
- a body over the argument limit (16 MiB, or ``--max-args-bytes``): HTTP 413.

Like the real mutation it validates the args (the event envelope), refuses batches over 500
events and object keys starting with ``$`` (Convex reserves them), and skips event ids it
already stores, all in one SQLite transaction per call: a batch is stored whole or not at all.

State lives in a SQLite file so the server can be killed (SIGKILL) and restarted on the same
port and file, like a deployment that went away and came back. Tests read the file to check
exactly-once delivery and per-session order.

Faults are queued through ``POST /_fake/faults`` (no auth), each consumed by one mutation call:

- ``{"kind": "pass"}``: handle the call normally (to let N calls through before a fault);
- ``{"kind": "status", "status": 503}``: answer that status, store nothing;
- ``{"kind": "hang", "seconds": S}``: wait S seconds, then handle the call normally;
- ``{"kind": "function_error", "message": M}``: answer a function error, store nothing;
- ``{"kind": "commit_then_status", "status": 502}``: store the batch, then answer that status
  (the client never learns it succeeded);
- ``{"kind": "commit_then_exit"}``: store the batch, then the process dies before answering.

Run as a process: ``python -m tests.convex_fake --port P --state FILE --key KEY``; it prints
``ready`` on stdout once listening. `FakeConvex` starts and stops such a process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

PATH = "production:ingestEvents"
MAX_BATCH = 500
MAX_ARGS_BYTES = 16 * 1024 * 1024  # Convex's documented limit on function arguments
BAD_KEY = {"code": "BadAdminKey", "message": "The provided admin key was invalid for this instance"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    n        INTEGER PRIMARY KEY,        -- arrival order at the server
    id       TEXT NOT NULL UNIQUE,
    session  TEXT,
    seq      INTEGER,
    ts       REAL NOT NULL,
    type     TEXT NOT NULL,
    request  INTEGER NOT NULL,           -- the request that stored it
    body     TEXT NOT NULL               -- the event as received
);
CREATE TABLE IF NOT EXISTS requests (
    n        INTEGER PRIMARY KEY,
    at       REAL NOT NULL,
    outcome  TEXT NOT NULL,              -- success, function_error, status:503, auth, ...
    events   INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
);
"""

_ENVELOPE: dict[str, tuple[type, ...]] = {
    "v": (int, float),
    "id": (str,),
    "seq": (int, float, type(None)),
    "ts": (int, float),
    "type": (str,),
    "session": (str, type(None)),
    "src": (str,),
}


class FunctionError(Exception):
    """The mutation threw: answered as ``{"status": "error"}``."""


def _check_keys(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.startswith("$"):
                raise FunctionError(f"Field name {key} starts with a '$', which is reserved. Path: {where}")
            _check_keys(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_keys(inner, f"{where}[{i}]")


def validate_args(args: Any) -> list[dict[str, Any]]:
    """The checks ``v.object({events: v.array(mmxEvent)})`` and the handler make; raises FunctionError."""
    if not isinstance(args, dict) or set(args) != {"events"} or not isinstance(args["events"], list):
        raise FunctionError("ArgumentValidationError: Object is missing the required field `events`.")
    events = args["events"]
    if len(events) > MAX_BATCH:
        raise FunctionError(f"Uncaught Error: batch of {len(events)} events is larger than {MAX_BATCH}")
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise FunctionError(f"ArgumentValidationError: Value does not match validator. Path: .events[{i}]")
        extra = set(event) - set(_ENVELOPE) - {"data"}
        if extra:
            raise FunctionError(
                f"ArgumentValidationError: Object contains extra field `{sorted(extra)[0]}` that is not in the validator. Path: .events[{i}]"
            )
        for name, types in _ENVELOPE.items():
            if name not in event:
                raise FunctionError(f"ArgumentValidationError: Object is missing the required field `{name}`. Path: .events[{i}]")
            if isinstance(event[name], bool) or not isinstance(event[name], types):
                raise FunctionError(f"ArgumentValidationError: Value does not match validator. Path: .events[{i}].{name}")
        if "data" not in event:
            raise FunctionError(f"ArgumentValidationError: Object is missing the required field `data`. Path: .events[{i}]")
        if not 1 <= len(event["id"]) <= 128:
            raise FunctionError(f"Uncaught Error: event id must be 1 to 128 characters, got {len(event['id'])}")
        _check_keys(event["data"], f".events[{i}].data")
    return events


@dataclass
class Server:
    """The aiohttp application's state: the store, the deploy key and the fault queue."""

    state: Path
    key: str
    error_status: int = 560
    max_args_bytes: int = MAX_ARGS_BYTES
    faults: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.db = sqlite3.connect(self.state, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(_SCHEMA)

    def _log(self, outcome: str, events: int, size: int) -> int:
        cur = self.db.execute(
            "INSERT INTO requests (at, outcome, events, bytes) VALUES (?, ?, ?, ?)", (time.time(), outcome, events, size)
        )
        return int(cur.lastrowid or 0)

    def ingest(self, events: list[dict[str, Any]], *, size: int = 0, outcome: str = "success") -> dict[str, int]:
        """Store the new events of one batch in one transaction; return inserted/skipped."""
        inserted = skipped = 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            request = self._log(outcome, len(events), size)
            for event in events:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO events (id, session, seq, ts, type, request, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event["id"], event["session"], event["seq"], event["ts"], event["type"], request,
                     json.dumps(event, separators=(",", ":"))),
                )  # fmt: skip
                if cur.rowcount:
                    inserted += 1
                else:
                    skipped += 1
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return {"inserted": inserted, "skipped": skipped}

    async def faults_handler(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.faults.extend(body.get("faults", []))
        return web.json_response({"queued": len(self.faults)})

    async def mutation(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        fault = self.faults.pop(0) if self.faults else None
        auth = request.headers.get("Authorization", "")
        if auth != f"Convex {self.key}":
            self._log("auth", 0, len(raw))
            return web.json_response(BAD_KEY, status=401)
        if len(raw) > self.max_args_bytes:
            self._log("too_large", 0, len(raw))
            return web.json_response({"code": "RequestTooLarge", "message": "Request body too large"}, status=413)
        try:
            body = json.loads(raw)
        except ValueError:
            self._log("bad_json", 0, len(raw))
            return web.json_response({"code": "BadJsonBody", "message": "Failed to parse JSON body"}, status=400)
        if not isinstance(body, dict) or body.get("format", "json") != "json" or "path" not in body:
            self._log("bad_request", 0, len(raw))
            return web.json_response({"code": "BadRequest", "message": "expected {path, args, format: 'json'}"}, status=400)
        if body["path"] != PATH:
            self._log("not_found", 0, len(raw))
            message = f"Could not find public function for '{body['path']}'. Did you forget to run `npx convex dev` or `npx convex deploy`?"
            return web.json_response({"code": "FunctionNotFound", "message": message}, status=404)
        if fault is not None:
            kind = fault["kind"]
            if kind == "status":
                self._log(f"status:{fault['status']}", 0, len(raw))
                return web.json_response({"code": "InternalServerError", "message": "injected"}, status=fault["status"])
            if kind == "hang":
                await asyncio.sleep(float(fault["seconds"]))
            if kind == "function_error":
                self._log("function_error", 0, len(raw))
                return self._error(fault.get("message", "Uncaught Error: injected failure"))
        try:
            events = validate_args(body.get("args"))
        except FunctionError as exc:
            self._log("function_error", 0, len(raw))
            return self._error(str(exc))
        committed_only = fault is not None and fault["kind"] in ("commit_then_exit", "commit_then_status")
        value = self.ingest(events, size=len(raw), outcome=f"committed:{fault['kind']}" if committed_only else "success")
        if fault is not None and fault["kind"] == "commit_then_exit":
            os._exit(3)  # die with the batch stored and unanswered
        if fault is not None and fault["kind"] == "commit_then_status":
            return web.json_response({"code": "InternalServerError", "message": "injected"}, status=fault["status"])
        return web.json_response({"status": "success", "value": value, "logLines": []})

    def _error(self, message: str) -> web.Response:
        return web.json_response({"status": "error", "errorMessage": message, "logLines": []}, status=self.error_status)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_ARGS_BYTES * 2)
        app.router.add_post("/api/mutation", self.mutation)
        app.router.add_post("/_fake/faults", self.faults_handler)
        return app


async def _serve(args: argparse.Namespace) -> None:
    server = Server(Path(args.state), args.key, error_status=args.error_status, max_args_bytes=args.max_args_bytes)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        # bounded: a forgotten fake ends by itself
        await asyncio.wait_for(stop.wait(), timeout=args.lifetime)
    except TimeoutError:
        pass
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--key", default="test-deploy-key")
    parser.add_argument("--error-status", type=int, default=560)
    parser.add_argument("--max-args-bytes", type=int, default=MAX_ARGS_BYTES, help="answer 413 above this body size")
    parser.add_argument("--lifetime", type=float, default=600.0)
    asyncio.run(_serve(parser.parse_args(argv)))


# -- the test-side handle ----------------------------------------------------------------


class FakeConvex:
    """A `tests.convex_fake` server process on 127.0.0.1: start, kill, restart, inspect."""

    def __init__(
        self, state: Path, port: int, *, key: str = "test-deploy-key", error_status: int = 560,
        max_args_bytes: int = MAX_ARGS_BYTES,
    ) -> None:  # fmt: skip
        self.state = Path(state)
        self.port = port
        self.key = key
        self.error_status = error_status
        self.max_args_bytes = max_args_bytes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> FakeConvex:
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.convex_fake", "--port", str(self.port), "--state", str(self.state),
             "--key", self.key, "--error-status", str(self.error_status), "--max-args-bytes", str(self.max_args_bytes)],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready" or time.monotonic() > deadline:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"fake Convex did not start: {line!r} {err}")
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-whatever, as a crashed host would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr) if self.proc else ():
            if stream:
                stream.close()

    def __enter__(self) -> FakeConvex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, *faults: dict[str, Any]) -> None:
        httpx.post(f"{self.url}/_fake/faults", json={"faults": list(faults)}, timeout=5).raise_for_status()

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.state) as db:
            return db.execute(sql, params).fetchall()

    def event_ids(self) -> list[str]:
        """Every stored event id in arrival order."""
        return [row[0] for row in self._query("SELECT id FROM events ORDER BY n")]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(row[0]) for row in self._query("SELECT body FROM events ORDER BY n")]

    def outcomes(self) -> list[str]:
        """The outcome of every mutation call so far, in order."""
        return [row[0] for row in self._query("SELECT outcome FROM requests ORDER BY n")]

    def batch_sizes(self) -> list[int]:
        return [row[0] for row in self._query("SELECT events FROM requests WHERE outcome = 'success' ORDER BY n")]

    def stored_batches(self) -> list[int]:
        """Sizes of every batch that was stored, answered or not."""
        return [row[0] for row in self._query("SELECT events FROM requests WHERE outcome = 'success' OR outcome LIKE 'committed:%' ORDER BY n")]


if __name__ == "__main__":
    main()
