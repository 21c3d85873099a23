"""Pairing on a Dask distributed cluster (``mmx pair --cluster tcp://HOST:8786``, extra ``mmx[cluster]``).

Each session is one task, `mmx.dataset.job.pair_job`, submitted to the scheduler
(`mmx.cluster.TaskRun`); the worker that runs it writes its segment files straight into the
dataset's temporary directory (a path every worker must see, e.g. NFS) and sends back the
small `JobResult`. Results are handed on in job order whatever order they finish in, so the
dataset has the same bytes as a local run. When a worker is lost, the scheduler runs its
tasks again elsewhere; a segment is renamed into place only when whole, so a redone task
leaves no trace of the lost one but a temporary file, which `pair_dataset` removes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from mmx.cluster import TaskRun, connect, in_order  # noqa: F401  (connect: public API)
from mmx.dataset.job import Job, JobContext, JobResult, pair_job


def run_on_cluster(address: str, jobs: list[Job], ctx: JobContext,
                   on_progress: Callable[[int, int, str], None] | None = None) -> Iterator[JobResult]:  # fmt: skip
    """Run ``pair_job`` for every job on the cluster; yield the results in job order.

    ``on_progress(done, total, label)`` is called as the cluster reports each task done.
    Raises what `mmx.cluster.TaskRun` raises (a task's own OSError, TemporaryFailure,
    ServiceUnavailableError).
    """
    if not jobs:
        return
    with TaskRun(address, pair_job, [(job,) for job in jobs], labels=[job.id for job in jobs], shared=ctx,
                 key_prefix="mmx-pair") as run:  # fmt: skip

        def finished() -> Iterator[tuple[int, JobResult]]:
            for done, (i, res) in enumerate(run, 1):
                if on_progress is not None:
                    on_progress(done, len(jobs), res.id)
                yield i, res

        yield from in_order(finished())
