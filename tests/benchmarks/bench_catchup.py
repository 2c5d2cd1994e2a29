"""Benchmark 10: `uploader run` catching up on a local file that grew while it was down.

An operator's service stops (a crash, an upgrade, a reboot) while the pipeline goes on
appending; when it starts again the local file holds the backlog, and the pipeline keeps
writing throughout. Measured: the time until the day document holds the backlog, what the
service wrote to disk meanwhile (``write_bytes`` of /proc/PID/io: the spool, the cut journal, the
file's own rewrite), its CPU and peak RSS, and what the pipeline paid: its appends (50 KiB at
10 fetches/s) timed throughout, the cut's lock included. The day is verified at the end.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.helpers import write_config
from uploader import daily
from uploader.fetchlog import FetchWriter

from .bench_backlog import backlog_chunks
from .harness import (
    BenchServer,
    Row,
    Section,
    cpu_seconds,
    make_raw,
    percentile,
    running_uploader,
    today,
    verify_day,
    vm_hwm_kib,
)

__all__ = ["DEFAULT_SIZES_MIB", "run"]

log = logging.getLogger(__name__)

DEFAULT_SIZES_MIB = (256, 1024)
_MIB = 1 << 20
STALL_MAX_S = 0.050  # issue 12's target for the longest wait of the pipeline on the cut


class _PacedWriter(threading.Thread):
    """The pipeline going on meanwhile: ``rate`` fetches/s, each append timed; stops on a whole batch."""

    def __init__(self, local: Path, rate: float, fetch_size: int) -> None:
        super().__init__(name="paced-writer", daemon=True)
        self.writer = FetchWriter(local, "America/New_York")
        self.raw = make_raw(fetch_size, 0)
        self.rate = rate
        self.times: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while not (self.stopping.is_set() and len(self.times) % 10 == 0):
            at = time.perf_counter()
            self.writer.append(self.raw, 5)
            self.times.append(time.perf_counter() - at)
            self.stopping.wait(max(0.0, started + len(self.times) / self.rate - time.monotonic()))


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _stored(server: BenchServer, bucket: str, key: str) -> int:
    try:
        meta = server.admin.head_object(Bucket=bucket, Key=key)["Metadata"]
    except Exception:  # noqa: BLE001 - no document yet
        return 0
    return int(daily.counters_from_user_metadata(meta)["total_fetches_today"])


def _wait_stored(server: BenchServer, bucket: str, key: str, fetches: int, timeout: float) -> float:
    """Seconds until the document holds ``fetches`` (raises after ``timeout``)."""
    started = time.monotonic()
    while _stored(server, bucket, key) < fetches:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the document did not reach {fetches} fetches in {timeout:.0f} s")
        time.sleep(0.2)  # polling interval of a deadline wait
    return time.monotonic() - started


def _catch_up(server: BenchServer, size_mib: int, fetch_size: int, rate: float) -> dict[str, float]:
    bucket = server.new_bucket(f"catchup{size_mib}")
    key = daily.day_key("logs", today())
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, s3=(server.url, bucket), quick=False)
        local = folder / "data" / "all_api.json"
        local.parent.mkdir(parents=True)
        backlog = 0
        with open(local, "ab") as f:
            for chunk, n in backlog_chunks(size_mib, fetch_size, "cu"):
                f.write(chunk)
                backlog += n
        file_bytes = local.stat().st_size
        with running_uploader(config) as proc:
            writer = _PacedWriter(local, rate, fetch_size)
            cpu0 = cpu_seconds(proc.pid)
            writer.start()
            seconds = _wait_stored(server, bucket, key, backlog, timeout=1800)
            written, cpu = _write_bytes(proc.pid), cpu_seconds(proc.pid) - cpu0
            writer.stopping.set()
            writer.join()
            _wait_stored(server, bucket, key, backlog + len(writer.times), timeout=300)
            hwm = vm_hwm_kib(proc.pid)
    total = backlog + len(writer.times)
    verify_day(server.admin, bucket, key, total // 10, total)
    server.empty_bucket(bucket)
    server.collect_garbage()
    return {"seconds": seconds, "file_mib": file_bytes / _MIB, "written_mib": written / _MIB, "cpu": cpu,
            "hwm_mib": hwm / 1024, "appends": len(writer.times), "p99": percentile(writer.times, 99),
            "max": max(writer.times), "median": statistics.median(writer.times)}


def run(server: BenchServer, sizes_mib: tuple[int, ...] = DEFAULT_SIZES_MIB, fetch_size: int = 50 * 1024,
        rate: float = 10.0) -> Section:
    """Fill the local file with each backlog, start the service, and time the catch-up."""
    section = Section("10. Catch-up: `uploader run` started on a local file that grew while it was down")
    for size in sizes_mib:
        r = _catch_up(server, size, fetch_size, rate)
        label = f"{size} MiB in the file"
        section.rows.append(Row(f"{label}: caught up in", project=f"{r['seconds']:.1f} s "
                                f"({r['file_mib'] / r['seconds']:.0f} MiB/s), {r['cpu']:.1f} s CPU"))
        ratio = r["written_mib"] / r["file_mib"]
        section.rows.append(Row(f"{label}: written to disk by `uploader run`",
                                project=f"{r['written_mib']:,.0f} MiB ({ratio:.1f}x the backlog)",
                                target="<= 3x (before: 33x at 256 MiB)", met=ratio <= 3))
        section.rows.append(Row(f"{label}: peak RSS of `uploader run`", project=f"{r['hwm_mib']:.0f} MiB",
                                target="<= 150 MiB", met=r["hwm_mib"] <= 150))
        # A hundred-odd appends: their p99 is their max, so the max is what is reported.
        section.rows.append(Row(f"{label}: the pipeline's appends meanwhile, median / max",
                                project=f"{r['median'] * 1000:.1f} / {r['max'] * 1000:.1f} ms",
                                target=f"max <= {STALL_MAX_S * 1000:.0f} ms", met=r["max"] <= STALL_MAX_S))
        section.notes.append(
            f"{label}: {r['file_mib']:.0f} MiB of 50 KiB fetches written before the start; the pipeline "
            f"appended {r['appends']} more at {rate:g}/s during the catch-up (p99 "
            f"{r['p99'] * 1000:.1f} ms); every fetch verified in the day document, once")
    section.notes.append(
        "Before the cut took a backlog in one go (it planned 8 MiB and moved the rest of the file for "
        "every 8 MiB), a 256 MiB backlog made the service write 8.6 GB (33x) and took 14.5 s on the "
        "directory backend (commit b38df5c, the same file); with a cut of at most 256 MiB, 1 GiB "
        "wrote 3.3x and held the pipeline up to 234 ms (a writer appending every 10 ms)")
    return section
