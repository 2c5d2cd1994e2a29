"""Child process of benchmark 3: one project append, alone in its process so its wire bytes and
peak RSS are its own.

Protocol on stdin/stdout: the child probes the store's capabilities (a one-time cost of a
service's life, not of an append), prints ``ready``, waits for a line on stdin, does ONE
``publish.append_batches`` of 10 fetches, and prints a JSON result line.

    python -m tests.benchmarks.append_child URL BUCKET PREFIX YYYY-MM-DD FETCH_SIZE IDS_DIR [none|gzip]

With a form (benchmark 12) the batch is the simulator's fetches, and with ``gzip`` the day is
stored gzip. ``IDS_DIR`` holds the day's batch ids as a running service keeps them
(``old_ids``), so the append reads no more of the day than the service's would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import date, datetime
from pathlib import Path

import pytz

from uploader import publish
from uploader.config import Compression
from uploader.local.batch import Batch
from uploader.publish.listed import ListedIndex
from uploader.store.s3 import S3Store

from .harness import TZ, make_raw, vm_hwm_kib


def batch_of(day: date, fetch_size: int, tag: str) -> Batch:
    """A batch of 10 fetches of ``fetch_size`` like the pipeline's (the same fetches the seed gets)."""
    fetches = [
        {"FETCH_HEADER": {"fetch_id": f"{tag}-{i}", "timestamp": "07/10/2025 04:15:00 PM EDT"},
         "RAW_API_DATA": make_raw(fetch_size, i),
         "FETCH_FOOTER": {"total_matches": 5, "pipeline_duration": 1.0}}
        for i in range(10)
    ]
    return Batch.of(batch_id=hashlib.sha256(tag.encode()).hexdigest()[:32], seq=1_000_000, day=day,
                 cut_at="07/10/2025 04:15:00 PM EDT", fetches=fetches, matches=50,
                 fetch_ids=[f"{tag}-{i}" for i in range(10)])


def simulator_batch(day: date) -> Batch:
    """The batch of benchmark 11: 10 of the simulator's fetches (the same for both forms)."""
    from .bench_gzip import simulator_fetches

    fetches = simulator_fetches(10, 99, "new")
    return Batch.of(batch_id=hashlib.sha256(b"bench-gzip").hexdigest()[:32], seq=1_000_000, day=day,
                    cut_at="07/10/2025 04:15:00 PM EDT", fetches=fetches,
                    matches=sum(f["FETCH_FOOTER"]["total_matches"] for f in fetches),
                    fetch_ids=[f["FETCH_HEADER"]["fetch_id"] for f in fetches])


def main(argv: list[str]) -> int:
    url, bucket, prefix, day_text, size_text, ids_dir, *form = argv
    compression = Compression(form[0] if form else "none")
    store = S3Store(bucket, endpoint_url=url, region="us-east-1", addressing_style="path",
                    read_timeout_s=600, prefix=prefix)
    store.capabilities()
    day = date.fromisoformat(day_text)
    batch = batch_of(day, int(size_text), "bench-append") if not form else simulator_batch(day)
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    result = publish.append_batches(store, prefix, TZ, [batch], datetime.now(pytz.utc), compression=compression,
                                    listed=ListedIndex(Path(ids_dir)))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "path": result.path, "stored": len(result.stored),
                      "sent": result.bytes_sent, "received": result.bytes_received,
                      "hwm_kib": vm_hwm_kib(os.getpid())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
