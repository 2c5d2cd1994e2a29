"""Child process of the soak benchmark: a pipeline writing fetches at a pace, the project's way or the seed's.

    python -m tests.benchmarks.pace_child writer FILE RATE SECONDS SIZE ID_PREFIX
    python -m tests.benchmarks.pace_child seed FILE RATE SECONDS SIZE ID_PREFIX   (env: seed_env)

``writer`` appends with the shipped ``FetchWriter``; ``seed`` runs ``seed_logger.py`` once per
fetch with ``subprocess.run``, as the old pipeline did. After printing ``ready`` it waits for a
line on stdin, then writes for SECONDS at RATE fetches/s and on to a multiple of 10 fetches (so
every batch completes and lands), and prints one JSON line: when each call started and returned
(``time.monotonic``: CLOCK_MONOTONIC, one clock for every process), its own CPU over the loop,
and the CPU of the seed processes it waited for (RUSAGE_CHILDREN: its only children).

A process of its own, so that its pace never waits on the bench's GIL and its CPU is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from uploader.fetchlog import FetchWriter

from .harness import SEED, make_raw


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _call(mode: str, path: Path, size: int, prefix: str) -> Callable[[int], None]:
    """One fetch handed over by the pipeline; the fetches are built before the clock starts."""
    raws = [make_raw(size, i) for i in range(10)]
    writer = FetchWriter(path, "America/New_York")
    argvs = [json.dumps({"raw_data": raw, "match_stats": {"total_matches": 5}, "pipeline_duration": 1.0})
             for raw in raws]

    def append(n: int) -> None:
        writer.append(raws[n % 10], 5, fetch_id=f"{prefix}{n:06d}")

    def seed(n: int) -> None:
        subprocess.run([sys.executable, str(SEED), argvs[n % 10]], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    return append if mode == "writer" else seed


def main(argv: list[str]) -> int:
    mode, path, rate, seconds, size, prefix = argv
    call = _call(mode, Path(path), int(size), prefix)
    print("ready", flush=True)
    sys.stdin.readline()
    starts: list[float] = []
    ends: list[float] = []
    cpu0 = _cpu(resource.RUSAGE_SELF)
    first = next_at = time.monotonic()
    while time.monotonic() - first < float(seconds) or len(starts) % 10:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        starts.append(time.monotonic())
        call(len(ends))
        ends.append(time.monotonic())
        # A pipeline held up (the seed's calls block it) polls again at once; it never bursts.
        next_at = max(next_at + 1 / float(rate), ends[-1])
    print(json.dumps({"starts": starts, "ends": ends, "cpu": _cpu(resource.RUSAGE_SELF) - cpu0,
                      "children_cpu": _cpu(resource.RUSAGE_CHILDREN)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
