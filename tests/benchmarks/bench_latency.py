"""Benchmark 2: latency from the write of a batch's 10th FETCH END to the day document holding it.

``uploader run`` (s3 backend on the bench's server, moto or Ceph RGW) watches the file; the
bench writes 10 fetches, notes the time the 10th write returned, and waits for the service's
``upload`` log line, which is written once the store acknowledged the write and the spool was
cleared (so the figure is an upper bound). The signal costs the service nothing beyond a log
line it writes anyway. After each batch (outside the measured window) a HEAD checks the
object's counters say exactly that many uploads.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.helpers import write_config
from uploader import daily
from uploader.fetchlog import FetchWriter

from .harness import (
    UPLOAD_LINE,
    BenchError,
    BenchServer,
    Row,
    Section,
    make_raw,
    percentile,
    running_uploader,
    today,
    verify_day,
)

__all__ = ["run"]

log = logging.getLogger(__name__)


def run(server: BenchServer, batches: int = 250, fetch_size: int = 5 * 1024) -> Section:
    """Measure ``batches`` batches one after another (plus one warm-up batch, not counted)."""
    section = Section("2. Latency: 10th FETCH END written -> day document holds the batch")
    bucket = server.new_bucket("latency")
    key = daily.day_key("logs", today())
    latencies: list[float] = []
    paths: Counter[str] = Counter()
    by_path: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        folder = Path(tmp)
        config = write_config(folder, s3=(server.url, bucket), quick=False)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        writer = FetchWriter(folder / "data" / "all_api.json", "America/New_York")
        raws = [make_raw(fetch_size, i) for i in range(10)]
        with running_uploader(config) as proc:
            seen = 0
            warmup = 0.0
            for b in range(batches + 1):
                for i in range(10):
                    writer.append(raws[i], 5, fetch_id=f"lat{b:05d}{i:02d}")
                written = time.monotonic()
                idx, at, line = proc.wait_for(UPLOAD_LINE.pattern, timeout=30, start=seen)
                seen = idx + 1
                m = UPLOAD_LINE.search(line)
                assert m is not None
                if m["batches"] != "1":
                    raise BenchError(f"expected one batch per append, got: {line}")
                if b == 0:
                    warmup = at - written  # includes the store's one-time capability probe
                else:
                    latencies.append(at - written)
                    paths[m["path"]] += 1
                    by_path.setdefault(m["path"], []).append(at - written)
                head = server.admin.head_object(Bucket=bucket, Key=key)
                counters = daily.counters_from_user_metadata(head["Metadata"])
                if counters["total_uploads_today"] != b + 1:
                    raise BenchError(f"after batch {b + 1} the object says "
                                     f"{counters['total_uploads_today']} uploads")
            errors = proc.errors()
        size = verify_day(server.admin, bucket, key, batches + 1, (batches + 1) * 10)
    server.empty_bucket(bucket)
    server.collect_garbage()
    if errors:
        raise BenchError("uploader run logged problems: " + "; ".join(errors[:3]))
    ms = [x * 1000 for x in latencies]
    p50, p99, worst = percentile(ms, 50), percentile(ms, 99), max(ms)
    section.rows.append(Row(f"p50 over {len(ms)} batches", project=f"{p50:.1f} ms",
                            target="<= 50 ms", met=p50 <= 50))
    section.rows.append(Row(f"p99 over {len(ms)} batches", project=f"{p99:.1f} ms",
                            target="<= 200 ms", met=p99 <= 200))
    section.rows.append(Row("max", project=f"{worst:.1f} ms"))
    for path, values in sorted(by_path.items()):
        v = [x * 1000 for x in values]
        section.notes.append(f"path {path!r} ({len(v)} batches): p50 {percentile(v, 50):.1f} ms, "
                             f"p99 {percentile(v, 99):.1f} ms, max {max(v):.1f} ms")
    section.notes.append(
        f"{fetch_size // 1024} KiB fetches; the day grew to {size / 2**20:.1f} MiB, so appends went "
        "from whole rewrite (< 5 MiB) to server-side tail replace. Warm-up batch (not counted; "
        f"includes the one-time capability probe): {warmup * 1000:.0f} ms. The seed has no "
        "comparable figure: its 10th call blocks the pipeline for the whole upload (see 1 and 3)."
    )
    return section
