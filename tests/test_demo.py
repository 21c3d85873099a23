"""`mmx demo`: the whole rehearsal end to end, as real processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .conftest import MMX

pytestmark = pytest.mark.slow


def _leftovers(marker: str) -> list[str]:
    """Command lines of live processes that mention ``marker`` (the demo's data dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if marker in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(cmd)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _run_demo(data: Path, *extra: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    result = subprocess.run([*MMX, "demo", "--data", str(data), "--json", *extra],
                            capture_output=True, timeout=timeout)  # fmt: skip
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    report = json.loads(lines[-1]) if lines else {}
    return result, report


def _ledger_rows(ledger: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        return db.execute(sql, args).fetchall()


def test_demo_with_generated_media(tmp_path):
    data = tmp_path / "demo"
    result, report = _run_demo(data, "--duration", "20", timeout=600)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert report["ok"] is True
    # cameras asked for their ids (--camera): demo-cam-N is cam-N whatever order they joined in
    assert sorted((c["camera"], c["name"]) for c in report["cameras"]) == [(f"cam-{i}", f"demo-cam-{i}") for i in (1, 2, 3)]
    # the human report (stderr) reads like `ledger show` and says the data (given --data) is kept
    human = result.stderr.decode().split("mmx demo report", 1)[1]
    assert "None" not in human and "{'" not in human and "[0.5" not in human, human
    assert f"data kept in {data}" in " ".join(human.split()) and report["data_kept"] is True
    assert report["cuts_by"].get("ghost", 0) >= 1
    assert len(report["stills"]) == 2 and all(s["hash_ok"] for s in report["stills"])
    assert sum(report["dataset"]["counts"].get(split, 0) for split in ("train", "val", "test")) > 0
    assert report["hero_url"].startswith("http://127.0.0.1:")
    ledger = Path(report["ledger"])
    statuses = _ledger_rows(ledger, "SELECT status FROM production_sessions")
    assert statuses == [("completed",)]
    assert _leftovers(str(data)) == []


def test_demo_on_real_media(tmp_path, shared_data):
    data = tmp_path / "demo-real"
    result, report = _run_demo(
        data, "--music", str(shared_data / "music" / "introzik.ogg"),
        "--video", str(shared_data / "video" / "vtest.avi"),
        "--pose", str(shared_data / "pose" / "vtest.pose.jsonl"), "--duration", "40",
        "--min-ghost-cuts", "4", timeout=900,  # a busy machine slows the ghost: wait for its cuts
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    ledger = Path(report["ledger"])
    assert _ledger_rows(ledger, "SELECT status FROM production_sessions") == [("completed",)]
    cameras = _ledger_rows(ledger, "SELECT count(DISTINCT camera) FROM production_cameras")
    assert cameras == [(3,)]
    ghost_cuts = [c for c in report["cuts"] if c["by"] == "ghost"]
    assert len(ghost_cuts) >= 4
    assert len(report["stills"]) == 2 and all(s["hash_ok"] for s in report["stills"])
    assert report["dataset"]["counts"].get("train", 0) > 0
    assert _leftovers(str(data)) == []


def test_demo_sigint_leaves_no_process(tmp_path):
    data = tmp_path / "demo-int"
    proc = subprocess.Popen([*MMX, "demo", "--data", str(data), "--duration", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        # wait until the shoot is under way (the devices registered), then press Ctrl-C
        while time.monotonic() < deadline:
            if (data / "logs" / "ghost.log").exists():
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        assert _leftovers(str(data)), "the demo started no process"
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    deadline = time.monotonic() + 20
    while _leftovers(str(data)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _leftovers(str(data)) == []
