"""What every benchmark shares: a moto server process, a counting proxy, fetches, configs, /proc.

The moto server runs as its own process (``moto_server`` on a free 127.0.0.1 port) so its work
never competes with the measured code for the GIL; everything talks HTTP to it over loopback
with fake credentials.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import boto3
import pytz
from botocore.config import Config as BotoConfig

from uploader import daily
from uploader.fetchlog import encode_record

__all__ = [
    "FAKE_ENV",
    "ROOT",
    "SEED",
    "TZ",
    "BenchError",
    "CountingProxy",
    "MotoServer",
    "Row",
    "Section",
    "UploaderProcess",
    "bench_env",
    "cpu_seconds",
    "make_raw",
    "percentile",
    "record_size",
    "today",
    "verify_day",
    "vm_hwm_kib",
    "write_config",
]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SEED = Path(os.environ.get("SEED_LOGGER", ROOT.parent / "shared" / "baseline" / "seed_logger.py"))
TZ = pytz.timezone("America/New_York")
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
_UNSET_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Raised when a benchmark's own correctness check fails: its figures must not be used."""


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for every process of a benchmark: fake credentials, no real AWS config."""
    env = {k: v for k, v in os.environ.items() if k not in _UNSET_ENV}
    env.update(FAKE_ENV)
    env.update(extra)
    return env


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


def record_size(size: int) -> int:
    """The exact bytes of one record of nominal ``size`` as the project's writer writes it."""
    now = datetime.now(pytz.utc)
    doc = {"FETCH_HEADER": {"fetch_id": "x" * 12, "timestamp": "07/10/2025 04:15:00 PM EDT"},
           "RAW_API_DATA": make_raw(size, 1), "FETCH_FOOTER": {"total_matches": 5}}
    return len(encode_record("x" * 12, now, TZ, doc))


# -- moto and a byte-counting proxy -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class MotoServer:
    """``moto_server`` in its own process on a free loopback port; ``admin`` is a plain client."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
            env=bench_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.admin = client(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.admin.list_buckets()
                break
            except Exception:  # noqa: BLE001 - any failure here means "not up yet"
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError(f"moto_server did not start on {self.url}") from None
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def new_bucket(self, stem: str) -> str:
        name = f"{stem}-{uuid.uuid4().hex[:8]}"
        self.admin.create_bucket(Bucket=name)
        return name

    def empty_bucket(self, bucket: str) -> None:
        """Delete every object (and abandoned multipart upload) so moto frees the memory."""
        for page in self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                self.admin.delete_object(Bucket=bucket, Key=obj["Key"])
        for up in self.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            self.admin.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def client(url: str) -> Any:
    """A boto3 S3 client for set-up and inspection (path style, no checksums, long timeouts)."""
    os.environ.update(FAKE_ENV)
    for name in _UNSET_ENV:
        os.environ.pop(name, None)
    cfg = BotoConfig(region_name="us-east-1", s3={"addressing_style": "path"}, read_timeout=600,
                     request_checksum_calculation="when_required",
                     response_checksum_validation="when_required", retries={"max_attempts": 1})
    return boto3.client("s3", endpoint_url=url, config=cfg)


class CountingProxy:
    """A TCP proxy on loopback that counts the bytes a client sends and receives."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self.received = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def reset(self) -> None:
        with self._lock:
            self.sent = self.received = 0

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.sent, self.received

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()

    def _pump(self, down: socket.socket, up: socket.socket) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        socks = [down, up]
        try:
            while True:
                readable, _, _ = select.select(socks, [], [])
                for s in readable:
                    n = s.recv_into(buf)
                    if n == 0:
                        return
                    (up if s is down else down).sendall(view[:n])
                    with self._lock:
                        if s is down:
                            self.sent += n
                        else:
                            self.received += n
        except OSError:
            return
        finally:
            down.close()
            up.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


# -- configs and the service process ------------------------------------------------------------


def write_config(folder: Path, endpoint: str, bucket: str, prefix: str = "logs",
                 retry_interval_s: int = 30) -> Path:
    """A config.toml for ``uploader`` with the s3 backend on the bench's moto server."""
    folder.mkdir(parents=True, exist_ok=True)
    text = f"""[watch]
file = "data/all_api.json"
batch_size = 10

[day]
timezone = "America/New_York"

[spool]
dir = "data/spool"
retry_interval_s = {retry_interval_s}
max_backoff_s = 600

[storage]
backend = "s3"
prefix = "{prefix}"

[storage.s3]
bucket = "{bucket}"
endpoint_url = "{endpoint}"
region = "us-east-1"
addressing_style = "path"
"""
    path = folder / "config.toml"
    path.write_text(text)
    return path


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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise BenchError("uploader run did not exit within the timeout after SIGTERM") from None


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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a running process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


# -- verification -------------------------------------------------------------------------------


def verify_day(admin: Any, bucket: str, key: str, uploads: int, fetches: int) -> dict[str, Any]:
    """Read a day document back and check it: ``daily.verify`` clean, counts exactly as expected."""
    r = admin.get_object(Bucket=bucket, Key=key)
    doc: dict[str, Any] = json.loads(r["Body"].read())
    problems = daily.verify(doc, r.get("Metadata", {}))
    meta = doc["daily_metadata"]
    if meta["total_uploads_today"] != uploads:
        problems.append(f"{meta['total_uploads_today']} uploads, expected {uploads}")
    if meta["total_fetches_today"] != fetches:
        problems.append(f"{meta['total_fetches_today']} fetches, expected {fetches}")
    if problems:
        raise BenchError(f"{key} failed verification: " + "; ".join(problems[:5]))
    return doc
