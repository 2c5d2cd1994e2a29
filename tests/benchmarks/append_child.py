"""Child process of benchmark 3: one project append, alone in its process so its wire bytes and
peak RSS are its own.

Protocol on stdin/stdout: the child probes the store's capabilities (a one-time cost of a
service's life, not of an append), prints ``ready``, waits for a line on stdin, does ONE
``publish.append_batches`` of 10 fetches, and prints a JSON result line.

    python -m tests.benchmarks.append_child URL BUCKET PREFIX YYYY-MM-DD FETCH_SIZE
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from datetime import date, datetime

import pytz

from uploader import publish
from uploader.local.batch import Batch
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


def main(argv: list[str]) -> int:
    url, bucket, prefix, day_text, size_text = argv
    store = S3Store(bucket, endpoint_url=url, region="us-east-1", addressing_style="path",
                    read_timeout_s=600, prefix=prefix)
    store.capabilities()
    batch = batch_of(date.fromisoformat(day_text), int(size_text), "bench-append")
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    result = publish.append_batches(store, prefix, TZ, [batch], datetime.now(pytz.utc))
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "path": result.path, "stored": len(result.stored),
                      "sent": result.bytes_sent, "received": result.bytes_received,
                      "hwm_kib": vm_hwm_kib(os.getpid())}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
