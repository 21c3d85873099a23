"""`mmx demo`: a whole rehearsal, end to end, with the real components as real processes.

Stages (each reported through ``on_stage(stage, status, detail)``):

1. ``media``: the generated beat track / dancer video / pose file, or the given files;
2. ``features``: ``mmx features`` on the track;
3. ``serve``: ``mmx serve`` on loopback with a new token, its events piped into
   ``mmx ledger push``; ``relay``: ``mmx relay`` following the server's cuts;
4. ``devices``: ``--cameras`` ``mmx device`` processes playing the video and pose at staggered
   offsets from different placements, publishing to the relay;
5. ``ghost``: ``mmx ghost`` in autopilot, its proposals and decisions piped into a second
   ``mmx ledger push`` on the same ledger;
6. ``shoot``: session start, music cue, ``--duration`` seconds of ghost-directed cuts (then on
   until the ghost made ``--min-ghost-cuts``), stills
   on two cameras, one hold and release, session stop;
7. ``dataset``: ``mmx discover`` and ``mmx pair`` on the recorded session and the features;
8. ``report``: cameras, cuts and their distance to the beat, stills, ledger, dataset, hero URL.

Every child is stopped at the end, on failure and on Ctrl-C (`Supervisor.stop_all`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mmx.demo.media import BeatTrackSpec, write_beat_track, write_dancer_video
from mmx.demo.procs import Child, Supervisor
from mmx.errors import InputMissingError, MmxError
from mmx.events import Producer

StageCallback = Callable[[str, str, str], None]

#: Placements of the first cameras: front, left 45°, right 60°, then around the subject.
PLACEMENTS: list[dict[str, Any]] = [
    {"label": "front", "azimuth_deg": 0, "elevation_deg": 0, "distance_m": 3.0, "height_m": 1.5},
    {"label": "left-45", "azimuth_deg": -45, "elevation_deg": 0, "distance_m": 3.0, "height_m": 1.5},
    {"label": "right-60", "azimuth_deg": 60, "elevation_deg": 0, "distance_m": 3.0, "height_m": 1.5},
    {"label": "back-left", "azimuth_deg": -135, "elevation_deg": 10, "distance_m": 4.0, "height_m": 2.0},
    {"label": "back-right", "azimuth_deg": 135, "elevation_deg": 10, "distance_m": 4.0, "height_m": 2.0},
    {"label": "high-front", "azimuth_deg": 10, "elevation_deg": 35, "distance_m": 3.5, "height_m": 3.0},
]


class DemoFailed(MmxError):
    """A stage of the demo failed (a component did not start, crashed, or produced nothing)."""


@dataclass
class DemoConfig:
    """What to run: media files (None = generated), cameras, shoot length, where to keep it all."""

    data_dir: Path
    music: Path | None = None
    video: Path | None = None
    pose: Path | None = None
    cameras: int = 3
    duration_s: float = 60.0
    bpm: float = 120.0
    serve_port: int = 0
    relay_port: int = 0
    relay: bool = True
    startup_timeout_s: float = 60.0
    #: after ``duration_s``, keep shooting until the ghost made this many cuts (a busy
    #: machine slows the ghost down; the shoot waits for its cuts, not for a clock)
    min_ghost_cuts: int = 0
    #: how long past ``duration_s`` the shoot may wait for ``min_ghost_cuts``
    min_ghost_cuts_timeout_s: float = 120.0


@dataclass
class DemoReport:
    """The demo's outcome; `to_dict` is what ``mmx demo --json`` prints."""

    ok: bool = False
    failed_stage: str | None = None
    error: str | None = None
    data_dir: str = ""
    server_url: str = ""
    hero_url: str | None = None
    ledger: str = ""
    session: str | None = None
    track: dict[str, Any] = field(default_factory=dict)
    cameras: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)
    cuts_by: dict[str, int] = field(default_factory=dict)
    beat_error_ms: dict[str, float | None] = field(default_factory=dict)
    stills: list[dict[str, Any]] = field(default_factory=list)
    ghost: dict[str, int] = field(default_factory=dict)
    ledger_summary: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    logs: str = ""
    stages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class Demo:
    """One run of the rehearsal; `run` returns the report (it raises nothing but Ctrl-C)."""

    def __init__(self, config: DemoConfig, on_stage: StageCallback | None = None) -> None:
        self.config = config
        self.on_stage = on_stage or (lambda stage, status, detail: None)
        self.data = config.data_dir
        self.supervisor = Supervisor(self.data / "logs")
        self.token = secrets.token_urlsafe(24)
        self.report = DemoReport(data_dir=str(self.data), logs=str(self.data / "logs"))
        self.operator = Producer("operator")
        self._stage = ""

    # -- plumbing ---------------------------------------------------------------------------

    def _enter(self, stage: str, detail: str = "") -> None:
        self._stage = stage
        self._stage_started = time.monotonic()
        self.on_stage(stage, "start", detail)

    def _done(self, detail: str = "") -> None:
        elapsed = round(time.monotonic() - self._stage_started, 2)
        self.report.stages.append({"stage": self._stage, "ok": True, "seconds": elapsed, "detail": detail})
        self.on_stage(self._stage, "done", detail)

    def _fail(self, message: str, child: Child | None = None) -> DemoFailed:
        if child is not None:
            tail = self.supervisor.tail_log(child)
            message = f"{message} (exit {child.proc.poll()}; log {child.log_path})" + (f":\n{tail}" if tail else "")
        return DemoFailed(f"{self._stage}: {message}")

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.report.server_url, timeout=10.0,
                            headers={"Authorization": f"Bearer {self.token}"})  # fmt: skip

    def _post(self, client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = client.post(path, json=body or {})
        if response.status_code >= 400:
            raise self._fail(f"POST {path} answered {response.status_code}: {response.text.strip()}")
        return response.json() if response.content else {}

    def _check_alive(self, *children: Child) -> None:
        for child in children:
            if not child.alive:
                raise self._fail(f"{child.name} exited", child)

    # -- stages -----------------------------------------------------------------------------

    def run(self) -> DemoReport:
        try:
            self._run()
            self.report.ok = True
        except MmxError as exc:
            self.report.ok = False
            self.report.failed_stage = self._stage
            self.report.error = exc.message
            self.on_stage(self._stage, "failed", exc.message)
        finally:
            self.supervisor.stop_all()
        return self.report

    def _run(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        music, video, pose = self._media()
        features = self._features(music)
        serve, push_serve = self._serve()
        relay = self._relay()
        devices = self._devices(video, pose)
        ghost, push_ghost = self._ghost()
        session = self._shoot(music, features, [serve, relay, ghost, *devices])
        self._stop_live(serve, relay, ghost, devices, push_serve, push_ghost)
        self._dataset()
        self._summarize(session, features)

    def _media(self) -> tuple[Path, Path, Path]:
        cfg = self.config
        self._enter("media")
        for given in (cfg.music, cfg.video, cfg.pose):
            if given is not None and not given.exists():
                raise InputMissingError(f"no such file: {given}")
        media_dir = self.data / "media"
        music = cfg.music
        if music is None:
            spec = BeatTrackSpec(bpm=cfg.bpm, duration_s=max(30.0, cfg.duration_s + 30.0))
            music = write_beat_track(media_dir / f"beat-{int(cfg.bpm)}bpm.wav", spec)
        video, pose = cfg.video, cfg.pose
        if video is None or pose is None:
            video, pose = media_dir / "dancer.mp4", media_dir / "dancer.pose.jsonl"
            write_dancer_video(video, pose, duration_s=30.0, bpm=cfg.bpm)
        self._done(f"music {music.name}, video {video.name}, pose {pose.name}")
        return music, video, pose

    def _features(self, music: Path) -> dict[str, Any]:
        self._enter("features", str(music))
        out_dir = self.data / "features"
        out_file = self.data / "features.jsonl"
        with open(out_file, "wb") as out:
            child = self.supervisor.run("features", ["features", str(music), "-o", str(out_dir)],
                                        timeout_s=600, stdout=out)  # fmt: skip
        if child.proc.returncode != 0:
            raise self._fail("mmx features failed", child)
        rows = [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]
        if not rows or not rows[0].get("npz"):
            raise self._fail("mmx features wrote no artifact", child)
        row = rows[0]
        with np.load(row["npz"]) as npz:
            beat_times = np.asarray(npz["beat_times"], dtype=np.float64)
            tempo = float(npz["tempo_bpm"])
            sha = str(npz["sha256"])
        self.report.track = {"path": str(music), "sha256": sha, "tempo_bpm": round(tempo, 2),
                             "beats": int(len(beat_times)), "features": row["npz"]}  # fmt: skip
        self._done(f"tempo {tempo:.1f} BPM, {len(beat_times)} beats")
        return {"sha256": sha, "beat_times": beat_times, "npz": row["npz"], "dir": out_dir}

    def _serve(self) -> tuple[Child, Child]:
        self._enter("serve")
        port = self.config.serve_port or free_port()
        self.report.server_url = f"http://127.0.0.1:{port}"
        self.report.ledger = str(self.data / "ledger.sqlite")
        serve = self.supervisor.start(
            "serve",
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(self.data / "serve"),
             "--token", self.token, "--events", "-"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        push = self.supervisor.start("ledger-push-serve", ["ledger", "push", "-", "--ledger", self.report.ledger],
                                     stdin=serve.proc.stdout)  # fmt: skip
        serve.proc.stdout.close()  # the push process owns the read end now

        def ready() -> bool:
            self._check_alive(serve, push)
            try:
                with self._http() as client:
                    return client.get("/v1/state").status_code == 200
            except httpx.HTTPError:
                return False

        if not _wait_until(ready, timeout_s=self.config.startup_timeout_s):
            raise self._fail("mmx serve did not answer /v1/state", serve)
        self._done(self.report.server_url)
        return serve, push

    def _relay(self) -> Child | None:
        if not self.config.relay:
            return None
        self._enter("relay")
        port = self.config.relay_port or free_port()
        relay_url = f"http://127.0.0.1:{port}"
        relay = self.supervisor.start(
            "relay",
            ["relay", "--server", self.report.server_url, "--host", "127.0.0.1", "--port", str(port),
             "--token", self.token, "--ice-host", "127.0.0.1"],
        )  # fmt: skip

        def ready() -> bool:
            self._check_alive(relay)
            try:
                return httpx.get(f"{relay_url}/?token={self.token}", timeout=2.0).status_code < 500
            except httpx.HTTPError:
                return False

        if not _wait_until(ready, timeout_s=self.config.startup_timeout_s):
            raise self._fail("mmx relay did not answer", relay)
        self.report.hero_url = f"{relay_url}/?token={self.token}"
        self._relay_url = relay_url
        self._done(relay_url)
        return relay

    def _devices(self, video: Path, pose: Path) -> list[Child]:
        cfg = self.config
        self._enter("devices", f"{cfg.cameras} cameras")
        devices = []
        for i in range(cfg.cameras):
            placement = PLACEMENTS[i % len(PLACEMENTS)]
            args = [
                "device", "--server", self.report.server_url, "--token", self.token,
                "--name", f"demo-cam-{i + 1}", "--camera", f"cam-{i + 1}", "--video", str(video), "--pose", str(pose),
                "--placement", json.dumps(placement), "--pose-offset-s", str(round(i * 7.3, 2)),
                "--lenses", "0.5,1,2" if i == 0 else "1,2", "--fps", "10", "--size", "640x360",
                "--state-dir", str(self.data / "devices"),
            ]  # fmt: skip
            if cfg.relay:
                args += ["--relay", self._relay_url]
            devices.append(self.supervisor.start(f"device-{i + 1}", args))

        def all_live() -> bool:
            self._check_alive(*devices)
            with self._http() as client:
                state = client.get("/v1/state").json()
            return sum(1 for c in state.get("cameras", []) if c.get("status") == "live") >= cfg.cameras

        if not _wait_until(all_live, timeout_s=cfg.startup_timeout_s):
            raise self._fail(f"not all {cfg.cameras} cameras registered in time")
        with self._http() as client:
            cams = client.get("/v1/state").json()["cameras"]
        self.report.cameras = [
            {"camera": c["camera"], "name": c.get("name"), "placement": c.get("placement"), "lenses": c.get("lenses")}
            for c in cams
        ]
        self._done(", ".join(c["camera"] for c in cams))
        return devices

    def _ghost(self) -> tuple[Child, Child]:
        self._enter("ghost")
        ghost = self.supervisor.start(
            "ghost",
            ["ghost", "--server", self.report.server_url, "--token", self.token,
             "--features", str(self.data / "features")],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        push = self.supervisor.start("ledger-push-ghost", ["ledger", "push", "-", "--ledger", self.report.ledger],
                                     stdin=ghost.proc.stdout)  # fmt: skip
        ghost.proc.stdout.close()

        def connected() -> bool:
            self._check_alive(ghost, push)
            return "connected to" in self.supervisor.tail_log(ghost, 50)

        # the ghost reads the event stream before the shoot begins (it logs "connected to URL")
        if not _wait_until(connected, timeout_s=self.config.startup_timeout_s):
            raise self._fail(f"ghost did not connect to mmx serve within {self.config.startup_timeout_s:.0f} s", ghost)
        self._done("autopilot")
        return ghost, push

    def _shoot(self, music: Path, features: dict[str, Any], live: list[Child | None]) -> str:
        cfg = self.config
        children = [c for c in live if c is not None]
        self._enter("shoot", f"{cfg.duration_s:.0f} s")
        with self._http() as client:
            session = self._post(client, "/v1/session/start", {"title": "mmx demo rehearsal",
                                                               "notes": "generated by mmx demo"})  # fmt: skip
            session_id = session.get("session") or session.get("id")
            self.report.session = session_id
            cameras = [c["camera"] for c in self.report.cameras]
            self._post(client, "/v1/director/cut", {"to": cameras[0], "by": "operator"})
            started_at = time.time() + 0.2
            cue = self.operator.make("music.cue", {
                "track": features["sha256"], "title": music.stem, "path": str(music),
                "started_at": started_at, "offset_s": 0.0,
            }, session=session_id)  # fmt: skip
            self._post(client, "/v1/events", cue.to_dict())
            self._post(client, "/v1/director/mode", {"mode": "autopilot"})
            t0 = time.monotonic()
            plan = [
                (cfg.duration_s * 0.30, "still", cameras[0]),
                (cfg.duration_s * 0.35, "still", cameras[1 % len(cameras)]),
                (cfg.duration_s * 0.55, "hold", None),
                (cfg.duration_s * 0.55 + 2.0, "release", None),
            ]
            while (elapsed := time.monotonic() - t0) < cfg.duration_s:
                self._check_alive(*children)
                while plan and plan[0][0] <= elapsed:
                    _, action, camera = plan.pop(0)
                    if action == "still":
                        ack = self._post(client, f"/v1/cameras/{camera}/still")
                        self.on_stage("shoot", "info", f"still on {camera}: {ack.get('ok', ack)}")
                    elif action == "hold":
                        program = client.get("/v1/state").json().get("program")
                        self._post(client, "/v1/director/hold", {"camera": program})
                        self.on_stage("shoot", "info", f"hold on {program}")
                    else:
                        self._post(client, "/v1/director/release", {})
                        self.on_stage("shoot", "info", "release")
                self.on_stage("shoot", "progress", f"{elapsed:.0f}/{cfg.duration_s:.0f} s")
                time.sleep(0.25)
            self._wait_for_ghost_cuts(client, children)
            self._post(client, "/v1/director/mode", {"mode": "manual"})
            self._post(client, "/v1/session/stop", {})
        self._done(f"session {session_id}")
        return session_id

    def _wait_for_ghost_cuts(self, client: httpx.Client, children: list[Child]) -> None:
        """Go on shooting until the ghost made `DemoConfig.min_ghost_cuts` cuts; raises
        DemoFailed when it has not within `DemoConfig.min_ghost_cuts_timeout_s`."""
        cfg = self.config
        deadline = time.monotonic() + cfg.min_ghost_cuts_timeout_s
        since, made = 0, 0
        while True:
            response = client.get("/v1/events", params={"since": since, "types": "director.cut", "follow": "0"})
            for line in response.content.splitlines():
                event = json.loads(line)
                since = max(since, event.get("seq") or 0)
                made += (event.get("data") or {}).get("by") == "ghost"
            if made >= cfg.min_ghost_cuts:
                return
            if time.monotonic() > deadline:
                raise self._fail(f"the ghost director made {made} of the {cfg.min_ghost_cuts} cuts asked for "
                                 f"within {cfg.min_ghost_cuts_timeout_s:.0f} s past --duration")  # fmt: skip
            self._check_alive(*children)
            self.on_stage("shoot", "progress", f"{made}/{cfg.min_ghost_cuts} ghost cuts")
            time.sleep(0.25)

    def _stop_live(self, serve: Child, relay: Child | None, ghost: Child, devices: list[Child],
                   push_serve: Child, push_ghost: Child) -> None:  # fmt: skip
        self._enter("stop")
        for child in [ghost, *devices, *( [relay] if relay else [] ), serve]:
            self.supervisor.stop(child)
        for push in (push_serve, push_ghost):
            try:
                push.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.supervisor.stop(push)
            if push.proc.returncode not in (0, None):
                raise self._fail("mmx ledger push failed", push)
        self._done("all live components stopped")

    def _dataset(self) -> None:
        self._enter("dataset")
        inventory = self.data / "inventory.jsonl"
        with open(inventory, "wb") as out:
            child = self.supervisor.run("discover", ["discover", str(self.data / "serve" / "sessions"),
                                                     str(self.data / "features")], timeout_s=300, stdout=out)  # fmt: skip
        if child.proc.returncode not in (0, 65):
            raise self._fail("mmx discover failed", child)
        dataset_dir = self.data / "dataset"
        with open(self.data / "pair.jsonl", "wb") as out:
            child = self.supervisor.run("pair", ["pair", str(inventory), "-o", str(dataset_dir)],
                                        timeout_s=600, stdout=out)  # fmt: skip
        if child.proc.returncode not in (0, 65):
            raise self._fail("mmx pair failed", child)
        manifest = json.loads((dataset_dir / "manifest.json").read_text())
        counts = manifest.get("counts", {}).get("windows", {})
        self.report.dataset = {"dir": str(dataset_dir), "counts": counts, "dropped": manifest.get("dropped")}
        self._done(f"windows {counts}")

    def _summarize(self, session: str, features: dict[str, Any]) -> None:
        self._enter("report")
        capture = self.data / "serve" / "sessions" / session
        beat_times = features["beat_times"]
        cue_start: float | None = None
        cuts: list[dict[str, Any]] = []
        with open(capture / "events.jsonl", "rb") as fp:
            for line in fp:
                event = json.loads(line)
                if event["type"] == "music.cue":
                    cue_start = float(event["data"]["started_at"]) - float(event["data"].get("offset_s") or 0.0)
                elif event["type"] == "director.cut":
                    cuts.append({"ts": event["ts"], "from": event["data"].get("from"), "to": event["data"].get("to"),
                                 "by": event["data"].get("by")})  # fmt: skip
        for cut in cuts:
            if cue_start is not None and len(beat_times) and cut["ts"] >= cue_start:
                track_t = cut["ts"] - cue_start
                cut["track_time_s"] = round(track_t, 4)
                cut["beat_error_ms"] = round(float(np.min(np.abs(beat_times - track_t))) * 1000.0, 1)
        self.report.cuts = cuts
        by: dict[str, int] = {}
        for cut in cuts:
            by[cut.get("by") or "?"] = by.get(cut.get("by") or "?", 0) + 1
        self.report.cuts_by = by
        ghost_errors = [c["beat_error_ms"] for c in cuts if c.get("by") == "ghost" and "beat_error_ms" in c]
        self.report.beat_error_ms = {
            "median": float(np.median(ghost_errors)) if ghost_errors else None,
            "max": float(np.max(ghost_errors)) if ghost_errors else None,
        }
        self.report.stills = self._stills(session)
        self.report.ghost = self._ghost_decisions(session)
        self.report.ledger_summary = self._ledger_summary(session)
        self._done(f"{len(cuts)} cuts, {len(self.report.stills)} stills")

    def _stills(self, session: str) -> list[dict[str, Any]]:
        stills = []
        with sqlite3.connect(f"file:{self.report.ledger}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT raw FROM events WHERE type = 'still.captured' AND session = ?", (session,)).fetchall()
        for (raw,) in rows:
            data = json.loads(raw)["data"]
            path = Path(data.get("path") or "")
            if not path.is_absolute():
                path = self.data / "serve" / "sessions" / session / path
            on_disk = path.exists()
            stills.append({"still": data.get("still"), "camera": data.get("camera"), "path": str(path),
                           "sha256": data.get("sha256"),
                           "hash_ok": on_disk and sha256_file(path) == data.get("sha256")})  # fmt: skip
        return stills

    def _ghost_decisions(self, session: str) -> dict[str, int]:
        with sqlite3.connect(f"file:{self.report.ledger}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT type, count(*) FROM events WHERE type LIKE 'ghost.%' GROUP BY type").fetchall()
        return {etype.split(".", 1)[1]: n for etype, n in rows}

    def _ledger_summary(self, session: str) -> dict[str, Any]:
        with sqlite3.connect(f"file:{self.report.ledger}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM production_sessions WHERE id = ?", (session,)).fetchone()
            n_events = db.execute("SELECT count(*) FROM events").fetchone()[0]
        return {"events": n_events, **({k: row[k] for k in row.keys()} if row else {})}
