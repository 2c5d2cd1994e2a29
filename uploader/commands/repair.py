"""`uploader repair`: rebuild one day's document from what the bucket still holds and the local archive.

The transaction: read the archived batches of the day, salvage the document's readable uploads,
plan the document the day should have (``daily.repair_plan``), write it with the same condition
an append uses (the ETag read, or "absent"), then verify it as `uploader verify` would.

The document salvaged is the one written, or, with ``--from`` (a ``Source``), another destination's
of the same stream: the plan is made from that one (and the archive), and written to the target
on the target's own condition (its ETag, or "absent") unless the target already holds the same
batches in the same order with the same counters; a target holding batches the plan lacks is
refused rather than cut short.

Memory stays bounded whatever the size of the day: the plan is made from one pass over the
archive and one over the document (``salvaged``), keeping only what it needs of each entry; the
write reads the document again (the same ETag, so the same bytes), hands each kept entry's line
on as it was read, and each archived batch's fetches from its file, one at a time, into one
streamed ``Store.compose``; ``uploader verify`` re-reads the result as a stream.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path

import pytz

from uploader import daily
from uploader.commands.agree import COUNTERS, DocumentIds
from uploader.commands.bucket_lines import BucketLines, ReadChanged
from uploader.commands.spools import stream_spools
from uploader.commands.targets import RepairTargets, Target, run_each
from uploader.commands.verify import verify_day
from uploader.config import Config
from uploader.daily.reading import paused_collector
from uploader.daily.repair_plan import (
    Kept,
    Planned,
    RepairPlan,
    document_pieces,
    kept_batch,
    kept_entry,
    plan_repair,
)
from uploader.daily.salvage import Salvage, salvaged
from uploader.errors import ObjectNotFound, PreconditionFailed, SpoolError, UnreadableBatch
from uploader.local.archive import Archive
from uploader.local.batch import BatchHeader
from uploader.local.delivery import DeliveryQueue
from uploader.local.spool import Spool, SpooledBatch
from uploader.publish.cache import CountedBody
from uploader.publish.forms import DayForm, find_form
from uploader.store import Store, open_store

__all__ = ["Message", "RepairOutcome", "RepairResult", "Source", "repair_day", "repair_selection"]


class RepairOutcome(Enum):
    """How a repair ended."""

    SOUND = "sound"  # the document already is what the plan would write
    DRY_RUN = "dry-run"  # changes planned, nothing written
    WRITTEN = "written"  # written; RepairResult.verified says whether it verifies
    ARCHIVE_UNREADABLE = "archive-unreadable"  # an archived batch of the day cannot be read
    NOTHING_TO_REBUILD_FROM = "nothing-to-rebuild-from"  # no document and no archived batch
    CHANGED_MEANWHILE = "changed-meanwhile"  # the conditional write lost to another writer
    TARGET_AHEAD = "target-ahead"  # --from: the target holds batches its source and the archive lack


@dataclass(frozen=True)
class Message:
    """One line for the operator; ``error`` lines go to stderr."""

    text: str
    error: bool = False


@dataclass(frozen=True)
class Source:
    """Another destination of the stream, whose document a repair rebuilds from (``--from``)."""

    name: str
    store: Store


@dataclass
class RepairResult:
    """How it ended, what was said on the way, and whether the written document verifies."""

    outcome: RepairOutcome
    messages: list[Message] = field(default_factory=list)
    verified: bool = False


def repair_selection(targets: RepairTargets, day: date, *, dry_run: bool, on_message: Callable[[Message], None],
                     say: Callable[[str], None], err: Callable[[str], None]) -> bool:
    """`uploader repair DAY` on every target (each stream's spool locked once unless a dry run);
    False if any was left unrepaired or does not verify."""
    selection, src = targets.selection, targets.source
    with stream_spools(selection, "uploader repair", lock=not dry_run) as spools:
        def work(target: Target, queue: DeliveryQueue) -> bool:
            view = target.config
            source = Source(src.name, open_store(src.storage, src.state_dir)) if src is not None else None
            result = repair_day(view, open_store(view.storage, view.state), queue.spool, day, dry_run=dry_run,
                                on_message=on_message, queue=queue, source=source)
            return result.outcome in (RepairOutcome.SOUND, RepairOutcome.DRY_RUN) or result.verified

        return run_each(((t, s.queue(t)) for s in spools for t in s.targets), work, many=selection.many,
                        say=say, err=err)


def repair_day(
    config: Config,
    store: Store,
    spool: Spool,
    day: date,
    *,
    dry_run: bool = False,
    on_message: Callable[[Message], None] = lambda message: None,
    queue: DeliveryQueue | None = None,
    source: Source | None = None,
) -> RepairResult:
    """Rebuild ``day``'s document in ``store``; the caller holds the spool lock unless it is a dry run.

    ``source``: rebuild it from that destination's document instead of its own. ``queue``: the
    destination's (for the batches of the day still waiting; default: the spool's). Each message
    is handed to ``on_message`` as soon as it is known, so the plan is shown before the write
    begins, and kept in the result as well.
    """
    # The day's form: the document's, where it has one (a day keeps its form), else the configured.
    form, _ = find_form(store, config.storage.prefix, day, config.storage.compression, None,
                        config.storage.document_name)
    key = form.key
    out = _Transcript(on_message)
    read = _reading(store, form, config, source, out)
    try:
        batches = _archived(spool, day)
    except SpoolError as exc:
        return _unreadable(exc, out)
    found, bucket, read.etag = _salvage(read.store, read.key)
    held = {kept.identity for kept in bucket}
    try:
        archived = _kept_batches(batches, held)
    except SpoolError as exc:
        return _unreadable(exc, out)
    archived += _spooled_seqs(spool, day, held)
    if found is None and not archived:
        out.say(f"repair: nothing to rebuild {day} from: no document {read.key} in {read.where} and no archived "
                f"batch of that day in {spool.archive_dir}", error=True)
        return out.end(RepairOutcome.NOTHING_TO_REBUILD_FROM)
    plan = plan_repair(day, config.day.timezone, found, bucket, archived, datetime.now(pytz.utc), config.day.tz)
    for line in plan.report():
        out.say(f"repair: {line}")
    pending = (queue or spool).pending_batches(day)
    if pending:
        out.say(f"repair: {len(pending)} batch(es) of {day} still wait in the spool; `uploader replay` "
                f"uploads them (not part of this repair)")
    etag = read.etag
    if source is not None:
        etag, ended = _against_target(store, form, plan, config.stream, config.destination, source.name, out)
        if ended is not None:
            return ended
    elif not plan.changed:
        out.say(f"repair: {key} is sound; nothing to change")
        return out.end(RepairOutcome.SOUND)
    if dry_run:
        out.say("repair: dry run; nothing written")
        return out.end(RepairOutcome.DRY_RUN)
    return _write(store, form, plan, etag, _Sources({e.seq: e for e, _ in batches}, spool.root), out, read)


@dataclass
class _Read:
    """The document a repair salvages: the target's own, or its source's (``--from``)."""

    store: Store
    key: str
    where: str  # "the bucket", or the source destination's name
    etag: str | None = None  # as salvaged


def _reading(store: Store, form: DayForm, config: Config, source: Source | None, out: _Transcript) -> _Read:
    if source is None:
        return _Read(store, form.key, "the bucket")
    # The source's day keeps its own form, which need not be the target's.
    found, _ = find_form(source.store, form.prefix, form.day, config.storage.compression, None, form.name)
    out.say(f"repair: rebuilding {config.destination}'s {form.key} from {source.name}'s {found.key}")
    return _Read(source.store, found.key, source.name)


def _against_target(store: Store, form: DayForm, plan: RepairPlan, stream: str, target: str, source: str,
                    out: _Transcript) -> tuple[str | None, RepairResult | None]:
    """The target's ETag for the write's condition, and a result when nothing is to be written:
    it holds the plan already, or batches the plan would drop."""
    info = store.head(form.key)
    held = DocumentIds()
    report = verify_day(store, form.prefix, form.day, form.key, ids=held, name=form.name)
    planned = [p.kept.batch_id for p in plan.entries]
    wanted = {"closed": plan.metadata["closed"], **plan.after}
    if report.ok and held.batch_ids == planned and held.counters == {name: wanted[name] for name in COUNTERS}:
        out.say(f"repair: {target}'s {form.key} already holds what {source}'s does; nothing to change")
        return None, out.end(RepairOutcome.SOUND)
    kept = set(planned)
    extra = [b for b in dict.fromkeys(held.batch_ids) if isinstance(b, str) and b not in kept]
    if extra:
        out.say(f"repair: {target}'s {form.key} holds {len(extra)} batch(es) that {source}'s document and the "
                f"local archive lack (first: {extra[0]}); rebuilding it from {source} would drop them, so nothing "
                f"was written. Try: `uploader repair {form.day} --stream {stream} --from {target} "
                f"--destination {source}`, or "
                f"remove {form.key} from {target} first if they are not wanted", error=True)
        return None, out.end(RepairOutcome.TARGET_AHEAD)
    return (info.etag if info is not None else None), None


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


def _spooled_seqs(spool: Spool, day: date, held: set[str]) -> list[Kept]:
    """The day's batches still in the spool that the document holds (uploaded to it, not yet to
    every destination of the stream), known by their headers: only their seqs count, so the plan
    keeps them in their place rather than first (as it keeps entries the archive no longer has)."""
    kept = []
    for entry in spool.pending_batches(day):
        try:
            header = entry.header()
        except SpoolError:
            continue  # only its place is at stake: it stays where the document has it
        if header.batch_id in held:
            kept.append(kept_batch(header))
    return kept


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
    store: Store, form: DayForm, plan: RepairPlan, etag: str | None, sources: _Sources, out: _Transcript,
    read: _Read,
) -> RepairResult:
    """Write the planned document if the target's is still the one read (and the document
    salvaged still the one planned from), then verify it."""
    key = form.key
    try:
        written = _compose(store, form, plan, etag, sources, read)
    except PreconditionFailed as exc:
        changed = read.key if isinstance(exc, ReadChanged) else key  # the one salvaged, or the target
        out.say(f"repair: {changed} changed while it was being repaired; nothing was overwritten. "
                f"Try: stop whatever else writes to this bucket prefix, then run repair again", error=True)
        return out.end(RepairOutcome.CHANGED_MEANWHILE)
    except UnreadableBatch as exc:  # an archived batch that could be read for the plan no longer can
        return _unreadable(exc, out)
    check = verify_day(store, form.prefix, form.day, key, name=form.name)
    out.say(f"repair: wrote {key} ({written} bytes); verify: {'OK' if check.ok else '; '.join(check.problems)}")
    return out.end(RepairOutcome.WRITTEN, verified=check.ok)


def _compose(store: Store, form: DayForm, plan: RepairPlan, etag: str | None, sources: _Sources, read: _Read) -> int:
    """Stream the planned document into the store, conditional like an append (the store checks
    by HEAD where the server would not); the bytes written."""
    with ExitStack() as stack:
        lines: BucketLines | None = None
        if any(not p.kept.archived for p in plan.entries):
            # Opened before the write starts: a store may hold a lock while it takes the pieces.
            lines = _reread(stack, read, plan, sources.spill_dir)

        def bucket_line(planned: Planned) -> bytes:
            assert lines is not None  # opened when the plan keeps a bucket entry
            return lines.take(planned)

        body = CountedBody(form.new_bytes(document_pieces(plan, bucket_line, sources.fetch_data),
                                       daily.TailEdit(plan.tail, plan.metadata), lambda header: b""))
        store.compose(form.key, 0, body, daily.user_metadata(plan.metadata),
                      if_match=etag, if_none_match=etag is None)
        return body.sent


def _reread(stack: ExitStack, read: _Read, plan: RepairPlan, spill_dir: Path) -> BucketLines:
    """The salvaged document read a second time, if it still is the one salvaged."""
    try:
        stream, info = stack.enter_context(read.store.stream(read.key))
    except ObjectNotFound as exc:
        raise ReadChanged(f"{read.key} was removed since it was salvaged") from exc
    if info.etag != read.etag:
        raise ReadChanged(f"{read.key} changed since it was salvaged")
    lines = BucketLines(salvaged(stream, Salvage(), parse=False), plan, spill_dir)
    stack.callback(lines.close)
    return lines
