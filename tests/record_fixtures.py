"""Shared pieces of the recording tests: real `mmx serve`, `mmx device` and `mmx relay`
processes on loopback, stopped by the `procs` fixture."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

from .conftest import MMX, free_port

TOKEN = "tok-record"


def _wait(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met within {timeout} s"
        time.sleep(0.05)


class Serve:
    def __init__(self, data: Path, *extra: str) -> None:
        self.port = free_port()
        self.data = data
        self.events = data.parent / f"events-{self.port}.jsonl"
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
        self.proc = subprocess.Popen([*MMX, "serve", "--port", str(self.port), "--token", TOKEN, "--data", str(data),
                                      "--events", str(self.events), "--device-timeout", "1", *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        _wait(self._up, what="mmx serve answering")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.proc.stderr.read().decode()
        try:
            return self.http.get("/v1/state").status_code == 200
        except httpx.TransportError:
            return False

    def state(self) -> dict:
        return self.http.get("/v1/state").json()

    def post(self, path: str) -> httpx.Response:
        return self.http.post(path, json={})

    def read_events(self) -> list[dict]:
        return [orjson.loads(line) for line in self.events.read_bytes().splitlines() if line.strip()]

    def of_type(self, etype: str) -> list[dict]:
        return [e for e in self.read_events() if e["type"] == etype]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.http.close()


def device(serve: Serve, name: str, state_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*MMX, "device", "--server", serve.url, "--token", TOKEN, "--name", name,
                             "--state-dir", str(state_dir), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames(serve: Serve, camera: str) -> int:
    files = serve.state()["recording"].get("files") or []
    return sum(f["frames"] or 0 for f in files if f["camera"] == camera)


@pytest.fixture
def procs():
    started: list = []
    yield started
    for p in reversed(started):
        (p.stop() if isinstance(p, (Serve, Relay)) else _stop(p, signal.SIGKILL))


class Relay:
    """`mmx relay --server SERVE` on a free port (its stderr in ``log``)."""

    def __init__(self, serve: Serve, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([*MMX, "relay", "--server", serve.url, "--port", str(self.port), "--token", TOKEN],
                                         stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        _wait(self._up, what="mmx relay answering")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            return self.http.get("/status").status_code == 200
        except httpx.TransportError:
            return False

    def status(self) -> dict:
        return self.http.get("/status").json()

    def stop(self, sig=signal.SIGTERM) -> None:
        _stop(self.proc, sig)
        self.http.close()
