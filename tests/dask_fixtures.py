"""A real Dask cluster on loopback for tests: `dask scheduler` and `dask worker` subprocesses.

Ports are chosen free; every wait is a bounded poll. Workers run without a nanny, so a
killed worker stays dead (a lost machine), and in a directory of their own, so a relative
path would not resolve the way it does in the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .conftest import ROOT, free_port

DEADLINE_S = 60.0


def _wait(cond, what: str, deadline_s: float = DEADLINE_S, every_s: float = 0.05) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {deadline_s:.0f} s waiting for {what}")


class DaskCluster:
    """``dask scheduler`` on 127.0.0.1 plus ``dask worker`` processes started on demand."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
                    "MMX_HOME": str(workdir / "mmx-home")}  # fmt: skip
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self.scheduler = self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                                   "--no-dashboard", "--no-show"])  # fmt: skip
        from distributed import Client

        self.client = _wait(lambda: self._try_client(Client), f"the scheduler at {self.address}")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=self.workdir, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        self.procs.append(proc)
        return proc

    def _try_client(self, client_cls: Any) -> Any:
        if self.scheduler.poll() is not None:
            raise AssertionError(f"dask scheduler exited: {(self.workdir / 'scheduler.log').read_text()[-2000:]}")
        try:
            return client_cls(self.address, timeout=2, set_as_default=False)
        except (OSError, TimeoutError):
            return None

    def start_workers(self, n: int) -> None:
        """Start ``n`` more workers (one thread each) and wait until the scheduler has them."""
        want = len(self.alive()) + n
        for _ in range(n):
            name = f"w{len(self.workers)}"
            wdir = self.workdir / name
            wdir.mkdir(exist_ok=True)
            self.workers[name] = self._spawn(name, [
                "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--host", "127.0.0.1", "--memory-limit", "0", "--local-directory", str(wdir)])  # fmt: skip
        _wait(lambda: len(self.client.scheduler_info(n_workers=-1)["workers"]) >= want, f"{want} dask workers")

    def alive(self) -> dict[str, subprocess.Popen]:
        return {k: p for k, p in self.workers.items() if p.poll() is None}

    def ensure_workers(self, n: int) -> None:
        missing = n - len(self.alive())
        if missing > 0:
            self.start_workers(missing)

    def kill_worker_mid_task(self, prefix: str) -> str:
        """SIGKILL the first worker seen running a task whose key starts with ``prefix``;
        returns that key. The worker is gone for good (no nanny)."""

        def busy() -> tuple[str, str] | None:
            for addr, keys in self.client.processing().items():
                for key in keys:
                    if str(key).startswith(prefix) and self._executing(addr, key):
                        return addr, str(key)
            return None

        addr, key = _wait(busy, f"a task {prefix}* running on a worker", every_s=0.01)
        name = self.client.scheduler_info(n_workers=-1)["workers"][addr]["name"]
        proc = self.workers[name]
        os.kill(proc.pid, signal.SIGKILL)  # --no-nanny: this process is the worker
        proc.wait(timeout=DEADLINE_S)
        return key

    def _executing(self, addr: str, key: str) -> bool:
        # the scheduler's "processing" includes tasks queued on the worker; ask the worker
        try:
            running = self.client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing], workers=[addr])
        except (OSError, KeyError, ValueError):
            return False
        return key in running.get(addr, [])

    def redone(self, key: str) -> bool:
        """Whether the scheduler sent ``key`` to a worker more than once and it then finished."""
        story = [r for r in self.client.story(key) if r[0] == "scheduler"]
        into = [r for r in story if r[3] == "processing"]
        lost = any(r[2] == "processing" and r[3] == "released" and "worker" in r[5] for r in story)
        return len(into) >= 2 and lost and any(r[2] == "processing" and r[3] == "memory" for r in story)

    def close(self) -> None:
        try:
            self.client.close(timeout=5)
        finally:
            for proc in self.procs:  # SIGTERM makes them close gracefully, which takes seconds each
                if proc.poll() is None:
                    proc.kill()
            for proc in self.procs:
                proc.wait(timeout=DEADLINE_S)
