"""Benchmark 3: the cost of ONE append when the day already holds 1, 16, 128, 512 MiB.

For each size the bench builds one valid day document (``daily.serialize``, PUT once, not
measured) and a copy of it for the seed. Both sides then append the same 10 fetches through the
suite's proxy (``tests/rig/faultproxy.py``, no faults: it counts the bytes) in front of the
server (moto or Ceph RGW):

- project: ``publish.append_batches`` through ``S3Store`` in a child process (its capabilities
  probed before the measurement starts, as a running service has);
- seed: the seed's 10th ``subprocess.run`` call with 9 fetches already in its local file, which
  GETs the whole document, appends, and PUTs it all back.

Both documents are read back and checked afterwards, then deleted so the server frees the
memory (on Ceph RGW, its garbage collection is run at once, outside the measurement).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytz

from tests.rig.faultproxy import FaultProxy, Traffic
from uploader import daily
from uploader.local.batch import Batch

from .harness import (
    ROOT,
    SEED,
    TZ,
    BenchError,
    BenchServer,
    Row,
    Section,
    bench_env,
    make_raw,
    old_id,
    remember_old_ids,
    seed_env,
    today,
    verify_day,
)

__all__ = ["DEFAULT_SIZES_MIB", "run"]

log = logging.getLogger(__name__)

DEFAULT_SIZES_MIB = (1, 16, 128, 512)
_MIB = 1 << 20


def build_day(size_mib: int) -> bytes:
    """A valid day document of about ``size_mib`` MiB: uploads of ~1 MiB (10 fetches each)."""
    day = today()
    uploads = max(1, size_mib)
    per_fetch = (size_mib * _MIB // uploads) // 10 - 200
    filler = "x" * per_fetch  # one shared string: building 512 MiB takes seconds, not minutes
    batches = [
        Batch.of(batch_id=old_id(u), seq=u, day=day,
              cut_at="07/10/2025 04:15:00 PM EDT",
              fetches=[{"FETCH_HEADER": {"fetch_id": f"old-{u}-{i}"}, "RAW_API_DATA": {"filler": filler},
                        "FETCH_FOOTER": {"total_matches": 5}} for i in range(10)],
              matches=50, fetch_ids=[f"old-{u}-{i}" for i in range(10)])
        for u in range(uploads)
    ]
    merged = daily.merge_batches(daily.new_document(day, TZ.zone), batches, datetime.now(pytz.utc), TZ)
    return daily.serialize(merged.document)


def _load_seed() -> Any:
    spec = importlib.util.spec_from_file_location("seed_logger", SEED)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Starts the seed from a small process of its own, so that the seed's peak RSS (ru_maxrss, which
# also counts the memory of the process it was forked from) is not inflated by the bench's.
_SPAWN = (
    "import json, os, sys, time\n"
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\n"
    "started = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,\n"
    "                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(json.dumps({'seconds': time.perf_counter() - started, 'hwm_kib': usage.ru_maxrss,\n"
    "                  'code': os.waitstatus_to_exitcode(status)}), flush=True)\n"
)


def _seed_append(seed: Any, proxy: FaultProxy, bucket: str, work: Path, fetch_size: int) -> dict[str, Any]:
    """The seed's 10th call: 9 fetches already in its file, the 10th triggers GET + PUT of the day."""
    local = work / "seed_all_api.json"
    local.write_text("")
    now = datetime.now(TZ)
    log_data = [{"raw_data": make_raw(fetch_size, i), "match_stats": {"total_matches": 5},
                 "pipeline_duration": 1.0} for i in range(10)]
    for item in log_data[:9]:
        seed.append_local(str(local), item, now)
    env = seed_env(proxy.url, bucket, local)
    launcher = subprocess.Popen([sys.executable, "-c", _SPAWN, sys.executable, str(SEED), json.dumps(log_data[9])],
                                env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    result, wire = _go(launcher, proxy, "the seed's launcher")
    if result["code"] != 0:
        raise BenchError(f"seed_logger.py exited {result['code']}")
    return {"seconds": result["seconds"], "sent": wire.sent, "received": wire.received, "hwm_kib": result["hwm_kib"]}


def _project_append(proxy: FaultProxy, bucket: str, fetch_size: int, ids_dir: Path) -> dict[str, Any]:
    """One project append in a child process; bytes counted from its "go" to its answer."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.append_child", proxy.url, bucket, "proj",
         today().isoformat(), str(fetch_size), str(ids_dir)],
        env=bench_env(), cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    result, wire = _go(proc, proxy, "append_child")
    result.update(wire_sent=wire.sent, wire_received=wire.received)
    return result


def _go(proc: subprocess.Popen[str], proxy: FaultProxy, name: str) -> tuple[dict[str, Any], Traffic]:
    """Once ``proc`` says "ready", send it "go"; its one-line JSON answer, and the bytes on the
    wire from the "go" until that answer."""
    assert proc.stdin is not None and proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise BenchError(f"{name} did not get ready")
    proxy.reset_traffic()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    wire = proxy.traffic()
    if proc.wait(60) != 0 or not line:
        raise BenchError(f"{name} failed")
    result: dict[str, Any] = json.loads(line)
    return result, wire


def _check_seed_doc(server: BenchServer, bucket: str, key: str, uploads: int) -> None:
    doc = json.loads(server.admin.get_object(Bucket=bucket, Key=key)["Body"].read())
    ids = Counter(f["FETCH_HEADER"]["fetch_id"] for u in doc["uploads"] for f in u["fetch_data"])
    problems = []
    if len(doc["uploads"]) != uploads or doc["daily_metadata"]["total_uploads_today"] != uploads:
        problems.append(f"{len(doc['uploads'])} uploads, expected {uploads}")
    if len(doc["uploads"][-1]["fetch_data"]) != 10 or sum(ids.values()) != uploads * 10:
        problems.append("fetch count is off")
    if any(n > 1 for n in ids.values()):
        problems.append("duplicate fetch ids")
    if problems:
        raise BenchError(f"seed document {key}: " + "; ".join(problems))


def _size(n: float) -> str:
    return f"{n / _MIB:.2f} MiB" if n >= _MIB else f"{n / 1024:.1f} KiB"


def run(server: BenchServer, sizes_mib: tuple[int, ...] = DEFAULT_SIZES_MIB, fetch_size: int = 5 * 1024) -> Section:
    """Measure one append per day size, project beside seed, and verify both documents."""
    section = Section("3. Append cost vs day size (one batch of 10 fetches)")
    proxy = FaultProxy((server.s3.host, server.port), log_limit=0)  # keeps no bodies: they reach 512 MiB
    seed = _load_seed()
    day = today()
    pkey, skey = daily.day_key("proj", day), daily.day_key("seed", day)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
            for size in sizes_mib:
                bucket = server.new_bucket(f"append{size}")
                body = build_day(size)
                old = daily.parse_tail(daily.split_tail(body[-65536:], len(body))[1])  # type: ignore[index]
                started = time.perf_counter()
                server.admin.put_object(Bucket=bucket, Key=pkey, Body=body,
                                        Metadata=daily.user_metadata(old))
                server.admin.copy_object(Bucket=bucket, Key=skey, CopySource={"Bucket": bucket, "Key": pkey})
                build_s = time.perf_counter() - started
                old_size, n = len(body), old["total_uploads_today"]
                del body
                ids_dir = Path(tmp) / f"ids-{size}"
                remember_old_ids(ids_dir, pkey, n)
                proj = _project_append(proxy, bucket, fetch_size, ids_dir)
                if proj["stored"] != 1:
                    raise BenchError(f"project append at {size} MiB stored {proj['stored']} batches")
                new_size = server.admin.head_object(Bucket=bucket, Key=pkey)["ContentLength"]
                verify_day(server.admin, bucket, pkey, n + 1, (n + 1) * 10)
                s = _seed_append(seed, proxy, bucket, Path(tmp), fetch_size)
                _check_seed_doc(server, bucket, skey, n + 1)
                server.empty_bucket(bucket)
                server.admin.delete_bucket(Bucket=bucket)
                server.collect_garbage()

                added = new_size - old_size
                limit = 2 * added + 65536
                p_bytes = proj["wire_sent"] + proj["wire_received"]
                s_bytes = s["sent"] + s["received"]
                label = f"{size} MiB day"
                section.rows.append(Row(f"{label}: bytes on the wire", _size(s_bytes), _size(p_bytes),
                                        f"{s_bytes / p_bytes:,.1f}x",
                                        f"<= {_size(limit)} (2x batch + 64 KiB)", p_bytes <= limit))
                section.rows.append(Row(f"{label}: wall time", f"{s['seconds']:.2f} s",
                                        f"{proj['seconds'] * 1000:.0f} ms",
                                        f"{s['seconds'] / proj['seconds']:,.0f}x"))
                section.rows.append(Row(f"{label}: peak RSS", f"{s['hwm_kib'] / 1024:.0f} MiB",
                                        f"{proj['hwm_kib'] / 1024:.0f} MiB", "-", "<= 150 MiB",
                                        proj["hwm_kib"] <= 150 * 1024))
                section.notes.append(
                    f"{label} ({_size(old_size)}, {n} uploads; built and stored in {build_s:.1f} s): "
                    f"project path={proj['path']}, sent {_size(proj['wire_sent'])} / received "
                    f"{_size(proj['wire_received'])} on the wire (payload {_size(proj['sent'])} / "
                    f"{_size(proj['received'])}); seed sent {_size(s['sent'])} / received "
                    f"{_size(s['received'])}; the batch added {_size(added)} to the document"
                )
    finally:
        proxy.close()
    section.notes.append(
        "Wire bytes include HTTP headers. The seed's wall time includes starting Python and "
        "importing boto3 (it is a fresh process per fetch); the project's is the append alone. "
        "Existing uploads hold one long filler string per fetch, the cheapest case for the "
        "seed's json.loads / json.dumps. The seed's peak RSS is its own (ru_maxrss of a child "
        "started from a small launcher process, not from the bench)."
    )
    return section
