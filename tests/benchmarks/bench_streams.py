"""Benchmark 13: many streams in one ``uploader run`` (issue 18): what a stream costs, and whether
one stream's flood or outage delays another.

**Scaling.** Three services run side by side, with 1, 5 and 20 streams, each the CLI's
``uploader run`` with one destination (its own bucket; each stream under its default prefix
``<name>_rotating_logs``), the product's defaults, and ``/metrics`` scraped every 15 s as
Prometheus would. Every stream's file holds 15 records before start (one batch ships at once, 5
wait: the state after a restart); one more batch per stream then warms the service up. Each
service in turn has every stream written by one writer process (the shipped ``FetchWriter``),
1 fetch/s per stream (0.5/s with 20 streams), on to whole batches; that phase's CPU runs from
its first write until every batch is in the documents. After the last, one quiet window (no
writes) is measured on the three at once: a quiet service's CPU does not depend on its
neighbours (its scrapes included; 20 scrapes back to back after it give the CPU of one).
Threads, VmRSS and VmHWM are read from /proc/PID/status; every fetch must be in its stream's
documents exactly once, and the stream's counter in ``/metrics`` must say as many.

**Isolation.** Two streams of one service on one server: A written at 2 fetches/s with
``batch_size = 1`` (every fetch a batch, so every fetch a sample), B idle (run 1), flooded by its
writer at up to 2,000 fetches/s (run 2), or shipping to a destination that is down (nothing
listens on its port) while written at 20 fetches/s (run 3). A's latency per fetch runs from the
return of its write to the service's ``upload`` log line for it, as in benchmark 2 (an upper
bound). Each stream's fetches carry their own match count per fetch (``FETCH_FOOTER.total_matches``),
so a line's matches / fetches says whose append it was, whatever fields the log line carries.

Run as ``python -m tests.benchmarks.bench_streams write SPEC`` it is the writer process.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.rig.s3servers import free_port
from uploader.fetchlog import FetchWriter

from .harness import (
    ROOT,
    Background,
    BenchError,
    BenchServer,
    Row,
    Section,
    UploaderProcess,
    bench_env,
    cpu_seconds,
    make_raw,
    percentile,
    proc_state,
    stored_fetch_ids,
    vm_hwm_kib,
)

__all__ = ["run"]

log = logging.getLogger(__name__)

TZ_NAME = "America/New_York"
COUNTS = (1, 5, 20)  # streams per service
PREFILL, BATCH = 15, 10  # records in each file before start; the product's batch_size
FETCH_BYTES = 5 * 1024
QUIET_TARGET = 0.5  # % of one core, as benchmarks 6 and 9
SCRAPE_S = 15.0
SCRAPES = 20  # back to back after the quiet window, for the CPU of one
A_RATE, B_FLOOD, B_DOWN_RATE = 2.0, 2000.0, 20.0  # fetches/s
A_TAG, B_TAG = 1, 7  # matches per fetch of streams A and B
# The service's log line for one append (as UPLOAD_LINE, with the matches it stored).
_UPLOAD = re.compile(r" upload day=\S+ batches=\d+ fetches=(?P<fetches>\d+) matches=(?P<matches>\d+) ")
_UPLOADED = re.compile(
    r'^uploader_fetches_uploaded_total\{(?=[^}]*destination="main")[^}]*stream="([^"]+)"[^}]*\} (\S+)$', re.M)
_FAILED = re.compile(r'^uploader_append_failures_total\{(?=[^}]*destination="(?:down|dead)")[^}]*\} (\S+)$', re.M)


def _rate(streams: int) -> float:
    """Fetches/s per stream: 1, or 0.5 with many streams (10 fetches/s in all)."""
    return 1.0 if streams < 10 else 0.5


# -- the writer process -------------------------------------------------------------------------


def _write(spec: dict[str, Any]) -> dict[str, Any]:
    """Write every file in turn, each at ``rate`` fetches/s, for ``seconds`` and on until each file
    holds whole batches; returns when each write returned (CLOCK_MONOTONIC: one clock for every
    process)."""
    files = spec["files"]
    writers = [FetchWriter(Path(f), TZ_NAME) for f in files]
    raws = [make_raw(spec["size"], i) for i in range(10)]
    ends: list[list[float]] = [[] for _ in files]
    gap = 1 / (spec["rate"] * len(files))
    first = next_at = time.monotonic()
    while True:
        # Decided per round of every file, so that every file gets as many writes.
        timed = next_at - first < spec["seconds"] - gap / 2
        todo = [k for k in range(len(files)) if timed or (spec["offset"] + len(ends[k])) % spec["batch"]]
        if not todo:
            break
        for k in todo:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            writers[k].append(raws[len(ends[k]) % 10], spec["matches"][k],
                              fetch_id=f"{spec['ids'][k]}{len(ends[k]):06d}")
            ends[k].append(time.monotonic())
            next_at = max(next_at + gap, ends[k][-1])  # behind pace: write on at once, never burst
    return {"ends": ends}


class _Writer:
    """The writer process: started ready, told to go, its figures read when it ends."""

    def __init__(self, files: list[Path], ids: list[str], matches: list[int], rate: float, seconds: float,
                 offset: int, batch: int, size: int = FETCH_BYTES) -> None:
        spec = {"files": [str(f) for f in files], "ids": ids, "matches": matches, "rate": rate,
                "seconds": seconds, "offset": offset, "batch": batch, "size": size}
        self.child = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.bench_streams", "write", json.dumps(spec)],
            env=bench_env(), cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None and self.child.stdin is not None
        if self.child.stdout.readline().strip() != "ready":
            raise BenchError("the writer process did not get ready")

    def go(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write("go\n")
        self.child.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.child.stdout is not None
        out: dict[str, Any] = json.loads(self.child.stdout.readline() or "null")
        if self.child.wait() != 0 or not out:
            raise BenchError(f"the writer process failed (exit {self.child.returncode})")
        return out


# -- the service --------------------------------------------------------------------------------


def _config(folder: Path, streams: list[tuple[str, int, tuple[str, ...]]],
            destinations: dict[str, tuple[str, str]], port: int) -> Path:
    """A config of ``streams`` (name, batch_size, destinations) in ``folder``; product defaults else."""
    lines = ["[metrics]", f'listen = "127.0.0.1:{port}"']
    for name, (url, bucket) in destinations.items():
        lines += [f"[destinations.{name}]", 'backend = "s3"', f"[destinations.{name}.s3]", f'bucket = "{bucket}"',
                  f'endpoint_url = "{url}"', 'region = "us-east-1"', 'addressing_style = "path"']
    for name, batch, dest in streams:
        lines += [f"[streams.{name}]", f'file = "data/{name}.json"', f'spool = "data/spool/{name}"',
                  f"batch_size = {batch}", f"destinations = {json.dumps(list(dest))}"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class _Landed:
    """Each stream's appends as the service logs them: when each line arrived, and how many of
    the stream's fetches were stored by then (a stream is told by its matches per fetch)."""

    def __init__(self, proc: UploaderProcess, tags: dict[int, str]) -> None:
        self.proc = proc
        self.tags = tags
        self.seen = 0
        self.events: dict[str, list[tuple[float, int]]] = {name: [] for name in tags.values()}

    def total(self, stream: str) -> int:
        self._update()
        events = self.events[stream]
        return events[-1][1] if events else 0

    def _update(self) -> None:
        lines = self.proc.lines[self.seen:]
        self.seen += len(lines)
        for at, line in lines:
            if (m := _UPLOAD.search(line)) and int(m["fetches"]):
                stream = self.tags[int(m["matches"]) // int(m["fetches"])]
                before = self.events[stream][-1][1] if self.events[stream] else 0
                self.events[stream].append((at, before + int(m["fetches"])))

    def wait(self, counts: dict[str, int], timeout: float = 180.0) -> None:
        """Until every stream named has ``counts[stream]`` fetches stored."""
        deadline = time.monotonic() + timeout
        while any(self.total(s) < n for s, n in counts.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                have = {s: self.total(s) for s in counts}
                raise BenchError(f"fetches not stored in {timeout:.0f} s: have {have}, expected {counts}")
            self.proc.wait_for(_UPLOAD.pattern, timeout=left, start=self.seen)

    def at(self, stream: str, g: int) -> float:
        """When the stream's fetch ``g`` (0-based, in the order written) was stored (FIFO)."""
        return next(at for at, total in self.events[stream] if total > g)


class _Scraper(Background):
    """GETs ``/metrics`` of every service every ``SCRAPE_S``, as a Prometheus server does."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.done = 0
        self.seconds = 0.0
        self.failed: list[str] = []
        super().__init__("scraper")

    def _run(self) -> None:
        while not self._stop.wait(SCRAPE_S):
            for port in self.ports:
                try:
                    started = time.monotonic()
                    _scrape(port)
                    self.seconds += time.monotonic() - started
                    self.done += 1
                except OSError as exc:
                    self.failed.append(str(exc))


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


class _Peak(Background):
    """The most threads and resident memory a process showed, sampled every 0.5 s meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = self.rss_kib = 0
        super().__init__("peak")

    def _run(self) -> None:
        while True:
            state = proc_state(self.pid)
            self.threads, self.rss_kib = max(self.threads, state.threads), max(self.rss_kib, state.rss_kib)
            if self._stop.wait(0.5):
                return


def _stop(proc: UploaderProcess) -> None:
    code = proc.stop()
    if code != 0:
        raise BenchError(f"uploader run exited {code}")


def _exactly_once(server: BenchServer, bucket: str, stream: str, ids: list[str]) -> None:
    stored = stored_fetch_ids(server.admin, bucket, f"{stream}_rotating_logs")
    if stored != Counter(ids):
        missing, twice = set(ids) - set(stored), [i for i, n in stored.items() if n > 1]
        raise BenchError(f"stream {stream}: of {len(ids)} fetches written, {len(missing)} are not stored (e.g. "
                         f"{sorted(missing)[:3]}), {len(twice)} stored more than once, "
                         f"{len(set(stored) - set(ids))} stored that were never written")


# -- scaling ------------------------------------------------------------------------------------


@dataclass
class _Scaled:
    """One service of the scaling run and its figures."""

    streams: int
    folder: Path
    bucket: str
    port: int
    proc: UploaderProcess = field(init=False)
    landed: _Landed = field(init=False)
    ids: dict[str, list[str]] = field(default_factory=dict)
    loaded_cpu: float = 0.0
    loaded_window: float = 0.0
    loaded_fetches: int = 0
    peak_threads: int = 0
    quiet_cpu: float = 0.0
    quiet_window: float = 0.0
    threads: int = 0
    rss_kib: int = 0
    hwm_kib: int = 0
    startup_s: float = 0.0  # from starting the process until every stream's first batch is stored
    scrape_cpu: float = 0.0  # s of the service's CPU per /metrics scrape

    @property
    def names(self) -> list[str]:
        return [f"s{i:02d}" for i in range(self.streams)]

    def start(self, server: BenchServer) -> None:
        """Fill every stream's file, start ``uploader run``, wait until the first batches are stored."""
        config = _config(self.folder, [(n, BATCH, ("main",)) for n in self.names], {"main": (server.url, self.bucket)},
                         self.port)
        for i, name in enumerate(self.names):
            (self.folder / "data").mkdir(parents=True, exist_ok=True)
            writer = FetchWriter(self.folder / "data" / f"{name}.json", TZ_NAME)
            self.ids[name] = [writer.append(make_raw(FETCH_BYTES, k), i + 1, fetch_id=f"{name}-pre{k:03d}")
                              for k in range(PREFILL)]
        started = time.monotonic()
        self.proc = UploaderProcess(config)
        self.proc.wait_for(r"service_started", timeout=120)
        self.landed = _Landed(self.proc, {i + 1: name for i, name in enumerate(self.names)})
        self.landed.wait({name: PREFILL - PREFILL % BATCH for name in self.names})
        self.startup_s = time.monotonic() - started
        # Warm-up, outside the figures: one more batch per stream, so that the one-time costs of
        # the first appends after start (imports, the document's first rewrite) fall here.
        for i, name in enumerate(self.names):
            writer = FetchWriter(self.folder / "data" / f"{name}.json", TZ_NAME)
            self.ids[name] += [writer.append(make_raw(FETCH_BYTES, k), i + 1, fetch_id=f"{name}-warm{k:03d}")
                               for k in range(BATCH)]
        self.landed.wait({name: len(self.ids[name]) - PREFILL % BATCH for name in self.names})

    def load(self, seconds: float) -> None:
        """Write every stream at its pace; CPU from the first write until everything is stored."""
        names = self.names
        writer = _Writer([self.folder / "data" / f"{n}.json" for n in names], [f"{n}-" for n in names],
                         list(range(1, len(names) + 1)), _rate(self.streams), seconds, PREFILL % BATCH, BATCH)
        with _Peak(self.proc.pid) as peak:
            cpu0, t0 = cpu_seconds(self.proc.pid), time.monotonic()
            writer.go()
            out = writer.result()
            for name, ends in zip(names, out["ends"], strict=True):
                self.ids[name] += [f"{name}-{k:06d}" for k in range(len(ends))]
            self.landed.wait({name: len(self.ids[name]) for name in names})
            self.loaded_cpu, self.loaded_window = cpu_seconds(self.proc.pid) - cpu0, time.monotonic() - t0
        self.loaded_fetches = sum(len(e) for e in out["ends"])
        self.peak_threads = peak.threads

    def check(self, server: BenchServer) -> None:
        """Every fetch once in its stream's documents, and /metrics counts each stream's."""
        counted = {m[1]: float(m[2]) for m in _UPLOADED.finditer(_scrape(self.port))}
        for name in self.names:
            if counted.get(name) != len(self.ids[name]):
                raise BenchError(f"/metrics says stream {name} uploaded {counted.get(name)} fetches, "
                                 f"expected {len(self.ids[name])}")
            _exactly_once(server, self.bucket, name, self.ids[name])


def _quiet(services: list[_Scaled], seconds: float) -> None:
    """CPU of every service over one window with no writes."""
    before = [cpu_seconds(s.proc.pid) for s in services]
    started = time.monotonic()
    time.sleep(seconds)
    window = time.monotonic() - started
    for s, cpu in zip(services, before, strict=True):
        s.quiet_cpu, s.quiet_window = cpu_seconds(s.proc.pid) - cpu, window
        state = proc_state(s.proc.pid)
        s.threads, s.rss_kib, s.hwm_kib = state.threads, state.rss_kib, vm_hwm_kib(s.proc.pid)
    for s in services:  # what the quiet window's scrapes cost, apart
        cpu = cpu_seconds(s.proc.pid)
        for _ in range(SCRAPES):
            _scrape(s.port)
        s.scrape_cpu = (cpu_seconds(s.proc.pid) - cpu) / SCRAPES


def _scaling(server: BenchServer, tmp: Path, load_s: float, quiet_s: float) -> tuple[list[_Scaled], _Scraper]:
    services = [_Scaled(n, tmp / f"scale-{n}", server.new_bucket(f"streams{n}"), free_port()) for n in COUNTS]
    with ExitStack() as stack:
        for s in services:
            s.start(server)
            stack.callback(_stop, s.proc)
        scraper = stack.enter_context(_Scraper([s.port for s in services]))
        for s in services:
            s.load(load_s)
        time.sleep(5.0)  # the last appends' aftermath (status files, archive) is not quiet time
        _quiet(services, quiet_s)
        if scraper.failed:
            raise BenchError(f"{len(scraper.failed)} scrapes of /metrics failed: {scraper.failed[0]}")
        for s in services:
            s.check(server)
            if errors := s.proc.errors():
                raise BenchError(f"uploader run ({s.streams} streams) logged problems: " + "; ".join(errors[:3]))
    for s in services:
        server.empty_bucket(s.bucket)
    return services, scraper


def _ratios(values: list[float]) -> str:
    return " / ".join(f"{v / values[0]:.1f}x" for v in values[1:]) + f" ({' / '.join(map(str, COUNTS[1:]))} vs 1)"


def _scaling_rows(section: Section, services: list[_Scaled], scraper: _Scraper, quiet_s: float) -> None:
    label = " / ".join(map(str, COUNTS)) + " streams"
    threads = [s.threads for s in services]
    rss = [s.rss_kib / 1024 for s in services]
    hwm = [s.hwm_kib / 1024 for s in services]
    quiet = [100 * s.quiet_cpu / s.quiet_window for s in services]
    per_fetch = [1000 * s.loaded_cpu / s.loaded_fetches for s in services]
    extra = COUNTS[-1] - COUNTS[0]
    section.rows += [
        Row(f"threads ({label})", project=" / ".join(map(str, threads)), ratio=_ratios(threads)),
        Row("threads added per stream", project=f"{(threads[-1] - threads[0]) / extra:.2f}",
            target="2 (a watcher and a worker)", met=threads[-1] - threads[0] <= 2 * extra),
        Row(f"RSS after the quiet window ({label})", project=" / ".join(f"{v:.1f}" for v in rss) + " MiB",
            ratio=_ratios(rss)),
        Row(f"peak RSS, VmHWM ({label})", project=" / ".join(f"{v:.1f}" for v in hwm) + " MiB",
            ratio=_ratios(hwm), target="<= 150 MiB", met=max(hwm) <= 150),
        Row("RSS added per stream", project=f"{(rss[-1] - rss[0]) / extra * 1024:.0f} KiB"),
        Row(f"quiet {quiet_s:.0f} s: % of a core ({label})", project=" / ".join(f"{q:.3f}%" for q in quiet),
            target=f"< {QUIET_TARGET:g}%", met=max(quiet) < QUIET_TARGET),
        Row(f"quiet: the service's CPU per /metrics scrape ({label})",
            project=" / ".join(f"{1000 * s.scrape_cpu:.1f}" for s in services) + " ms"),
        Row(f"loaded: CPU per fetch ({label})", project=" / ".join(f"{v:.2f}" for v in per_fetch) + " ms",
            ratio=_ratios(per_fetch)),
        Row(f"loaded: % of a core ({label})",
            project=" / ".join(f"{100 * s.loaded_cpu / s.loaded_window:.1f}%" for s in services)),
        Row(f"start: process started -> every stream's first batch stored ({label})",
            project=" / ".join(f"{s.startup_s:.1f}" for s in services) + " s"),
        Row("every fetch in its stream's document exactly once",
            project=f"yes, {sum(len(v) for s in services for v in s.ids.values()):,} in "
                    f"{sum(COUNTS)} streams", target="all, once", met=True),
    ]
    for s in services:
        section.notes.append(
            f"{s.streams} stream(s): {_rate(s.streams):g} fetch/s each, {s.loaded_fetches:,} fetches in "
            f"{s.loaded_window:.0f} s loaded ({s.loaded_cpu:.2f} s CPU, peak {s.peak_threads} threads); quiet "
            f"{round(s.quiet_cpu * 100)} ticks of 10 ms in {s.quiet_window:.0f} s; {s.threads} threads, "
            f"VmRSS {s.rss_kib / 1024:.1f} MiB, VmHWM {s.hwm_kib / 1024:.1f} MiB")
    section.notes.append(
        f"the three services ran side by side, each loaded in turn while the others idled; the quiet window "
        f"was measured on the three at once, {quiet_s:.0f} s with no writes ({quiet_s // 30:.0f} retry ticks at the "
        "default 30 s); "
        f"/metrics of each scraped every {SCRAPE_S:g} s throughout ({scraper.done} scrapes, "
        f"{1000 * scraper.seconds / max(1, scraper.done):.0f} ms each on average, in the quiet CPU); ratio = "
        "N streams / 1 stream")


# -- isolation ----------------------------------------------------------------------------------


@dataclass
class _Isolated:
    """One run of the isolation benchmark: A's latencies and what B did meanwhile."""

    mode: str  # "idle", "flood", "down" (B's destination) or "mirror" (A's second destination down)
    latencies: list[float] = field(default_factory=list)  # ms
    b_written: int = 0
    b_seconds: float = 0.0
    b_stored: int = 0
    failed: int = 0  # appends to the dead destination that failed, as /metrics counts them
    cpu_share: float = 0.0  # % of a core, the service over A's writing
    warnings: int = 0

    def figures(self) -> str:
        v = self.latencies
        return f"{percentile(v, 50):.0f} / {percentile(v, 95):.0f} / {max(v):.0f} ms"


def _isolated(server: BenchServer, tmp: Path, mode: str, seconds: float) -> _Isolated:
    """One run: A paced beside B idle, flooded, or shipping to a store that is down; or A also
    shipping to a second destination that is down."""
    result = _Isolated(mode)
    folder = tmp / f"isolation-{mode}"
    bucket = server.new_bucket("isolation")
    destinations = {"main": (server.url, bucket)}
    dead = {"down": "down", "mirror": "dead"}.get(mode)
    if dead is not None:
        destinations[dead] = (f"http://127.0.0.1:{free_port()}", dead)  # nothing listens there
    port = free_port()
    a_to = ("main", "dead") if mode == "mirror" else ("main",)
    config = _config(folder, [("a", 1, a_to), ("b", BATCH, ("down",) if mode == "down" else ("main",))],
                     destinations, port)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    proc = UploaderProcess(config)
    try:
        proc.wait_for(r"service_started", timeout=60)
        a_ids, b_ids = _beside(proc, folder / "data", result, seconds)
        result.warnings = len(proc.errors())
        result.failed = sum(int(float(m[1])) for m in _FAILED.finditer(_scrape(port)))
        if dead is None and result.warnings:
            raise BenchError("uploader run logged problems: " + "; ".join(proc.errors()[:3]))
    finally:
        _stop(proc)
    _exactly_once(server, bucket, "a", a_ids)
    _exactly_once(server, bucket, "b", b_ids if mode == "flood" else [])
    server.empty_bucket(bucket)
    server.collect_garbage()
    return result


def _beside(proc: UploaderProcess, data: Path, result: _Isolated, seconds: float) -> tuple[list[str], list[str]]:
    """Write A at its pace (B meanwhile, as the mode says); A's latencies; the ids of both."""
    landed = _Landed(proc, {A_TAG: "a", B_TAG: "b"})
    a_ids = [FetchWriter(data / "a.json", TZ_NAME).append(make_raw(FETCH_BYTES, 0), A_TAG, fetch_id="a-warm")]
    landed.wait({"a": 1})  # warm-up: A's first append probes the store
    b = None if result.mode in ("idle", "mirror") else _Writer(
        [data / "b.json"], ["b-"], [B_TAG], B_FLOOD if result.mode == "flood" else B_DOWN_RATE, seconds + 4, 0, BATCH)
    a = _Writer([data / "a.json"], ["a-"], [A_TAG], A_RATE, seconds, 0, 1)
    cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
    if b is not None:
        b.go()
        time.sleep(2.0)  # B under way before A's first write, and on after its last
    a.go()
    a_ends = a.result()["ends"][0]
    a_ids += [f"a-{k:06d}" for k in range(len(a_ends))]
    landed.wait({"a": len(a_ids)})
    result.cpu_share = 100 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
    result.latencies = [1000 * (landed.at("a", g + 1) - end) for g, end in enumerate(a_ends)]
    b_ids: list[str] = []
    if b is not None:
        b_ends = b.result()["ends"][0]
        b_ids = [f"b-{k:06d}" for k in range(len(b_ends))]
        result.b_written, result.b_seconds = len(b_ends), b_ends[-1] - b_ends[0]
    if result.mode == "flood":
        landed.wait({"b": len(b_ids)}, timeout=600)
    result.b_stored = landed.total("b")
    return a_ids, b_ids


def _isolation_rows(section: Section, runs: list[_Isolated], seconds: float) -> None:
    idle, flood, down, mirror = runs
    base = [percentile(idle.latencies, 50), percentile(idle.latencies, 95), max(idle.latencies)]

    def ratio(r: _Isolated) -> str:
        now = [percentile(r.latencies, 50), percentile(r.latencies, 95), max(r.latencies)]
        return " / ".join(f"{n / b:.1f}x" for n, b in zip(now, base, strict=True)) + " vs B idle"

    n = len(idle.latencies)
    section.rows += [
        Row(f"A's latency p50 / p95 / max ({n} fetches), B idle", project=idle.figures()),
        Row("A's latency p50 / p95 / max, B flooded",
            project=f"{flood.figures()} (B at {flood.b_written / flood.b_seconds:,.0f} fetches/s)", ratio=ratio(flood)),
        Row("A's latency p50 / p95 / max, B's destination down", project=down.figures(), ratio=ratio(down)),
        Row("A's latency to its main destination p50 / p95 / max, A's mirror down", project=mirror.figures(),
            ratio=ratio(mirror)),
    ]
    section.notes.append(
        f"isolation: A {A_RATE:g} fetches/s of {FETCH_BYTES // 1024} KiB for {seconds:.0f} s, batch_size 1; "
        f"latency from the return of A's write to the upload log line (after one warm-up fetch). B flooded: "
        f"its writer asked for {B_FLOOD:,.0f}/s and wrote {flood.b_written:,} fetches in {flood.b_seconds:.0f} s, "
        f"batch_size {BATCH}, all stored exactly once; the service used {flood.cpu_share:.0f}% of a core "
        f"(B idle: {idle.cpu_share:.1f}%). B down: {down.b_written:,} fetches at {B_DOWN_RATE:g}/s to a port "
        f"nothing listens on, {down.b_stored} stored, {down.failed} failed appends (/metrics), "
        f"{down.warnings} warnings logged; the service used {down.cpu_share:.1f}% of a core. A's mirror down: A "
        f"ships to main and to a port nothing listens on, B idle; {mirror.failed} failed appends to the dead "
        f"mirror, {mirror.warnings} warnings logged; the service used {mirror.cpu_share:.1f}% of a core")


def run(server: BenchServer, load_seconds: float = 30.0, quiet_seconds: float = 60.0,
        isolation_seconds: float = 30.0) -> Section:
    """Scaling over 1, 5 and 20 streams, then the three isolation runs, on ``server``."""
    section = Section(f"13. Many streams in one `uploader run` (issue 18): {' / '.join(map(str, COUNTS))} "
                      "streams, and one stream's latency beside another's flood or outage")
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as tmp:
        services, scraper = _scaling(server, Path(tmp), load_seconds, quiet_seconds)
        server.collect_garbage()
        modes = ("idle", "flood", "down", "mirror")
        runs = [_isolated(server, Path(tmp), mode, isolation_seconds) for mode in modes]
    _scaling_rows(section, services, scraper, quiet_seconds)
    _isolation_rows(section, runs, isolation_seconds)
    return section


if __name__ == "__main__" and sys.argv[1:2] == ["write"]:
    print("ready", flush=True)
    if sys.stdin.readline().strip() == "go":  # else the bench gave up: write nothing
        print(json.dumps(_write(json.loads(sys.argv[2]))), flush=True)
