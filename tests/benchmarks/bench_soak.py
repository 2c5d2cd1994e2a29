"""Benchmark 9: a field soak, `uploader run` as operators run it, beside the seed at the same paces.

The real ``uploader run`` (s3 backend on moto or Ceph RGW, ``/metrics`` scraped as Prometheus
would) starts on a local file that already holds 15 records: it ships one batch at once and
keeps 5 waiting, as after a restart. A pipeline in a child process (``pace_child.py``, the
shipped ``FetchWriter``) then writes 1 and 10 fetches/s of 5 and 50 KiB, with a quiet spell (no
writes) before, between and after the paced phases; 5 records wait in the file through every
quiet spell. Half the time is paced, half quiet, scaled by ``minutes``. At the end 5 more
records complete the last batch, and every fetch written must be stored exactly once.

The seed runs at the same paces: one ``seed_logger.py`` process per fetch, started by the same
child with ``subprocess.run`` as the old pipeline did. Its CPU is the sum of those processes'
(rusage of the waited children); it has no resident process, so its quiet CPU is 0.

CPU is utime + stime (``/proc`` for the service), never wall time. A paced phase's window runs
from its first write until the day document holds every complete batch of it, so the work it
causes is charged to it. Latency per fetch: from the start of its append (or the seed's call)
to the service's ``upload`` log line, as in benchmark 2 (an upper bound), or to the return of
the seed's 10th call; so it includes the wait for the batch to fill, for both designs.
Fetches whose batch completes in a later phase are left out.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import write_config
from tests.rig.s3servers import free_port
from uploader.fetchlog import FetchWriter

from .harness import (
    ROOT,
    UPLOAD_LINE,
    Background,
    BenchError,
    BenchServer,
    ProcState,
    Row,
    Section,
    UploaderProcess,
    bench_env,
    cpu_over,
    cpu_seconds,
    percentile,
    prefill,
    proc_state,
    running_uploader,
    seed_env,
    seed_stored,
    stored_fetch_ids,
)

__all__ = ["run"]

log = logging.getLogger(__name__)

PACES = ((1.0, 5), (10.0, 5), (1.0, 50), (10.0, 50))  # fetches/s, KiB per fetch, in this order
SHARE_TARGETS = {(1.0, 5): 2.0, (10.0, 5): 10.0}  # % of one core for the service
QUIET_TARGET = 0.5  # % of one core
RSS_SLACK_MIB = 10
BATCH = 10  # the service's batch_size (the product's default)
PREFILL = 15  # one batch shipped at start, 5 records left waiting
_KIB = 1024


@dataclass(frozen=True)
class Plan:
    """Phase lengths in seconds, scaled by the soak's minutes."""

    paced_s: float
    quiet_s: float
    seed_s: float
    warmup_s: float

    @classmethod
    def of(cls, minutes: float, retry_interval_s: int) -> Plan:
        total = minutes * 60
        # Warm-up spans one retry tick, so threads started on the first tick are in the baseline.
        return cls(paced_s=total / 8, quiet_s=total / 10, seed_s=max(10.0, total / 20),
                   warmup_s=retry_interval_s + 5.0)


@dataclass
class Paced:
    """One paced phase of one design."""

    rate: float
    kib: int
    starts: list[float]
    ends: list[float]
    window: float  # s, from the first write until the document holds every complete batch
    cpu: float  # s: the service, or the seed's processes
    pipeline_cpu: float  # s: the writing process itself (FetchWriter.append, or spawning the seed)
    server_cpu: float  # s: the S3 server's processes
    latencies: list[float] = field(default_factory=list)  # s, per fetch
    tenth: list[float] = field(default_factory=list)  # s, the 10th fetch of each batch (benchmark 2)

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def achieved(self) -> float:
        return self.count / (self.ends[-1] - self.starts[0])

    def per_fetch_ms(self, cpu: float) -> float:
        return 1000 * cpu / self.count


@dataclass
class Soak:
    """The project's side of the soak."""

    phases: list[Paced] = field(default_factory=list)
    quiet: list[tuple[float, float]] = field(default_factory=list)  # (CPU s, window s) per spell
    states: list[ProcState] = field(default_factory=list)  # started, after warm-up, after each spell
    stored: int = 0
    scrapes: int = 0

    @property
    def spells(self) -> list[float]:
        """Each quiet spell's CPU in % of a core."""
        return [100 * cpu / window for cpu, window in self.quiet]


class _Landed:
    """The service's appends as it logs them: when each arrived, and fetches stored after it."""

    def __init__(self, proc: UploaderProcess) -> None:
        self.proc = proc
        self.seen = 0
        self.events: list[tuple[float, int]] = []

    @property
    def total(self) -> int:
        return self.events[-1][1] if self.events else 0

    def wait(self, fetches: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.total < fetches:
            left = max(0.0, deadline - time.monotonic())
            idx, at, line = self.proc.wait_for(UPLOAD_LINE.pattern, timeout=left, start=self.seen)
            self.seen = idx + 1
            m = UPLOAD_LINE.search(line)
            assert m is not None
            self.events.append((at, self.total + int(m["fetches"])))

    def at(self, g: int) -> float:
        """When fetch ``g`` (0-based, in the order written) was in the day document (FIFO)."""
        return self.events[bisect_right([n for _, n in self.events], g)][0]


class _Scraper(Background):
    """GETs ``/metrics`` every ``every`` seconds, as a Prometheus server does."""

    def __init__(self, port: int, every: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every = every
        self.done = 0
        self.failed: list[str] = []
        super().__init__("scraper")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                with urllib.request.urlopen(self.url, timeout=10) as answer:
                    answer.read()
                self.done += 1
            except OSError as exc:
                self.failed.append(str(exc))


def _pace(mode: str, local: Path, rate: float, seconds: float, kib: int, prefix: str,
          env: dict[str, str], before: Callable[[], None]) -> dict[str, Any]:
    """Run ``pace_child`` once; ``before`` is called once it is ready, just before it starts."""
    args = [mode, str(local), str(rate), str(seconds), str(kib * _KIB), prefix]
    child = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.pace_child", *args], env=env,
                             cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise BenchError(f"pace_child {mode} did not get ready")
    before()
    child.stdin.write("go\n")
    child.stdin.flush()
    out: dict[str, Any] = json.loads(child.stdout.readline() or "null")
    if child.wait() != 0 or not out:
        raise BenchError(f"pace_child {mode} failed (exit {child.returncode})")
    return out


def _latencies(phase: Paced, offset: int, landed_at: Callable[[int], float]) -> None:
    """Fill the phase's latencies; fetch i of the phase is fetch ``offset + i`` of the file."""
    end = offset + phase.count
    for i, started in enumerate(phase.starts):
        g = offset + i
        if g - g % BATCH + BATCH <= end:  # its batch completed within the phase
            phase.latencies.append(landed_at(g) - started)
            if g % BATCH == BATCH - 1:
                phase.tenth.append(phase.latencies[-1])


def _state(pid: int) -> ProcState:
    """The process's state; fds and threads the fewest of three looks 0.2 s apart (a leaked one
    is in every look, one held a moment by a scrape is not, and must not fail the comparison)."""
    looks = [proc_state(pid)]
    for _ in range(2):
        time.sleep(0.2)
        looks.append(proc_state(pid))
    return ProcState(looks[-1].rss_kib, min(st.fds for st in looks), min(st.threads for st in looks))


def _project_phase(proc: UploaderProcess, server: BenchServer, landed: _Landed, local: Path,
                   rate: float, kib: int, seconds: float, prefix: str) -> Paced:
    marks: dict[str, float] = {}

    def before() -> None:
        marks.update(cpu=cpu_seconds(proc.pid), server=server.cpu_seconds(), at=time.monotonic())

    offset = landed.total + PREFILL % BATCH  # fetch number of its first: after those waiting
    out = _pace("writer", local, rate, seconds, kib, prefix, bench_env(), before)
    landed.wait(offset + len(out["starts"]) - PREFILL % BATCH)
    phase = Paced(rate, kib, out["starts"], out["ends"], time.monotonic() - marks["at"],
                  cpu_seconds(proc.pid) - marks["cpu"], out["cpu"], server.cpu_seconds() - marks["server"])
    _latencies(phase, offset, landed.at)
    return phase


def _soak(proc: UploaderProcess, server: BenchServer, local: Path, plan: Plan) -> tuple[Soak, list[str]]:
    """Warm up, then quiet and paced phases in turn; returns the figures and every fetch id written."""
    soak = Soak(states=[_state(proc.pid)])
    ids = [f"pre{i:06d}" for i in range(PREFILL)]
    landed = _Landed(proc)
    landed.wait(PREFILL - PREFILL % BATCH)
    time.sleep(plan.warmup_s)
    soak.states.append(_state(proc.pid))
    for k, pace in enumerate((*PACES, None)):
        soak.quiet.append(cpu_over(proc.pid, plan.quiet_s))
        soak.states.append(_state(proc.pid))
        if pace is None:
            break
        rate, kib = pace
        prefix = f"p{k}-"
        phase = _project_phase(proc, server, landed, local, rate, kib, plan.paced_s, prefix)
        soak.phases.append(phase)
        ids += [f"{prefix}{n:06d}" for n in range(phase.count)]
    writer = FetchWriter(local, "America/New_York")
    ids += [writer.append({"top_up": n}, 5, fetch_id=f"post{n:06d}") for n in range(BATCH - PREFILL % BATCH)]
    landed.wait(len(ids))
    return soak, ids


def _project(server: BenchServer, plan: Plan, retry_interval_s: int, scrape_s: float) -> Soak:
    bucket = server.new_bucket("soak")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        config = write_config(Path(tmp), s3=(server.url, bucket), quick=False,
                              spool={"retry_interval_s": retry_interval_s}, metrics={"listen": f"127.0.0.1:{port}"})
        local = Path(tmp) / "data" / "all_api.json"
        prefill(local, PREFILL, 5 * _KIB, "pre")
        with running_uploader(config) as proc, _Scraper(port, scrape_s) as scraper:
            soak, ids = _soak(proc, server, local, plan)
            errors = proc.errors()
    stored = stored_fetch_ids(server.admin, bucket, "logs")
    server.empty_bucket(bucket)
    server.collect_garbage()
    if errors:
        raise BenchError("uploader run logged problems: " + "; ".join(errors[:3]))
    if scraper.failed:
        raise BenchError(f"{len(scraper.failed)} scrapes of /metrics failed: {scraper.failed[0]}")
    if stored != Counter(ids):
        missing, twice = set(ids) - set(stored), [i for i, n in stored.items() if n > 1]
        raise BenchError(f"of {len(ids)} fetches written, {len(missing)} are not stored (e.g. "
                         f"{sorted(missing)[:3]}), {len(twice)} stored more than once, "
                         f"{len(set(stored) - set(ids))} stored that were never written")
    soak.stored, soak.scrapes = len(ids), scraper.done
    return soak


def _seed_phase(server: BenchServer, bucket: str, local: Path, rate: float, kib: int,
                seconds: float) -> Paced:
    marks: dict[str, float] = {}

    def before() -> None:
        marks.update(server=server.cpu_seconds(), at=time.monotonic())

    out = _pace("seed", local, rate, seconds, kib, "seed", seed_env(server.url, bucket, local), before)
    ends = out["ends"]
    phase = Paced(rate, kib, out["starts"], ends, time.monotonic() - marks["at"], out["children_cpu"],
                  out["cpu"], server.cpu_seconds() - marks["server"])
    _latencies(phase, 0, lambda g: ends[g - g % BATCH + BATCH - 1])  # its 10th call uploads the batch
    return phase


def _seed(server: BenchServer, plan: Plan) -> list[Paced]:
    """The seed at each pace and size, one day document for all (as one day of the old pipeline)."""
    bucket = server.new_bucket("soak-seed")
    with tempfile.TemporaryDirectory(prefix="bench-soak-seed-") as tmp:
        local = Path(tmp) / "seed_all_api.json"
        phases = [_seed_phase(server, bucket, local, rate, kib, plan.seed_s) for rate, kib in PACES]
    uploads, fetches = seed_stored(server.admin, bucket)
    written = sum(p.count for p in phases)
    server.empty_bucket(bucket)
    server.collect_garbage()
    if uploads != written // BATCH or fetches != written:
        raise BenchError(f"the seed's document holds {uploads} uploads / {fetches} fetches "
                         f"after {written} calls")
    return phases


def _s(seconds: list[float]) -> str:
    return f"{percentile(seconds, 50):.2f} s / {percentile(seconds, 99):.2f} s"


def _paced_rows(p: Paced, s: Paced) -> list[Row]:
    label = f"{p.rate:g}/s, {p.kib} KiB"
    share = 100 * p.cpu / p.window
    seed_share = s.per_fetch_ms(s.cpu) * s.rate / 10  # CPU per fetch x pace, in % of a core
    behind = "" if s.achieved >= 0.95 * s.rate else \
        f" (at {s.rate:g}/s; it managed {s.achieved:.1f}/s, using {100 * s.cpu / s.window:.0f}%)"
    target = SHARE_TARGETS.get((p.rate, p.kib))
    return [
        Row(f"{label}: CPU per fetch", seed=f"{s.per_fetch_ms(s.cpu):.0f} ms",
            project=f"{p.per_fetch_ms(p.cpu):.2f} ms", ratio=f"{s.cpu / s.count / (p.cpu / p.count):,.0f}x"),
        Row(f"{label}: CPU, % of a core", seed=f"{seed_share:.0f}%{behind}", project=f"{share:.2f}%",
            target="-" if target is None else f"<= {target:g}%",
            met=None if target is None else share <= target),
        Row(f"{label}: latency p50 / p99", seed=_s(s.latencies), project=_s(p.latencies)),
    ]


def _state_rows(soak: Soak) -> list[Row]:
    """Quiet CPU, what the process holds (start, after warm-up, end), and the exactly-once check."""
    started, base, end = soak.states[0], soak.states[1], soak.states[-1]
    overall = 100 * sum(c for c, _ in soak.quiet) / sum(w for _, w in soak.quiet)
    rss = " / ".join(f"{st.rss_kib / 1024:.1f}" for st in (started, base, end)) + " MiB"
    return [
        Row(f"quiet: % of a core, worst of {len(soak.spells)} spells (all)", seed="0 (no resident process)",
            project=f"{max(soak.spells):.3f}% ({overall:.3f}%)", target=f"< {QUIET_TARGET:g}%",
            met=max(soak.spells) < QUIET_TARGET),
        Row("RSS of uploader run: started / after warm-up / end", project=rss,
            target=f"end <= after warm-up + {RSS_SLACK_MIB} MiB",
            met=end.rss_kib <= base.rss_kib + RSS_SLACK_MIB * 1024),
        Row("open fds: started / after warm-up / end", project=f"{started.fds} / {base.fds} / {end.fds}",
            target="end = after warm-up", met=end.fds == base.fds),
        Row("threads: started / after warm-up / end",
            project=f"{started.threads} / {base.threads} / {end.threads}",
            target="end = after warm-up", met=end.threads == base.threads),
        Row("every fetch written in the day document exactly once", project=f"yes, {soak.stored:,}",
            target="all, once", met=True),
    ]


def _notes(section: Section, soak: Soak, seed: list[Paced], plan: Plan, scrape_s: float) -> None:
    section.notes.append(
        f"plan: {PREFILL} records in the file before start, warm-up {plan.warmup_s:.0f} s (one retry tick), "
        "then "
        f"{len(soak.quiet)} quiet spells of {plan.quiet_s:.0f} s around {len(PACES)} paced phases of "
        f"{plan.paced_s:.0f} s; /metrics scraped every {scrape_s:g} s ({soak.scrapes} scrapes); "
        f"{soak.stored:,} fetches written, each found exactly once in the day document")
    rss = ", ".join(f"{st.rss_kib / 1024:.1f}" for st in soak.states[2:])
    section.notes.append("quiet spells, % of a core: " + ", ".join(f"{x:.3f}%" for x in soak.spells)
                         + f"; RSS after each: {rss} MiB (/proc tick: 10 ms)")
    for p, s in zip(soak.phases, seed, strict=True):
        section.notes.append(
            f"{p.rate:g}/s, {p.kib} KiB: project {p.count:,} fetches at {p.achieved:.2f}/s, the pipeline's "
            f"append {p.per_fetch_ms(p.pipeline_cpu):.2f} ms CPU per fetch, the S3 server "
            f"{p.per_fetch_ms(p.server_cpu):.1f} ms, 10th fetch of a batch -> document p50 / p99 "
            f"{_s(p.tenth)}; seed {s.count:,} calls at {s.achieved:.2f}/s, spawning them "
            f"{s.per_fetch_ms(s.pipeline_cpu):.1f} ms CPU per fetch in the pipeline, the S3 server "
            f"{s.per_fetch_ms(s.server_cpu):.1f} ms, 10th call -> document {_s(s.tenth)}")
    section.notes.append(
        f"the seed ran {plan.seed_s:.0f} s per phase (then on to a whole batch), all into one day document "
        "(its cost grows with that document, which it reads and rewrites whole every 10th call); its "
        "% of a core is CPU per fetch x pace, the cost of keeping that pace; it has no resident process, "
        "so its quiet CPU is 0")


def run(server: BenchServer, minutes: float = 10.0, retry_interval_s: int = 30,
        scrape_s: float = 15.0) -> Section:
    """The soak on ``server``: the project for ``minutes`` (plus warm-up), then the seed."""
    plan = Plan.of(minutes, retry_interval_s)
    section = Section(f"9. Soak: `uploader run` on an existing file for {minutes:g} minutes, "
                      "paced and quiet, beside the seed")
    soak = _project(server, plan, retry_interval_s, scrape_s)
    seed = _seed(server, plan)
    for p, s in zip(soak.phases, seed, strict=True):
        section.rows += _paced_rows(p, s)
    section.rows += _state_rows(soak)
    _notes(section, soak, seed, plan, scrape_s)
    return section
