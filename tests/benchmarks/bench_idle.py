"""Benchmark 6: CPU used by an idle ``uploader run`` (no writes) over a window, from /proc."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from .harness import (
    BenchServer,
    Row,
    Section,
    cpu_seconds,
    running_uploader,
    vm_hwm_kib,
    write_config,
)

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(server: BenchServer, seconds: float = 60.0, settle: float = 3.0) -> Section:
    """Start the service on an empty file, let it settle, and read utime+stime across the window."""
    section = Section(f"6. Idle: `uploader run` with no writes for {seconds:.0f} s")
    bucket = server.new_bucket("idle")
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        config = write_config(Path(tmp), server.url, bucket)
        with running_uploader(config) as proc:
            time.sleep(settle)
            before = cpu_seconds(proc.pid)
            started = time.monotonic()
            time.sleep(seconds)
            used = cpu_seconds(proc.pid) - before
            window = time.monotonic() - started
            hwm = vm_hwm_kib(proc.pid)
    share = 100 * used / window
    section.rows.append(Row("CPU of one core", project=f"{share:.2f}% ({used:.2f} s CPU in {window:.0f} s)",
                            target="< 1%", met=share < 1))
    section.notes.append(f"retry_interval_s = 30 (the default), so the window holds two retry ticks; "
                         f"peak RSS {hwm / 1024:.0f} MiB; /proc tick is 10 ms")
    return section
