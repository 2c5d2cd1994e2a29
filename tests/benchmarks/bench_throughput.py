"""Benchmark 4: the writer's rate beside the end-to-end rate, and peak RSS of ``uploader run``.

A writer thread appends 50 KiB fetches with ``FetchWriter`` for ``duration`` seconds while
``uploader run`` ships them, in two windows, each with a fresh service and bucket:

- flat out: the writer appends as fast as it can (on a small machine the writer, the service
  and the S3 server share the cores, so the service's work slows the writer down);
- paced: the writer appends at a fixed rate (``rate`` fetches/s), as a pipeline does.

In both the writer pauses while the local file holds more than ``backlog_mib`` (a guard that
keeps the file bounded when the service falls behind); every pause is counted, and the target
is met only if there was none. The end-to-end rate is the fetches written over the time from the
first write until the day document holds them all (a HEAD of its counters every 0.1 s after the
writer stopped), so e2e / writer is 1.0 for a service that keeps up with no lag. The document
is re-counted as it streams back and verified. Before the windows the same writer runs a few seconds with no
service at all, to show what the service costs it. CPU of the writer thread, the service and
the server (moto's process, or Ceph's mon + OSD + radosgw) over each window shows which is the
bottleneck.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import write_config
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
)

__all__ = ["DEFAULT_RATE", "run"]

log = logging.getLogger(__name__)

DEFAULT_RATE = 200.0  # fetches/s, ~10 MiB/s of 50 KiB fetches: what the writer reached on head
_MIB = 1 << 20


@dataclass(frozen=True)
class Window:
    """One measured window of the writer with the service running."""

    written: int
    window: float  # seconds from the first write to the writer's last
    paused: float  # seconds the writer waited on the backlog guard
    pauses: int  # how many times it started waiting
    in_window: int  # fetches in the document when the writer stopped
    drained: float  # seconds from the first write until the document held them all
    hwm_kib: int
    cpu: dict[str, float]  # share of one core over the window: writer, service, server
    doc_mib: float


class _Writer:
    """Appends fetches until told to stop (then up to a multiple of 10), paced or flat out."""

    def __init__(self, local: Path, raws: list[dict[str, Any]], rate: float | None, backlog_bytes: int | None):
        self.local = local
        self.writer = FetchWriter(local, "America/New_York")
        self.raws = raws
        self.rate = rate
        self.backlog_bytes = backlog_bytes
        self.written = 0
        self.paused = 0.0
        self.pauses = 0
        self.cpu = 0.0
        self.stop = threading.Event()
        self.started = self.finished = 0.0
        self._thread = threading.Thread(target=self._write, name="writer")

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def join(self) -> None:
        self.stop.set()
        self._thread.join()

    def _backlogged(self) -> bool:
        if self.backlog_bytes is None or self.stop.is_set():
            return False
        try:
            return self.local.stat().st_size > self.backlog_bytes
        except FileNotFoundError:
            return False

    def _write(self) -> None:
        cpu0 = time.thread_time()
        next_at = self.started
        waiting = False
        while not self.stop.is_set() or self.written % 10:
            if self._backlogged():
                self.pauses += not waiting
                waiting = True
                t = time.monotonic()
                time.sleep(0.002)
                self.paused += time.monotonic() - t
                continue
            waiting = False
            if self.rate:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += 1 / self.rate  # a writer held up catches up, as a pipeline's queue would
            self.writer.append(self.raws[self.written % 10], 5, fetch_id=f"tp{self.written:08d}")
            self.written += 1
        self.finished = time.monotonic()
        self.cpu = time.thread_time() - cpu0


def _alone(raws: list[dict[str, Any]], seconds: float) -> float:
    """Fetches/s of the writer flat out with no service running (a file nobody cuts)."""
    with tempfile.TemporaryDirectory(prefix="bench-writer-alone-") as tmp:
        w = _Writer(Path(tmp) / "all_api.json", raws, None, None)
        w.start()
        time.sleep(seconds)
        w.join()
        return w.written / (w.finished - w.started)


def _window(server: BenchServer, raws: list[dict[str, Any]], duration: float, rate: float | None,
            backlog_mib: int, drain_timeout: float) -> Window:
    bucket = server.new_bucket("throughput")
    key = daily.day_key("logs", today())

    def stored() -> int:
        try:
            meta = server.admin.head_object(Bucket=bucket, Key=key)["Metadata"]
        except Exception:  # noqa: BLE001 - no document yet
            return 0
        return int(daily.counters_from_user_metadata(meta)["total_fetches_today"])

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, s3=(server.url, bucket), quick=False)
        local = folder / "data" / "all_api.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        writer = _Writer(local, raws, rate, backlog_mib * _MIB)
        with running_uploader(config) as proc:
            cpu0, server0 = cpu_seconds(proc.pid), server.cpu_seconds()
            writer.start()
            time.sleep(duration)
            writer.join()
            window = writer.finished - writer.started
            cpu1, server1 = cpu_seconds(proc.pid), server.cpu_seconds()
            in_window = stored()
            deadline = time.monotonic() + drain_timeout
            while (now := stored()) < writer.written:
                if time.monotonic() > deadline:
                    raise BenchError(f"the service stored {now} of {writer.written} fetches "
                                     f"{drain_timeout:.0f} s after the writer stopped")
                time.sleep(0.1)  # polling interval of a deadline wait
            drained = time.monotonic() - writer.started
            hwm = vm_hwm_kib(proc.pid)
            errors = proc.errors()
        doc_mib = verify_day(server.admin, bucket, key, writer.written // 10, writer.written) / _MIB
    server.empty_bucket(bucket)
    server.collect_garbage()
    if errors:
        raise BenchError("uploader run logged problems: " + "; ".join(errors[:3]))
    cpu = {"writer": writer.cpu / window, "service": (cpu1 - cpu0) / window,
           "server": (server1 - server0) / window}
    return Window(writer.written, window, writer.paused, writer.pauses, in_window, drained, hwm, cpu, doc_mib)


def _rate(fetches_s: float, rec: int) -> str:
    return f"{fetches_s:,.0f} fetches/s ({fetches_s * rec / _MIB:.1f} MiB/s)"


def run(server: BenchServer, duration: float = 60.0, rate: float = DEFAULT_RATE, fetch_size: int = 50 * 1024,
        backlog_mib: int = 16, drain_timeout: float = 600.0, alone_seconds: float = 5.0) -> Section:
    """The writer alone, then a flat-out window and a paced one, each with its own service."""
    section = Section(f"4. Throughput: {fetch_size // 1024} KiB fetches, {duration:.0f} s flat out "
                      f"and {duration:.0f} s at {rate:.0f} fetches/s")
    raws = [make_raw(fetch_size, i) for i in range(10)]
    rec = record_size(fetch_size)
    alone = _alone(raws, alone_seconds)
    section.rows.append(Row("writer alone, no service running", project=_rate(alone, rec)))
    for label, pace in (("flat out", None), (f"paced at {rate:.0f}/s", rate)):
        w = _window(server, raws, duration, pace, backlog_mib, drain_timeout)
        writer_rate, e2e = w.written / w.window, w.written / w.drained
        ratio = e2e / writer_rate
        section.rows.append(Row(f"{label}: writer's rate", project=_rate(writer_rate, rec)))
        section.rows.append(Row(f"{label}: writer paused (local file over {backlog_mib} MiB)",
                                project="never" if not w.pauses else f"{w.paused:.1f} s ({w.pauses} times)"))
        section.rows.append(Row(f"{label}: end-to-end rate (written -> in the day document)",
                                project=_rate(e2e, rec)))
        section.rows.append(Row(f"{label}: end-to-end / writer", project=f"{ratio:.2f}x",
                                target=">= 0.9x, writer never paused", met=ratio >= 0.9 and not w.pauses))
        section.rows.append(Row(f"{label}: peak RSS of uploader run (VmHWM)", project=f"{w.hwm_kib / 1024:.0f} MiB",
                                target="<= 150 MiB", met=w.hwm_kib <= 150 * 1024))
        paused = "the writer never paused" if not w.pauses else \
            f"the writer paused {w.pauses} times, {w.paused:.1f} s in all"
        behind = "" if pace is None or writer_rate >= 0.98 * pace else \
            f" (short of its {pace:.0f}/s: the machine could not keep its pace)"
        section.notes.append(
            f"{label}: {w.written:,} fetches of {rec} bytes written in {w.window:.1f} s{behind}, "
            f"{paused}; {w.in_window:,} were in the document when the writer stopped, all "
            f"{w.written:,} {w.drained - w.window:.1f} s later; the day reached {w.doc_mib:.0f} MiB. CPU over "
            f"the window (share of one core): writer thread {w.cpu['writer']:.0%}, uploader run "
            f"{w.cpu['service']:.0%}, {server.title} server {w.cpu['server']:.0%}"
        )
    section.notes.append(
        f"writer alone: the same writer flat out for {alone_seconds:.0f} s with no service running (a file "
        f"nobody cuts): {_rate(alone, rec)}, against the flat-out window's writer's rate above; the gap is what "
        "the service and the server, sharing the machine's cores with it, cost the writer"
    )
    return section
