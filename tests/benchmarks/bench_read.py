"""Benchmark 11: a 512 MiB day read back by ``uploader export``, ``uploader verify`` and ``uploader
repair``, plain and gzip, beside ``cat`` and ``gzip -dc`` of the same bytes: MiB/s of JSON and peak RSS.

The day is made by the project itself, as benchmark 8 makes it: 50 KiB odds-shaped fetches cut into
the spool (``bench_backlog.spool_backlog``) and appended by ``uploader replay`` (not measured). Its
bytes are then copied to local disk once, compressed there by ``gzip -c`` (level 6), and the gzip
file is put with boto3 under the same day's key in a second bucket, with the same user metadata, as
another tool would write it; the reader inflates whatever starts with gzip's magic bytes.

Each command runs as a process of its own from a small launcher, so its peak RSS is its own
(ru_maxrss: the kernel's VmHWM of the process when it ended), twice; the faster run is reported.
``export`` writes jsonl to /dev/null (its summary line on stderr is checked against the day's fetch
count), as the references do. The references, in the same run: the object's GET streamed (boto3,
1 MiB reads) into ``cat > /dev/null`` and into ``gzip -dc > /dev/null``, and ``cat`` / ``gzip -dc``
of the local copies to /dev/null.

``repair`` runs twice over: on the sound day (it reads the archive and the day, finds nothing to
change, writes nothing), and on the day cut short inside its last upload, its metadata lost, put
again before each run (it reads the archive and the day, reads the day again as it writes the
rebuilt one, then verifies what it wrote). The plain bucket's spool archives every batch of the
day (the replay left them there): the cut upload comes back from it. The gzip day is put cut
short under the day's ``.json.gz`` key, so that repair writes it back gzip; its spool archives
nothing, so the cut upload is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import write_config
from uploader import daily

from .bench_backlog import replay, spool_backlog
from .harness import ROOT, BenchError, BenchServer, Row, Section, bench_env, today

__all__ = ["DEFAULT_SIZE_MIB", "run"]

log = logging.getLogger(__name__)

DEFAULT_SIZE_MIB = 512
TARGET_MIB_S = 100
TARGET_RSS_MIB = 150
RUNS = 2  # each command's best of two: the machine has two cores and may be busy
_MIB = 1 << 20

# Spawns argv[3:] with stdout into the file argv[1] and stderr into argv[2], waits, prints its
# wall time, exit code and peak RSS. A small process of its own: the peak RSS the kernel reports
# for a child (ru_maxrss) would otherwise include the bench's.
_LAUNCH = (
    "import json, os, sys, time\n"
    "out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "err = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)\n"
    "started = time.perf_counter()\n"
    "pid = os.posix_spawnp(sys.argv[3], sys.argv[3:], os.environ, file_actions=[\n"
    "    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),\n"
    "    (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(json.dumps({'seconds': time.perf_counter() - started, 'hwm_kib': usage.ru_maxrss,\n"
    "                  'code': os.waitstatus_to_exitcode(status)}), flush=True)\n"
)

# The reference reader of the object: boto3's GET body to stdout, 1 MiB at a time.
_GET = (
    "import sys, boto3\n"
    "from botocore.config import Config\n"
    "cfg = Config(region_name='us-east-1', s3={'addressing_style': 'path'},\n"
    "             request_checksum_calculation='when_required', response_checksum_validation='when_required')\n"
    "body = boto3.client('s3', endpoint_url=sys.argv[1], config=cfg).get_object(\n"
    "    Bucket=sys.argv[2], Key=sys.argv[3])['Body']\n"
    "for chunk in body.iter_chunks(1 << 20):\n"
    "    sys.stdout.buffer.write(chunk)\n"
)

_EXPORTED = re.compile(r"export: (\d+) fetches of (\d+) uploads")


@dataclass(frozen=True)
class Timed:
    """The best of a command's runs: wall time, the most peak RSS of any, the last run's stderr."""

    seconds: float
    hwm_kib: int
    stderr: str


def timed(argv: list[str], folder: Path, stdout: str = os.devnull, runs: int = RUNS) -> Timed:
    """Run ``argv`` ``runs`` times from the repo (stdout to ``stdout``), each measured on its own."""
    best, hwm, err = float("inf"), 0, ""
    log_path = folder / "stderr.log"
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", _LAUNCH, stdout, str(log_path), *argv], env=bench_env(),
                              cwd=str(ROOT), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=1800, check=False)
        if done.returncode != 0 or not done.stdout.strip():
            raise BenchError(f"the launcher of {argv[:4]} failed: {done.stderr.strip()[-300:]}")
        result = json.loads(done.stdout)
        err = log_path.read_text(encoding="utf-8", errors="replace")
        if result["code"] != 0:
            raise BenchError(f"{' '.join(argv[:6])} exited {result['code']}: {err[-500:]}")
        best, hwm = min(best, result["seconds"]), max(hwm, result["hwm_kib"])
    return Timed(best, hwm, err)


def uploader(*args: str) -> list[str]:
    return [sys.executable, "-m", "uploader.cli", *args, "--log-level", "WARNING"]


def piped(server: BenchServer, bucket: str, key: str, consumer: str) -> list[str]:
    """The object's GET streamed into ``consumer`` (a shell command reading stdin)."""
    return ["/bin/sh", "-c", f'"$0" -c "$1" "$2" "$3" "$4" | {consumer} > /dev/null',
            sys.executable, _GET, server.url, bucket, key]


@dataclass(frozen=True)
class Day:
    """The day read back: where it is (plain and gzip), how big, what it holds."""

    plain_bucket: str
    gzip_bucket: str
    plain_config: Path
    gzip_config: Path
    plain_file: Path
    gzip_file: Path
    json_mib: float
    gzip_mib: float
    uploads: int
    fetches: int
    note: str


def make_day(server: BenchServer, folder: Path, buckets: tuple[str, str], size_mib: int, fetch_size: int) -> Day:
    """The day in two buckets, plain (made by the project) and gzip (put with boto3); its local copies."""
    key = daily.day_key("logs", today())
    plain_bucket, gzip_bucket = buckets
    plain_config = write_config(folder / "plain", s3=(server.url, plain_bucket), quick=False)
    gzip_config = write_config(folder / "gzip", s3=(server.url, gzip_bucket), quick=False)
    backlog = spool_backlog(folder / "plain" / "data" / "all_api.json", folder / "plain" / "data" / "spool",
                            size_mib, fetch_size, "rd")
    built = replay(plain_config, folder / "replay.log")
    head = server.admin.head_object(Bucket=plain_bucket, Key=key)
    counters = daily.counters_from_user_metadata(head["Metadata"])
    if counters["total_fetches_today"] != backlog.fetches:
        raise BenchError(f"the day holds {counters['total_fetches_today']} fetches, {backlog.fetches} were spooled")
    plain_file, gzip_file = folder / "day.json", folder / "day.json.gz"
    with open(plain_file, "wb") as f:
        shutil.copyfileobj(server.admin.get_object(Bucket=plain_bucket, Key=key)["Body"], f, _MIB)
    with open(gzip_file, "wb") as f:
        subprocess.run(["gzip", "-c", str(plain_file)], stdout=f, check=True)
    with open(gzip_file, "rb") as f:
        server.admin.put_object(Bucket=gzip_bucket, Key=key, Body=f, Metadata=head["Metadata"])
    json_mib, gzip_mib = plain_file.stat().st_size / _MIB, gzip_file.stat().st_size / _MIB
    note = (f"the day: {backlog.fetches:,} fetches of {fetch_size // 1024} KiB in "
            f"{counters['total_uploads_today']:,} uploads, {json_mib:.0f} MiB of JSON, made by the project (cut "
            f"into the spool, then `uploader replay`: {built.run.seconds:.1f} s), not measured; `gzip -c` made "
            f"it {gzip_mib:.1f} MiB ({json_mib / gzip_mib:.0f}x: the fetches repeat one event), put with boto3 "
            "in a second bucket under the same key")
    return Day(plain_bucket, gzip_bucket, plain_config, gzip_config, plain_file, gzip_file, json_mib, gzip_mib,
               counters["total_uploads_today"], backlog.fetches, note)


def _rate(day: Day, t: Timed) -> str:
    return f"{t.seconds:.2f} s ({day.json_mib / t.seconds:.0f} MiB/s)"


def measure_form(day: Day, form: str, server: BenchServer, folder: Path, section: Section) -> None:
    """export and verify of one form of the day (plain or gzip), and the reference beside them."""
    config, bucket = (day.plain_config, day.plain_bucket) if form == "plain" else (day.gzip_config, day.gzip_bucket)
    iso = today().isoformat()
    exported = timed(uploader("export", iso, "--config", str(config)), folder)
    found = _EXPORTED.search(exported.stderr)
    if not found or (int(found[1]), int(found[2])) != (day.fetches, day.uploads):
        raise BenchError(f"export of the {form} day: {exported.stderr.strip()[-300:]}")
    verified = timed(uploader("verify", iso, "--config", str(config)), folder, stdout=str(folder / "verify.out"))
    said = (folder / "verify.out").read_text()
    if f"{day.uploads} uploads, {day.fetches} fetches" not in said or "verify: OK" not in said:
        raise BenchError(f"verify of the {form} day: {said.strip()[-300:]}")
    consumer = "cat" if form == "plain" else "gzip -dc"
    reference = timed(piped(server, bucket, daily.day_key("logs", today()), consumer), folder)
    for name, t in (("`export` (jsonl to /dev/null)", exported), ("`verify`", verified)):
        section.rows.append(Row(f"{form}: {name}", project=_rate(day, t),
                                target=f">= {TARGET_MIB_S} MiB/s (before: 13 MiB/s)",
                                met=day.json_mib / t.seconds >= TARGET_MIB_S))
        section.rows.append(Row(f"{form}: {name} peak RSS", project=f"{t.hwm_kib / 1024:.0f} MiB",
                                target=f"<= {TARGET_RSS_MIB} MiB", met=t.hwm_kib <= TARGET_RSS_MIB * 1024))
    section.rows.append(Row(f"{form}: reference, GET into `{consumer} > /dev/null`", project=_rate(day, reference)))


def cut_short(day: Day, folder: Path) -> tuple[Path, Path]:
    """The day cut inside its last upload (its tail lost), plain and ``gzip -c``'d."""
    size = day.plain_file.stat().st_size
    with open(day.plain_file, "rb") as f:
        f.seek(max(0, size - (8 << 20)))
        tail = f.read()
    marker = tail.rfind(daily.TAIL_MARKER)
    if marker < 0:
        raise BenchError("the day's tail is not in its last 8 MiB")
    plain, gz = folder / "cut.json", folder / "cut.json.gz"
    shutil.copyfile(day.plain_file, plain)
    os.truncate(plain, size - len(tail) + marker - 1000)
    with open(gz, "wb") as f:
        subprocess.run(["gzip", "-c", str(plain)], stdout=f, check=True)
    return plain, gz


def measure_repair(day: Day, form: str, server: BenchServer, folder: Path, section: Section, cut: Path) -> None:
    """`uploader repair` of the sound day, then of the day cut short (``cut``, put before each run)."""
    config, bucket = (day.plain_config, day.plain_bucket) if form == "plain" else (day.gzip_config, day.gzip_bucket)
    argv = uploader("repair", today().isoformat(), "--config", str(config))
    out = folder / "repair.out"
    sound = timed(argv, folder, stdout=str(out))
    if "is sound; nothing to change" not in out.read_text():
        raise BenchError(f"repair of the sound {form} day: {out.read_text().strip()[-300:]}")
    key = daily.day_key("logs", today(), gzip=form == "gzip")
    if form == "gzip":
        server.admin.delete_object(Bucket=bucket, Key=daily.day_key("logs", today()))
    best, hwm = float("inf"), 0
    for _ in range(RUNS):  # one by one: each run repairs the day, so it is cut short again first
        with open(cut, "rb") as f:
            server.admin.put_object(Bucket=bucket, Key=key, Body=f)
        rebuilt = timed(argv, folder, stdout=str(out), runs=1)
        said = out.read_text()
        if "total_uploads_today: unreadable -> " not in said or "verify: OK" not in said:
            raise BenchError(f"repair of the {form} day cut short: {said.strip()[-300:]}")
        best, hwm = min(best, rebuilt.seconds), max(hwm, rebuilt.hwm_kib)
    for name, t in (("`repair` of the sound day (reads it, writes nothing)", sound),
                    ("`repair` of the day cut short (reads it twice, writes it, verifies it)",
                     Timed(best, hwm, ""))):
        section.rows.append(Row(f"{form}: {name}", project=_rate(day, t), target=f">= {TARGET_MIB_S} MiB/s",
                                met=day.json_mib / t.seconds >= TARGET_MIB_S))
        section.rows.append(Row(f"{form}: {name} peak RSS", project=f"{t.hwm_kib / 1024:.0f} MiB",
                                target=f"<= {TARGET_RSS_MIB} MiB", met=t.hwm_kib <= TARGET_RSS_MIB * 1024))


def run(server: BenchServer, size_mib: int = DEFAULT_SIZE_MIB, fetch_size: int = 50 * 1024) -> Section:
    """Build the day, then read it back plain and gzip, each beside its references."""
    section = Section(f"11. Reading a {size_mib} MiB day back (`uploader export`, `uploader verify`, `uploader "
                      "repair`), plain and gzip")
    buckets = (server.new_bucket("read"), server.new_bucket("readgz"))
    try:
        with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:
            folder = Path(tmp)
            day = make_day(server, folder, buckets, size_mib, fetch_size)
            section.notes.append(day.note)
            for form in ("plain", "gzip"):
                measure_form(day, form, server, folder, section)
            plain_cut, gzip_cut = cut_short(day, folder)
            for form, cut in (("plain", plain_cut), ("gzip", gzip_cut)):
                measure_repair(day, form, server, folder, section, cut)
            cat = timed(["cat", str(day.plain_file)], folder)
            gunzip = timed(["gzip", "-dc", str(day.gzip_file)], folder)
            section.rows.append(Row("reference, `cat FILE > /dev/null` (local copy)", project=_rate(day, cat)))
            section.rows.append(Row("reference, `gzip -dc FILE.gz > /dev/null` (local copy)",
                                    project=_rate(day, gunzip)))
    finally:
        for bucket in buckets:
            server.empty_bucket(bucket)
        server.collect_garbage()
    section.notes.append(
        f"Wall time from starting the command to its exit (Python start-up and imports included, about "
        f"0.3 s, as a person running it sees), best of {RUNS} runs; MiB/s of the day's JSON (the gzip "
        "object's inflated bytes). `export` writes jsonl to /dev/null; `verify` re-counts the day (§10.4 of "
        "DESIGN.md). Peak RSS is ru_maxrss of the command's process alone (its VmHWM at exit), the most of "
        "its runs. The references read the same bytes in the same run: the GET streamed by boto3 into "
        "`cat` or `gzip -dc`, and the local copies (in the page cache) through `cat` and `gzip -dc`. "
        "Before: 13 MiB/s (benchmark 8, `export`, ijson's event loop). `repair` of the day cut short: best "
        f"of {RUNS} runs, the cut day put again (not measured) before each; it reads the day twice and "
        "verifies what it wrote, so its time is about a sound repair's, plus the write, plus a `verify`'s."
    )
    return section
