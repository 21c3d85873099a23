"""`mmx ledger sync`: send the ledger's events to the studio's Convex deployment."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mmx.commands._common import console, write_jsonl
from mmx.errors import MmxError, ServiceUnavailableError
from mmx.ledger import queries
from mmx.paths import default_ledger_path

if TYPE_CHECKING:
    import sqlite3

    from mmx.ledger.convex import SyncProgress
    from mmx.ledger.store import Ledger

#: Seconds between progress lines on stderr (a batch that takes longer prints at once).
PROGRESS_EVERY_S = 1.0


def deploy_key(env_name: str) -> str:
    """The deploy key from the environment variable ``env_name``; ServiceUnavailableError if unset."""
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ServiceUnavailableError(
            f"no Convex deploy key: ${env_name} is not set",
            hint=f"export {env_name}=… with a deploy key from the Convex dashboard (Settings → Deploy keys)",
        )
    return key


class ProgressPrinter:
    """Progress and lag on stderr, at most one line per `PROGRESS_EVERY_S` (plus retries)."""

    def __init__(self, label: str = "sync") -> None:
        self.label = label
        self._last = 0.0
        self._last_retry: str | None = None
        self._shown: tuple[int, int, int] | None = None

    def __call__(self, progress: SyncProgress) -> None:
        now = time.monotonic()
        if progress.retrying and progress.retrying != self._last_retry:
            self._last_retry = progress.retrying
            console.print(
                f"[yellow]{self.label}: retrying[/] ({progress.retrying}); "
                f"behind {progress.behind_events} events, {progress.behind_s:.1f} s",
                markup=True, soft_wrap=True,
            )  # fmt: skip
            return
        if not progress.retrying:
            self._last_retry = None
        if now - self._last < PROGRESS_EVERY_S and progress.behind_events:
            return
        self._last = now
        self.line(progress)

    def final(self, progress: SyncProgress) -> None:
        """The closing line, unless the last report already showed exactly this."""
        if self._shown != (progress.acked_seq, progress.sent, progress.behind_events):
            self.line(progress)

    def line(self, progress: SyncProgress) -> None:
        self._shown = (progress.acked_seq, progress.sent, progress.behind_events)
        console.print(
            f"{self.label}: {progress.sent} events sent in {progress.batches} batches "
            f"({progress.rate:.0f} events/s), acknowledged up to seq {progress.acked_seq}; "
            f"behind {progress.behind_events} events, {progress.behind_s:.1f} s",
            soft_wrap=True,
        )


def ledger_sync(
    convex: str = typer.Option(..., "--convex", metavar="URL", help="Deployment URL, e.g. https://happy-otter-123.convex.cloud."),
    deploy_key_env: str = typer.Option("CONVEX_DEPLOY_KEY", "--deploy-key-env", metavar="NAME", help="Environment variable holding the deploy key."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep running: send new events as they are committed to the ledger."),
    batch: int = typer.Option(500, "--batch", min=1, max=500, help="Most events per call (Convex: at most 500; calls also stay under 4 MiB)."),
    ledger: Path = typer.Option(None, "--ledger", "-l", help="Ledger file [default: $MMX_HOME/ledger.sqlite]."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Seconds one call may take before it is retried."),
    retry_for: float = typer.Option(None, "--retry-for", min=0.0, help="Give up (exit 75) when a batch keeps failing this many seconds; 0: never [default: 300, with --follow 0]."),
) -> None:
    """Send the ledger's events to a Convex deployment, exactly once and in ledger order.

    Events the deployment has not acknowledged yet go to its production:ingestEvents
    mutation (examples/convex) over Convex's HTTP API: POST URL/api/mutation with header
    "Authorization: Convex <deploy key>", in batches of at most --batch events and 4 MiB.
    With nothing to send it still makes one call with no events, so a wrong deploy key or a
    missing function is found now (exit 69). An event counts as synced only after the
    deployment answered success for its batch;
    the ledger keeps, per deployment URL, the highest acknowledged local seq (its only
    change to the ledger), so a later run resumes there. The mutation skips event ids it
    already stores, so a batch resent after a lost answer is harmless.

    Network errors, timeouts and HTTP 5xx are retried with exponential backoff and jitter
    (0.5 s doubling to 30 s). A function error (the deployment refused a batch) is reported
    with the batch's seq range and the sync stops: nothing after it is marked synced.

    With --follow the command keeps running and sends new events as pushes commit them,
    until SIGINT/SIGTERM. Progress and lag (events and seconds behind) go to stderr; at the
    end one JSON object goes to stdout: target, acked_seq, sent, batches, behind_events,
    behind_s, retries. `mmx ledger sessions` shows what each session has left to sync.

    Examples:

    \b
        export CONVEX_DEPLOY_KEY='prod:happy-otter-123|…'
        mmx ledger sync --convex https://happy-otter-123.convex.cloud
        mmx ledger sync --convex https://happy-otter-123.convex.cloud --follow
        mmx serve | mmx ledger push - --sync-convex https://happy-otter-123.convex.cloud

    Exit status:
    65 the Convex function refused a batch (its message is printed); 69 no or wrong deploy
    key, or the function is not deployed; 75 the deployment stayed unreachable for
    --retry-for seconds (run again later: the sync resumes).

    Environment:
    CONVEX_DEPLOY_KEY (or the variable named by --deploy-key-env): the deployment's deploy key.

    See also:
    mmx-ledger-push(1), mmx-ledger-sessions(1), examples/convex/README.md
    """
    from mmx.ledger.convex import ConvexClient, LedgerWaiter, RetryPolicy, sync
    from mmx.ledger.store import Ledger

    key = deploy_key(deploy_key_env)
    if retry_for is None:
        retry_for = 0.0 if follow else 300.0
    policy = RetryPolicy(retry_for_s=retry_for or None)
    printer = ProgressPrinter()
    stop = threading.Event()
    # SIGTERM ends a --follow run cleanly after the batch in flight (SIGINT exits 130 at once;
    # either way everything acknowledged is already marked)
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with Ledger.open(ledger or default_ledger_path(), create=False) as led, ConvexClient(convex, key, timeout_s=timeout) as client:
            wait = LedgerWaiter(led) if follow else None
            console.print(f"sync: {led.path} → {client.url}", soft_wrap=True)
            try:
                progress = sync(led, client, batch_size=batch, retry=policy, follow=follow, wait=wait, stop=stop,
                                on_progress=printer)  # fmt: skip
            finally:
                if wait is not None:
                    wait.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    printer.final(progress)
    write_jsonl(progress.as_dict())


class PushSync:
    """`mmx ledger push --sync-convex URL`: a `mmx.ledger.convex.SyncThread` beside the push.

    The push's commit hook wakes it after every committed batch. A fatal sync error is
    reported on stderr at once while the push goes on storing locally; `finish` re-raises it
    after the push's summary so the exit status tells. When the input ends the thread drains
    what is left (giving up 30 s into a failure: exit 75, a later `mmx ledger sync` resumes).
    """

    def __init__(self, store: Ledger, url: str, key_env: str) -> None:
        from mmx.ledger.convex import ConvexClient, SyncThread

        self.store = store
        self.printer = ProgressPrinter("sync")
        self.client = ConvexClient(url, deploy_key(key_env))
        self.thread = SyncThread(store.path, self.client, on_progress=self.printer, on_error=self._report)

    def _report(self, exc: BaseException) -> None:
        from mmx.cli import report_error

        if isinstance(exc, MmxError):
            report_error(exc)
            console.print("sync stopped; the push goes on storing locally", soft_wrap=True)

    def __enter__(self) -> PushSync:
        self.store.commit_hooks.append(self.thread.notify)
        console.print(f"sync: {self.store.path} → {self.client.url} alongside the push", soft_wrap=True)
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # on Ctrl-C or a push failure stop at once; what is acknowledged is already marked
        progress = self.thread.finish(drain=exc_type is None)
        self.client.close()
        if progress is not None:
            self.printer.final(progress)

    def finish(self) -> None:
        """Raise the sync's error, if it had one (after the push reported its own result)."""
        if self.thread.error is not None:
            raise self.thread.error


def push_sync(store: Ledger, url: str | None, key_env: str) -> contextlib.AbstractContextManager[PushSync | None]:
    """A `PushSync` for ``url``, or a do-nothing context when ``url`` is None."""
    if url is None:
        return contextlib.nullcontext(None)
    return PushSync(store, url, key_env)


def _convex_sync_field(conn: sqlite3.Connection, session_ids: list[str]) -> dict[str, str]:
    from mmx.ledger.convex import session_sync_summary

    return session_sync_summary(conn, session_ids)


# `mmx ledger sessions` shows one column per registered field: here, what is left to sync
queries.SESSION_FIELDS["convex_sync"] = _convex_sync_field
