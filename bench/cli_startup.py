"""Benchmark: how long a whole `mmx` command takes to start (issue 18).

    /work/venv/bin/python bench/cli_startup.py [--runs 21]

Three commands, each run in a fresh process as a user runs it, alternating A B C A B C for
``--runs`` rounds after one untimed warm-up round (which also writes the bytecode caches):

- ``python -c pass``: a bare Python, the floor;
- ``mmx --help``: import the CLI, build the command tree, print help;
- ``mmx ledger tail`` on an empty ledger: a real command (open SQLite, query, exit).

Printed: median wall seconds with the min–max over the rounds, the median CPU seconds
(user + system; steadier than wall time on a busy machine), and the goal: a whole
command starts in ≤ 0.15 s (issue 18; 0.26 s before). PYTHONDONTWRITEBYTECODE is removed
from the environment so that imports read the bytecode caches, as an installed mmx does.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Goal for a whole command's wall time, seconds (issue 18).
GOAL_S = 0.15


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one run of ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="timed rounds (default 21)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    mmx = [sys.executable, "-m", "mmx"]
    with tempfile.TemporaryDirectory() as tmp:
        ledger = str(Path(tmp) / "empty.sqlite")
        subprocess.run([*mmx, "ledger", "push", "-", "--ledger", ledger], input=b"", env=env,
                       check=True, capture_output=True)
        sides = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "mmx --help": [*mmx, "--help"],
            "mmx ledger tail (empty ledger)": [*mmx, "ledger", "tail", "--ledger", ledger],
        }
        for argv in sides.values():  # warm-up: bytecode caches, page cache
            _time(argv, env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
        for _ in range(args.runs):
            for name, argv in sides.items():
                times[name].append(_time(argv, env))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min); {args.runs} rounds, A B C alternating")
    for name, runs in times.items():
        values = [wall for wall, _cpu in runs]
        median = statistics.median(values)
        cpu = statistics.median(cpu for _wall, cpu in runs)
        line = f"{name:32s} median {median:.3f} s  (min {min(values):.3f} – max {max(values):.3f}), CPU {cpu:.3f} s"
        if name.startswith("mmx"):
            line += f"  goal ≤ {GOAL_S:.2f} s: {'met' if median <= GOAL_S else 'short'}"
        print(line)


if __name__ == "__main__":
    main()
