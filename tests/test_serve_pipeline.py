"""`mmx serve | mmx ledger push`: the shoot lands in the ledger (real processes, real pipe)."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import orjson
import pytest

from .conftest import MMX, free_port

pytestmark = pytest.mark.slow

TOKEN = "pipe-token"


def test_serve_piped_into_ledger_push_stores_the_session(tmp_path):
    port = free_port()
    ledger = tmp_path / "shoot.sqlite"
    serve = subprocess.Popen([*MMX, "serve", "--port", str(port), "--token", TOKEN, "--data", str(tmp_path / "data"),
                              "--device-timeout", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    push = subprocess.Popen([*MMX, "ledger", "push", "--ledger", str(ledger)], stdin=serve.stdout,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    serve.stdout.close()  # the push owns the read end now
    devices: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 20
        while not serve.stderr.readline().startswith(b"listening on "):
            assert time.monotonic() < deadline and serve.poll() is None, "mmx serve did not start"
        url = f"http://127.0.0.1:{port}"
        for name, azimuth in (("left", -40), ("right", 40)):
            devices.append(subprocess.Popen(
                [*MMX, "device", "--server", url, "--token", TOKEN, "--name", name, "--state-dir", str(tmp_path / "state"),
                 "--fps", "2", "--size", "160x90", "--placement", f"label={name},azimuth_deg={azimuth}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        while len([c for c in client.get("/v1/state").json()["cameras"] if c["status"] == "live"]) < 2:
            assert time.monotonic() < deadline + 20, "devices did not register"
            time.sleep(0.1)

        session = client.post("/v1/session/start", json={"title": "Pipe shoot", "notes": "two cameras"}).json()
        assert client.post("/v1/director/cut", json={"to": "cam-1"}).status_code == 200
        assert client.post("/v1/director/cut", json={"to": "cam-2", "by": "ghost", "proposal": "p-1"}).status_code == 200
        assert client.post("/v1/director/cut", json={"to": "cam-1"}).status_code == 200
        still = client.post("/v1/cameras/cam-2/still", json={})
        assert still.status_code == 200, still.text
        marker = {"id": "marker-1", "ts": time.time(), "type": "still.marker", "data": {"label": "great", "camera": "cam-1"}}
        assert client.post("/v1/events", json=marker).status_code == 202
        assert client.post("/v1/session/stop", json={}).status_code == 200
        client.close()
    finally:
        for dev in devices:
            dev.terminate()
        for dev in devices:
            dev.wait(10)
        serve.send_signal(signal.SIGTERM)
        serve.wait(20)
        push_err = push.communicate(timeout=30)[1].decode()
    assert serve.returncode == 0
    assert push.returncode == 0, push_err

    shown = subprocess.run([*MMX, "ledger", "show", session["session"], "--ledger", str(ledger), "--json"],
                           capture_output=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr.decode()
    summary = orjson.loads(shown.stdout)
    cameras = {c["camera"]: c for c in summary["cameras"]}
    assert set(cameras) == {"cam-1", "cam-2"}
    placements = {cam: (c.get("placement") or {}).get("azimuth_deg") for cam, c in cameras.items()}
    assert sorted(placements.values()) == [-40, 40]
    assert [s["camera"] for s in summary["shots"]] == ["cam-1", "cam-2", "cam-1"]
    assert [s["still"] for s in summary["stills"]] == [still.json()["still"]]
    assert summary["stills"][0]["sha256"] == still.json()["sha256"]
    assert [m["label"] for m in summary["markers"]] == ["great"]

    listed = subprocess.run([*MMX, "ledger", "sessions", "--ledger", str(ledger), "--json"], capture_output=True, timeout=60)
    rows = [orjson.loads(x) for x in listed.stdout.splitlines()]
    row = next(r for r in rows if r["session"] == session["session"])
    assert row["status"] == "completed" and row["title"] == "Pipe shoot"
