"""Benchmark 8: ``uploader export`` of a 512 MiB day, as jsonl and as bookended: wall time, peak RSS.

The day is made by the project itself, not measured: 50 KiB fetches cut into the spool
(``bench_backlog.spool_backlog``) and appended by ``uploader replay``. Each export then runs as
a process of its own, started from a small launcher so that its peak RSS is its own, and
writes to a file on local disk. Its output is counted afterwards (jsonl: lines; bookended: START
and END marker lines), which must match the document's fetch count.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tests.helpers import write_config
from uploader import daily
from uploader.commands.export import FORMATS

from .bench_backlog import replay, spool_backlog
from .harness import BenchError, BenchServer, Row, Section, run_measured, today

__all__ = ["DEFAULT_SIZE_MIB", "run"]

log = logging.getLogger(__name__)

DEFAULT_SIZE_MIB = 512
_MIB = 1 << 20


def count_fetches(path: Path, fmt: str) -> int:
    """Fetches in an export's output: lines of jsonl, or START/END marker pairs of bookended."""
    starts = ends = lines = 0
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            if fmt == "bookended":
                starts += line.startswith(b"=== FETCH START: ")
                ends += line.startswith(b"=== FETCH END: ")
    if fmt == "jsonl":
        return lines
    if starts != ends:
        raise BenchError(f"bookended export has {starts} START and {ends} END lines")
    return ends


def run(server: BenchServer, size_mib: int = DEFAULT_SIZE_MIB, fetch_size: int = 50 * 1024) -> Section:
    """Build a day of ``size_mib`` MiB, then export it in every format, each measured."""
    section = Section(f"8. Export of a {size_mib} MiB day (`uploader export`)")
    day = today()
    key = daily.day_key("logs", day)
    bucket = server.new_bucket("export")
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, s3=(server.url, bucket), quick=False)
        backlog = spool_backlog(folder / "data" / "all_api.json", folder / "data" / "spool", size_mib,
                                fetch_size, "ex")
        built = replay(config, folder / "replay.log")
        head = server.admin.head_object(Bucket=bucket, Key=key)
        doc_mib = int(head["ContentLength"]) / _MIB
        fetches = daily.counters_from_user_metadata(head["Metadata"])["total_fetches_today"]
        if fetches != backlog.fetches:
            raise BenchError(f"the day holds {fetches} fetches, {backlog.fetches} were spooled")
        section.notes.append(
            f"the day: {fetches:,} fetches of {fetch_size // 1024} KiB in {backlog.batches:,} uploads, "
            f"{doc_mib:.0f} MiB, made by the project (cut into the spool, then `uploader replay`: "
            f"{built.run.seconds:.1f} s), not measured"
        )
        for fmt in FORMATS:
            out = folder / f"day.{fmt}"
            done = run_measured(["-m", "uploader.cli", "export", day.isoformat(), "--config", str(config),
                                 "--format", fmt, "--output", str(out), "--log-level", "WARNING"],
                                folder / f"export-{fmt}.log")
            if done.code != 0:
                raise BenchError(f"uploader export --format {fmt} exited {done.code}: {done.output[-500:]}")
            got = count_fetches(out, fmt)
            out_mib = out.stat().st_size / _MIB
            out.unlink()
            if got != fetches:
                raise BenchError(f"uploader export --format {fmt} wrote {got} fetches, the day holds {fetches}")
            section.rows.append(Row(f"{fmt}: wall time",
                                    project=f"{done.seconds:.1f} s ({doc_mib / done.seconds:.0f} MiB/s)"))
            section.rows.append(Row(f"{fmt}: peak RSS", project=f"{done.hwm_kib / 1024:.0f} MiB",
                                    target="<= 150 MiB", met=done.hwm_kib <= 150 * 1024))
            section.notes.append(f"{fmt}: {got:,} fetches (all of the day's) in {out_mib:.0f} MiB of output")
    server.empty_bucket(bucket)
    server.collect_garbage()
    section.notes.append(
        "Wall time from starting `uploader export DAY --format F --output FILE` to its exit (Python "
        "start-up, the GET streamed through, the file written and renamed); MiB/s of the document "
        "read. Peak RSS is ru_maxrss of the export process alone."
    )
    return section
