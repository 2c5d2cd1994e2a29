"""`uploader status`: the spool, the archive, the quarantine, today's counters, the last success and error.

``build_status`` gathers one destination's report (what ``--json`` prints for one stream and one
destination, via ``StatusReport.to_dict``); ``render_status`` is its text form. ``build_overview``
gathers every selected stream's destinations (``--json`` with several: ``StatusOverview.to_dict``),
``render_overview`` the text, a section for each. None takes the spool lock: status runs beside
the service. The spool depth, retries, last success / error and today's counters are the
destination's own; the quarantine and the archive are its stream's.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from uploader import daily
from uploader.commands.spools import stream_spools
from uploader.commands.targets import Selection
from uploader.config import Config
from uploader.errors import StoreError
from uploader.local.archive import Archive
from uploader.local.delivery import DeliveryQueue
from uploader.local.quarantine import Quarantine
from uploader.local.spool import Spool
from uploader.publish.forms import head_day
from uploader.publish.status import StatusFile
from uploader.store import open_store

__all__ = ["StatusOverview", "StatusReport", "build_overview", "build_status", "render_overview", "render_status"]


@dataclass
class StatusReport:
    """One stream's destination, as ``--json`` prints it; the field order is the JSON's."""

    stream: str
    destination: str
    service_running: bool
    file: dict[str, Any]
    spool: str
    spool_depth: int
    pending_per_day: dict[str, int]
    quarantine_not_sent: int
    quarantine: dict[str, Any]
    archive: dict[str, Any]
    retrying: dict[str, Any]
    last_success: dict[str, Any] | None
    last_error: dict[str, Any] | None
    today: dict[str, Any]

    @property
    def problems(self) -> bool:
        """A batch is being retried, or today's counters could not be read (exit 1)."""
        return bool(self.problem_list)

    @property
    def problem_list(self) -> list[str]:
        """What makes it a problem, for the line that names it."""
        found = [f"{self.file['path']} cannot be read: {self.file['problem']}"] if self.file["problem"] else []
        found += [f"{len(self.retrying)} batch(es) being retried"] if self.retrying else []
        return found + (["today's counters cannot be read"] if "error" in self.today else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatusOverview:
    """Several destinations' reports (``--json``'s shape with more than one): ``service_running``
    is true if a process holds any selected stream's spool lock; ``problems`` name which report
    has one."""

    service_running: bool
    streams: list[StatusReport]

    @property
    def problems(self) -> list[str]:
        return [f"stream {r.stream}, destination {r.destination}: {'; '.join(r.problem_list)}"
                for r in self.streams if r.problems]

    def to_dict(self) -> dict[str, Any]:
        return {"service_running": self.service_running, "streams": [r.to_dict() for r in self.streams],
                "problems": self.problems}


def build_overview(selection: Selection) -> StatusOverview:
    """``build_status`` of every selected destination, stream after stream."""
    with stream_spools(selection, "uploader status", lock=False) as spools:
        reports = [build_status(t.config, s.queue(t)) for s in spools for t in s.targets]
    return StatusOverview(any(r.service_running for r in reports), reports)


def build_status(config: Config, queue: DeliveryQueue | None = None) -> StatusReport:
    """Read the spool, the destination's status.json and today's document's user metadata (one
    HEAD). ``queue``: what the destination has not acknowledged (default: the whole spool)."""
    spool = queue.spool if queue is not None else Spool(config.spool.dir)
    pending = (queue or DeliveryQueue.only(spool, config.state)).pending_batches()
    snap = StatusFile(config.state / "status.json").snapshot()
    today = datetime.now(config.day.tz).date()
    report = StatusReport(
        stream=config.stream,
        destination=config.destination,
        service_running=spool.is_locked(),
        file={"path": str(config.watch.file), "problem": _unreadable(config.watch.file)},
        spool=str(config.spool.dir),
        spool_depth=len(pending),
        pending_per_day=dict(sorted(Counter(e.day.isoformat() for e in pending).items())),
        quarantine_not_sent=len(list(spool.quarantine_dir.glob("*.bin"))),
        quarantine=_quarantine_status(spool),
        archive=_archive_status(spool),
        retrying={k: v for k, v in snap["retries"].items() if any(e.batch_id == k for e in pending)},
        last_success=snap["last_success"],
        last_error=snap["last_error"],
        today={"date": today.isoformat()},
    )
    try:
        info = head_day(open_store(config.storage), config.storage.prefix, today, config.storage.document_name)
        # The same fields whether or not the document exists yet (a day starts at zero).
        counters = daily.counters_from_user_metadata(info.metadata if info else {})
        counters.pop("date")  # the key's day; a document without our metadata would say null
        report.today.update(counters)
    except StoreError as exc:
        report.today["error"] = str(exc)
    return report


def _unreadable(path: Path) -> str | None:
    """Why the stream's file cannot be read, as the service's watcher would meet it (None: it can,
    or it does not exist yet, which the pipeline's first write mends)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISREG(mode):
        return None
    return "Is a directory" if stat.S_ISDIR(mode) else "not a regular file"


def _archive_status(spool: Spool) -> dict[str, Any]:
    a = Archive(spool).summary()
    return {"batches": a.batches, "bytes": a.bytes, "first_day": a.first_day.isoformat() if a.first_day else None,
            "last_day": a.last_day.isoformat() if a.last_day else None}


def _quarantine_status(spool: Spool) -> dict[str, Any]:
    q = Quarantine(spool).summary()
    return {"spans": q.not_sent_spans + q.sent_spans, "bytes": q.not_sent_bytes + q.sent_bytes,
            "not_sent": {"spans": q.not_sent_spans, "bytes": q.not_sent_bytes},
            "sent": {"spans": q.sent_spans, "bytes": q.sent_bytes}}


def render_overview(overview: StatusOverview) -> str:
    """A section for each report, headed by its stream and destination; then which have problems."""
    out = []
    for r in overview.streams:
        out.append(f"stream {r.stream}, destination {r.destination}:\n")
        out += ["  " + line for line in render_status(r).splitlines(keepends=True)]
    out += [f"PROBLEMS: {problem}\n" for problem in overview.problems]
    return "".join(out)


def render_status(report: StatusReport) -> str:
    """The report as aligned text lines, each ending in a newline."""
    r = report
    per_day = ", ".join(f"{d}: {n}" for d, n in r.pending_per_day.items()) or "-"
    q, a, t = r.quarantine, r.archive, r.today
    span = f"{a['first_day']} .. {a['last_day']}" if a["batches"] else "empty"
    if "error" in t:
        today = f"{t['date']}: cannot read counters: {t['error']}"
    else:
        today = f"{t['date']}: " + " ".join(f"{k}={v}" for k, v in t.items() if k != "date")
    ls, le = r.last_success, r.last_error
    lines = [
        f"service        {'running' if r.service_running else 'not running'}",
        f"file           {r.file['path']}" + (f": cannot be read ({r.file['problem']})" if r.file["problem"] else ""),
        f"spool          {r.spool_depth} batch(es) pending ({per_day})",
        (f"quarantine     {q['spans']} span(s), {_size(q['bytes'])} kept: {q['not_sent']['spans']} "
         f"({_size(q['not_sent']['bytes'])}) not yet sent, {q['sent']['spans']} ({_size(q['sent']['bytes'])}) "
         f"sent to the bucket"),
        f"archive        {a['batches']} uploaded batch(es), {a['bytes'] / 2**20:.1f} MiB, days {span}",
        f"today          {today}",
        f"last success   {ls['at'] + ' day=' + ls['day'] + ' batches=' + str(ls['batches']) if ls else '-'}",
        f"last error     {le['at'] + ' ' + le['message'] if le else '-'}",
    ]
    lines += [f"retrying       batch {batch_id} attempts={st['attempts']} last error: {st['last_error']}"
              for batch_id, st in r.retrying.items()]
    return "".join(line + "\n" for line in lines)


def _size(n: float) -> str:
    """Bytes for a person: 512 B, 3.4 KiB, 1.2 MiB, 7.0 GiB."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"
