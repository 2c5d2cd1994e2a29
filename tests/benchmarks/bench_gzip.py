"""Benchmark 12: gzip day documents against plain ones, on the simulator's fetches.

For each day size (raw JSON: 16, 128, 512 MiB) the bench builds one day of the simulator's
odds-shaped fetches (``scripts/simulate_pipeline.py``'s generator; 10 fetches per upload, about
5 KiB each), stores it twice (``.json`` and, in the gzip form of DESIGN §5.10, ``.json.gz``; not
measured), then appends the same 10 fresh fetches to each in a child process through the suite's
counting proxy (``tests/benchmarks/append_child.py``, capabilities probed first as a running
service has them). Columns: plain ("none", the table's seed column) beside gzip (its project column).

Measured: the stored bytes of the day once closed in-process (which drops the gzip form's
padding; the target: gzip at least 5x smaller) and what that close cost, the CPU a MiB of JSON
costs to compress (the bench's own, building the gzip day), and per append the bytes on the
wire (the target: at most 2 x the compressed batch + 64 KiB), the time and the peak RSS. Both
documents are read back and re-counted afterwards (``tests.helpers.read_day`` inflates the gzip
one as gunzip does).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytz

from tests.rig.faultproxy import FaultProxy
from uploader import daily, publish
from uploader.config import Compression
from uploader.daily import gzip_form
from uploader.local.batch import Batch
from uploader.store.s3 import S3Store

from .bench_append import _go
from .harness import (
    ROOT,
    TZ,
    BenchError,
    BenchServer,
    Row,
    Section,
    bench_env,
    old_id,
    remember_old_ids,
    today,
    verify_day,
)

__all__ = ["DEFAULT_SIZES_MIB", "run", "simulator_fetches"]

DEFAULT_SIZES_MIB = (16, 128, 512)
_MIB = 1 << 20
_POOL = 2000  # distinct fetches, cycled: ~10 MiB, far beyond deflate's 32 KiB window


def _simulator() -> Any:
    spec = importlib.util.spec_from_file_location("simulate_pipeline", ROOT / "scripts" / "simulate_pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulator_fetches(count: int, seed: int, tag: str, size: int = 5 * 1024) -> list[dict[str, Any]]:
    """``count`` fetches as the simulator makes them (odds of ~``size`` bytes), bookended."""
    fake_api_data = _simulator().fake_api_data
    rng = random.Random(seed)
    out = []
    for i in range(count):
        raw, matches = fake_api_data(rng, size)
        out.append({"FETCH_HEADER": {"fetch_id": f"{tag}-{i}", "timestamp": "07/10/2025 04:15:00 PM EDT"},
                    "RAW_API_DATA": raw, "FETCH_FOOTER": {"total_matches": matches}})
    return out


def build_day(size_mib: int) -> bytes:
    """A valid plain day document of about ``size_mib`` MiB of the simulator's fetches."""
    pool = simulator_fetches(_POOL, 11, "old")
    per_fetch = len(json.dumps(pool[0])) + 2
    uploads = max(1, size_mib * _MIB // (per_fetch * 10))
    day = today()
    batches = []
    for u in range(uploads):
        fetches = [dict(pool[(u * 10 + i) % _POOL], FETCH_HEADER={"fetch_id": f"old-{u}-{i}"}) for i in range(10)]
        batches.append(Batch.of(batch_id=old_id(u), seq=u, day=day,
                                cut_at="07/10/2025 04:15:00 PM EDT", fetches=fetches,
                                matches=sum(f["FETCH_FOOTER"]["total_matches"] for f in fetches),
                                fetch_ids=[f"old-{u}-{i}" for i in range(10)]))
    merged = daily.merge_batches(daily.new_document(day, TZ.zone), batches, datetime.now(pytz.utc), TZ)
    return daily.serialize(merged.document)


def gzip_day(plain: bytes) -> tuple[bytes, float]:
    """The gzip form of a plain day (padding, one member for the body, the tail member) and the
    CPU seconds the compression took."""
    keep, tail = daily.split_tail(plain, len(plain))  # type: ignore[misc]
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    body = b"".join(gzip_form.compress_member([plain[:keep]]))
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu
    return gzip_form.pad() + body + gzip_form.tail_member(tail), cpu


def _append(proxy: FaultProxy, bucket: str, compression: str, ids_dir: Path) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.append_child", proxy.url, bucket, "proj", today().isoformat(),
         "5120", str(ids_dir), compression],
        env=bench_env(), cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    result, wire = _go(proc, proxy, "append_child")
    result.update(wire_sent=wire.sent, wire_received=wire.received)
    if result["stored"] != 1:
        raise BenchError(f"{compression} append stored {result['stored']} batches")
    return result


def _close(server: BenchServer, bucket: str, day: date) -> dict[str, Any]:
    """Close the gzip day as the close-out does (which drops its padding); what the close cost."""
    os.environ.update(bench_env())  # the fake credentials, for this process's own store
    store = S3Store(bucket, endpoint_url=server.url, region="us-east-1", addressing_style="path",
                    read_timeout_s=600, prefix="proj")
    store.capabilities()  # probed once in a service's life, not at each close
    started = time.perf_counter()
    closed = publish.close_day(store, "proj", TZ, day, datetime.now(pytz.utc), compression=Compression.GZIP)
    return {"seconds": time.perf_counter() - started, "sent": closed.bytes_sent, "received": closed.bytes_received}


def _size(n: float) -> str:
    return f"{n / _MIB:.2f} MiB" if n >= _MIB else f"{n / 1024:.1f} KiB"


def run(server: BenchServer, sizes_mib: tuple[int, ...] = DEFAULT_SIZES_MIB) -> Section:
    """Stored bytes, compression CPU and one append's cost per day size, plain beside gzip."""
    section = Section("12. Gzip days vs plain (the simulator's fetches; columns: none | gzip)")
    proxy = FaultProxy((server.s3.host, server.port), log_limit=0)
    day = today()
    plain_key, gzip_key = daily.day_key("proj", day), daily.day_key("proj", day, gzip=True)
    batch = json.dumps(simulator_fetches(10, 99, "new")).encode()
    compressed_batch = len(gzip.compress(batch, 6))
    tmp = tempfile.mkdtemp(prefix="bench-gzip-")
    try:
        for size in sizes_mib:
            plain = build_day(size)
            packed, cpu = gzip_day(plain)
            old = daily.parse_tail(daily.split_tail(plain, len(plain))[1])  # type: ignore[index]
            uploads, meta = old["total_uploads_today"], daily.user_metadata(old)
            results = {}
            for name, key, body in (("none", plain_key, plain), ("gzip", gzip_key, packed)):
                bucket = server.new_bucket(f"gz{size}{name}")
                server.admin.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta)
                ids_dir = Path(tmp) / f"ids-{size}-{name}"
                remember_old_ids(ids_dir, key, uploads)
                results[name] = _append(proxy, bucket, name, ids_dir)
                if name == "gzip":  # then closed, as the close-out does: its padding dropped (§5.10)
                    results[name]["close"] = _close(server, bucket, day)
                results[name]["size"] = verify_day(server.admin, bucket, key, uploads + 1, (uploads + 1) * 10)
                server.empty_bucket(bucket)
                server.admin.delete_bucket(Bucket=bucket)
                server.collect_garbage()
            none, gz = results["none"], results["gzip"]
            label = f"{size} MiB day"
            section.rows.append(Row(f"{label}: stored, closed", _size(none["size"]), _size(gz["size"]),
                                    f"{none['size'] / gz['size']:.1f}x (open, padded: "
                                    f"{len(plain) / len(packed):.1f}x)", ">= 5x smaller", none["size"] >= 5 * gz["size"]))
            close = gz["close"]
            section.rows.append(Row(f"{label}: close (padding dropped)", "-",
                                    f"{close['seconds'] * 1000:.0f} ms, sent {_size(close['sent'])}", "-",
                                    "a server-side copy past 5 MiB"))
            limit = 2 * compressed_batch + 65536
            section.rows.append(Row(f"{label}: append, bytes sent", _size(none["wire_sent"]), _size(gz["wire_sent"]),
                                    f"{none['wire_sent'] / gz['wire_sent']:.1f}x", f"gzip <= {_size(limit)}",
                                    gz["wire_sent"] <= limit))
            section.rows.append(Row(f"{label}: append, bytes received", _size(none["wire_received"]),
                                    _size(gz["wire_received"]), "-", "the tail read"))
            section.rows.append(Row(f"{label}: append, wall time", f"{none['seconds'] * 1000:.0f} ms",
                                    f"{gz['seconds'] * 1000:.0f} ms", f"{none['seconds'] / gz['seconds']:.1f}x"))
            section.rows.append(Row(f"{label}: append, peak RSS", f"{none['hwm_kib'] / 1024:.0f} MiB",
                                    f"{gz['hwm_kib'] / 1024:.0f} MiB", "-", "<= 150 MiB",
                                    max(none["hwm_kib"], gz["hwm_kib"]) <= 150 * 1024))
            section.notes.append(
                f"{label} ({uploads} uploads): compressing it took {cpu:.1f} s of CPU, "
                f"{cpu * 1000 / (len(plain) / _MIB):.0f} ms per MiB ({len(plain) / _MIB / cpu:.0f} MiB/s of one core); "
                f"append paths none={none['path']}, gzip={gz['path']}; payload sent none "
                f"{_size(none['sent'])}, gzip {_size(gz['sent'])}")
            del plain, packed
    finally:
        proxy.close()
        shutil.rmtree(tmp, ignore_errors=True)
    section.notes.append(
        f"The appended batch: 10 fetches, {_size(len(batch))} of JSON, {_size(compressed_batch)} gzipped on its "
        "own. Wire bytes include HTTP headers. Received is the tail read (suffix GETs from 64 KiB), which a "
        "running service's write cache skips. An append sends the compressed batch and the new tail; the "
        "tail holds the digest of the day's batch ids, not the ids (§5.4), which the child knows as a running "
        "service does (its spool's ids/ folder), so neither grows with the day.")
    return section
