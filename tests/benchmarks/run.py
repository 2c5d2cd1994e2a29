#!/usr/bin/env python3
"""Run the benchmarks (tests/benchmarks/) on moto and Ceph RGW, print a table, write docs/BENCHMARKS.md.

    .venv/bin/python tests/benchmarks/run.py                      # everything, both servers
    .venv/bin/python tests/benchmarks/run.py --server moto --only append --sizes 1,16
    .venv/bin/python tests/benchmarks/run.py --only backlog --backlog-mib 32,64 --output /tmp/bench.md  # a trial
    python -m tests.benchmarks.run --help                         # the same, from the repo root

Each server is started once per run (``tests/rig/s3servers.py``): moto, and a private Ceph RGW
cluster, the server Linode Object Storage runs. Every benchmark that talks to S3 runs on each
(the idle one on moto only: an idle service sends nothing), and the report puts the figures
side by side. Run it alone on the machine: the report records the load beside it. The soak
alone takes about 13 minutes per server at its default ``--soak-minutes 10``; the many-streams
benchmark (``--only streams``) about 5.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: import the repo's packages, not this folder's files
    sys.path[0] = str(ROOT)

from tests.benchmarks import (
    bench_append,
    bench_backlog,
    bench_catchup,
    bench_export,
    bench_gzip,
    bench_idle,
    bench_latency,
    bench_read,
    bench_replay,
    bench_soak,
    bench_streams,
    bench_throughput,
    bench_writer,
)
from tests.benchmarks.harness import (
    BenchError,
    BenchServer,
    OsdWatch,
    Row,
    Section,
    start_ceph,
    start_moto,
    vm_hwm_kib,
)
from tests.rig.s3servers import ServerUnavailable, ceph_missing

log = logging.getLogger("bench")

NAMES = ("writer", "latency", "append", "throughput", "replay", "idle", "backlog", "export", "soak", "catchup",
         "gzip", "read", "streams")
MOTO_ONLY = {"idle": "an idle service sends the server nothing, so the server cannot change this figure"}
_GIB = 1 << 30


# -- the machine --------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """Cores, CPU model, memory and load, read from /proc."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def background() -> list[str]:
    """Other busy processes on the machine (not this bench or its children): the load to report."""
    mine = {os.getpid()}
    out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"], capture_output=True,
                         text=True, check=False).stdout
    busy = []
    for line in out.splitlines()[1:]:
        pid, ppid, pcpu, args = line.split(None, 3)
        if int(pid) in mine or int(ppid) in mine or float(pcpu) < 5:
            continue
        busy.append(f"{pcpu}% {args[:110]}")
    return busy[:6]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- one benchmark's results on every server ----------------------------------------------------


@dataclass
class Result:
    """One benchmark's sections, one per server it ran on (in the run's server order)."""

    name: str
    sections: dict[str, Section] = field(default_factory=dict)  # server name -> section
    skipped: str = ""  # why it ran on fewer servers than the run has

    @property
    def title(self) -> str:
        titles = [s.title for s in self.sections.values()]
        return next((t for t in titles if not t.endswith("(failed)")), titles[0])


def _met(row_by_server: dict[str, Row], servers: list[BenchServer]) -> str:
    judged = [(s, row_by_server[s.name].met) for s in servers
              if s.name in row_by_server and row_by_server[s.name].met is not None]
    if not judged:
        return "-"
    if all(met for _, met in judged):
        return "yes"
    if not any(met for _, met in judged):
        return "**no**"
    return ", ".join(f"{s.title} {'yes' if met else '**no**'}" for s, met in judged)


def table(results: list[Result], servers: list[BenchServer]) -> str:
    """The result table as Markdown (also readable as plain text): servers side by side."""
    head = ["benchmark", "metric"]
    head += [s.title for s in servers]
    head += [f"seed ({s.title})" for s in servers]
    head += [f"ratio ({s.title})" for s in servers]
    head += ["target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for result in results:
        short = result.title.split(":")[0].split(" (")[0]
        metrics: list[str] = []
        by_metric: dict[str, dict[str, Row]] = {}
        for server_name, section in result.sections.items():
            for row in section.rows:
                if row.metric not in by_metric:
                    metrics.append(row.metric)
                    by_metric[row.metric] = {}
                by_metric[row.metric][server_name] = row
        for metric in metrics:
            rows = by_metric[metric]
            first = next(iter(rows.values()))
            cells = [short, metric]
            cells += [rows[s.name].project if s.name in rows else "-" for s in servers]
            cells += [rows[s.name].seed if s.name in rows else "-" for s in servers]
            cells += [rows[s.name].ratio if s.name in rows else "-" for s in servers]
            cells += [first.target, _met(rows, servers)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(result: Result, servers: list[BenchServer]) -> list[str]:
    """A benchmark's notes: the same on every server once, the others under the server's name."""
    by_server = [(s, result.sections[s.name]) for s in servers if s.name in result.sections]
    out: list[str] = []
    common = [n for n in by_server[0][1].notes if all(n in sec.notes for _, sec in by_server)]
    for server, section in by_server:
        own = [n for n in section.notes if n not in common]
        out += [f"**{server.title}**: {n}" for n in own]
    out += common
    if result.skipped:
        out.append(result.skipped)
    out.append("ran in " + ", ".join(f"{sec.seconds:.0f} s on {s.title}" for s, sec in by_server))
    return out


def _osd_peak(server: BenchServer) -> int:
    """The Ceph OSD's peak resident memory so far, in bytes (0 if it is gone)."""
    try:
        return vm_hwm_kib(server.osd_pid) * 1024
    except (OSError, BenchError):
        return 0


# -- running ------------------------------------------------------------------------------------


def run_one(name: str, server: BenchServer, call: Callable[[BenchServer], Section]) -> tuple[Section, bool]:
    """Run one benchmark on one server; a failure becomes a section that says so loudly."""
    print(f"running {name} on {server.title} ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    ok = True
    with OsdWatch(server) as watch:
        try:
            section = call(server)
        except Exception as exc:  # noqa: BLE001 - reported in the table and the notes, run goes on
            traceback.print_exc()
            ok = False
            section = Section(f"{name} (failed)")
            section.rows.append(Row("**FAILED**", project=f"{type(exc).__name__}"))
            section.notes.append(f"**FAILED**: {type(exc).__name__}: {' '.join(str(exc).split())[:600]}")
    section.seconds = time.monotonic() - started
    if server.conf is not None:
        try:
            server.collect_garbage()
        except Exception as exc:  # noqa: BLE001 - about the cluster, not the benchmark's figures
            section.notes.append(f"garbage collection after the benchmark failed: {exc}")
        if watch.capacity:
            share = watch.peak_used / watch.capacity
            loud = "**" if share >= 0.85 else ""
            section.notes.append(
                f"the OSD (memstore: every object in RAM) held at most {loud}{watch.peak_used / _GIB:.2f} GiB "
                f"of its {watch.capacity / _GIB:.0f} GiB ({share:.0%}){loud}, replaced objects awaiting "
                f"garbage collection included (it refuses writes at 95%)")
    print(f"  {name} on {server.title}: {section.seconds:.0f} s, load {loadavg()}"
          + ("" if ok else "  ** FAILED **"), file=sys.stderr, flush=True)
    return section, ok


def write_report(path: Path, results: list[Result], servers: list[BenchServer], command: str,
                 info: dict[str, str], load: dict[str, str], busy: dict[str, list[str]], total: float,
                 ceph_problem: str | None, ceph_memstore: int, ceph_start: float, osd_hwm: dict[str, int],
                 failures: list[str]) -> None:
    out = [
        "# Benchmarks",
        "",
        ("Generated by `tests/benchmarks/run.py` (do not edit by hand; re-run it). The seed is "
         "`tests/benchmarks/seed_logger.py`, the design this project replaces, kept only as the "
         "thing to beat: one Python subprocess per fetch, the fetch passed as argv, every 10th "
         "fetch a GET + PUT of the whole day document. Every benchmark that talks to S3 runs on "
         "two servers, each started once per run in its own processes on loopback with fake "
         "credentials: **moto** (an imitation of AWS S3) and **Ceph RGW** (the server Linode "
         "Object Storage runs: a private one-host cluster whose OSD keeps its data in RAM). On "
         "each server the seed and the project run on the same machine with the same fetches; "
         "ratio = seed / project on that server. Each benchmark runs on moto, then at once on "
         "Ceph RGW, so both see much the same load from the rest of the machine."),
        "",
    ]
    if not ceph_problem and len(servers) == 1:
        out += [f"> This run used {servers[0].title} only (`--server {servers[0].name}`).", ""]
    if ceph_problem:
        out += [(f"> **Ceph RGW did not run: {ceph_problem}. Every figure below is from moto "
                 "only; this report does not show how the uploader does on Linode.**"), ""]
    if failures:
        out += ["> **Failed (their figures are missing below):** " + "; ".join(failures), ""]
    out += [
        "## How to reproduce",
        "",
        ("    scripts/test.sh -q                  # once: creates .venv with the test extras (moto) "
         "and installs Ceph's Debian packages (radosgw ceph-mon ceph-osd) when missing"),
        f"    {command}",
        "",
        (f"This run took {total / 60:.1f} minutes. Options: `--server moto|ceph|both` (default "
         f"both), `--only NAME[,NAME]` ({', '.join(NAMES)}), `--sizes 1,16,128,512` and "
         "`--ceph-sizes` (day sizes of the append benchmark per server), `--ceph-memstore-gib`, "
         "`--throughput-seconds`, `--throughput-rate` (fetches/s of the paced writer), "
         "`--idle-seconds`, `--soak-minutes` (the soak's paced and quiet time, per server), "
         "`--streams-seconds` and `--streams-quiet-seconds` (the many-streams benchmark's paced and quiet windows), `--catchup-mib 256,1024` (MiB in the local file when the service starts), "
         "`--latency-batches`, `--replay-single-batches`, `--backlog-mib 256,1024` "
         "(backlog sizes replayed), `--export-mib`, `--read-mib` (the day read back), "
         "`--output` (the report's path, `-` for none); "
         "`--help` lists them. With `--server both` a machine that "
         "cannot start Ceph still gets the moto figures, with a warning at the top of the report; "
         "`--server ceph` fails instead."),
        "",
        "## Machine",
        "",
        (f"- {info['cores']} cores ({info['cpu']}), {info['memory']} memory, "
         f"Linux {info['kernel']}, Python {info['python']}"),
        (f"- load average at start {load['start']}, at end {load['end']} "
         f"(taken {datetime.now().strftime('%Y-%m-%d %H:%M')})"),
    ]
    for server in servers:
        if server.name == "moto":
            out.append(f"- {server.version}: `moto.server` in its own process")
        else:
            out.append(
                f"- {server.version}: one mon, one OSD on memstore ({ceph_memstore / _GIB:.0f} GiB, in "
                "RAM), radosgw with the beast frontend, from Debian's packages; started in "
                f"{ceph_start:.0f} s. RGW frees replaced objects in its garbage collection (every "
                f"{server.gc_period_s} s, objects older than {server.gc_wait_s} s); the bench also runs it "
                "(`radosgw-admin gc process --include-all`) after each benchmark, outside the "
                "measurements. The OSD's resident memory peaked at "
                f"{osd_hwm.get(server.name, 0) / _GIB:.1f} GiB over the run (VmHWM)")
    for when in ("start", "end"):
        if busy[when]:
            out.append(f"- **Other load was running** at the {when} of this run (other work on the "
                       "same machine; figures are pessimistic for it):")
            out.extend(f"  - `{b}`" for b in busy[when])
    out += ["", "## Results", "", table(results, servers), ""]
    for result in results:
        out += [f"### {result.title}", ""]
        out += [f"- {n}" for n in notes(result, servers)]
        out += [""]
    path.write_text("\n".join(out).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", choices=("moto", "ceph", "both"), default="both",
                   help="which S3 server(s) to run on (default both)")
    p.add_argument("--only", default=",".join(NAMES), help="comma-separated benchmarks to run")
    p.add_argument("--sizes", default=",".join(map(str, bench_append.DEFAULT_SIZES_MIB)),
                   help="day sizes in MiB for the append benchmark on moto")
    p.add_argument("--ceph-sizes", default=",".join(map(str, bench_append.DEFAULT_SIZES_MIB)),
                   help="day sizes in MiB for the append benchmark on Ceph RGW")
    p.add_argument("--ceph-memstore-gib", type=float, default=6.0,
                   help="RAM the Ceph OSD may hold (memstore); replaced objects wait for RGW's "
                        "garbage collection, so large days need several times their size")
    p.add_argument("--throughput-seconds", type=float, default=60.0,
                   help="length of each throughput window (flat out, then paced)")
    p.add_argument("--throughput-rate", type=float, default=bench_throughput.DEFAULT_RATE,
                   help="fetches/s of the paced throughput writer (50 KiB each; default %(default)s)")
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--soak-minutes", type=float, default=10.0,
                   help="paced and quiet time of the soak per server, besides its warm-up and the seed's "
                        "phases (default %(default)s; 2 for a trial)")
    p.add_argument("--catchup-mib", default=",".join(map(str, bench_catchup.DEFAULT_SIZES_MIB)),
                   help="MiB in the local file when the catch-up starts (default %(default)s)")
    p.add_argument("--gzip-mib", default=",".join(map(str, bench_gzip.DEFAULT_SIZES_MIB)),
                   help="raw day sizes of the gzip benchmark (MiB)")
    p.add_argument("--streams-seconds", type=float, default=30.0,
                   help="paced time per service and per isolation run of the many-streams benchmark "
                        "(default %(default)s)")
    p.add_argument("--streams-quiet-seconds", type=float, default=60.0,
                   help="its quiet window, measured on every service at once (default %(default)s; keep >= 60)")
    p.add_argument("--latency-batches", type=int, default=250)
    p.add_argument("--replay-batches", type=int, default=1000)
    p.add_argument("--replay-single-batches", type=int, default=150,
                   help="batches replayed one append per batch (1000 takes ~8 minutes on moto)")
    p.add_argument("--backlog-mib", default=",".join(map(str, bench_backlog.DEFAULT_SIZES_MIB)),
                   help="MiB of spooled batches replayed by the backlog benchmark, one run per size")
    p.add_argument("--export-mib", type=int, default=bench_export.DEFAULT_SIZE_MIB,
                   help="size of the day document the export benchmark exports")
    p.add_argument("--read-mib", type=int, default=bench_read.DEFAULT_SIZE_MIB,
                   help="size of the day document read back by export and verify, plain and gzip")
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "BENCHMARKS.md",
                   help="where to write the report ('-' to skip)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(NAMES)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(NAMES)}")
    sizes = {"moto": tuple(int(s) for s in args.sizes.split(",")),
             "ceph": tuple(int(s) for s in args.ceph_sizes.split(","))}
    memstore = int(args.ceph_memstore_gib * _GIB)
    backlog_mib = tuple(int(s) for s in args.backlog_mib.split(","))
    catchup_mib = tuple(int(s) for s in args.catchup_mib.split(","))
    gzip_mib = tuple(int(s) for s in args.gzip_mib.split(","))

    runs: dict[str, Callable[[BenchServer], Section]] = {
        "writer": lambda s: bench_writer.run(s),
        "latency": lambda s: bench_latency.run(s, batches=args.latency_batches),
        "append": lambda s: bench_append.run(s, sizes_mib=sizes[s.name]),
        "throughput": lambda s: bench_throughput.run(s, duration=args.throughput_seconds,
                                                     rate=args.throughput_rate),
        "replay": lambda s: bench_replay.run(s, batches=args.replay_batches,
                                             single_batches=args.replay_single_batches),
        "idle": lambda s: bench_idle.run(s, seconds=args.idle_seconds),
        "backlog": lambda s: bench_backlog.run(s, sizes_mib=backlog_mib),
        "export": lambda s: bench_export.run(s, size_mib=args.export_mib),
        "soak": lambda s: bench_soak.run(s, minutes=args.soak_minutes),
        "catchup": lambda s: bench_catchup.run(s, sizes_mib=catchup_mib),
        "gzip": lambda s: bench_gzip.run(s, sizes_mib=gzip_mib),
        "read": lambda s: bench_read.run(s, size_mib=args.read_mib),
        "streams": lambda s: bench_streams.run(s, load_seconds=args.streams_seconds,
                                               quiet_seconds=args.streams_quiet_seconds,
                                               isolation_seconds=args.streams_seconds),
    }
    load = {"start": loadavg()}
    busy = {"start": background()}
    started = time.monotonic()
    servers: list[BenchServer] = []
    ceph_problem: str | None = None
    ceph_start = 0.0
    results: list[Result] = []
    failures: list[str] = []
    with ExitStack() as stack:
        if args.server in ("moto", "both"):
            moto, launcher = start_moto()
            stack.callback(launcher.stop)
            servers.append(moto)
        if args.server in ("ceph", "both"):
            t = time.monotonic()
            try:
                if why := ceph_missing():
                    raise ServerUnavailable(why)
                print("starting Ceph RGW ...", file=sys.stderr, flush=True)
                ceph, ceph_launcher = start_ceph(memstore)
            except ServerUnavailable as exc:
                ceph_problem = " ".join(str(exc).split())
                if args.server == "ceph":
                    print(f"error: Ceph RGW cannot start here: {ceph_problem}", file=sys.stderr)
                    return 1
                print("\n" + "!" * 78 + f"\n!! WARNING: Ceph RGW cannot start here: {ceph_problem}\n"
                      "!! Going on with moto only: these figures do not show how the uploader does on "
                      "Linode.\n" + "!" * 78 + "\n", file=sys.stderr, flush=True)
            else:
                stack.callback(ceph_launcher.stop)
                ceph_start = time.monotonic() - t
                servers.append(ceph)
                print(f"  Ceph RGW up in {ceph_start:.0f} s at {ceph.url}", file=sys.stderr, flush=True)
        for name in NAMES:
            if name not in only:
                continue
            result = Result(name)
            targets = servers
            if name in MOTO_ONLY and len(servers) > 1:
                targets = [s for s in servers if s.name == "moto"]
                result.skipped = f"ran on moto only: {MOTO_ONLY[name]}"
            for server in targets:
                section, ok = run_one(name, server, runs[name])
                result.sections[server.name] = section
                if not ok:
                    failures.append(f"{name} on {server.title}")
            results.append(result)
        osd_hwm = {s.name: _osd_peak(s) for s in servers if s.osd_pid}
    load["end"] = loadavg()
    busy["end"] = background()
    total = time.monotonic() - started
    print(table(results, servers))
    if ceph_problem:
        print(f"\nWARNING: Ceph RGW did not run ({ceph_problem}); the figures above are moto only.",
              file=sys.stderr)
    if str(args.output) != "-":
        given = argv if argv is not None else sys.argv[1:]
        command = ".venv/bin/python tests/benchmarks/run.py" + (" " + shlex.join(given) if given else "")
        write_report(args.output, results, servers, command, machine(), load, busy, total,
                     ceph_problem, memstore, ceph_start, osd_hwm, failures)
        print(f"wrote {args.output}", file=sys.stderr)
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
