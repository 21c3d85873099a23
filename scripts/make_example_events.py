#!/usr/bin/env python3
"""Write examples/events/shoot.jsonl: a small, realistic, deterministic photoshoot.

    python scripts/make_example_events.py                 # writes examples/events/shoot.jsonl
    python scripts/make_example_events.py -o - --seed 7   # another shoot on stdout

One session of about five minutes: three cameras join with their placement, a music cue,
the operator puts the ghost director in charge, 20 cuts (the ghost's proposals accepted,
vetoed or left to expire, plus the operator's own cuts), a zoom change, a camera moved, a
hold and its release, two stills (command, ack, capture), a marker, and the session end.
Ids are ULIDs made from the event time and a seeded random source, so the same seed gives
the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
from pathlib import Path

from ulid import ULID

from mmx.events import Event, encode

ROOT = Path(__file__).resolve().parent.parent
#: 2026-11-27 15:00:00 local time of the example (a fixed Unix time)
T0 = 1795791600.0

CAMERAS = [
    {"camera": "cam-1", "device": "D-7F3A", "name": "Front wide", "model": "iPhone 15 Pro", "role": "wide",
     "facing": "back", "zoom": 1.0, "lenses": [0.5, 1.0, 3.0],
     "placement": {"label": "front", "azimuth_deg": 0.0, "elevation_deg": 4.0, "distance_m": 3.2, "height_m": 1.5}},
    {"camera": "cam-2", "device": "D-19C2", "name": "Left close", "model": "iPad Pro 11", "role": "close",
     "facing": "back", "zoom": 1.0, "lenses": [0.5, 1.0],
     "placement": {"label": "front-left", "azimuth_deg": -55.0, "elevation_deg": 0.0, "distance_m": 1.8, "height_m": 1.4}},
    {"camera": "cam-3", "device": "D-A0E9", "name": "High right", "model": "iPhone 13 mini", "role": "detail",
     "facing": "back", "zoom": 0.5, "lenses": [0.5, 1.0],
     "placement": {"label": "high right", "azimuth_deg": 40.0, "elevation_deg": 25.0, "distance_m": 2.5, "height_m": 2.3}},
]  # fmt: skip


class Shoot:
    """Accumulates the events of one session, each producer with its own seq."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.t = T0
        self.seqs: dict[str, int] = {}
        self.events: list[Event] = []
        self.session = self.ulid(T0)
        self.program: str | None = None

    def ulid(self, t: float) -> str:
        return str(ULID.from_bytes(int(t * 1000).to_bytes(6, "big") + self.rng.randbytes(10)))

    def emit(self, type: str, data: dict, src: str = "serve", dt: float = 0.0) -> Event:
        self.t = round(self.t + dt, 3)
        self.seqs[src] = self.seqs.get(src, 0) + 1
        event = Event(type=type, data=data, id=self.ulid(self.t), ts=self.t, seq=self.seqs[src],
                      session=self.session, src=src)  # fmt: skip
        self.events.append(event)
        return event

    def cut(self, to: str, *, by: str = "operator", proposal: str | None = None, dt: float = 0.0) -> None:
        data = {"from": self.program, "to": to, "by": by}
        if proposal:
            data["proposal"] = proposal
        self.emit("director.cut", data, dt=dt)
        self.program = to

    def propose(self, to: str, dt: float) -> str:
        proposal = self.ulid(self.t + dt)
        score = round(self.rng.uniform(0.55, 0.95), 3)
        beat = round(score * self.rng.uniform(0.4, 0.6), 3)
        self.emit("ghost.proposed", {
            "proposal": proposal, "from": self.program, "to": to, "score": score,
            "reasons": {"beat": beat, "pose_energy": round(score - beat - 0.05, 3), "shot_length": 0.05},
            "cut_at": round(self.t + dt + 0.4, 3), "expires_at": round(self.t + dt + 3.0, 3),
        }, src="ghost", dt=dt)  # fmt: skip
        return proposal

    def still(self, camera: str, dt: float) -> None:
        command_id = self.ulid(self.t + dt)
        self.emit("camera.command", {"camera": camera, "command_id": command_id, "command": "still", "args": {}},
                  dt=dt)  # fmt: skip
        self.emit("camera.ack", {"camera": camera, "command_id": command_id, "ok": True, "error": None,
                                 "latency_ms": round(self.rng.uniform(40, 120), 1)}, dt=0.09)  # fmt: skip
        still = self.ulid(self.t + 0.6)
        image = self.rng.randbytes(64)
        self.emit("still.captured", {
            "still": still, "camera": camera, "path": f"stills/{camera}/{still}.jpg",
            "sha256": hashlib.sha256(image).hexdigest(), "bytes": self.rng.randint(2_400_000, 4_800_000),
            "width": 4032, "height": 3024,
        }, dt=0.6)  # fmt: skip


def make_shoot(seed: int = 1) -> list[Event]:
    """The events of one example shoot, in order (20 cuts)."""
    s = Shoot(seed)
    rng = s.rng
    s.emit("session.started", {"kind": "photoshoot_performance", "title": "Spring lookbook — studio B",
                               "notes": "three cameras around the runway mark; track 1 on loop",
                               "mode": "manual"})  # fmt: skip
    for i, cam in enumerate(CAMERAS):
        s.emit("camera.joined", cam, dt=1.2 + i * 0.7)
    s.emit("music.cue", {"track": hashlib.sha256(b"lookbook-track-1").hexdigest(), "title": "Lookbook Loop",
                         "path": "music/lookbook-loop.flac", "started_at": round(s.t + 2.0, 3), "offset_s": 0.0},
           src="operator", dt=2.0)  # fmt: skip
    s.cut("cam-1", dt=0.5)
    s.emit("director.mode", {"mode": "ghost", "previous": "manual"}, src="operator", dt=4.0)
    cams = [c["camera"] for c in CAMERAS]
    outcomes = ["accepted"] * 13 + ["vetoed"] * 4 + ["expired"] * 3
    rng.shuffle(outcomes)
    cuts = 1
    for n, outcome in enumerate(outcomes):
        to = rng.choice([c for c in cams if c != s.program])
        proposal = s.propose(to, dt=round(rng.uniform(6.0, 11.0), 3))
        if outcome == "accepted":
            s.emit("ghost.accepted", {"proposal": proposal, "by": "operator"}, src="operator", dt=0.35)
            s.cut(to, by="ghost", proposal=proposal, dt=0.05)
            cuts += 1
        elif outcome == "vetoed":
            s.emit("ghost.vetoed", {"proposal": proposal, "by": "operator"}, src="operator", dt=0.6)
            if cuts < 20 and n % 2 == 0:  # the operator prefers another angle
                s.cut(rng.choice([c for c in cams if c not in (s.program, to)]), dt=1.5)
                cuts += 1
        else:
            s.emit("ghost.expired", {"proposal": proposal, "by": "ghost"}, src="ghost", dt=3.0)
        if n == 4:
            s.emit("camera.changed", {"camera": "cam-3", "zoom": 1.0}, dt=1.0)
        if n == 7:
            s.still("cam-2", dt=1.1)
            s.emit("still.marker", {"label": "hero look", "camera": s.program}, src="operator", dt=0.4)
        if n == 10:
            s.emit("director.hold", {"camera": s.program, "by": "operator"}, src="operator", dt=0.8)
            hold_proposal = s.propose(rng.choice([c for c in cams if c != s.program]), dt=3.0)
            s.emit("ghost.expired", {"proposal": hold_proposal, "by": "ghost"}, src="ghost", dt=3.0)
            s.emit("director.release", {"camera": s.program, "by": "operator"}, src="operator", dt=5.5)
        if n == 14:
            moved = dict(CAMERAS[1]["placement"], azimuth_deg=-80.0, label="left profile")
            s.emit("camera.changed", {"camera": "cam-2", "placement": moved}, dt=1.4)
        if n == 16:
            s.still("cam-1", dt=0.9)
    while cuts < 20:  # top up with operator cuts so the example always has 20
        s.cut(rng.choice([c for c in cams if c != s.program]), dt=round(rng.uniform(5.0, 8.0), 3))
        cuts += 1
    s.emit("session.ended", {"reason": "operator", "state": {"program": s.program, "mode": "ghost",
                                                               "hold": None, "cameras": len(cams)}}, dt=6.0)  # fmt: skip
    return s.events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "examples" / "events" / "shoot.jsonl"),
                        help="output file, '-' for stdout")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    data = b"".join(encode(e) for e in make_shoot(args.seed))
    if args.output == "-":
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
