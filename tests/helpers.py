"""Shared test helpers: waiting on conditions, reading spools, building records, configs, day
documents read back."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import pytz
from prometheus_client.parser import text_string_to_metric_families

from uploader import daily
from uploader.daily.verifier import Verifier
from uploader.local.batch import Batch
from uploader.local.records import encode_record
from uploader.local.spool import Spool
from uploader.s3_config import CustomerKey, Encryption, SseMode
from uploader.store import Store
from uploader.store.directory import DirectoryStore
from uploader.store.s3 import S3Store

if TYPE_CHECKING:  # the benchmarks import this module without the tests' folder on sys.path
    from rig.s3servers import S3Server

T = TypeVar("T")
NY = pytz.timezone("America/New_York")
SERVERS = ("moto", "ceph")  # the real S3 servers every S3 test runs on (conftest starts them)


REPO = Path(__file__).resolve().parent.parent


def uploader(*args: str, timeout: float = 180, **kw: Any) -> subprocess.CompletedProcess[str]:
    """One `uploader` command as a user runs it, from this tree (stdout and stderr captured
    unless ``stdout`` is given)."""
    kw.setdefault("capture_output", "stdout" not in kw)
    if "stdout" in kw:
        kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("cwd", REPO)
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args], text=True, timeout=timeout, check=False,
                          **kw)


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval of a deadline wait, not synchronisation by sleep
        delay = min(delay * 2, 0.1)


def record(fetch_id: str, when: datetime, matches: int = 3, raw: Any = None, tz: Any = NY) -> bytes:
    """The bytes the pipeline's writer produces for one fetch."""
    doc = {
        "FETCH_HEADER": {"fetch_id": fetch_id},
        "RAW_API_DATA": raw if raw is not None else {"games": [fetch_id]},
        "FETCH_FOOTER": {"total_matches": matches},
    }
    return encode_record(fetch_id, when, tz, doc)


def spooled(spool: Spool) -> list[Batch]:
    """Every committed batch in the spool, oldest first."""
    return [e.load() for e in spool.pending_batches()]


def spooled_ids(spool_dir: Path) -> list[str]:
    """Fetch ids of every committed batch in a spool folder, in seq order (duplicates kept)."""
    ids: list[str] = []
    for p in sorted((spool_dir / "batches").glob("*.json")):
        ids.extend(Batch.from_json(p.read_bytes()).fetch_ids)
    return ids


def write_config(tmp_path: Path, *, s3: tuple[str, str] | None = None, quick: bool = True,
                 **sections: dict[str, Any]) -> Path:
    """A config.toml under tmp_path; ``s3`` = (endpoint_url, bucket) selects the s3 backend.

    ``quick`` (the tests'): retries after 1-2 s, one S3 attempt with short timeouts, no metrics
    port. ``quick=False`` leaves those at the product's defaults, as the benchmarks measure it.
    ``sections`` add or override keys, ``storage__s3=`` for ``[storage.s3]``.
    """
    body: dict[str, dict[str, Any]] = {
        "watch": {"file": "data/all_api.json"},
        "spool": {"dir": "data/spool"},
        "storage": {"backend": "directory", "prefix": "logs"},
        "storage.directory": {"path": "data/bucket"},
    }
    if quick:
        body["spool"].update(retry_interval_s=1, max_backoff_s=2)
        # Off unless a test asks: a fixed port would collide between services and test runs.
        body["metrics"] = {"listen": ""}
    if s3:
        body["storage"]["backend"] = "s3"
        body["storage.s3"] = {"endpoint_url": s3[0], "bucket": s3[1], "region": "us-east-1",
                              "addressing_style": "path"}
        if quick:
            body["storage.s3"].update(max_attempts=1, connect_timeout_s=1, read_timeout_s=5)
    return _write_toml(tmp_path, body, sections)


def _write_toml(tmp_path: Path, body: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]]) -> Path:
    """``tmp_path/config.toml`` of ``body``'s tables, with ``sections`` (``a__b`` for ``[a.b]``) added or overriding."""
    for name, values in sections.items():
        body.setdefault(name.replace("__", "."), {}).update(values)
    lines = []
    for name, values in body.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in values.items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_streams_config(tmp_path: Path, streams: dict[str, list[str]], destinations: dict[str, dict[str, Any]],
                         **sections: dict[str, Any]) -> Path:
    """A config.toml with [streams.NAME] (file data/NAME.json, spool data/spool/NAME, shipping to
    the destinations listed) and [destinations.NAME] tables: ``{"backend": "directory", "path":
    P}``, or ``{"backend": "s3", "endpoint": URL, "bucket": B}`` with the tests' quick settings."""
    body: dict[str, dict[str, Any]] = {"spool": {"retry_interval_s": 1, "max_backoff_s": 2}, "metrics": {"listen": ""}}
    for name, dest in destinations.items():
        if dest["backend"] == "directory":
            body[f"destinations.{name}"] = {"backend": "directory"}
            body[f"destinations.{name}.directory"] = {"path": dest["path"]}
        else:
            body[f"destinations.{name}"] = {"backend": "s3"}
            body[f"destinations.{name}.s3"] = {
                "endpoint_url": dest["endpoint"], "bucket": dest["bucket"], "region": "us-east-1",
                "addressing_style": "path", "max_attempts": 1, "connect_timeout_s": 1, "read_timeout_s": 5}
    for name, dests in streams.items():
        body[f"streams.{name}"] = {"file": f"data/{name}.json", "spool": f"data/spool/{name}", "destinations": dests}
    return _write_toml(tmp_path, body, sections)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample /metrics serves, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, "not answering"


class FakeClock:
    """An injectable clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def terminate(proc: subprocess.Popen[Any], timeout: float = 120.0) -> int | None:
    """SIGTERM (unless it has exited) and wait; its exit code, or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


# -- /proc: what a running process costs and holds (resource checks read these, never clocks) --

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def status_kib(pid: int, name: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise LookupError(f"no {name} in /proc/{pid}/status")


@dataclass(frozen=True)
class ProcState:
    """What a long-running process holds at one moment: resident memory, open fds, threads."""

    rss_kib: int
    fds: int
    threads: int


def proc_state(pid: int) -> ProcState:
    """VmRSS from /proc/PID/status, entries of /proc/PID/fd and /proc/PID/task."""
    return ProcState(status_kib(pid, "VmRSS"), len(os.listdir(f"/proc/{pid}/fd")),
                     len(os.listdir(f"/proc/{pid}/task")))


def wakeups(pid: int) -> dict[int, int]:
    """Voluntary context switches of each thread so far (/proc/PID/task/*/status): one each time
    the thread went to sleep, so one that sleeps until there is work adds none while nothing
    happens. Preemption (the other kind) depends on the machine's load, and is left out."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            lines = Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        out[int(tid)] = sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches:"))
    return out


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` on a read-only bind mount of itself, for as long as the block runs (skips the
    test where it cannot mount: it needs root and mount(8))."""
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "--bind", folder, folder], capture_output=True).returncode:
        pytest.skip("cannot bind-mount here (needs root and mount)")
    try:
        remount = subprocess.run([mount, "-o", "remount,ro,bind", folder], capture_output=True)
        if remount.returncode:
            pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
        yield folder
    finally:
        subprocess.run(["umount", folder], check=True)


# -- S3 stores and batches as the tests make them ------------------------------------------------


def make_s3_store(server: S3Server | str, bucket: str, **kw: Any) -> S3Store:
    """The production S3 store on a test server (or any endpoint URL), as the tests configure it."""
    endpoint = server if isinstance(server, str) else server.endpoint
    options: dict[str, Any] = {"region": "us-east-1", "addressing_style": "path", "max_attempts": 2,
                               "prefix": "logs"}
    options.update(kw)
    return S3Store(bucket, endpoint_url=endpoint, **options)


def store_factory_for(request: Any, tmp_path: Path) -> Callable[[], Store]:
    """Fresh Store instances on one shared bucket of the backend ``request.param`` names: the
    directory, a server of SERVERS, or "ceph-sse-c", Ceph RGW as Linode is used locked down
    (https, SSE-C)."""
    if request.param == "directory":
        return lambda: DirectoryStore(tmp_path / "bucket")
    if request.param == "ceph-sse-c":
        ceph: S3Server = request.getfixturevalue("ceph_server")
        key = CustomerKey(Path("/test/sse-c.key"), b"uploader-contract-sse-c-key-32by")
        name = ceph.new_bucket()
        return lambda: make_s3_store(str(ceph.https_endpoint), name, ca_bundle=str(ceph.ca_path),
                                     encryption=Encryption(SseMode.CUSTOMER, customer_key=key))
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    name = server.new_bucket()
    return lambda: make_s3_store(server, name)


def build_batch(
    seq: int,
    day: date = date(2025, 7, 10),
    fetches: int = 10,
    matches_each: int = 5,
    pad: int = 0,
    batch_id: str | None = None,
) -> Batch:
    """A batch of ``fetches`` realistic fetches; ``pad`` bytes of filler per fetch make it big."""
    fetch_list = [
        {
            "FETCH_HEADER": {"fetch_id": f"f-{seq}-{i}", "timestamp": "07/10/2025 04:15:00 PM EDT"},
            "RAW_API_DATA": {"events": [{"id": i, "odds": 1.5}], "filler": "x" * pad},
            "FETCH_FOOTER": {"total_matches": matches_each},
        }
        for i in range(fetches)
    ]
    return Batch.of(
        batch_id=batch_id or hashlib.sha256(f"{day}-{seq}".encode()).hexdigest(),
        seq=seq,
        day=day,
        cut_at="07/10/2025 04:15:00 PM EDT",
        fetches=fetch_list,
        matches=matches_each * fetches,
        fetch_ids=[f"f-{seq}-{i}" for i in range(fetches)],
    )


# -- day documents as stored, re-counted as they stream back -------------------------------------

# The day in a day document's key, whatever its prefix and its stream's document name
# (``daily.day_key``): the YYYY-MM-DD in the key's last part, which ends in .json (.json.gz gzip).
_KEY_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})[^/]*\.json(?:\.gz)?$")


@dataclass
class StoredDay:
    """One stored day document, re-counted by ``read_day``."""

    key: str
    day: date | None  # the day its key names (None: not a day document's key)
    size: int  # bytes
    uploads: int
    fetches: int
    meta: dict[str, Any]  # its daily_metadata ({} if unreadable)
    fetch_ids: Counter[str]  # how many times each fetch id is stored ("" for a fetch without one)
    problems: list[str]  # ``daily.verifier.Verifier``'s and the layout's; [] means sound


def read_day(client: Any, bucket: str, key: str, **get_args: Any) -> StoredDay:
    """Read a day document back with a boto3 client and re-count it as it streams (bounded
    memory: days reach GiBs).

    The project writes one upload per line (``daily.serialize``), so each line is parsed on its
    own (the C decoder, many times faster than the event-by-event ``daily.reading``) and fed to
    ``daily.verifier.Verifier``; the lines around them must be the layout's. The metadata's date must be
    the day the key names.
    """
    found = _KEY_DAY.search(key)
    day = date.fromisoformat(found[1]) if found else None
    r = client.get_object(Bucket=bucket, Key=key, **get_args)  # get_args: an SSE-C key, say
    checker = Verifier()
    ids: Counter[str] = Counter()
    problems: list[str] = []
    trailer: list[bytes] = []
    last_comma = True
    try:
        # A gzip day (.json.gz) is read as gunzip reads it: its members' contents, concatenated.
        lines = ((line.rstrip(b"\n") for line in gzip.GzipFile(fileobj=r["Body"])) if key.endswith(".gz")
                 else r["Body"].iter_lines(chunk_size=1 << 20))
        if next(lines, b"") != daily.HEAD:
            problems.append("does not start with the layout's first line")
            lines = iter(())
        for number, line in enumerate(lines, start=2):
            if trailer or line == b"],":
                trailer.append(line)
                continue
            if not last_comma:
                problems.append(f"no comma after upload {checker.uploads}")
            last_comma = line.endswith(b",")
            try:
                upload = json.loads(line[:-1] if last_comma else line)
            except ValueError:
                problems.append(f"line {number} is not JSON ({len(line)} bytes)")
                continue
            checker.add(upload)
            if isinstance(upload, dict) and isinstance(upload.get("fetch_data"), list):
                ids.update(daily.fetch_id_of(f) or "" for f in upload["fetch_data"])
    finally:
        r["Body"].close()
    if last_comma and checker.uploads:
        problems.append("a comma after the last upload")
    try:
        meta = json.loads(b"{" + b"\n".join(trailer[1:]))["daily_metadata"]
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"its daily_metadata does not parse: {exc!r}")
        meta = None
    problems += checker.finish(meta, r.get("Metadata", {}), day)
    return StoredDay(key, day, int(r["ContentLength"]), checker.uploads, checker.fetches,
                     meta if isinstance(meta, dict) else {}, ids, problems)


def stored_days(client: Any, bucket: str, prefix: str, **get_args: Any) -> Iterator[StoredDay]:
    """``read_day`` of each day document under ``prefix``, one at a time, in key order."""
    folder = prefix.strip("/")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder + "/"):
        for obj in page.get("Contents", []):
            if obj["Key"].rpartition("/")[0] == folder and _KEY_DAY.search(obj["Key"]):
                yield read_day(client, bucket, obj["Key"], **get_args)
