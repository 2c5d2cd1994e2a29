"""Benchmark 6: CPU used by an idle ``uploader run`` on an existing file (no writes), from /proc.

The file holds a few complete records, fewer than a batch, written before the service starts:
what operators have between fetches and after a restart. They must stay in the file (nothing to
cut), and looking at the file must not wake the service again (issue 16: its own reads woke the
watcher, a whole core for ever).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from tests.helpers import write_config

from .harness import (
    BenchError,
    BenchServer,
    Row,
    Section,
    cpu_over,
    prefill,
    running_uploader,
    vm_hwm_kib,
)

__all__ = ["run"]

log = logging.getLogger(__name__)

TARGET = 0.5  # % of one core


def run(server: BenchServer, seconds: float = 60.0, settle: float = 3.0, waiting: int = 5) -> Section:
    """Start the service on a file holding ``waiting`` records, settle, read utime+stime across the window."""
    section = Section(f"6. Idle: `uploader run` on a file holding {waiting} records, "
                      f"no writes for {seconds:.0f} s")
    bucket = server.new_bucket("idle")
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        config = write_config(Path(tmp), s3=(server.url, bucket), quick=False)
        local = Path(tmp) / "data" / "all_api.json"
        prefill(local, waiting, 5 * 1024, "idle")
        size = local.stat().st_size
        with running_uploader(config) as proc:
            time.sleep(settle)
            used, window = cpu_over(proc.pid, seconds)
            hwm = vm_hwm_kib(proc.pid)
            cuts = [line for _, line in proc.lines if " cut day=" in line]
        if local.stat().st_size != size or cuts:
            raise BenchError(f"the {waiting} waiting records did not stay in the file: size {size} -> "
                             f"{local.stat().st_size}, {len(cuts)} cuts")
    share = 100 * used / window
    section.rows.append(Row("CPU of one core", project=f"{share:.2f}% ({used:.2f} s CPU in {window:.0f} s)",
                            target=f"< {TARGET:g}%", met=share < TARGET))
    section.notes.append(f"{waiting} records of 5 KiB ({size:,} bytes) in the file before start, fewer than "
                         "batch_size (10), so they stay; retry_interval_s = 30 (the default), so the window "
                         f"holds two retry ticks; peak RSS {hwm / 1024:.0f} MiB; /proc tick is 10 ms")
    return section
