"""What every benchmark shares: the S3 servers, fetches, the service process, checks of the days.

The servers come from ``tests/rig/s3servers.py``, each started once per run: moto's server and a
private Ceph RGW cluster (the server Linode Object Storage runs), each in its own processes on
127.0.0.1, so their work never competes with the measured code for the GIL; everything talks
HTTP to them over loopback with the fake keys ``client_env`` gives. The rest comes from the test
suite: configs, day documents read back and ``/proc`` from ``tests/helpers.py``, bytes on the
wire from its fault proxy (``tests/rig/faultproxy.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

import boto3
import pytz
from botocore.config import Config as BotoConfig

from tests.helpers import (
    ProcState,
    StoredDay,
    cpu_seconds,
    proc_state,
    read_day,
    status_kib,
    stored_days,
    terminate,
)
from tests.rig.s3servers import ACCESS_KEY, SECRET_KEY, CephRGW, MotoServer, S3Server, client_env
from uploader import daily
from uploader.fetchlog import FetchWriter
from uploader.local.records import encode_record
from uploader.publish.listed import ListedIndex

__all__ = [
    "Background",
    "ROOT",
    "SEED",
    "TZ",
    "UPLOAD_LINE",
    "BenchError",
    "BenchServer",
    "Measured",
    "OsdWatch",
    "ProcState",
    "Row",
    "Section",
    "UploaderProcess",
    "bench_env",
    "cpu_over",
    "cpu_seconds",
    "make_raw",
    "old_id",
    "percentile",
    "prefill",
    "proc_state",
    "record_size",
    "remember_old_ids",
    "run_measured",
    "seed_env",
    "seed_stored",
    "start_ceph",
    "start_moto",
    "stored_fetch_ids",
    "today",
    "verify_day",
    "vm_hwm_kib",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(__file__).resolve().with_name("seed_logger.py")  # the design this project replaces
TZ = pytz.timezone("America/New_York")


class BenchError(Exception):
    """Raised when a benchmark's own correctness check fails: its figures must not be used."""


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for every process of a benchmark: fake credentials, no real AWS config."""
    env = client_env()
    env.update(extra)
    return env


def seed_env(endpoint: str, bucket: str, local: Path) -> dict[str, str]:
    """The environment of a seed call: its bucket and local file, the server's endpoint.

    boto3 >= 1.36 sends checksums with every PUT by default, which Ceph RGW refuses
    (XAmzContentSHA256Mismatch): the seed gets the setting an operator would have had to
    give it on Linode, on every server alike, so both sides do the same work.
    """
    return bench_env(SEED_LOCAL_FILE=str(local), SEED_BUCKET=bucket, SEED_PREFIX="seed",
                     AWS_ENDPOINT_URL=endpoint, AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
                     AWS_RESPONSE_CHECKSUM_VALIDATION="when_required")


def today() -> date:
    """Today in the configured zone (what the seed and the writer stamp fetches with)."""
    return datetime.now(TZ).date()


# -- rows of the result table -------------------------------------------------------------------


@dataclass
class Row:
    """One figure: the seed's value beside the project's, with the target and whether it was met."""

    metric: str
    seed: str = "-"
    project: str = "-"
    ratio: str = "-"
    target: str = "-"
    met: bool | None = None


@dataclass
class Section:
    """One benchmark's results: rows for the table, notes for BENCHMARKS.md."""

    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


# -- fetches ------------------------------------------------------------------------------------


def make_raw(size: int, n: int) -> dict[str, Any]:
    """RAW_API_DATA for fetch number ``n`` whose bookended record is about ``size`` bytes."""
    events = []
    one = {"id": 0, "sport": "soccer", "league": "EPL", "home": "Arsenal", "away": "Chelsea",
           "start": "2025-07-10T20:00:00Z", "odds": {"home": 2.1, "draw": 3.4, "away": 3.6},
           "bookmaker": "example", "updated": "2025-07-10T16:15:00Z"}
    entry_bytes = len(json.dumps({**one, "id": 10**6})) + 2
    for i in range(max(0, (size - 300) // entry_bytes)):
        events.append({**one, "id": n * 100_000 + i})
    return {"fetch_no": n, "events": events}


def prefill(local: Path, n: int, size: int, tag: str) -> list[str]:
    """Append ``n`` fetches to ``local`` before the service starts, as a pipeline left them."""
    local.parent.mkdir(parents=True, exist_ok=True)
    writer = FetchWriter(local, "America/New_York")
    return [writer.append(make_raw(size, i), 5, fetch_id=f"{tag}{i:06d}") for i in range(n)]


def record_size(size: int) -> int:
    """The exact bytes of one record of nominal ``size`` as the project's writer writes it."""
    now = datetime.now(pytz.utc)
    doc = {"FETCH_HEADER": {"fetch_id": "x" * 12, "timestamp": "07/10/2025 04:15:00 PM EDT"},
           "RAW_API_DATA": make_raw(size, 1), "FETCH_FOOTER": {"total_matches": 5}}
    return len(encode_record("x" * 12, now, TZ, doc))


# -- the S3 servers --------------------------------------------------------------------------------


@dataclass
class BenchServer:
    """One S3 server of a run (moto or Ceph RGW, from ``tests/rig/s3servers.py``), started once."""

    name: str  # "moto" or "ceph", as --server says
    title: str  # the report's column: "moto" or "Ceph RGW"
    version: str
    s3: S3Server
    pids: list[int]  # the server's processes, for CPU figures
    conf: Path | None = None  # Ceph's ceph.conf (None for moto)
    osd_pid: int = 0  # Ceph's OSD, which holds the data in RAM (0 for moto)
    gc_wait_s: str = ""  # Ceph: rgw gc obj min wait, as its ceph.conf says
    gc_period_s: str = ""  # Ceph: rgw gc processor period
    admin: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.admin = client(self.s3.endpoint)

    @property
    def url(self) -> str:
        return self.s3.endpoint

    @property
    def port(self) -> int:
        return self.s3.port

    def new_bucket(self, stem: str) -> str:
        return self.s3.new_bucket(stem)

    def empty_bucket(self, bucket: str) -> None:
        """Delete every object (and abandoned multipart upload) so the server frees the memory."""
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                self.admin.delete_object(Bucket=bucket, Key=obj["Key"])
        for up in self.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.admin.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])

    def cpu_seconds(self) -> float:
        """CPU used so far by all of the server's processes."""
        return sum(cpu_seconds(pid) for pid in self.pids)

    def collect_garbage(self) -> None:
        """Reclaim the space of deleted and replaced objects now (Ceph; a no-op on moto).

        RGW frees a replaced object's data only in its garbage collection, some seconds later;
        a benchmark calls this between measurements so that one's garbage does not fill the
        OSD or cost CPU in the next one's window.
        """
        if self.conf is None:
            return
        done = subprocess.run(
            ["radosgw-admin", "-c", str(self.conf), "-n", "client.admin", "gc", "process", "--include-all"],
            capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise BenchError(f"radosgw-admin gc process failed: {(done.stderr or done.stdout).strip()[-300:]}")

    def osd_used(self) -> tuple[int, int]:
        """Ceph only: (bytes the OSD holds, its capacity), from its admin socket.

        Read straight from the socket (no ``ceph`` program, no mgr, which this cluster has
        not): cheap enough to sample during a measurement.
        """
        if self.conf is None:
            raise BenchError("osd_used is for Ceph only")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.conf.parent / "run" / "ceph-osd.0.asok"))
            sock.sendall(json.dumps({"prefix": "perf dump", "logger": "osd"}).encode() + b"\0")
            answer = bytearray()
            while chunk := sock.recv(65536):
                answer += chunk
        stats = json.loads(answer[4:])["osd"]  # after a 4-byte length
        return int(stats["stat_bytes_used"]), int(stats["stat_bytes"])


class OsdWatch:
    """Ceph only: the most the OSD held over a window.

    The OSD keeps every object in RAM (memstore), replaced objects included until RGW's
    garbage collection deletes them; near its capacity the OSD refuses writes (OSD full).
    Sampled every 0.5 s from the OSD's admin socket (well under a millisecond each).
    """

    def __init__(self, server: BenchServer) -> None:
        self.server = server
        self.peak_used = 0
        self.capacity = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="osd-watch")

    def _sample(self) -> None:
        while True:
            try:
                used, self.capacity = self.server.osd_used()
                self.peak_used = max(self.peak_used, used)
            except (OSError, ValueError, KeyError, BenchError):
                pass  # a missed sample; the OSD's own death shows in the benchmark
            if self._stop.wait(0.5):
                return

    def __enter__(self) -> Self:
        if self.server.conf is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def start_moto() -> tuple[BenchServer, MotoServer]:
    """moto's server in its own process (so its work never competes with ours for the GIL)."""
    launcher = MotoServer()
    s3 = launcher.start()
    assert launcher.proc is not None
    return BenchServer("moto", "moto", f"moto {metadata.version('moto')}", s3, [launcher.proc.pid]), launcher


def start_ceph(memstore_bytes: int) -> tuple[BenchServer, CephRGW]:
    """A private Ceph cluster with radosgw; raises ``ServerUnavailable`` saying why it cannot start."""
    launcher = CephRGW(memstore_bytes=memstore_bytes)
    s3 = launcher.start()
    assert launcher.base is not None
    pids = {name: launcher.procs[name].pid for name in ("mon", "osd", "rgw")}
    out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"ceph version (\S+)", out)
    version = f"Ceph RGW {m.group(1) if m else '(unknown version)'}"
    conf = launcher.base / "ceph.conf"
    settings = {}
    for line in conf.read_text().splitlines():
        name, _, value = line.partition("=")
        settings[name.strip()] = value.strip()
    server = BenchServer("ceph", "Ceph RGW", version, s3, list(pids.values()), conf=conf,
                         osd_pid=pids["osd"], gc_wait_s=settings.get("rgw gc obj min wait", "?"),
                         gc_period_s=settings.get("rgw gc processor period", "?"))
    return server, launcher


def client(url: str) -> Any:
    """A boto3 S3 client for set-up and inspection (path style, no checksums, long timeouts)."""
    cfg = BotoConfig(region_name="us-east-1", s3={"addressing_style": "path"}, read_timeout=600,
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required", retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, config=cfg)


# -- the service process -----------------------------------------------------------------------


# The service's log line for one append: the day, batches and fetches stored now, the path taken,
# the tries it took (whichever module logs it).
UPLOAD_LINE = re.compile(r" upload day=(?P<day>\S+) batches=(?P<batches>\d+) fetches=(?P<fetches>\d+) "
                         r".* path=(?P<path>\w+) .*attempts=(?P<attempts>\d+)")


class UploaderProcess:
    """``uploader run`` as a child process; its log lines arrive with the time they were read."""

    def __init__(self, config: Path, *, log_level: str = "INFO") -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uploader.cli", "run", "--config", str(config), "--log-level", log_level],
            env=bench_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, cwd=str(ROOT),
        )
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self.listeners: list[Callable[[float, str], None]] = []
        threading.Thread(target=self._read, daemon=True, name="uploader-stderr").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            at = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            for listener in list(self.listeners):
                listener(at, line)
            with self._cond:
                self.lines.append((at, line))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0, start: int = 0) -> tuple[int, float, str]:
        """Wait for a log line matching ``pattern``; return its index, arrival time and text."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    at, line = self.lines[i]
                    if rx.search(line):
                        return i, at, line
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(line for _, line in self.lines[-10:])
                    raise BenchError(f"uploader run: no log line matching {pattern!r} in time:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def errors(self) -> list[str]:
        """Log lines at WARNING or above (a benchmark run should have none)."""
        with self._cond:
            return [line for _, line in self.lines if re.search(r" (WARNING|ERROR|CRITICAL) ", line)]

    def stop(self, timeout: float = 120.0) -> int:
        code = terminate(self.proc, timeout)
        if code is None:
            raise BenchError("uploader run did not exit within the timeout after SIGTERM")
        return code


# Spawns the command given in argv[2:] with stdout and stderr into the file argv[1], waits for it,
# and prints its wall time, exit code and peak RSS. A small process of its own: the peak RSS the
# kernel reports for a child (ru_maxrss) includes that of the process it was spawned from.
_LAUNCH = (
    "import json, os, sys, time\n"
    "out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "started = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=[\n"
    "    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),\n"
    "    (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(json.dumps({'seconds': time.perf_counter() - started, 'hwm_kib': usage.ru_maxrss,\n"
    "                  'code': os.waitstatus_to_exitcode(status)}), flush=True)\n"
)


@dataclass(frozen=True)
class Measured:
    """A one-shot command's run: exit code, wall time, peak RSS (its own) and what it printed."""

    code: int
    seconds: float
    hwm_kib: int
    output: str


def run_measured(args: list[str], output: Path, timeout: float = 3600.0) -> Measured:
    """Run ``python args`` (e.g. ``["-m", "uploader.cli", "replay", ...]``) from the repo, measured.

    The command starts from a small launcher process, so its peak RSS is its own and not the
    bench's; its stdout and stderr go to ``output`` (read back into ``Measured.output``). The
    wall time includes starting Python and importing the uploader, as a person running it sees.
    """
    done = subprocess.run([sys.executable, "-c", _LAUNCH, str(output), sys.executable, *args],
                          env=bench_env(), cwd=str(ROOT), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise BenchError(f"the launcher of {args[:3]} failed: {done.stderr.strip()[-300:]}")
    result = json.loads(done.stdout)
    return Measured(result["code"], result["seconds"], result["hwm_kib"],
                    output.read_text(encoding="utf-8", errors="replace"))


@contextmanager
def running_uploader(config: Path) -> Iterator[UploaderProcess]:
    """Start ``uploader run``, wait until it serves, and stop it (SIGTERM, exit 0) afterwards."""
    proc = UploaderProcess(config)
    try:
        proc.wait_for(r"service_started", timeout=60)
        yield proc
    finally:
        code = proc.stop()
        if code != 0:
            raise BenchError(f"uploader run exited {code}")


# -- /proc ---------------------------------------------------------------------------------------


def cpu_over(pid: int, seconds: float) -> tuple[float, float]:
    """CPU seconds (utime + stime) a process uses over the next ``seconds``, and the window measured."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return cpu_seconds(pid) - before, time.monotonic() - started


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a running process, in KiB."""
    return status_kib(pid, "VmHWM")


# -- verification -------------------------------------------------------------------------------


def verify_day(admin: Any, bucket: str, key: str, uploads: int, fetches: int) -> int:
    """Read a day document back as it streams (``tests.helpers.read_day``) and check it: sound,
    with exactly ``uploads`` uploads of ``fetches`` fetches. Returns its size in bytes."""
    return _checked(read_day(admin, bucket, key), uploads, fetches).size


def stored_fetch_ids(admin: Any, bucket: str, prefix: str) -> Counter[str]:
    """How many times each fetch id is stored, over every day document under ``prefix``.

    Each document must be sound; any day counts, so a run across midnight is checked whole.
    """
    ids: Counter[str] = Counter()
    for day in stored_days(admin, bucket, prefix):
        ids.update(_checked(day).fetch_ids)
    return ids


def _checked(day: StoredDay, uploads: int | None = None, fetches: int | None = None) -> StoredDay:
    problems = list(day.problems)
    if uploads is not None and day.uploads != uploads:
        problems.append(f"{day.uploads} uploads, expected {uploads}")
    if fetches is not None and day.fetches != fetches:
        problems.append(f"{day.fetches} fetches, expected {fetches}")
    if problems:
        raise BenchError(f"{day.key} failed verification: " + "; ".join(problems[:5]))
    return day


def seed_stored(admin: Any, bucket: str) -> tuple[int, int]:
    """Uploads and fetches in the seed's day document (prefix ``seed``, as ``seed_env`` sets)."""
    doc = json.loads(admin.get_object(Bucket=bucket, Key=daily.day_key("seed", today()))["Body"].read())
    return len(doc["uploads"]), sum(len(u["fetch_data"]) for u in doc["uploads"])


def old_id(upload: int) -> str:
    """The batch id of the ``upload``-th upload of the days benchmarks 3 and 12 build."""
    return hashlib.sha256(f"old-{upload}".encode()).hexdigest()[:32]


def remember_old_ids(folder: Path, key: str, uploads: int) -> None:
    """Keep the ids of such a day of ``uploads`` uploads in ``folder``, as the service would have."""
    ListedIndex(folder).remember(key, daily.ListedIds(old_id(u) for u in range(uploads)))


class Background:
    """A daemon thread running ``_run`` while a ``with`` block lasts: ``_stop`` is set at its end,
    and the thread joined."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
