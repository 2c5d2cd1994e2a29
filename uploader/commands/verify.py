"""`uploader verify`: re-count daily documents as they stream by, and audit the whole prefix.

One day: every upload re-counted against its metadata and the object's user metadata (no
document is ever loaded whole); where a stream has several destinations, their documents are
compared as they stream (``agree``). Every day (``--all`` / ``--since``): each document under the
prefix, plus the days missing between the first and the last, the objects that do not follow
the naming, and past days left open. ``verify_selection`` and ``audit_selection`` do either for
every selected stream and destination.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from uploader.commands.agree import DocumentIds, compare
from uploader.commands.targets import Selection, Target, run_each
from uploader.daily import DEFAULT_NAME, day_key, day_of_key
from uploader.daily.reading import DocumentError, paused_collector, read_document
from uploader.daily.verifier import Verifier
from uploader.errors import ObjectNotFound
from uploader.publish.forms import day_document_key, pad_key
from uploader.store import Store, open_store, probe_prefix

__all__ = ["AuditReport", "DayReport", "audit", "audit_selection", "render_audit", "render_day", "verify_day",
           "verify_selection"]

Say = Callable[[str], None]


@dataclass
class DayReport:
    """One day's document, re-counted."""

    day: date
    key: str
    problems: list[str] = field(default_factory=list)
    uploads: int = 0
    fetches: int = 0
    matches: int = 0
    closed: bool | None = None
    missing: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    def line(self) -> str:
        if self.missing:
            return f"{self.day}  MISSING  no document {self.key}"
        state = "closed" if self.closed else "open"
        head = f"{self.day}  {'OK' if self.ok else 'PROBLEMS'}  {self.uploads} uploads, {self.fetches} fetches, " \
               f"{self.matches} matches, {state}"
        return head if self.ok else head + "; " + "; ".join(self.problems)


@dataclass
class AuditReport:
    days: list[DayReport] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)
    left_open: list[date] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.days) and not self.stray and not self.left_open


def verify_day(
    store: Store, prefix: str, day: date, key: str | None = None, ids: DocumentIds | None = None,
    name: str = DEFAULT_NAME,
) -> DayReport:
    """Re-count one day's document as it streams (bounded memory; plain or gzip). ``key``: where
    it is, if known (else looked for under both forms' keys of the document name ``name``);
    ``ids``: also kept there, to compare the document with another destination's."""
    key = key or day_document_key(store, prefix, day, name)
    report = DayReport(day, key)
    checker = Verifier()
    meta: Any = None
    try:
        with store.stream(key) as (stream, info), paused_collector():
            for kind, value in read_document(stream):
                if kind == "upload":
                    checker.add(value)
                    if ids is not None:
                        ids.add(value)
                else:
                    meta = value
    except ObjectNotFound:
        report.missing = True
        if ids is not None:
            ids.missing = True
        return report
    except DocumentError as exc:
        checker.problems.append(f"{exc} (after {checker.uploads} uploads); `uploader repair {day}` rebuilds it")
    if ids is not None:
        ids.finish(meta)
    report.problems = checker.finish(meta, info.metadata, day)
    report.uploads, report.fetches, report.matches = checker.uploads, checker.fetches, checker.matches
    report.closed = bool(meta.get("closed")) if isinstance(meta, dict) else None
    return report


def audit(
    store: Store,
    prefix: str,
    today: date,
    since: date | None = None,
    on_day: Callable[[DayReport], None] = lambda report: None,
    name: str = DEFAULT_NAME,
) -> AuditReport:
    """Verify every daily document under ``prefix`` (from ``since`` on), and the prefix itself:
    a key that is not one of the document name ``name``'s, the quarantine's or the uploader's own
    is stray."""
    prefix = prefix.strip("/")
    known = (f"{prefix}/quarantine/", probe_prefix(prefix) + "/", pad_key(prefix))
    report = AuditReport()
    present: dict[date, list[str]] = {}
    for key in store.list(prefix + "/"):
        found = day_of_key(prefix, key, name)
        if found is not None:
            present.setdefault(found, []).append(key)
        elif not key.startswith(known):
            report.stray.append(key)
    days = sorted(d for d in present if since is None or d >= since)
    day = days[0] if days else None
    while day is not None and day <= days[-1]:
        keys = present.get(day, [])
        one = verify_day(store, prefix, day, keys[0]) if keys else \
            DayReport(day, day_key(prefix, day, name=name), missing=True)
        if len(keys) > 1:  # never written so: a day keeps one form
            one.problems.append(f"stored under {len(keys)} keys ({', '.join(keys)}); keep the one `verify` of each shows "
                                "complete and remove the other")
        report.days.append(one)
        on_day(one)
        if one.closed is False and day < today:
            report.left_open.append(day)
        day += timedelta(days=1)
    return report


def render_day(one: DayReport) -> list[str]:
    """`uploader verify DAY`'s lines: the counts, each problem, the verdict (or that it is missing)."""
    if one.missing:
        return [f"verify: no document for {one.day} ({one.key})"]
    return [(f"verify: {one.key}: {one.uploads} uploads, {one.fetches} fetches, {one.matches} matches, "
             f"closed={one.closed}"),
            *(f"problem: {problem}" for problem in one.problems),
            "verify: OK" if one.ok else f"verify: {len(one.problems)} problem(s)"]


def render_audit(report: AuditReport, prefix: str, name: str = DEFAULT_NAME) -> list[str]:
    """The lines after the days' own (``DayReport.line``): stray objects, days left open, the totals."""
    lines = [f"stray       {key}  (not a daily document, quarantine or probe object)" for key in report.stray]
    lines += [f"left open   {day}  is past and not closed; `uploader close-day {day}` closes it"
              for day in report.left_open]
    if not report.days:
        lines.append(f"verify: no daily documents {prefix}/{name} (check the prefix, the document name and the "
                     "bucket)")
        return lines
    bad = sum(not d.ok for d in report.days)
    lines.append(f"verify: {len(report.days)} day(s), {bad} with problems or missing, {len(report.stray)} stray "
                 f"object(s), {len(report.left_open)} left open")
    return lines


def verify_selection(selection: Selection, day: date, *, say: Say, err: Say) -> bool:
    """`uploader verify DAY` on every selected destination, then, for each stream with several,
    whether they hold the same day; False at any problem, missing document or difference."""
    ok = True
    for stream, targets in selection:
        docs: list[tuple[str, DocumentIds]] = []
        ok = run_each(((t, docs if len(targets) > 1 else None) for t in targets), _verify_one(day, say, err),
                      many=selection.many, say=say, err=err) and ok
        if len(docs) > 1 and not all(ids.missing for _, ids in docs):  # none has it: said above
            agreement = compare(docs)
            lines = agreement.lines(day.isoformat(), stream.name)
            if len(selection.groups) > 1:
                lines[0] = f"stream {stream.name}: {lines[0]}"
            for line in lines:
                say(line)
            ok = agreement.ok and ok
    return ok


def _verify_one(day: date, say: Say, err: Say) -> Callable[[Target, list[tuple[str, DocumentIds]] | None], bool]:
    def work(target: Target, docs: list[tuple[str, DocumentIds]] | None) -> bool:
        ids = DocumentIds() if docs is not None else None
        c = target.config
        one = verify_day(open_store(c.storage), c.storage.prefix, day, ids=ids, name=c.storage.document_name)
        for line in render_day(one):
            (err if one.missing else say)(line)
        if docs is not None and ids is not None:
            docs.append((target.destination.name, ids))
        return one.ok
    return work


def audit_selection(selection: Selection, since: date | None, *, say: Say, err: Say) -> bool:
    """`uploader verify --all` / `--since` on every selected destination (each day said as it is
    verified); False at any problem, or where a destination holds no document at all (a wrong
    prefix or bucket)."""
    def work(target: Target, _: None) -> bool:
        c = target.config
        today = datetime.now(c.day.tz).date()
        report = audit(open_store(c.storage), c.storage.prefix, today, since=since,
                       on_day=lambda one: say(one.line()), name=c.storage.document_name)
        for line in render_audit(report, c.storage.prefix, c.storage.document_name):
            say(line)
        return bool(report.days) and report.ok

    return run_each(((t, None) for t in selection.targets), work, many=selection.many, say=say, err=err)
