"""Benchmark 7: ``uploader replay`` of a day's backlog of spooled batches (256 MiB and 1 GiB).

The backlog is made as a service whose store is down makes it: 50 KiB fetches appended to the
local file a few MiB at a time, each step cut into the spool by the project's own ``Cutter`` (so
the spool files are exactly those ``uploader run`` writes), with no service running. ``uploader
replay`` then drains it in a process of its own, started from a small launcher so that its peak
RSS is its own. Its appends are counted from its ``upload`` log lines (one per append call, with
the tries it took). The document is then re-counted as it streams back (``daily.verifier.Verifier``,
bounded memory: ``tests.helpers.read_day``), never loaded whole.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytz

from tests.helpers import write_config
from uploader import daily
from uploader.local.cut import Cutter
from uploader.local.records import encode_record
from uploader.local.spool import Spool

from .harness import (
    TZ,
    UPLOAD_LINE,
    BenchError,
    BenchServer,
    Measured,
    Row,
    Section,
    make_raw,
    run_measured,
    today,
    verify_day,
)

__all__ = ["DEFAULT_SIZES_MIB", "Backlog", "Replayed", "backlog_chunks", "replay", "run", "spool_backlog"]

log = logging.getLogger(__name__)

DEFAULT_SIZES_MIB = (256, 1024)
_MIB = 1 << 20
_STEP = 8 * _MIB  # bytes written to the local file between two cuts, as a busy writer leaves them
_PLACEHOLDER = "@@FETCHID@@@"  # as long as the ids put in its place, so records stay valid


@dataclass(frozen=True)
class Backlog:
    """What ``spool_backlog`` left in the spool."""

    fetches: int
    batches: int
    record_bytes: int  # the bookended records written to the local file
    spool_bytes: int  # the batch files
    seconds: float


@dataclass(frozen=True)
class Replayed:
    """One ``uploader replay`` run: its measurement and the appends it logged."""

    run: Measured
    appends: int  # append calls (one ``upload`` log line each)
    attempts: int  # tries of those calls (a lost race or a retry adds one)
    batches: int  # batches the appends stored


def backlog_chunks(size_mib: int, fetch_size: int, tag: str) -> Iterator[tuple[bytes, int]]:
    """``size_mib`` MiB of fetches of today, as (bytes, fetches) chunks of about 8 MiB.

    Records come from ten templates (``encode_record``, as ``FetchWriter`` writes them) with a
    unique fetch id each, so every batch has its own id; the count is a multiple of 10, so a
    cut leaves nothing behind.
    """
    now = datetime.now(pytz.utc)
    templates = [
        encode_record(_PLACEHOLDER, now, TZ, {
            "FETCH_HEADER": {"fetch_id": _PLACEHOLDER, "timestamp": "filled in by encode_record"},
            "RAW_API_DATA": make_raw(fetch_size, i), "FETCH_FOOTER": {"total_matches": 5}})
        for i in range(10)
    ]
    placeholder = _PLACEHOLDER.encode()
    per_step = max(10, _STEP // len(templates[0]) // 10 * 10)
    total = -(-size_mib * _MIB // (len(templates[0]) * 10)) * 10
    fetches = 0
    while fetches < total:
        step = min(per_step, total - fetches)
        yield b"".join(templates[i % 10].replace(placeholder, f"{tag}{fetches + i:0{12 - len(tag)}d}".encode())
                       for i in range(step)), step
        fetches += step


def spool_backlog(local: Path, spool_root: Path, size_mib: int, fetch_size: int, tag: str) -> Backlog:
    """Write ``size_mib`` MiB of fetches to ``local``, cutting them into the spool as they go."""
    started = time.monotonic()
    local.parent.mkdir(parents=True, exist_ok=True)
    spool = Spool(spool_root)
    cutter = Cutter(local, spool, TZ, batch_size=10)
    fetches = written = 0
    for chunk, n in backlog_chunks(size_mib, fetch_size, tag):
        with open(local, "ab") as f:
            f.write(chunk)
        fetches += n
        written += len(chunk)
        while cutter.cut().removed:
            pass
    if local.stat().st_size:
        raise BenchError(f"the cut left {local.stat().st_size} bytes in the local file")
    pending = spool.pending_batches()
    if len(pending) * 10 != fetches:
        raise BenchError(f"{len(pending)} batches spooled for {fetches} fetches")
    return Backlog(fetches, len(pending), written, sum(e.path.stat().st_size for e in pending),
                   time.monotonic() - started)


def replay(config: Path, output: Path) -> Replayed:
    """Run ``uploader replay`` on ``config``'s spool, measured; fail unless it emptied the spool."""
    measured = run_measured(["-m", "uploader.cli", "replay", "--config", str(config), "--log-level", "INFO"], output)
    if measured.code != 0:
        raise BenchError(f"uploader replay exited {measured.code}: {measured.output[-500:]}")
    appends = [(int(m["batches"]), int(m["attempts"])) for m in UPLOAD_LINE.finditer(measured.output)]
    return Replayed(measured, len(appends), sum(a for _, a in appends), sum(b for b, _ in appends))


def run(server: BenchServer, sizes_mib: tuple[int, ...] = DEFAULT_SIZES_MIB, fetch_size: int = 50 * 1024) -> Section:
    """Spool each size with no service running, replay it, and verify the day as it streams."""
    section = Section("7. Backlog: `uploader replay` of one day's spooled batches")
    day = today()
    key = daily.day_key("logs", day)
    per_gib: list[tuple[int, float]] = []
    for size in sizes_mib:
        bucket = server.new_bucket(f"backlog{size}")
        with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp:
            folder = Path(tmp)
            config = write_config(folder, s3=(server.url, bucket), quick=False)
            backlog = spool_backlog(folder / "data" / "all_api.json", folder / "data" / "spool", size,
                                    fetch_size, "bl")
            done = replay(config, folder / "replay.log")
            left = list((folder / "data" / "spool" / "batches").glob("*.json"))
            if left:
                raise BenchError(f"{len(left)} batches left in the spool after replay")
        if done.batches != backlog.batches:
            raise BenchError(f"replay logged {done.batches} batches stored, {backlog.batches} were spooled")
        started = time.monotonic()
        doc_bytes = verify_day(server.admin, bucket, key, backlog.batches, backlog.fetches)
        verify_s = time.monotonic() - started
        server.empty_bucket(bucket)
        server.collect_garbage()

        seconds, hwm = done.run.seconds, done.run.hwm_kib
        spool_mib = backlog.spool_bytes / _MIB
        per_gib.append((size, seconds * 1024 / spool_mib))
        label = f"{size} MiB backlog"
        section.rows.append(Row(f"{label}: wall time of `uploader replay`",
                                project=f"{seconds:.1f} s ({spool_mib / seconds:.0f} MiB/s)"))
        section.rows.append(Row(f"{label}: appends",
                                project=f"{done.appends} ({done.attempts} tries, {done.batches:,} batches)"))
        section.rows.append(Row(f"{label}: peak RSS of `uploader replay`", project=f"{hwm / 1024:.0f} MiB",
                                target="<= 150 MiB", met=hwm <= 150 * 1024))
        section.notes.append(
            f"{label}: {backlog.fetches:,} fetches of {fetch_size // 1024} KiB ({backlog.record_bytes / _MIB:.0f} MiB "
            f"of records) cut into {backlog.batches:,} batch files ({spool_mib:.0f} MiB) in {backlog.seconds:.1f} s "
            f"(not measured); the day document came to {doc_bytes / _MIB:.0f} MiB and was verified as it "
            f"streamed back in {verify_s:.1f} s"
        )
    if len(per_gib) > 1:
        (small, a), (big, b) = per_gib[0], per_gib[-1]
        section.rows.append(Row(f"time per GiB of batches, {small} vs {big} MiB",
                                project=f"{a:.1f} s vs {b:.1f} s ({b / a:.2f}x)",
                                target="roughly linear (<= 1.5x)", met=b / a <= 1.5))
    section.notes.append(
        "Wall time from starting `uploader replay` to its exit (Python start-up, the store probe, "
        "the append(s), archiving the batches); MiB/s over the batch files. Appends are the "
        "replay's `upload` log lines, one per append call (a group commit); tries include any "
        "retry after a lost race. Peak RSS is ru_maxrss of the replay process alone."
    )
    return section
