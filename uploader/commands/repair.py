"""`uploader repair`: rebuild one day's document from what the bucket still holds and the local archive.

The transaction: read the archived batches of the day, salvage the document's readable uploads,
plan the document the day should have (``daily.repair_plan``), write it with the same condition
an append uses (the ETag read, or "absent"), then verify it as `uploader verify` would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum

import pytz

from uploader import daily
from uploader.commands.verify import verify_day
from uploader.config import Config
from uploader.daily.repair_plan import RepairPlan, plan_repair
from uploader.daily.salvage import Salvage, salvage
from uploader.errors import ObjectNotFound, PreconditionFailed, SpoolError
from uploader.local.archive import Archive
from uploader.local.spool import Spool
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
        archived = [e.load() for e in Archive(spool).batches(day)]
    except SpoolError as exc:
        out.say(f"repair: {exc.message}; nothing was changed in the bucket. Try: move it aside (or fix its "
                f"permissions) and run repair again", error=True)
        return out.end(RepairOutcome.ARCHIVE_UNREADABLE)
    found, etag = _salvage(store, key)
    if found is None and not archived:
        out.say(f"repair: nothing to rebuild {day} from: no document {key} in the bucket and no archived "
                f"batch of that day in {spool.archive_dir}", error=True)
        return out.end(RepairOutcome.NOTHING_TO_REBUILD_FROM)
    plan = plan_repair(day, config.day.timezone, found, archived, datetime.now(pytz.utc), config.day.tz)
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
    return _write(store, form, plan, etag, out)


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


def _salvage(store: Store, key: str) -> tuple[Salvage | None, str | None]:
    """What the bucket's document still holds, and the ETag the write is conditional on."""
    try:
        with store.stream(key) as (stream, info):
            return salvage(stream), info.etag
    except ObjectNotFound:
        return None, None


def _write(store: Store, form: DayForm, plan: RepairPlan, etag: str | None, out: _Transcript) -> RepairResult:
    """Put the planned document if the bucket's is still the one read, then verify it."""
    key = form.key
    body = form.reencoded(daily.serialize(plan.document))
    try:
        # Conditional like an append: the store checks by HEAD where the server would not.
        store.put(key, body, daily.user_metadata(plan.document["daily_metadata"]),
                  if_match=etag, if_none_match=etag is None)
    except PreconditionFailed:
        out.say(f"repair: {key} changed while it was being repaired; nothing was overwritten. "
                f"Try: stop whatever else writes to this bucket prefix, then run repair again", error=True)
        return out.end(RepairOutcome.CHANGED_MEANWHILE)
    check = verify_day(store, form.prefix, form.day, key)
    out.say(f"repair: wrote {key} ({len(body)} bytes); verify: {'OK' if check.ok else '; '.join(check.problems)}")
    return out.end(RepairOutcome.WRITTEN, verified=check.ok)
