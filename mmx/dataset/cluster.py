"""Pairing on a Dask distributed cluster (``mmx pair --cluster tcp://HOST:8786``, extra ``mmx[cluster]``).

Each session is one task, `mmx.dataset.job.pair_job`, submitted to the scheduler; the worker
that runs it writes its segment files straight into the dataset's temporary directory (a
path every worker must see, e.g. NFS) and sends back the small `JobResult`. Results are
handed on in job order whatever order they finish in, so the dataset has the same bytes as
a local run. When a worker is lost, the scheduler runs its tasks again elsewhere; a segment
is renamed into place only when whole, so a redone task leaves no trace of the lost one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mmx.dataset.job import Job, JobContext, JobResult, pair_job
from mmx.errors import ServiceUnavailableError

#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT_S = 10.0


def connect(address: str):  # -> distributed.Client
    """A `distributed.Client` for ``address``. Raises ServiceUnavailableError when Dask is not
    installed or the scheduler does not answer within `CONNECT_TIMEOUT_S`."""
    try:
        from distributed import Client
    except ImportError:
        raise ServiceUnavailableError("--cluster needs Dask distributed, which is not installed",
                                      hint="pip install 'mmx[cluster]' here and on every worker") from None  # fmt: skip
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ServiceUnavailableError(f"no Dask scheduler answers at {address} ({exc})",
                                      hint="start one with `dask scheduler` and workers with `dask worker ADDRESS`") from None  # fmt: skip


def run_on_cluster(address: str, jobs: list[Job], ctx: JobContext,
                   on_progress: Callable[[int, int, str], None] | None = None) -> Iterator[JobResult]:  # fmt: skip
    """Run ``pair_job`` for every job on the cluster; yield the results in job order.

    ``on_progress(done, total, label)`` is called as the cluster reports each task done.
    A task's own exception (e.g. an OSError writing a segment) is raised here.
    """
    if not jobs:
        return
    from distributed import as_completed

    client = connect(address)
    try:
        shared = client.scatter(ctx, broadcast=True, hash=False)
        # pure=False: a key per submission, so a rerun of mmx pair never reuses old results
        futures = [client.submit(pair_job, job, shared, pure=False, key=f"mmx-pair-{i:06d}-{job.id}"[:200])
                   for i, job in enumerate(jobs)]  # fmt: skip
        index = {f.key: i for i, f in enumerate(futures)}
        ready: dict[int, JobResult] = {}
        next_i = 0
        done = 0
        for fut in as_completed(futures):
            res = fut.result()
            done += 1
            ready[index[fut.key]] = res
            fut.release()
            if on_progress is not None:
                on_progress(done, len(jobs), res.id)
            while next_i in ready:
                yield ready.pop(next_i)
                next_i += 1
    finally:
        client.close()
