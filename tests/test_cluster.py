"""`mmx pair --cluster` and `mmx features --cluster` on a real Dask cluster on loopback.

A `dask scheduler` and two `dask worker` processes (subprocesses, free ports, bounded waits;
tests/dask_fixtures.py). The workers write into the test's directories, which they see at
the same paths (one machine). Output must be byte-identical to a local run, also when a
worker is killed (SIGKILL, no nanny to restart it) while it runs a task.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("distributed")

from mmx.cli import app  # noqa: E402
from mmx.dataset.pair import PairParams, pair_dataset  # noqa: E402

from .audio_fixtures import write_click  # noqa: E402
from .dask_fixtures import DaskCluster  # noqa: E402
from .pair_fixtures import features_item, session_item, write_features, write_inventory, write_session  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def workers(cluster) -> DaskCluster:
    cluster.ensure_workers(2)
    return cluster


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (dot files too) with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sessions(root: Path, n: int, duration_s: float, rate_hz: float = 10.0) -> Path:
    npz, sha = write_features(root / "features", "song", duration_s=duration_s + 10.0)
    items = [features_item(npz, sha)]
    for i in range(n):
        sd = write_session(root, f"S{i:02d}", cameras=("cam-1", "cam-2"), duration_s=duration_s, rate_hz=rate_hz,
                           cues=[{"track": sha, "at_s": 0.5}], gaps=[(4.0, 6.0)] if i % 2 else [])  # fmt: skip
        items.append(session_item(sd))
    return write_inventory(root / "inv.jsonl", items)


def pair(inv: Path, out: Path, **kw) -> dict:
    with open(inv, "rb") as fp:
        return pair_dataset(fp, out, params=PairParams(), inventory_name=str(inv), **kw)


def test_pair_on_the_cluster_writes_the_bytes_of_a_local_run_with_progress_per_task(workers, tmp_path):
    inv = sessions(tmp_path, 5, 20.0)
    local = pair(inv, tmp_path / "local")
    progress: list[tuple[int, int, str]] = []
    remote = pair(inv, tmp_path / "remote", cluster=workers.address, on_progress=lambda *a: progress.append(a))
    assert tree(tmp_path / "remote") == tree(tmp_path / "local")
    assert {k: v for k, v in remote.items() if k != "dir"} == {k: v for k, v in local.items() if k != "dir"}
    assert sum(local["windows"].values()) > 100
    done = [p for p in progress if p[0] > 0]  # (0, total, first) comes before the first task
    assert [p[0] for p in done] == [1, 2, 3, 4, 5] and {p[1] for p in done} == {5}
    assert sorted(p[2] for p in done) == [f"S{i:02d}" for i in range(5)]

    result = CliRunner().invoke(app, ["pair", str(inv), "-o", str(tmp_path / "cli"), "--cluster", workers.address])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["manifest_hash"] == local["manifest_hash"]
    assert tree(tmp_path / "cli") == tree(tmp_path / "local")


def test_pair_survives_a_worker_killed_mid_task(workers, tmp_path):
    inv = sessions(tmp_path, 6, 60.0, rate_hz=30.0)
    local = pair(inv, tmp_path / "local")
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(pair, inv, tmp_path / "remote", cluster=workers.address)
        key = workers.kill_worker_mid_task("mmx-pair-")
        remote = run.result(timeout=300)
    assert len(workers.alive()) == 1
    assert workers.redone(key), f"{key} was not run again after its worker died: {workers.client.story(key)}"
    assert tree(tmp_path / "remote") == tree(tmp_path / "local")
    assert remote["manifest_hash"] == local["manifest_hash"]


def _features(args: list[str]) -> tuple[list[dict], str]:
    result = CliRunner().invoke(app, ["features", *args])
    assert result.exit_code == 0, result.stderr
    return sorted((json.loads(line) for line in result.stdout.splitlines()), key=lambda r: r["path"]), result.stderr


def _music(root: Path, n: int, seconds: float) -> Path:
    for i in range(n):
        write_click(root / "music" / f"t{i}.wav", seconds=seconds + i, bpm=90.0 + 10 * i)
    return root / "music"


def test_features_on_the_cluster_write_the_bytes_of_a_local_run(workers, tmp_path):
    music = _music(tmp_path, 3, 3.0)
    local, _ = _features([str(music), "-o", str(tmp_path / "local")])
    remote, stderr = _features([str(music), "-o", str(tmp_path / "remote"), "--cluster", workers.address])
    assert [{**r, "npz": Path(r["npz"]).name} for r in remote] == [{**r, "npz": Path(r["npz"]).name} for r in local]
    assert all(r["npz"].startswith(str(tmp_path / "remote")) for r in remote)
    assert tree(tmp_path / "remote") == tree(tmp_path / "local") and len(tree(tmp_path / "local")) == 3
    assert "3 analysed, 0 skipped" in stderr
    again, stderr = _features([str(music), "-o", str(tmp_path / "remote"), "--cluster", workers.address])
    assert [r["skipped"] for r in again] == [True] * 3  # the workers see what is done


def test_features_survive_a_worker_killed_mid_task(workers, tmp_path):
    music = _music(tmp_path, 4, 8.0)
    local, _ = _features([str(music), "-o", str(tmp_path / "local")])
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(_features, [str(music), "-o", str(tmp_path / "remote"), "--cluster", workers.address])
        key = workers.kill_worker_mid_task("mmx-features-")
        remote, stderr = run.result(timeout=300)
    assert len(workers.alive()) == 1
    assert workers.redone(key), f"{key} was not run again after its worker died: {workers.client.story(key)}"
    assert tree(tmp_path / "remote") == tree(tmp_path / "local")  # no temporary file left behind
    assert [r["sha256"] for r in remote] == [r["sha256"] for r in local] and "4 analysed, 0 skipped (already done), 0 failed" in stderr


def test_an_unreachable_scheduler_is_exit_69(tmp_path, monkeypatch):
    from .conftest import free_port

    monkeypatch.setattr("mmx.cluster.CONNECT_TIMEOUT_S", 1.0)
    music = _music(tmp_path, 1, 1.0)
    address = f"tcp://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["features", str(music), "-o", str(tmp_path / "f"), "--cluster", address])
    assert result.exit_code == 69
    assert f"Error: no Dask scheduler answers at {address}" in result.stderr
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())
