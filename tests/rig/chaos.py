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

With ``--streams N`` (N > 1) one service runs N streams (``[streams.s1]`` ...), each with its
own file, spool, prefix, writer and ledger, and each ships to two destinations: ``ceph`` on Ceph
RGW and ``moto`` on moto, each behind a fault proxy of its own (its own fault draws and down
stretches). Every (stream, destination) pair is then checked against the stream's ledger.

Before the faults start, `uploader check` probes the server (as an operator does after
installing), so every restart uses the remembered findings and the run is spent on appends;
the probe under faults has its own test (tests/test_capabilities.py). At the end the writer
stops, faults stop, the service restarts cleanly and drains, and every
daily document is checked against the ledger. One summary line; exit 1 if anything is lost,
doubled, in the wrong day, miscounted, or a well-formed fetch is in quarantine.

    .venv/bin/python tests/rig/chaos.py --duration 1800 --seed 7 --kill-interval 4     # the long run
    .venv/bin/python tests/rig/chaos.py --duration 60 --server ceph                    # a quick look, on Ceph RGW
    .venv/bin/python tests/rig/chaos.py --duration 60 --streams 2                      # 2 streams x (Ceph RGW, moto)

Importable: ``run(...)`` returns a ``Summary`` (the short tests in tests/test_chaos.py use it).
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
from contextlib import ExitStack
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
from helpers import stored_days, terminate, write_config, write_streams_config

from rig.faultproxy import FAULT_KINDS, FaultProxy
from rig.s3servers import CephRGW, MotoServer, S3Server, client_env

TZ = "America/New_York"
PREFIX = "chaos"
BATCH_SIZE = 10


@dataclass
class PairResult:
    """One stream in one destination, checked against the stream's ledger."""

    fetches: int = 0  # in the stream's ledger
    uploaded: int = 0  # copies in this destination's day documents
    left_in_file: int = 0
    lost: int = 0
    doubled: int = 0
    wrong_day: int = 0

    def line(self, label: str) -> str:
        return (f"{label} fetches={self.fetches} uploaded={self.uploaded} left_in_file={self.left_in_file} "
                f"lost={self.lost} doubled={self.doubled} wrong_day={self.wrong_day}")


@dataclass
class Summary:
    """A run's figures. With several streams or destinations, the totals add up the pairs
    (``uploaded`` counts a fetch once per destination), ``faults`` every proxy's."""

    seed: int
    server: str = "moto"
    bucket: str = ""  # the first destination's
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
    pairs: dict[str, PairResult] = field(default_factory=dict)  # "stream/destination" -> its result
    proxy_faults: dict[str, dict[str, int]] = field(default_factory=dict)  # destination -> its proxy's faults

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.wrong_day == 0 and not self.problems

    def line(self) -> str:
        text = (
            f"chaos: server={self.server} seed={self.seed} fetches={self.fetches} junk={self.junk} kills={self.kills} "
            f"faults={_faults(self.faults)} requests_passed={self.passed} uploaded={self.uploaded} "
            f"left_in_file={self.left_in_file} lost={self.lost} doubled={self.doubled} "
            f"wrong_day={self.wrong_day} problems={len(self.problems)} "
            f"appends={','.join(f'{k}:{v}' for k, v in sorted(self.paths.items()))} "
            f"ids_read={self.ids_read} ids_recovered={self.ids_recovered} seconds={self.seconds:.0f}"
        )
        if len(self.pairs) <= 1:
            return text
        proxies = " ".join(f"{name}:faults={_faults(counts)}" for name, counts in self.proxy_faults.items())
        return " | ".join([text, proxies, *(pair.line(label) for label, pair in self.pairs.items())])


def _faults(counts: dict[str, int]) -> str:
    return ",".join(f"{k}:{counts.get(k, 0)}" for k in FAULT_KINDS)


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


# -- the rig: destinations, streams, the service --------------------------------------------------


def _env() -> dict[str, str]:
    env = client_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _start_server(stack: ExitStack, kind: str, work: Path) -> S3Server:
    """A server of ``kind`` for this run, stopped when ``stack`` closes."""
    launcher: CephRGW | MotoServer = CephRGW() if kind == "ceph" else MotoServer(work / f"{kind}.log")
    server = launcher.start()
    stack.callback(launcher.stop)
    return server


@dataclass
class _Destination:
    """One store the service ships to: a fresh bucket on a server, reached only through a fault
    proxy of its own, which goes down for stretches on its own schedule."""

    name: str
    server: S3Server
    bucket: str
    proxy: FaultProxy
    s3: dict[str, Any]  # its [storage.s3] / [destinations.NAME.s3] keys besides the endpoint and bucket
    read_args: dict[str, Any]  # the GET arguments that read what the service writes (an SSE-C key)
    tls: bool  # the proxy speaks https to the server
    down_seed: int
    stop_down: threading.Event = field(default_factory=threading.Event)
    downs: threading.Thread | None = None

    def start_downs(self, every: float) -> None:
        self.downs = threading.Thread(target=_down_stretches, daemon=True,
                                      args=(self.proxy, random.Random(self.down_seed), every, self.stop_down))
        self.downs.start()

    def calm(self) -> None:
        """No more outages or faults (what the drain runs under)."""
        self.stop_down.set()
        if self.downs is not None:
            self.downs.join()
        self.proxy.faults_on = False
        self.proxy.come_up()


def _open_destinations(stack: ExitStack, work: Path, servers: list[S3Server], seed: int, fault_rate: float,
                       https: bool, encryption: dict[str, Any]) -> list[_Destination]:
    """A destination on each server, named after it (faults off until `uploader check` has run);
    the first one's proxy draws from ``seed``, as the one-server run always has."""
    dests = []
    for index, server in enumerate(servers):
        tls = https and server.https_endpoint is not None
        upstream = (server.host, urlsplit(str(server.https_endpoint)).port or 443) if tls else None
        bucket = server.new_bucket("chaos")
        proxy = FaultProxy(upstream or (server.host, server.port), seed=seed + 10 * index, fault_rate=fault_rate,
                           kinds=("http500", "http503", "reset", "stall"),
                           upstream_ca=str(server.ca_path) if upstream else None)
        stack.callback(proxy.close)
        proxy.faults_on = False  # until `uploader check` has probed the server, as after an install
        settings, read_args = _encryption_settings(work, encryption)
        name = server.name if all(d.name != server.name for d in dests) else f"{server.name}{index + 1}"
        dest = _Destination(name, server, bucket, proxy, {"read_timeout_s": 2, **settings}, read_args, tls,
                            down_seed=seed + 10 * index + 1)
        stack.callback(dest.stop_down.set)
        dests.append(dest)
    return dests


@dataclass(frozen=True)
class _Stream:
    """One stream of the run: its file, spool and prefix, and its writer's seed and ledger."""

    name: str
    file: Path
    spool: Path
    prefix: str
    ledger: Path
    seed: int


def _plan_streams(work: Path, count: int, legacy: bool, seed: int) -> list[_Stream]:
    """The one stream of a config without [streams] (``legacy``: the file, spool and prefix the
    one-stream run always had), else s1, s2, ..., each with files of its own."""
    data = work / "data"
    if legacy:
        return [_Stream("all_api", data / "all_api.json", data / "spool", PREFIX, work / "ledger.jsonl", seed)]
    return [_Stream(f"s{i}", data / f"s{i}.json", data / "spool" / f"s{i}", f"{PREFIX}-s{i}",
                    work / f"ledger-s{i}.jsonl", seed + i - 1) for i in range(1, count + 1)]


def _write_rig_config(work: Path, streams: list[_Stream], dests: list[_Destination], legacy: bool,
                      compression: str) -> Path:
    """The service's config: the tables of the release before streams when ``legacy``, else a
    [streams.NAME] per stream, each shipping to every [destinations.NAME] (a proxy's url)."""
    common: dict[str, dict[str, Any]] = {"day": {"timezone": TZ}, "spool": {"retry_interval_s": 0.5}}
    if legacy:
        dest = dests[0]
        return write_config(work, s3=(dest.proxy.url, dest.bucket), watch={"batch_size": BATCH_SIZE},
                            storage={"prefix": PREFIX, "compression": compression}, storage__s3=dest.s3, **common)
    sections = {f"streams__{s.name}": {"prefix": s.prefix, "batch_size": BATCH_SIZE, "compression": compression}
                for s in streams}
    sections.update({f"destinations__{d.name}__s3": d.s3 for d in dests})
    return write_streams_config(
        work, {s.name: [d.name for d in dests] for s in streams},
        {d.name: {"backend": "s3", "endpoint": d.proxy.url, "bucket": d.bucket} for d in dests},
        **common, **sections)


def _start_writer(stream: _Stream, rate: float, span_hours: float, duration: float,
                  fetch_kib: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--writer", str(stream.file), str(stream.ledger),
         "--rate", str(rate), "--seed", str(stream.seed), "--span-hours", str(span_hours),
         "--fetch-kib", str(fetch_kib), "--duration", str(duration)], env=_env())


def _stop_writers(writers: list[subprocess.Popen[bytes]]) -> None:
    for writer in writers:
        writer.send_signal(signal.SIGTERM)
    for writer in writers:
        writer.wait(60)


def _kill_writers(writers: list[subprocess.Popen[bytes]]) -> None:
    for writer in writers:
        if writer.poll() is None:
            writer.kill()


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

    def restart(self) -> None:
        """SIGKILL it (noting first whether it had died by itself) and start it again at once."""
        self.check_alive()
        self.kill()
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

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def terminate(self, timeout: float = 120) -> int:
        assert self.proc is not None
        code = terminate(self.proc, timeout)
        return -9 if code is None else code


def _down_stretches(proxy: FaultProxy, rng: random.Random, every: float, stop: threading.Event) -> None:
    while not stop.wait(rng.uniform(every * 0.5, every * 1.5)):
        proxy.go_down()
        stop.wait(rng.uniform(1.0, 5.0))
        proxy.come_up()


# -- the run ----------------------------------------------------------------------------------


def run(duration: float = 60.0, seed: int = 1, kill_interval: float = 2.0, rate: float = 20.0,
        server_kind: str = "moto", server: S3Server | None = None,
        fault_rate: float = 0.2, down_every: float = 15.0, span_hours: float = 30.0, fetch_kib: float = 0.75,
        workdir: Path | None = None, drain_timeout: float = 180.0,
        progress: Any = None, encryption: dict[str, Any] | None = None, https: bool = False,
        compression: str = "none", streams: int = 1, mirror: S3Server | None = None,
        mirror_kind: str | None = None) -> Summary:
    """One chaos run; see the module docstring. ``workdir`` keeps the files for inspection.

    ``server``: a running S3 server to use (a fresh bucket on it); else one of ``server_kind``
    is started for the run and stopped after it. ``encryption``: ``[storage.s3]`` keys for it
    (``sse_customer_key`` is written to a key file, mode 600); ``https``: the fault proxy speaks
    TLS to the server (its https endpoint), as Ceph RGW requires for any SSE; ``compression``:
    ``storage.compression`` (gzip days are read back as gunzip reads them).

    ``streams`` > 1, or a second destination (``mirror``, a running server, or ``mirror_kind``,
    one to start), writes a config with [streams] and [destinations]: every stream ships to
    ``server`` and to the mirror, each behind its own fault proxy; the encryption keys go to both.
    """
    say = progress or (lambda msg: None)
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="chaos-"))
    (work / "data").mkdir(parents=True, exist_ok=True)
    summary = Summary(seed=seed)
    started = time.monotonic()
    with ExitStack() as stack:
        servers = [server or _start_server(stack, server_kind, work)]
        if mirror is not None or mirror_kind is not None:
            servers.append(mirror or _start_server(stack, mirror_kind or "moto", work))
        dests = _open_destinations(stack, work, servers, seed, fault_rate, https, encryption or {})
        legacy = streams == 1 and len(dests) == 1
        plan = _plan_streams(work, streams, legacy, seed)
        config = _write_rig_config(work, plan, dests, legacy, compression)
        summary.server, summary.bucket = "+".join(d.server.name for d in dests), dests[0].bucket
        writers = [_start_writer(s, rate, span_hours, duration, fetch_kib) for s in plan]
        stack.callback(_kill_writers, writers)
        service = _Service(config, work / "service.log")
        stack.callback(service.kill_if_running)
        _check_first(config, work, dests)
        service.start()
        for dest in dests:
            dest.start_downs(down_every)
        _kill_and_restart(service, dests, duration, kill_interval, random.Random(seed), summary,
                          lambda m: say(f"{m}, {time.monotonic() - started:.0f}s"))
        say("chaos: stopping writers and faults; draining")
        _stop_writers(writers)
        _drain(service, plan, dests, drain_timeout, summary)
        _check(work, plan, dests, summary)
    summary.seconds = time.monotonic() - started
    return summary


def _check_first(config: Path, work: Path, dests: list[_Destination]) -> None:
    """`uploader check` with the faults off, as an operator runs it after installing (its output
    in check.log); then the faults start."""
    check = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(config)],
                           capture_output=True, text=True, env=_env(), cwd=str(REPO), timeout=120, check=False)
    (work / "check.log").write_text(check.stdout + check.stderr)
    if check.returncode != 0:
        raise RuntimeError(f"`uploader check` failed before the chaos: {check.stdout}{check.stderr}")
    for dest in dests:
        dest.proxy.faults_on = True


def _kill_and_restart(service: _Service, dests: list[_Destination], duration: float, kill_interval: float,
                      rng: random.Random, summary: Summary, say: Any) -> None:
    """The chaos itself: SIGKILL and restart at random moments for ``duration`` seconds."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 2 * kill_interval))  # the random moment of the next kill
        service.restart()
        summary.kills += 1
        if summary.kills % 20 == 0:
            say(f"chaos: {summary.kills} kills, faults " + "; ".join(f"{d.name} {d.proxy.counts}" for d in dests))


def _drain(service: _Service, streams: list[_Stream], dests: list[_Destination], timeout: float,
           summary: Summary) -> None:
    """Faults off, one last kill and a clean start; wait until every spool drains, then SIGTERM."""
    for dest in dests:
        dest.calm()
    service.restart()
    summary.kills += 1
    # Otherwise the old process's uploads can satisfy the drain check before the new one has
    # even installed its SIGTERM handler.
    if not all(service.wait_running(s.spool / "lock") for s in streams):
        summary.problems.append("the final `uploader run` did not start")
    if not _drained(streams, timeout):
        summary.problems.append(f"spool did not drain within {timeout}s")
    code = service.terminate()
    if code != 0:
        summary.problems.append(f"final `uploader run` exited {code} on SIGTERM")
    summary.problems.extend(service.unexpected)
    summary.proxy_faults = {d.name: {k: d.proxy.counts[k] for k in FAULT_KINDS} for d in dests}
    summary.faults = {k: sum(counts[k] for counts in summary.proxy_faults.values()) for k in FAULT_KINDS}
    summary.passed = sum(d.proxy.counts["passed"] for d in dests)


def _drained(streams: list[_Stream], timeout: float) -> bool:
    """Wait until no stream is ``_busy``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_busy(stream) for stream in streams):
            return True
        time.sleep(0.2)  # polling interval of a deadline wait
    return False


def _busy(stream: _Stream) -> bool:
    """Something is spooled, quarantined-unsent or journalled, or a batch (or a past day's
    records) is still in the file."""
    from uploader.local.records import Fetch, scan

    tz = pytz.timezone(TZ)
    today = datetime.now(tz).date()
    try:
        data = stream.file.read_bytes()
    except FileNotFoundError:
        data = b""
    fetches = [i for i in scan(data, tz, datetime.now(pytz.utc)).items if isinstance(i, Fetch)]
    spool = stream.spool
    return (any((spool / "batches").glob("*.json")) or any((spool / "quarantine").glob("*.bin"))
            or len(fetches) >= BATCH_SIZE or any(f.day < today for f in fetches)
            or (spool / "journal.json").exists())


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


# -- the check --------------------------------------------------------------------------------


def _check(work: Path, streams: list[_Stream], dests: list[_Destination], summary: Summary) -> None:
    """Check every (stream, destination) pair against the stream's ledger (``_check_pair``),
    then the service log; the totals add up the pairs."""
    from uploader.local.records import Fetch, scan

    tz = pytz.timezone(TZ)
    for stream in streams:
        ledger, junk = _read_ledger(stream.ledger)
        summary.fetches, summary.junk = summary.fetches + len(ledger), summary.junk + len(junk)
        left_bytes = stream.file.read_bytes()
        left = [i.fetch_id for i in scan(left_bytes, tz, datetime.now(pytz.utc)).items if isinstance(i, Fetch)]
        summary.left_in_file += len(left)
        for dest in dests:
            label = f"{stream.name}/{dest.name}"
            problems: list[str] = []
            summary.pairs[label] = _check_pair(stream, dest, ledger, left, problems)
            _check_quarantine(stream, dest, junk, left_bytes, problems)
            summary.problems.extend(f"{label}: {p}" for p in problems)
    for name in ("uploaded", "lost", "doubled", "wrong_day"):
        setattr(summary, name, sum(getattr(pair, name) for pair in summary.pairs.values()))
    _check_log(work / "service.log", summary)


def _read_ledger(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(fetch id -> its ledger entry, the ids of the malformed records) a writer logged."""
    ledger: dict[str, dict[str, Any]] = {}
    junk: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "junk" in entry:
            junk.append(entry["junk"])
        else:
            ledger[entry["id"]] = entry
    return ledger, junk


def _check_pair(stream: _Stream, dest: _Destination, ledger: dict[str, dict[str, Any]], left: list[str],
                problems: list[str]) -> PairResult:
    """Each ledger fetch exactly once across ``dest``'s documents of ``stream`` and the fetches
    ``left`` in its file, and in the document of its own day."""
    pair = PairResult(fetches=len(ledger), left_in_file=len(left))
    seen = _stored(stream, dest, ledger, problems)
    pair.uploaded = sum(len(v) for v in seen.values())
    for fetch_id in left:
        seen[fetch_id].append("file")
    for fetch_id, entry in ledger.items():
        where = seen.get(fetch_id, [])
        if not where:
            pair.lost += 1
            problems.append(f"lost: {fetch_id} ({entry['day']})")
        elif len(where) > 1:
            pair.doubled += 1
            problems.append(f"doubled: {fetch_id} in {where}")
        elif where[0] not in ("file", entry["day"]):
            pair.wrong_day += 1
            problems.append(f"wrong day: {fetch_id} of {entry['day']} in {where[0]}")
    problems.extend(f"unknown fetch id in the documents: {fetch_id}" for fetch_id in set(seen) - set(ledger))
    return pair


def _stored(stream: _Stream, dest: _Destination, ledger: dict[str, dict[str, Any]],
            problems: list[str]) -> defaultdict[str, list[str]]:
    """Fetch id -> the day of each document that holds it (once per copy), reading ``dest``'s
    documents of ``stream`` straight from the server, re-counted as they stream; each must
    verify, and its total_matches_today be the ledger's."""
    seen: defaultdict[str, list[str]] = defaultdict(list)
    for stored in stored_days(dest.server.client(https=dest.tls), dest.bucket, stream.prefix, **dest.read_args):
        assert stored.day is not None  # stored_days reads day documents only
        day = stored.day.isoformat()
        problems.extend(f"{day}: verify: {p}" for p in stored.problems)
        want_matches = sum(ledger[i]["matches"] * n for i, n in stored.fetch_ids.items() if i in ledger)
        if stored.meta.get("total_matches_today") != want_matches:
            problems.append(f"{day}: total_matches_today={stored.meta.get('total_matches_today')}, "
                            f"ledger says {want_matches}")
        for i, n in stored.fetch_ids.items():
            seen[i] += [day] * n
    return seen


def _check_quarantine(stream: _Stream, dest: _Destination, junk: list[str], left_bytes: bytes,
                      problems: list[str]) -> None:
    """Every malformed record in ``dest``'s quarantine (or not yet sent, or still in the file);
    no well-formed fetch there or in the stream's local quarantine."""
    from uploader.local.records import Fetch, scan

    client = dest.server.client(https=dest.tls)
    sent = [client.get_object(Bucket=dest.bucket, Key=key, **dest.read_args)["Body"].read()
            for key in dest.server.keys(dest.bucket, f"{stream.prefix}/quarantine/")]
    unsent = [q.read_bytes() for q in (stream.spool / "quarantine").glob("*.bin")]
    kept = [q.read_bytes() for q in (stream.spool / "quarantine").rglob("*.bin")]
    for q in sent + kept:
        for item in scan(q if q.endswith(b"\n") else q + b"\n", pytz.timezone(TZ), datetime.now(pytz.utc)).items:
            if isinstance(item, Fetch):
                problems.append(f"well-formed fetch {item.fetch_id} in quarantine")
    found = b"\n".join([*sent, *unsent, left_bytes])
    problems.extend(f"malformed record {junk_id} neither quarantined nor in the file"
                    for junk_id in junk if junk_id.encode() not in found)


def _check_log(path: Path, summary: Summary) -> None:
    """Append paths and id reads from the service log; a traceback or worker error is a problem."""
    service_log = path.read_text(encoding="utf-8", errors="replace")
    for found in re.findall(r" upload day=\S+ .* path=(\w+)", service_log):
        summary.paths[found] = summary.paths.get(found, 0) + 1
    summary.ids_read = service_log.count("publish.listed_read ")
    summary.ids_recovered = service_log.count("publish.listed_recovered ")
    for bug in ("Traceback", "upload_worker_error"):
        if bug in service_log:
            summary.problems.append(f"{bug} in {path}")


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
    ap.add_argument("--streams", type=int, default=1, metavar="N",
                    help="N streams (N > 1) in one service, each shipping to two destinations, Ceph RGW and "
                         "moto, each behind its own fault proxy (--server is then ignored; default 1: the "
                         "config of the release before streams)")
    ap.add_argument("--workdir", type=Path, default=None, help="keep all files here (default: a temp folder)")
    ap.add_argument("--compression", choices=("none", "gzip"), default="none", help="storage.compression (default none)")
    ap.add_argument("--writer", nargs=2, metavar=("FILE", "LEDGER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.writer:
        writer_main(args.writer[0], args.writer[1], args.rate, args.seed, args.span_hours, args.duration,
                    args.fetch_kib)
        return 0
    if args.streams < 1:
        ap.error("--streams must be at least 1")
    mirrored = args.streams > 1
    summary = run(duration=args.duration, seed=args.seed, kill_interval=args.kill_interval, rate=args.rate,
                  server_kind="ceph" if mirrored else args.server, mirror_kind="moto" if mirrored else None,
                  streams=args.streams, fault_rate=args.fault_rate, down_every=args.down_every,
                  span_hours=args.span_hours, fetch_kib=args.fetch_kib, compression=args.compression,
                  workdir=args.workdir, progress=lambda m: print(m, file=sys.stderr, flush=True))
    for p in summary.problems[:50]:
        print(f"problem: {p}", file=sys.stderr)
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
