#!/usr/bin/env python3
"""Chaos run: SIGKILL `uploader run` at random moments while S3 misbehaves; prove nothing is lost or doubled.

Pieces, all on 127.0.0.1:

- a real S3 server, moto's or Ceph RGW's (``--server``; ``s3servers.py`` starts it), reached only
  through ``faultproxy.FaultProxy``, which answers
  500 InternalError and 503 SlowDown, resets connections, stalls past the client's read timeout
  (before or after the server processed the request) and goes fully down for stretches;
- a writer process appending fetches through ``uploader.fetchlog.FetchWriter`` and keeping its
  own ledger (fetch id, day, matches); its clock runs fast from ``--span-hours`` ago to now, so
  the run crosses midnights (late batches, close-outs); now and then it appends a malformed
  record that must end up in quarantine;
- ``uploader run`` as a subprocess, SIGKILLed after a random time (mean ``--kill-interval``)
  and restarted at once.

Before the faults start, `uploader check` probes the server (as an operator does after
installing), so every restart uses the remembered findings and the run is spent on appends;
the probe under faults has its own test (tests/test_capabilities.py). At the end the writer
stops, faults stop, the service restarts cleanly and drains, and every
daily document is checked against the ledger. One summary line; exit 1 if anything is lost,
doubled, in the wrong day, miscounted, or a well-formed fetch is in quarantine.

    .venv/bin/python tests/rig/chaos.py --duration 1800 --seed 7 --kill-interval 4     # the long run
    .venv/bin/python tests/rig/chaos.py --duration 60 --server ceph                    # a quick look, on Ceph RGW

Importable: ``run(...)`` returns a ``Summary`` (the short test in tests/test_chaos.py uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
for _path in (str(REPO), str(TESTS)):  # the package, and the tests' folder that holds this rig
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytz
from helpers import stored_days, terminate, write_config

from rig.faultproxy import FAULT_KINDS, FaultProxy
from rig.s3servers import CephRGW, MotoServer, S3Server, client_env

TZ = "America/New_York"
PREFIX = "chaos"
BATCH_SIZE = 10


@dataclass
class Summary:
    seed: int
    server: str = "moto"
    bucket: str = ""
    seconds: float = 0.0
    fetches: int = 0
    junk: int = 0
    kills: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    passed: int = 0
    uploaded: int = 0
    left_in_file: int = 0
    lost: int = 0
    doubled: int = 0
    wrong_day: int = 0
    paths: dict[str, int] = field(default_factory=dict)  # appends per path, from the service log
    ids_read: int = 0  # days read whole to learn their batch ids (publish.listed_read)
    ids_recovered: int = 0  # lost answers whose ids were found without a read (publish.listed_recovered)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong_day == 0 and not self.problems

    def line(self) -> str:
        faults = ",".join(f"{k}:{self.faults.get(k, 0)}" for k in FAULT_KINDS)
        return (
            f"chaos: server={self.server} seed={self.seed} fetches={self.fetches} junk={self.junk} kills={self.kills} "
            f"faults={faults} requests_passed={self.passed} uploaded={self.uploaded} "
            f"left_in_file={self.left_in_file} lost={self.lost} doubled={self.doubled} "
            f"wrong_day={self.wrong_day} problems={len(self.problems)} "
            f"appends={','.join(f'{k}:{v}' for k, v in sorted(self.paths.items()))} "
            f"ids_read={self.ids_read} ids_recovered={self.ids_recovered} seconds={self.seconds:.0f}"
        )


# -- the writer process ------------------------------------------------------------------------


def writer_main(file: str, ledger: str, rate: float, seed: int, span_hours: float, duration: float,
                fetch_kib: float) -> None:
    """Append fetches (and now and then a malformed record) until SIGTERM; log each to the ledger."""
    from uploader.fetchlog import FetchWriter, append_bytes
    from uploader.stamps import day_of, format_stamp

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tz = pytz.timezone(TZ)
    rng = random.Random(seed)
    writer = FetchWriter(file, TZ)
    real_start = datetime.now(pytz.utc)
    virtual_start = real_start - timedelta(hours=span_hours)
    speed = span_hours * 3600 / max(duration, 1.0)
    started = time.monotonic()
    with open(ledger, "a", encoding="utf-8") as out:
        i = 0
        while not stop.is_set():
            elapsed = time.monotonic() - started
            instant = min(virtual_start + timedelta(seconds=elapsed * speed), datetime.now(pytz.utc))
            i += 1
            if rng.random() < 0.01:
                junk_id = f"junk-{seed}-{i}"
                stamp = format_stamp(instant, tz)
                append_bytes(file, f"=== FETCH START: {junk_id} | {stamp} ===\n{{\"not json\n"
                                   f"=== FETCH END: {junk_id} | {stamp} ===\n".encode())
                out.write(json.dumps({"junk": junk_id}) + "\n")
            else:
                matches = rng.randrange(0, 120)
                raw = {"i": i, "games": [{"id": g, "odds": round(rng.uniform(1, 9), 2)} for g in range(3)],
                       "pad": "p" * rng.randrange(0, max(1, int(2 * fetch_kib * 1024)))}
                fetch_id = writer.append(raw, total_matches=matches, fetch_id=f"f{seed}-{i:07d}", now=instant)
                out.write(json.dumps({"id": fetch_id, "day": day_of(instant, tz).isoformat(),
                                      "matches": matches}) + "\n")
            out.flush()
            if rate > 0:
                stop.wait(rng.expovariate(rate))


# -- orchestration -----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = client_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start_server(kind: str, work: Path) -> tuple[CephRGW | MotoServer, S3Server]:
    launcher: CephRGW | MotoServer = CephRGW() if kind == "ceph" else MotoServer(work / "moto.log")
    return launcher, launcher.start()


class _Service:
    """`uploader run` as a subprocess, its output appended to one log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.unexpected: list[str] = []

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uploader.cli", "run", "--config", str(self.config)],
                stdout=out, stderr=out, env=_env(), cwd=str(REPO))

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.unexpected.append(f"uploader run exited by itself with {self.proc.returncode}; see {self.log}")
            self.start()

    def wait_running(self, lock: Path, timeout: float = 60) -> bool:
        """Wait until this process holds the spool lock (its signal handlers are installed by then)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if lock.read_text().strip() == f"pid {self.proc.pid}":
                    return True
            except FileNotFoundError:
                pass
            time.sleep(0.05)  # polling interval of a deadline wait
        return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 120) -> int:
        assert self.proc is not None
        code = terminate(self.proc, timeout)
        return -9 if code is None else code


def _down_stretches(proxy: FaultProxy, rng: random.Random, every: float, stop: threading.Event) -> None:
    while not stop.wait(rng.uniform(every * 0.5, every * 1.5)):
        proxy.go_down()
        stop.wait(rng.uniform(1.0, 5.0))
        proxy.come_up()


def run(duration: float = 60.0, seed: int = 1, kill_interval: float = 2.0, rate: float = 20.0,
        server_kind: str = "moto", server: S3Server | None = None,
        fault_rate: float = 0.2, down_every: float = 15.0, span_hours: float = 30.0, fetch_kib: float = 0.75,
        workdir: Path | None = None, drain_timeout: float = 180.0,
        progress: Any = None, encryption: dict[str, Any] | None = None, https: bool = False,
        compression: str = "none") -> Summary:
    """One chaos run; see the module docstring. ``workdir`` keeps the files for inspection.

    ``server``: a running S3 server to use (a fresh bucket on it); else one of ``server_kind``
    is started for the run and stopped after it. ``encryption``: ``[storage.s3]`` keys for it
    (``sse_customer_key`` is written to a key file, mode 600); ``https``: the fault proxy speaks
    TLS to the server (its https endpoint), as Ceph RGW requires for any SSE; ``compression``:
    ``storage.compression`` (gzip days are read back as gunzip reads them).
    """
    say = progress or (lambda msg: None)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    summary = Summary(seed=seed)
    started = time.monotonic()
    launcher = None
    if server is None:
        launcher, server = _start_server(server_kind, work)
    summary.server = server.name
    bucket = summary.bucket = server.new_bucket("chaos")
    upstream = (server.host, urlsplit(server.https_endpoint).port or 443) if https and server.https_endpoint else None
    proxy = FaultProxy(upstream or (server.host, server.port), seed=seed, fault_rate=fault_rate,
                       kinds=("http500", "http503", "reset", "stall"),
                       upstream_ca=str(server.ca_path) if upstream else None)
    s3_settings, read_args = _encryption_settings(work, encryption or {})
    proxy.faults_on = False  # until `uploader check` has probed the server, as after an install
    stop_down = threading.Event()
    downs = threading.Thread(target=_down_stretches, args=(proxy, random.Random(seed + 1), down_every, stop_down),
                             daemon=True)
    config = write_config(work, s3=(proxy.url, bucket), watch={"batch_size": BATCH_SIZE}, day={"timezone": TZ},
                          spool={"retry_interval_s": 0.5}, storage={"prefix": PREFIX, "compression": compression},
                          storage__s3={"read_timeout_s": 2, **s3_settings})
    (work / "data").mkdir(exist_ok=True)
    ledger = work / "ledger.jsonl"
    service = _Service(config, work / "service.log")
    writer = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--writer", str(work / "data" / "all_api.json"),
         str(ledger), "--rate", str(rate), "--seed", str(seed), "--span-hours", str(span_hours),
         "--fetch-kib", str(fetch_kib),
         "--duration", str(duration)], env=_env())
    try:
        check = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(config)],
                               capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=120, check=False)
        if check.returncode != 0:
            raise RuntimeError(f"`uploader check` failed before the chaos: {check.stdout}{check.stderr}")
        proxy.faults_on = True
        service.start()
        downs.start()
        deadline = time.monotonic() + duration  # the chaos itself, after the check above
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 2 * kill_interval))  # the random moment of the next kill
            service.check_alive()
            service.kill()
            summary.kills += 1
            service.start()
            if summary.kills % 20 == 0:
                say(f"chaos: {summary.kills} kills, {time.monotonic() - started:.0f}s, faults {proxy.counts}")
        say("chaos: stopping writer and faults; draining")
        writer.send_signal(signal.SIGTERM)
        writer.wait(60)
        stop_down.set()
        downs.join()
        proxy.faults_on = False
        proxy.come_up()
        service.check_alive()
        service.kill()
        summary.kills += 1
        service.start()
        # Otherwise the old process's uploads can satisfy the drain check before the new one has
        # even installed its SIGTERM handler.
        if not service.wait_running(work / "data" / "spool" / "lock"):
            summary.problems.append("the final `uploader run` did not start")
        if not _drained(work, drain_timeout):
            summary.problems.append(f"spool did not drain within {drain_timeout}s")
        code = service.terminate()
        if code != 0:
            summary.problems.append(f"final `uploader run` exited {code} on SIGTERM")
        summary.problems.extend(service.unexpected)
        summary.faults = {k: proxy.counts[k] for k in FAULT_KINDS}
        summary.passed = proxy.counts["passed"]
        _check(work, server, server.client(https=upstream is not None), bucket, ledger, summary, read_args)
    finally:
        if writer.poll() is None:
            writer.kill()
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
        stop_down.set()
        proxy.close()
        if launcher is not None:
            launcher.stop()
    summary.seconds = time.monotonic() - started
    return summary


def _drained(work: Path, timeout: float) -> bool:
    """Wait until nothing is spooled or quarantined-unsent and fewer than a batch is in the file."""
    from uploader.local.records import Fetch, scan

    spool = work / "data" / "spool"
    tz = pytz.timezone(TZ)
    today = datetime.now(tz).date()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = (work / "data" / "all_api.json").read_bytes()
        except FileNotFoundError:
            data = b""
        fetches = [i for i in scan(data, tz, datetime.now(pytz.utc)).items if isinstance(i, Fetch)]
        busy = (any((spool / "batches").glob("*.json")) or any((spool / "quarantine").glob("*.bin"))
                or len(fetches) >= BATCH_SIZE or any(f.day < today for f in fetches)
                or (spool / "journal.json").exists())
        if not busy:
            return True
        time.sleep(0.2)  # polling interval of a deadline wait
    return False


def _encryption_settings(work: Path, encryption: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """([storage.s3] keys, the GET arguments that read what the service writes with them)."""
    settings = dict(encryption)
    key = settings.pop("sse_customer_key", None)
    if key is None:
        return settings, {}
    path = work / "sse-c.key"
    path.write_bytes(key)
    path.chmod(0o600)
    settings["sse_customer_key_file"] = str(path)
    return settings, {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}


def _check(work: Path, server: S3Server, s3: Any, bucket: str, ledger_path: Path, summary: Summary,
           read_args: dict[str, Any]) -> None:
    """Compare every daily document (read straight from the server with ``s3`` and ``read_args``,
    re-counted as it streams) with the writer's ledger."""

    from uploader.local.records import Fetch, scan

    tz = pytz.timezone(TZ)
    ledger: dict[str, dict[str, Any]] = {}
    junk: list[str] = []
    for line in ledger_path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "junk" in entry:
            junk.append(entry["junk"])
        else:
            ledger[entry["id"]] = entry
    summary.fetches, summary.junk = len(ledger), len(junk)
    seen: dict[str, list[str]] = defaultdict(list)
    for stored in stored_days(s3, bucket, PREFIX, **read_args):
        assert stored.day is not None  # stored_days reads day documents only
        day = stored.day.isoformat()
        summary.problems.extend(f"{day}: verify: {p}" for p in stored.problems)
        want_matches = sum(ledger[i]["matches"] * n for i, n in stored.fetch_ids.items() if i in ledger)
        if stored.meta.get("total_matches_today") != want_matches:
            summary.problems.append(f"{day}: total_matches_today={stored.meta.get('total_matches_today')}, "
                                    f"ledger says {want_matches}")
        for i, n in stored.fetch_ids.items():
            seen[i] += [day] * n
    quarantine_blobs = [s3.get_object(Bucket=bucket, Key=key, **read_args)["Body"].read()
                        for key in server.keys(bucket, f"{PREFIX}/quarantine/")]
    summary.uploaded = sum(len(v) for v in seen.values())
    left = scan((work / "data" / "all_api.json").read_bytes(), tz, datetime.now(pytz.utc)).items
    for item in left:
        if isinstance(item, Fetch):
            seen[item.fetch_id].append("file")
            summary.left_in_file += 1
    spool = work / "data" / "spool"
    quarantine_blobs += [q.read_bytes() for q in (spool / "quarantine").rglob("*.bin")]
    for fetch_id, entry in ledger.items():
        where = seen.get(fetch_id, [])
        if not where:
            summary.lost += 1
            summary.problems.append(f"lost: {fetch_id} ({entry['day']})")
        elif len(where) > 1:
            summary.doubled += 1
            summary.problems.append(f"doubled: {fetch_id} in {where}")
        elif where[0] not in ("file", entry["day"]):
            summary.wrong_day += 1
            summary.problems.append(f"wrong day: {fetch_id} of {entry['day']} in {where[0]}")
    for fetch_id in set(seen) - set(ledger):
        summary.problems.append(f"unknown fetch id in the documents: {fetch_id}")
    blob = b"\n".join(quarantine_blobs)
    for q in quarantine_blobs:
        for item in scan(q if q.endswith(b"\n") else q + b"\n", tz, datetime.now(pytz.utc)).items:
            if isinstance(item, Fetch):
                summary.problems.append(f"well-formed fetch {item.fetch_id} in quarantine")
    left_bytes = (work / "data" / "all_api.json").read_bytes()
    service_log = (work / "service.log").read_text(encoding="utf-8", errors="replace")
    for path in re.findall(r" upload day=\S+ .* path=(\w+)", service_log):
        summary.paths[path] = summary.paths.get(path, 0) + 1
    summary.ids_read = service_log.count("publish.listed_read ")
    summary.ids_recovered = service_log.count("publish.listed_recovered ")
    for bug in ("Traceback", "upload_worker_error"):
        if bug in service_log:
            summary.problems.append(f"{bug} in {work / 'service.log'}")
    for junk_id in junk:
        if junk_id.encode() not in blob and junk_id.encode() not in left_bytes:
            summary.problems.append(f"malformed record {junk_id} neither quarantined nor in the file")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of chaos before the drain (default 60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-interval", type=float, default=2.0, help="mean seconds between SIGKILLs (default 2)")
    ap.add_argument("--rate", type=float, default=20.0, help="fetches per second the writer aims at (default 20)")
    ap.add_argument("--fetch-kib", type=float, default=0.75,
                    help="mean fetch size; past ~12 KiB at the defaults the days pass 5 MiB, so appends "
                         "go server-side (default 0.75)")
    ap.add_argument("--fault-rate", type=float, default=0.2, help="share of S3 requests that get a fault (default 0.2)")
    ap.add_argument("--down-every", type=float, default=15.0, help="mean seconds between full outages (default 15)")
    ap.add_argument("--span-hours", type=float, default=30.0,
                    help="the writer's clock runs from this many hours ago to now (default 30)")
    ap.add_argument("--server", choices=("moto", "ceph"), default="moto",
                    help="the S3 server behind the fault proxy: moto or Ceph RGW, what Linode runs (default moto)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep all files here (default: a temp folder)")
    ap.add_argument("--compression", choices=("none", "gzip"), default="none", help="storage.compression (default none)")
    ap.add_argument("--writer", nargs=2, metavar=("FILE", "LEDGER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.writer:
        writer_main(args.writer[0], args.writer[1], args.rate, args.seed, args.span_hours, args.duration,
                    args.fetch_kib)
        return 0
    summary = run(duration=args.duration, seed=args.seed, kill_interval=args.kill_interval, rate=args.rate,
                  server_kind=args.server, fault_rate=args.fault_rate, down_every=args.down_every,
                  span_hours=args.span_hours, fetch_kib=args.fetch_kib, compression=args.compression,
                  workdir=args.workdir, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for p in summary.problems[:50]:
        print(f"problem: {p}", file=sys.stderr)
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
