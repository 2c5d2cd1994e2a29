"""`uploader repair`: rebuild one day's document from what the bucket still holds and the local archive.

The transaction: read the archived batches of the day, salvage the document's readable uploads,
plan the document the day should have (``daily.repair_plan``), write it with the same condition
an append uses (the ETag read, or "absent"), then verify it as `uploader verify` would.

Memory stays bounded whatever the size of the day: the plan is made from one pass over the
archive and one over the document (``salvaged``), keeping only what it needs of each entry; the
write reads the document again (the same ETag, so the same bytes), hands each kept entry's line
on as it was read, and each archived batch's fetches from its file, one at a time, into one
streamed ``Store.compose``; ``uploader verify`` re-reads the result as a stream.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import pytz

from uploader import daily
from uploader.commands.verify import verify_day
from uploader.config import Config
from uploader.daily.reading import paused_collector
from uploader.daily.repair_plan import (
    Kept,
    Planned,
    RepairPlan,
    document_pieces,
    entry_line,
    kept_batch,
    kept_entry,
    plan_repair,
)
from uploader.daily.salvage import Salvage, Salvaged, salvaged
from uploader.errors import ObjectNotFound, PreconditionFailed, SpoolError, UnreadableBatch
from uploader.local.archive import Archive
from uploader.local.batch import BatchHeader
from uploader.local.spool import Spool, SpooledBatch
from uploader.publish.cache import CountedBody
from uploader.publish.forms import DayForm, find_form
from uploader.store import Store

__all__ = ["Message", "RepairOutcome", "RepairResult", "repair_day"]


class RepairOutcome(Enum):
    """How a repair ended."""

    SOUND = "sound"  # the document already is what the plan would write
    DRY_RUN = "dry-run"  # changes planned, nothing written
    WRITTEN = "written"  # written; RepairResult.verified says whether it verifies
    ARCHIVE_UNREADABLE = "archive-unreadable"  # an archived batch of the day cannot be read
    NOTHING_TO_REBUILD_FROM = "nothing-to-rebuild-from"  # no document and no archived batch
    CHANGED_MEANWHILE = "changed-meanwhile"  # the conditional write lost to another writer


@dataclass(frozen=True)
class Message:
    """One line for the operator; ``error`` lines go to stderr."""

    text: str
    error: bool = False


@dataclass
class RepairResult:
    """How it ended, what was said on the way, and whether the written document verifies."""

    outcome: RepairOutcome
    messages: list[Message] = field(default_factory=list)
    verified: bool = False


def repair_day(
    config: Config,
    store: Store,
    spool: Spool,
    day: date,
    *,
    dry_run: bool = False,
    on_message: Callable[[Message], None] = lambda message: None,
) -> RepairResult:
    """Rebuild ``day``'s document; the caller holds the spool lock unless it is a dry run.

    Each message is handed to ``on_message`` as soon as it is known, so the plan is shown
    before the write begins, and kept in the result as well.
    """
    # The day's form: the document's, where it has one (a day keeps its form), else the configured.
    form, _ = find_form(store, config.storage.prefix, day, config.storage.compression, None)
    key = form.key
    out = _Transcript(on_message)
    try:
        batches = _archived(spool, day)
    except SpoolError as exc:
        return _unreadable(exc, out)
    found, bucket, etag = _salvage(store, key)
    try:
        archived = _kept_batches(batches, {kept.identity for kept in bucket})
    except SpoolError as exc:
        return _unreadable(exc, out)
    if found is None and not archived:
        out.say(f"repair: nothing to rebuild {day} from: no document {key} in the bucket and no archived "
                f"batch of that day in {spool.archive_dir}", error=True)
        return out.end(RepairOutcome.NOTHING_TO_REBUILD_FROM)
    plan = plan_repair(day, config.day.timezone, found, bucket, archived, datetime.now(pytz.utc), config.day.tz)
    for line in plan.report():
        out.say(f"repair: {line}")
    pending = spool.pending_batches(day)
    if pending:
        out.say(f"repair: {len(pending)} batch(es) of {day} still wait in the spool; `uploader replay` "
                f"uploads them (not part of this repair)")
    if not plan.changed:
        out.say(f"repair: {key} is sound; nothing to change")
        return out.end(RepairOutcome.SOUND)
    if dry_run:
        out.say("repair: dry run; nothing written")
        return out.end(RepairOutcome.DRY_RUN)
    return _write(store, form, plan, etag, _Sources({e.seq: e for e, _ in batches}, spool.root), out)


class _Transcript:
    """The messages of one repair, each passed on as it is said."""

    def __init__(self, on_message: Callable[[Message], None]) -> None:
        self.messages: list[Message] = []
        self.on_message = on_message

    def say(self, text: str, error: bool = False) -> None:
        self.messages.append(message := Message(text, error))
        self.on_message(message)

    def end(self, outcome: RepairOutcome, verified: bool = False) -> RepairResult:
        return RepairResult(outcome, self.messages, verified)


def _unreadable(exc: SpoolError, out: _Transcript) -> RepairResult:
    out.say(f"repair: {exc.message}; nothing was changed in the bucket. Try: move it aside (or fix its "
            f"permissions) and run repair again", error=True)
    return out.end(RepairOutcome.ARCHIVE_UNREADABLE)


def _archived(spool: Spool, day: date) -> list[tuple[SpooledBatch, BatchHeader]]:
    """The day's archived batches and their headers, each checked whole (read, its digest right)
    before anything is written, one file in memory at a time."""
    batches = []
    for entry in Archive(spool).batches(day):
        header = entry.header()
        entry.fetch_data()
        batches.append((entry, header))
    return batches


def _kept_batches(batches: list[tuple[SpooledBatch, BatchHeader]], in_bucket: set[str]) -> list[Kept]:
    """What the plan keeps of each archived batch: one the bucket holds is known by its header; one
    to restore is parsed, its fetches recounted (and dropped)."""
    return [kept_batch(header if header.batch_id in in_bucket else entry.load()) for entry, header in batches]


def _salvage(store: Store, key: str) -> tuple[Salvage | None, list[Kept], str | None]:
    """What the bucket's document still holds (what the plan needs of each complete entry, in
    the document's order), and the ETag the write is conditional on."""
    found = Salvage()
    try:
        with store.stream(key) as (stream, info), paused_collector():
            bucket = [kept_entry(s.place, s.value) for s in salvaged(stream, found) if s.value is not None]
            return found, bucket, info.etag
    except ObjectNotFound:
        return None, [], None


@dataclass(frozen=True)
class _Sources:
    """Where the write finds what the plan names: the archived batches by seq, a folder to spill to."""

    batches: dict[int, SpooledBatch]
    spill_dir: Path

    def fetch_data(self, planned: Planned) -> bytes:
        """An archived batch's fetches as spooled (checked against their digest again)."""
        return self.batches[planned.kept.origin].fetch_data()


def _write(
    store: Store, form: DayForm, plan: RepairPlan, etag: str | None, sources: _Sources, out: _Transcript
) -> RepairResult:
    """Write the planned document if the bucket's is still the one read, then verify it."""
    key = form.key
    try:
        written = _compose(store, form, plan, etag, sources)
    except PreconditionFailed:
        out.say(f"repair: {key} changed while it was being repaired; nothing was overwritten. "
                f"Try: stop whatever else writes to this bucket prefix, then run repair again", error=True)
        return out.end(RepairOutcome.CHANGED_MEANWHILE)
    except UnreadableBatch as exc:  # an archived batch that could be read for the plan no longer can
        return _unreadable(exc, out)
    check = verify_day(store, form.prefix, form.day, key)
    out.say(f"repair: wrote {key} ({written} bytes); verify: {'OK' if check.ok else '; '.join(check.problems)}")
    return out.end(RepairOutcome.WRITTEN, verified=check.ok)


def _compose(store: Store, form: DayForm, plan: RepairPlan, etag: str | None, sources: _Sources) -> int:
    """Stream the planned document into the store, conditional like an append (the store checks
    by HEAD where the server would not); the bytes written."""
    with ExitStack() as stack:
        lines: _BucketLines | None = None
        if any(not p.kept.archived for p in plan.entries):
            # Opened before the write starts: a store may hold a lock while it takes the pieces.
            lines = _reread(stack, store, form.key, etag, plan, sources.spill_dir)

        def bucket_line(planned: Planned) -> bytes:
            assert lines is not None  # opened when the plan keeps a bucket entry
            return lines.take(planned)

        body = CountedBody(form.new_bytes(document_pieces(plan, bucket_line, sources.fetch_data),
                                       daily.TailEdit(plan.tail, plan.metadata), lambda header: b""))
        store.compose(form.key, 0, body, daily.user_metadata(plan.metadata),
                      if_match=etag, if_none_match=etag is None)
        return body.sent


def _reread(
    stack: ExitStack, store: Store, key: str, etag: str | None, plan: RepairPlan, spill_dir: Path
) -> _BucketLines:
    """The bucket's document read a second time, if it still is the one salvaged."""
    try:
        stream, info = stack.enter_context(store.stream(key))
    except ObjectNotFound as exc:
        raise PreconditionFailed(f"{key} was removed since it was salvaged") from exc
    if info.etag != etag:
        raise PreconditionFailed(f"{key} changed since it was salvaged")
    lines = _BucketLines(salvaged(stream, Salvage(), parse=False), plan, spill_dir)
    stack.callback(lines.close)
    return lines


class _BucketLines:
    """The kept entries of the bucket's document, read again in the document's order, handed out
    in the plan's: the lines of our layout as they were stored (``entry_line``).

    The plan keeps the document's order except where the archive's seqs say otherwise; an entry met
    before its turn waits in a spill file in the spool folder (never in memory) until it comes.
    """

    def __init__(self, found: Iterator[Salvaged], plan: RepairPlan, spill_dir: Path) -> None:
        self._found = found
        self._wanted = {p.kept.origin: p for p in plan.entries if not p.kept.archived}
        self._spill_dir = spill_dir
        self._spill: BinaryIO | None = None
        self._aside: dict[int, tuple[int, int]] = {}  # place -> (offset, length) in the spill file
        self._end = 0

    def take(self, planned: Planned) -> bytes:
        """The line of the entry ``planned`` names; PreconditionFailed if the document no longer
        holds it (it cannot, read under the same ETag, unless the server changed it regardless)."""
        place = planned.kept.origin
        if place in self._aside:
            return self._from_spill(place)
        for entry in self._found:
            wanted = self._wanted.get(entry.place)
            if wanted is None:
                continue  # damaged, stored twice, or not an entry
            line = entry_line(wanted, entry.text, entry.value)
            if entry.place == place:
                return line
            self._to_spill(entry.place, line)
        raise PreconditionFailed(f"the document read again lacks the upload found at {place} before")

    def _to_spill(self, place: int, line: bytes) -> None:
        try:
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(dir=self._spill_dir)  # noqa: SIM115 - closed by close()
            self._spill.seek(self._end)
            self._spill.write(line)
        except OSError as exc:
            raise SpoolError(f"repair cannot set an upload aside in {self._spill_dir}: {exc.strerror}",
                             "free space on the spool's filesystem, then run repair again") from exc
        self._aside[place] = (self._end, len(line))
        self._end += len(line)

    def _from_spill(self, place: int) -> bytes:
        assert self._spill is not None
        offset, length = self._aside.pop(place)
        self._spill.seek(offset)
        return self._spill.read(length)

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
