"""Benchmark 5: ``uploader replay`` of 1,000 spooled batches of one day, group commit vs per batch.

The spool is built with the project's own Spool API (stage + commit, as a cut does). The
per-batch run is the same ``uploader replay`` command with ``uploader.publish.uploader.GROUP_MAX_BATCHES``
set to 1 in-process (a bench-only override, not a product setting). Each run's document is read
back and verified.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers import write_config
from uploader import daily
from uploader.local.batch import Batch
from uploader.local.spool import Spool

from .harness import (
    ROOT,
    BenchError,
    BenchServer,
    Row,
    Section,
    bench_env,
    make_raw,
    today,
    verify_day,
)

__all__ = ["run"]

log = logging.getLogger(__name__)

_REPLAY = (
    "import sys, uploader.publish.uploader as u\n"
    "u.GROUP_MAX_BATCHES = int(sys.argv[1])\n"
    "from uploader.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def fill_spool(root: Path, batches: int, fetch_size: int) -> None:
    """Commit ``batches`` batches of 10 fetches of one day into the spool at ``root``."""
    spool = Spool(root)
    day = today()
    raws = [make_raw(fetch_size, i) for i in range(10)]
    seqs = spool.allocate_seqs(batches)
    names = []
    for b, seq in enumerate(seqs):
        ids = [f"rp{b:05d}-{i}" for i in range(10)]
        names.append(spool.stage_batch(Batch.of(
            batch_id=hashlib.sha256(f"replay-{b}".encode()).hexdigest()[:32], seq=seq, day=day,
            cut_at="07/10/2025 04:15:00 PM EDT",
            fetches=[{"FETCH_HEADER": {"fetch_id": fid}, "RAW_API_DATA": raws[i],
                      "FETCH_FOOTER": {"total_matches": 5}} for i, fid in enumerate(ids)],
            matches=50, fetch_ids=ids)))
    spool.commit(names)


def _replay(server: BenchServer, batches: int, fetch_size: int, group: int) -> tuple[float, float]:
    """(wall seconds of `uploader replay`, MiB of the resulting document), verified."""
    bucket = server.new_bucket(f"replay{group}")
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, s3=(server.url, bucket), quick=False)
        fill_spool(folder / "data" / "spool", batches, fetch_size)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _REPLAY, str(group), "replay", "--config", str(config),
             "--log-level", "WARNING"],
            env=bench_env(), cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchError(f"uploader replay exited {done.returncode}: {done.stderr[-500:]}")
        left = list((folder / "data" / "spool" / "batches").glob("*.json"))
        if left:
            raise BenchError(f"{len(left)} batches left in the spool after replay")
    mib = verify_day(server.admin, bucket, daily.day_key("logs", today()), batches, batches * 10) / 2**20
    server.empty_bucket(bucket)
    server.collect_garbage()
    return seconds, mib


def run(server: BenchServer, batches: int = 1000, single_batches: int = 150,
        fetch_size: int = 5 * 1024) -> Section:
    """Replay ``batches`` with group commit, and ``single_batches`` with one append per batch.

    One append per batch costs the server a copy of the whole day each time (O(day) inside the
    server, not on the wire), so 1,000 of them take ~8 minutes on moto; the default run times
    fewer.
    """
    section = Section(f"5. Replay of {batches} spooled batches of one day")
    grouped, mib = _replay(server, batches, fetch_size, 100)
    single, _ = _replay(server, single_batches, fetch_size, 1)
    label = "" if single_batches == batches else f" ({single_batches} batches only)"
    section.rows.append(Row("wall time of `uploader replay`", f"{single:.1f} s per batch{label}",
                            f"{grouped:.1f} s group commit",
                            (f"{single / grouped:,.1f}x" if not label else
                             f">= {single / single_batches * batches / grouped:,.0f}x (linear extrapolation)"),
                            "<= 30 s with group commit", grouped <= 30))
    section.notes.append(
        f"{fetch_size // 1024} KiB fetches, {batches * 10} fetches, a {mib:.0f} MiB day; the "
        "'seed' column here is the project itself with group commit off (one append per batch, "
        "GROUP_MAX_BATCHES=1), the nearest to the seed's one-rewrite-per-batch. Times include "
        "starting the process and probing the store."
    )
    return section
