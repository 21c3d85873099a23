"""Run `mmx features` over many files: skip what is done, spread the rest over worker processes.

Each file is independent: the worker hashes it, looks for an artifact with the same content
hash and parameters (skips unless ``force``), decodes, analyses and writes the ``.npz``
atomically. A file that cannot be decoded yields a result with ``error`` set; the others go
on. With ``jobs > 1`` files run in a `concurrent.futures.ProcessPoolExecutor`, longest first,
and every worker limits OpenMP/numba to ``cpu_count // jobs`` threads so the workers do not
fight over cores. BLAS always runs on one thread during an analysis, so the arrays are
bit-identical whatever ``jobs`` is.

With ``cluster="tcp://HOST:8786"`` the files are tasks on a Dask distributed scheduler
(`mmx.cluster`): each worker analyses a file and writes its artifact into ``out_dir``, which
must be the same path on every worker (a shared disk); the bytes are those of a local run.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from mmx.audio.artifact import artifact_name, read_header, sha256_file, write_features
from mmx.audio.features import AUDIO_SUFFIXES, FeatureParams
from mmx.errors import InputMissingError, MmxError

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class FileResult:
    """What happened to one audio file (one JSON line of `mmx features`).

    ``error`` is the message when the file failed (``npz`` is then None); ``skipped`` is
    True when an artifact with the same content hash and parameters already existed.
    """

    path: str
    npz: str | None = None
    sha256: str | None = None
    duration_s: float | None = None
    tempo_bpm: float | None = None
    beats: int | None = None
    skipped: bool = False
    error: str | None = None
    exit_code: int = 0

    def to_record(self) -> dict[str, Any]:
        """The stdout record: path, npz, sha256, duration_s, tempo_bpm, beats, skipped."""
        return {
            "path": self.path, "npz": self.npz, "sha256": self.sha256, "duration_s": self.duration_s,
            "tempo_bpm": self.tempo_bpm, "beats": self.beats, "skipped": self.skipped,
        }  # fmt: skip


def collect_audio(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and directories (recursively, audio suffixes only) to a sorted file list.

    A file named explicitly is kept whatever its suffix (soundfile decides); duplicates
    are dropped. Raises InputMissingError for an input that does not exist.
    """
    seen: set[Path] = set()
    out: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )  # fmt: skip
        elif path.exists():
            found = [path]
        else:
            raise InputMissingError(f"no such file or directory: {item}")
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def _done_artifact(out_dir: Path, audio: Path, sha256: str, params_hash: str) -> Path | None:
    """An existing artifact in ``out_dir`` for this content and these parameters, if any."""
    preferred = out_dir / artifact_name(audio, sha256)
    candidates = [preferred, *sorted(p for p in out_dir.glob(f"*-{sha256[:12]}.npz") if p != preferred)]
    for candidate in candidates:
        if not candidate.is_file():
            continue
        try:
            header = read_header(candidate)
        except MmxError:
            continue
        if header["missing_keys"] or header.get("sha256") != sha256 or header.get("params_hash") != params_hash:
            continue
        return candidate
    return None


def process_file(path: str | Path, out_dir: str | Path, params: FeatureParams, force: bool = False) -> FileResult:
    """Hash, skip-or-analyse and write one file; never raises an MmxError (it becomes ``error``)."""
    from mmx.audio.features import extract_features

    path = Path(path)
    out_dir = Path(out_dir)
    result = FileResult(path=str(path))
    try:
        sha256 = sha256_file(path)
        result.sha256 = sha256
        if not force:
            done = _done_artifact(out_dir, path, sha256, params.params_hash)
            if done is not None:
                header = read_header(done)
                result.npz = str(done)
                result.duration_s = header.get("duration_s")
                result.tempo_bpm = header.get("tempo_bpm")
                result.beats = header.get("n_beats")
                result.skipped = True
                return result
        with _single_threaded_blas():
            arrays = extract_features(path, params, sha256=sha256)
        npz = write_features(out_dir / artifact_name(path, sha256), arrays)
        result.npz = str(npz)
        result.duration_s = float(arrays["duration_s"])
        result.tempo_bpm = float(arrays["tempo_bpm"])
        result.beats = int(arrays["beat_frames"].shape[0])
    except MmxError as exc:
        result.error = exc.message
        result.exit_code = exc.exit_code
    except MemoryError:
        result.error = f"{path}: out of memory while analysing"
        result.exit_code = 74
    return result


def _single_threaded_blas() -> Any:
    """BLAS on one thread: multi-threaded sgemm splits sums differently, so the mel and
    chroma arrays would change in their last bits with the thread count (and --jobs)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/librosa
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def warm_up() -> None:
    """Import librosa's lazily loaded submodules now (they take seconds on first use).

    Called before worker processes are forked so every worker starts ready.
    """
    import librosa.beat  # noqa: F401
    import librosa.feature  # noqa: F401
    import librosa.onset  # noqa: F401


def _init_worker(n_threads: int) -> None:
    # Ctrl-C is the parent's to handle: it stops the pool (see FeatureRun.__exit__), so the
    # workers do not each print a KeyboardInterrupt traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads(n_threads)


def _limit_threads(n_threads: int) -> None:
    for name in _THREAD_ENV:
        os.environ[name] = str(n_threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n_threads)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn/librosa
        pass
    try:
        import numba

        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):  # pragma: no cover
        pass


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork shares the already-imported librosa with the workers (seconds saved per worker);
    # the pool is started before any progress thread exists (see FeatureRun).
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


class FeatureRun:
    """Analyse ``paths`` into ``out_dir``; iterate to get a `FileResult` per file as each finishes.

    ``jobs`` worker processes (1 = in this process). Use as a context manager so the
    worker pool is shut down even when the caller stops early::

        with FeatureRun(paths, out_dir=out, jobs=2) as run:
            for result in run:
                ...

    Every worker is started and every file submitted on entry, before the caller starts
    any thread of its own (a progress bar), because the workers are forked.
    """

    def __init__(self, paths: Iterable[str | Path], *, out_dir: str | Path, params: FeatureParams | None = None,
                 jobs: int = 1, force: bool = False, cluster: str | None = None) -> None:  # fmt: skip
        self.paths = [Path(p) for p in paths]
        self.out_dir = Path(out_dir)
        self.params = params or FeatureParams()
        self.jobs = max(1, min(int(jobs), max(1, len(self.paths))))
        self.force = force
        self.cluster = cluster
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[Future[FileResult], Path] = {}
        self._tasks: Any = None  # mmx.cluster.TaskRun with --cluster
        self._order: list[Path] = []

    def __enter__(self) -> FeatureRun:
        if self.cluster:
            self._enter_cluster()
            return self
        warm_up()
        if self.jobs > 1:
            threads = max(1, (os.cpu_count() or 1) // self.jobs)
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=_mp_context(), initializer=_init_worker, initargs=(threads,)
            )
            # longest first (by duration from the header) so one long file does not finish
            # alone at the end while the other workers idle
            order = sorted(self.paths, key=audio_seconds, reverse=True)
            self._futures = {
                self._pool.submit(process_file, p, self.out_dir, self.params, self.force): p for p in order
            }
        return self

    def _enter_cluster(self) -> None:
        from mmx.cluster import TaskRun, connect, host_threads

        assert self.cluster is not None
        client = connect(self.cluster)
        try:
            threads = host_threads(client)
            self._order = sorted(self.paths, key=audio_seconds, reverse=True)
            out = str(self.out_dir.absolute())  # the workers' working directory is not ours
            args = [(str(p.absolute()), out, self.params, self.force, threads) for p in self._order]
            self._tasks = TaskRun(self.cluster, cluster_task, args, labels=[p.name for p in self._order],
                                  key_prefix="mmx-features", failed=self._failed, client=client)  # fmt: skip
        except BaseException:
            client.close()
            raise
        self._tasks.__enter__()

    def _failed(self, i: int, exc: Exception) -> FileResult:
        path = self._order[i]
        message = exc.message if isinstance(exc, MmxError) else f"{type(exc).__name__}: {exc}"
        return FileResult(path=str(path), error=f"{path}: failed on the cluster: {message}", exit_code=70)

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            tasks.__exit__(exc_type, *exc)
            if exc_type is None:
                self._remove_strays()
            return
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        if exc_type is not None:
            # stopped early (Ctrl-C, a closed stdout): do not wait for files in progress; an
            # artifact is renamed into place only when whole, so nothing partial is left
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            return
        pool.shutdown(wait=True, cancel_futures=True)

    def _remove_strays(self) -> None:
        # a worker lost while writing leaves its temporary file (atomic_file: .<name>.*.tmp)
        for path in self.paths:
            for stray in self.out_dir.glob(f".{glob_escape(path.stem)}-*.npz.*.tmp"):
                stray.unlink(missing_ok=True)

    def __iter__(self) -> Iterator[FileResult]:
        if self._tasks is not None:
            for i, result in self._tasks:
                # the records name paths as the caller gave them, as a local run does
                result.path = str(self._order[i])
                if result.npz is not None:
                    result.npz = str(self.out_dir / Path(result.npz).name)
                yield result
            return
        if self._pool is None:
            for path in self.paths:
                yield process_file(path, self.out_dir, self.params, self.force)
            return
        for future in as_completed(self._futures):
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001 - a worker died (killed, crashed in C code)
                path = self._futures[future]
                yield FileResult(path=str(path), error=f"{path}: worker process failed: {type(exc).__name__}: {exc}",
                                 exit_code=70)  # fmt: skip


def cluster_task(path: str, out_dir: str, params: FeatureParams, force: bool, threads: dict[str, int]) -> FileResult:
    """`process_file` on a Dask worker (``mmx features --cluster``); OpenMP/numba get this
    host's share of its cores (``threads``: worker threads per host, `mmx.cluster.host_threads`)."""
    from distributed import get_worker

    host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
    _limit_threads(max(1, (os.cpu_count() or 1) // max(1, threads.get(host, 1))))
    return process_file(path, out_dir, params, force)


def audio_seconds(path: Path) -> float:
    """Duration in seconds from the file's header (soundfile, no decoding); 0 when unreadable
    (such a file fails at once in its worker, so its place in the order does not matter)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
        return info.frames / info.samplerate if info.samplerate else 0.0
    except (RuntimeError, OSError, ValueError, soundfile.LibsndfileError):
        return 0.0
