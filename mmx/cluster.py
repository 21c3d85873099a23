"""Tasks on a Dask distributed cluster (``--cluster tcp://HOST:8786``, extra ``mmx[cluster]``).

`mmx features` and `mmx pair` hand their independent units of work (an audio file, a
session) to a Dask scheduler as tasks. Each task is a plain function of picklable arguments
that writes its files itself, into a directory every worker sees at the same path (NFS, a
shared disk); the client gets back small results only. Files are renamed into place only
when whole, so a task that dies with its worker leaves at most a temporary file, and the
scheduler runs the task again on another worker (Dask's ``allowed-failures``, 3 by
default), which writes the same bytes under the final name.

    >>> with TaskRun("tcp://10.0.0.5:8786", fn, [(a,), (b,)], labels=["a", "b"]) as run:
    ...     for i, result in run:          # as the cluster reports each task done
    ...         ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mmx.errors import ServiceUnavailableError, TemporaryFailure

#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT_S = 10.0


def connect(address: str):  # -> distributed.Client
    """A `distributed.Client` for ``address`` (``tcp://HOST:8786``).

    Raises ServiceUnavailableError when Dask is not installed or the scheduler does not
    answer within `CONNECT_TIMEOUT_S`.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ServiceUnavailableError("--cluster needs Dask distributed, which is not installed",
                                      hint="pip install 'mmx[cluster]' here and on every worker") from None  # fmt: skip
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ServiceUnavailableError(f"no Dask scheduler answers at {address} ({exc})",
                                      hint="start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None  # fmt: skip


def host_threads(client: Any) -> dict[str, int]:
    """Worker threads per host (``{"10.0.0.5": 4}``), from the scheduler's worker list."""
    out: dict[str, int] = {}
    for addr, info in client.scheduler_info(n_workers=-1)["workers"].items():
        host = addr.split("://")[-1].rsplit(":", 1)[0]
        out[host] = out.get(host, 0) + int(info.get("nthreads", 1))
    return out


class TaskRun:
    """Submit ``fn(*args[i], shared)`` (or ``fn(*args[i])`` without ``shared``) per item; iterate
    for ``(i, result)`` in the order the cluster reports them done.

    ``shared`` is sent to every worker once (scatter, broadcast); ``labels`` name the tasks
    (their keys: ``<prefix>-<i>-<label>``, unique per run so a rerun never reuses an old
    result). Items run in the order given (earlier items first). A task's own exception is
    raised from the iteration, and a task whose workers kept dying raises TemporaryFailure,
    unless ``failed(i, exc)`` is given: its return value is then yielded as the result. A lost
    scheduler raises ServiceUnavailableError. Leaving the ``with`` block early cancels what
    is left. ``client`` an already connected client (closed at the end), else one is made.
    """

    def __init__(self, address: str, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], *,
                 labels: Sequence[str], shared: Any = None, key_prefix: str = "mmx",
                 failed: Callable[[int, Exception], Any] | None = None, client: Any = None) -> None:  # fmt: skip
        self.address, self.fn, self.args, self.labels = address, fn, list(args), list(labels)
        self.shared, self.key_prefix, self.failed = shared, key_prefix, failed
        self.client: Any = client
        self.futures: list[Any] = []

    def __enter__(self) -> TaskRun:
        import uuid

        if self.client is None:
            self.client = connect(self.address)
        try:
            extra = ()
            if self.shared is not None:
                extra = (self.client.scatter(self.shared, broadcast=True, hash=False),)
            run = uuid.uuid4().hex[:8]
            n = len(self.args)
            self.futures = [
                self.client.submit(self.fn, *a, *extra, pure=False, priority=n - i,
                                   key=f"{self.key_prefix}-{run}-{i:06d}-{label}"[:200])
                for i, (a, label) in enumerate(zip(self.args, self.labels, strict=True))
            ]  # fmt: skip
        except BaseException:
            self.client.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if exc[0] is not None and self.futures:
                client.cancel(self.futures)
        finally:
            client.close()

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        from distributed import as_completed

        index = {f.key: i for i, f in enumerate(self.futures)}
        for fut in as_completed(self.futures, loop=self.client.loop):
            i = index[fut.key]
            yield i, self._result(fut, i)
            fut.release()

    def _result(self, fut: Any, i: int) -> Any:
        from distributed import KilledWorker

        try:
            return fut.result()
        except KilledWorker:
            exc: Exception = TemporaryFailure(
                f"task {self.labels[i]}: its workers died each time it ran on the cluster at {self.address}",
                hint="check the workers' memory and logs, then run again")  # fmt: skip
        except Exception as err:
            if fut.status == "cancelled" or type(err).__name__ in ("CancelledError", "FutureCancelledError"):
                raise ServiceUnavailableError(f"lost the Dask scheduler at {self.address} mid-run",
                                              hint="what finished is whole on disk; run again for the rest") from None  # fmt: skip
            if self.failed is None:
                raise
            exc = err
        if self.failed is None:
            raise exc
        return self.failed(i, exc)


def in_order(results: Iterator[tuple[int, Any]]) -> Iterator[Any]:
    """Results of `TaskRun` handed on in item order, whatever order they finished in."""
    ready: dict[int, Any] = {}
    nxt = 0
    for i, res in results:
        ready[i] = res
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1
