#!/usr/bin/env python3
"""Run `mmx relay` with a trace of what the hero path does around cuts (bench/relay_bench.py --trace-cuts).

    MMX_CUT_TRACE=trace.jsonl python bench/lib/relay_cut_trace.py relay --port P --events -

Wraps, in this process only, `Hub.set_program` (the cut), `SharedEncoder._encode` (start, end,
keyframe, bytes of each hero encode) and `FanoutTrack.next_entry` (when each viewer's sender
asked for a frame and got it: the call for frame k+1 starts when frame k's packets are all
sent). Times are `time.monotonic()`, the same clock as the bench's. Written at exit as JSON Lines.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mmx.relay import hub  # noqa: E402

records: list[dict] = []


def _dump() -> None:
    with open(os.environ["MMX_CUT_TRACE"], "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


def install() -> None:
    set_program, encode, next_entry = hub.Hub.set_program, hub.SharedEncoder._encode, hub.FanoutTrack.next_entry

    def traced_set_program(self, camera):
        records.append({"ev": "cut", "t": time.monotonic(), "to": camera})
        return set_program(self, camera)

    def traced_encode(self, frame, pts, force_keyframe):
        t0 = time.monotonic()
        packets = encode(self, frame, pts, force_keyframe)
        records.append({"ev": "encode", "t0": t0, "t1": time.monotonic(), "pts": pts, "hero": self.camera is None,
                        "force": force_keyframe, "bytes": sum(p.size for p in packets)})
        return packets

    async def traced_next_entry(self):
        called = time.monotonic()
        entry = await next_entry(self)
        records.append({"ev": "take", "viewer": id(self), "called": called, "t": time.monotonic(), "seq": entry.seq,
                        "pts": entry.rtp_timestamp, "camera": entry.camera, "key": entry.keyframe,
                        "packets": len(entry.vp8_payloads())})
        return entry

    hub.Hub.set_program = traced_set_program
    hub.SharedEncoder._encode = traced_encode
    hub.FanoutTrack.next_entry = traced_next_entry
    atexit.register(_dump)


if __name__ == "__main__":
    install()
    from mmx.cli import main

    sys.argv = ["mmx", *sys.argv[1:]]
    main()
