"""Benchmark 4: sustained end-to-end rate and peak RSS of ``uploader run`` under a flood of writes.

A writer thread appends 50 KiB fetches with ``FetchWriter`` as fast as it can for ``duration``
seconds. So that the figure is the service's sustained rate rather than how fast a backlog file
can grow on disk, the writer pauses while the local file holds more than ``backlog_mib``.
Afterwards the bench waits until the day document holds every fetch (a HEAD of its counters
every 0.5 s), then reads it back and verifies it. CPU of the service and of the server (moto's
process, or Ceph's mon + OSD + radosgw) over the window shows which of the two is the bottleneck.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

from uploader import daily
from uploader.fetchlog import FetchWriter

from .harness import (
    BenchError,
    BenchServer,
    Row,
    Section,
    cpu_seconds,
    make_raw,
    record_size,
    running_uploader,
    today,
    verify_day,
    vm_hwm_kib,
    write_config,
)

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(server: BenchServer, duration: float = 60.0, fetch_size: int = 50 * 1024,
        backlog_mib: int = 16, drain_timeout: float = 300.0) -> Section:
    """Flood the service for ``duration`` seconds; measure its end-to-end rate and peak RSS."""
    section = Section(f"4. Throughput: {fetch_size // 1024} KiB fetches for {duration:.0f} s")
    bucket = server.new_bucket("throughput")
    key = daily.day_key("logs", today())
    raws = [make_raw(fetch_size, i) for i in range(10)]
    rec = record_size(fetch_size)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, server.url, bucket)
        local = folder / "data" / "all_api.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        writer = FetchWriter(local, "America/New_York")
        written = 0
        stalled = 0.0
        stop = threading.Event()

        def flood() -> None:
            nonlocal written, stalled
            while not stop.is_set() or written % 10:
                try:
                    backlog = local.stat().st_size
                except FileNotFoundError:
                    backlog = 0
                if backlog > backlog_mib << 20 and not stop.is_set():
                    t = time.monotonic()
                    time.sleep(0.002)
                    stalled += time.monotonic() - t
                    continue
                writer.append(raws[written % 10], 5, fetch_id=f"tp{written:08d}")
                written += 1

        with running_uploader(config) as proc:
            cpu0, server0 = cpu_seconds(proc.pid), server.cpu_seconds()
            started = time.monotonic()
            thread = threading.Thread(target=flood, name="flood")
            thread.start()
            time.sleep(duration)
            stop.set()
            thread.join()
            window = time.monotonic() - started
            cpu1, server1 = cpu_seconds(proc.pid), server.cpu_seconds()
            in_window = daily.counters_from_user_metadata(
                server.admin.head_object(Bucket=bucket, Key=key)["Metadata"])["total_fetches_today"]
            deadline = time.monotonic() + drain_timeout
            stored = in_window
            while stored < written:
                if time.monotonic() > deadline:
                    raise BenchError(f"the service stored {stored} of {written} fetches "
                                     f"{drain_timeout:.0f} s after the writer stopped")
                time.sleep(0.5)  # polling interval of a deadline wait
                stored = daily.counters_from_user_metadata(
                    server.admin.head_object(Bucket=bucket, Key=key)["Metadata"])["total_fetches_today"]
            drained = time.monotonic() - started
            hwm = vm_hwm_kib(proc.pid)
            errors = proc.errors()
        doc = verify_day(server.admin, bucket, key, written // 10, written)
        doc_mib = len(daily.serialize(doc)) / 2**20
        del doc
    server.empty_bucket(bucket)
    server.collect_garbage()
    if errors:
        raise BenchError("uploader run logged problems: " + "; ".join(errors[:3]))
    rate = written / drained
    mib_s = rate * rec / 2**20
    section.rows.append(Row("end-to-end rate (written -> in the day document)",
                            project=f"{rate:,.0f} fetches/s ({mib_s:.1f} MiB/s)",
                            target="keeps up with the server"))
    section.rows.append(Row("peak RSS of uploader run (VmHWM)", project=f"{hwm / 1024:.0f} MiB",
                            target="<= 150 MiB", met=hwm <= 150 * 1024))
    section.notes.append(
        f"{written} fetches of {rec} bytes written in {window:.1f} s (writer paused {stalled:.1f} s "
        f"on a backlog over {backlog_mib} MiB); {in_window} were in the document when the writer "
        f"stopped, all {written} after {drained:.1f} s; the day reached {doc_mib:.0f} MiB"
    )
    section.notes.append(
        f"CPU over the window: uploader run {100 * (cpu1 - cpu0) / window:.0f}% of a core, "
        f"{server.title} server {100 * (server1 - server0) / window:.0f}% of a core"
    )
    return section
