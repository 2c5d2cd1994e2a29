"""`uploader repair`: rebuild a day's document from what the bucket still holds and the archive.

``plan_repair`` is pure. Its sources are every complete upload entry salvaged from the bucket's
document (however damaged) and the day's batches in the local archive, each known only by what
the plan needs of it (``Kept``: identity, place, stated and recounted counters; never its fetches),
so a day of any size plans in little memory. Each batch goes in once (by batch_id; the old
logger's entries, which have none, by their fetch ids). Entries keep the order of their spool
sequence numbers where the archive knows them; older ones come first, in the bucket's order.
Counters are recomputed from the fetches themselves; ``closed`` and ``closed_at`` are kept from
the old metadata when it could be read.

``document_pieces`` then writes the planned document as a stream: each bucket entry as it was
stored where its numbers stand (only a new ``upload_sequence`` spliced in), re-encoded only where
a counter is corrected; each archived batch as an append writes it, its fetches as spooled.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from uploader.daily import (
    HEAD,
    ListedIds,
    entry_head,
    fetch_id_of,
    fetch_matches,
    new_document,
    serialize,
)
from uploader.daily.reading import parse_json
from uploader.daily.salvage import Salvage
from uploader.local.batch import Batch, BatchHeader
from uploader.stamps import format_stamp

__all__ = ["Kept", "Planned", "RepairPlan", "document_pieces", "entry_line", "kept_batch", "kept_entry",
           "plan_repair"]

_COUNTERS = ("total_uploads_today", "total_fetches_today", "total_matches_today")
_NO_DOCUMENT = ["no document in the bucket"]
_DIGEST = "batch_ids_sha256"


@dataclass(frozen=True)
class Kept:
    """What a repair keeps of one upload entry while it plans: never its fetches.

    ``origin``: where the bucket's document holds it (``Salvaged.place``), or, for an archived
    batch, its spool seq. ``stated``: its upload_sequence, fetches_in_upload and matches_in_upload
    as stored; ``fetches`` and ``matches`` as its fetches count them (``matches``: the stated one
    where a footer cannot be read).
    """

    origin: int
    identity: str
    batch_id: Any
    stamp: Any
    stated: tuple[Any, Any, Any]
    fetches: int
    matches: Any
    archived: bool = False


def _identity(batch_id: Any, fetches: list[Any]) -> str:
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    return "fetches:" + ",".join(str(fetch_id_of(f)) for f in fetches)


def _recounted(fetches: list[Any], stated: Any) -> Any:
    counted = [fetch_matches(f) for f in fetches]
    # Footers that cannot be read (only the old logger's, if any) keep the stated sum.
    return sum(c or 0 for c in counted) if None not in counted else stated


def kept_entry(place: int, entry: dict[str, Any]) -> Kept:
    """What the plan keeps of an entry salvaged from the bucket at ``place``."""
    data = entry.get("fetch_data") or []
    stated = (entry.get("upload_sequence"), entry.get("fetches_in_upload"), entry.get("matches_in_upload"))
    return Kept(place, _identity(entry.get("batch_id"), data), entry.get("batch_id"),
                entry.get("upload_timestamp"), stated, len(data), _recounted(data, entry.get("matches_in_upload", 0)))


def kept_batch(batch: Batch | BatchHeader) -> Kept:
    """What the plan keeps of an archived batch (stamped with its cut time when restored): its
    counts recounted from its fetches, or, from its header alone, as the cut counted them (enough
    for a batch the bucket holds already: only its identity and seq then count)."""
    stated = (0, batch.fetch_count, batch.matches)
    if isinstance(batch, BatchHeader):
        return Kept(batch.seq, batch.batch_id, batch.batch_id, batch.cut_at, stated, *stated[1:], archived=True)
    fetches = batch.fetches
    return Kept(batch.seq, batch.batch_id, batch.batch_id, batch.cut_at, stated, len(fetches),
                _recounted(fetches, batch.matches), archived=True)


@dataclass(frozen=True)
class Planned:
    """One entry of the rebuilt document: where it comes from and its number there."""

    kept: Kept
    sequence: int

    @property
    def numbers(self) -> tuple[int, int, Any]:
        """upload_sequence, fetches_in_upload, matches_in_upload as the document will hold them."""
        return self.sequence, self.kept.fetches, self.kept.matches


@dataclass
class RepairPlan:
    """The rebuilt document (its entries by origin, its metadata) and where its uploads came from."""

    day: date
    entries: list[Planned]
    metadata: dict[str, Any]
    from_bucket: int = 0
    from_archive: int = 0
    duplicates: int = 0  # entries found twice in the bucket, kept once
    damage: list[str] = field(default_factory=list)
    before: dict[str, Any] | None = None  # the old metadata's counters, if it could be read
    ids_differ: bool = False  # the old metadata lists other batch ids than its entries hold
    changed: bool = True

    @property
    def after(self) -> dict[str, Any]:
        return {name: self.metadata[name] for name in _COUNTERS}

    @property
    def tail(self) -> bytes:
        """The document's bytes from the marker after the last entry to its end."""
        return serialize({"uploads": [], "daily_metadata": self.metadata})[len(HEAD):]

    def report(self) -> list[str]:
        """Lines for the operator: sources, damage, counters before → after."""
        lines = [f"uploads kept from the bucket: {self.from_bucket}",
                 f"uploads restored from the local archive: {self.from_archive}"]
        if self.duplicates:
            lines.append(f"uploads stored twice in the bucket, kept once: {self.duplicates}")
        lines += [f"damage: {d}" for d in self.damage[:20]]
        if len(self.damage) > 20:
            lines.append(f"damage: ... and {len(self.damage) - 20} more")
        for name in _COUNTERS:
            old = self.before.get(name, "?") if self.before else "no document" if self.damage == _NO_DOCUMENT else "unreadable"
            lines.append(f"{name}: {old} -> {self.after[name]}")
        if self.ids_differ:
            lines.append("batch ids: the old metadata does not list the uploads' batch_ids; listed anew")
        closed = self.metadata["closed"]
        lines.append(f"closed: {closed}" + ("" if self.before is not None else " (no old metadata to keep it from)"))
        return lines


def plan_repair(
    day: date,
    timezone: str,
    found: Salvage | None,
    bucket: Sequence[Kept],
    archived: Sequence[Kept],
    now: datetime,
    tz: pytz.BaseTzInfo,
) -> RepairPlan:
    """The document ``day`` should have, from the bucket's entries and the archive's batches.

    ``found``: what salvage read of the bucket's document (its ``meta`` and ``damage``), None
    when there is none; ``bucket``: its complete entries in the document's order.
    """
    seq_of = {k.identity: k.origin for k in archived}
    keyed: list[tuple[tuple[int, int], Kept]] = []
    seen: set[str] = set()
    plan = RepairPlan(day, [], {})
    for index, kept in enumerate(bucket):
        if kept.identity in seen:
            plan.duplicates += 1
            continue
        seen.add(kept.identity)
        # Entries the archive no longer has are older than everything it has.
        keyed.append(((1, seq_of[kept.identity]) if kept.identity in seq_of else (0, index), kept))
        plan.from_bucket += 1
    for kept in sorted(archived, key=lambda k: k.origin):
        if kept.identity in seen:
            continue
        seen.add(kept.identity)
        keyed.append(((1, kept.origin), kept))
        plan.from_archive += 1
    keyed.sort(key=lambda k: k[0])
    plan.entries = [Planned(kept, sequence) for sequence, (_, kept) in enumerate(keyed, start=1)]
    old = found.meta if found is not None and isinstance(found.meta, dict) else None
    plan.metadata = _metadata(day, timezone, plan.entries, old, now, tz)
    plan.damage = list(found.damage) if found is not None else list(_NO_DOCUMENT)
    if old is not None:
        plan.before = {name: old.get(name) for name in _COUNTERS}
        plan.ids_differ = not _lists_ids(old, plan.entries, plan.metadata[_DIGEST])
    recounted = any(p.kept.stated != p.numbers for p in plan.entries)
    plan.changed = bool(plan.damage or plan.duplicates or plan.from_archive or plan.before != plan.after
                        or recounted or plan.ids_differ)
    return plan


def _listed(entries: Iterable[Planned]) -> Iterator[str]:
    # An entry without a batch_id (the old logger's) lists none: as `verify` counts them.
    return (p.kept.batch_id for p in entries if isinstance(p.kept.batch_id, str))


def _lists_ids(old: dict[str, Any], entries: list[Planned], digest: str) -> bool:
    """Whether the old metadata lists the entries' ids: by digest, or, written before it, by list."""
    if _DIGEST in old:
        return bool(old[_DIGEST] == digest)
    return old.get("batch_ids") == [p.kept.batch_id for p in entries]


def _metadata(
    day: date, timezone: str, entries: list[Planned], old: dict[str, Any] | None, now: datetime,
    tz: pytz.BaseTzInfo,
) -> dict[str, Any]:
    """The recomputed metadata, its keys in the order of a new document's (§5.4)."""
    meta: dict[str, Any] = new_document(day, timezone)["daily_metadata"]
    if old is not None:
        meta["timezone"] = old.get("timezone") or timezone
        meta["closed"] = bool(old.get("closed"))
        meta["closed_at"] = old.get("closed_at") if meta["closed"] else None
    identities = {p.kept.identity for p in entries}
    stamps = [p.kept.stamp for p in entries if p.kept.stamp]
    meta.update({
        "total_uploads_today": len(entries),
        "total_fetches_today": sum(p.kept.fetches for p in entries),
        "total_matches_today": sum(_as_int(p.kept.matches) for p in entries),
        "first_upload_today": stamps[0] if stamps else None,
        "last_upload": stamps[-1] if stamps else None,
        "matches_in_this_upload": entries[-1].kept.matches if entries else 0,
        _DIGEST: ListedIds(_listed(entries)).digest,
        "late_uploads": [i for i in (old or {}).get("late_uploads", []) if i in identities],
        "repaired_at": format_stamp(now, tz),
    })
    return meta


def _as_int(value: Any) -> int:
    """A stated count as a number (one that is not counts nothing)."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# -- the planned document as a stream -------------------------------------------------------------


def document_pieces(
    plan: RepairPlan, bucket_line: Callable[[Planned], bytes], fetch_data: Callable[[Planned], bytes],
) -> Iterator[bytes]:
    """The planned document in our layout (§5.2) up to its tail (``plan.tail``), one entry at a time.

    ``bucket_line(p)`` gives a bucket entry's line (``entry_line``); ``fetch_data(p)`` an archived
    batch's fetches exactly as spooled.
    """
    yield HEAD
    for index, planned in enumerate(plan.entries):
        yield b"\n" if index == 0 else b",\n"
        kept = planned.kept
        if not kept.archived:
            yield bucket_line(planned)
            continue
        header = BatchHeader(kept.batch_id, kept.origin, plan.day, kept.stamp, kept.matches, kept.fetches)
        yield entry_head(header, planned.sequence, kept.stamp)
        yield fetch_data(planned)
        yield b"}"


def entry_line(planned: Planned, text: bytes | None, value: dict[str, Any] | None) -> bytes:
    """A bucket entry's line in the rebuilt document: ``text`` (as stored) where its numbers
    stand, with only the sequence spliced in where that alone moved; else ``value`` (or ``text``
    parsed) with its numbers corrected, encoded as an append encodes an entry."""
    stated, numbers = planned.kept.stated, planned.numbers
    if text is not None and stated == numbers:
        return text
    if text is not None and stated[1:] == numbers[1:] and type(stated[0]) is int:
        old = b'{"upload_sequence":%d,' % stated[0]
        # Only where the key occurs once: a repeated key (the last one counts) is re-encoded.
        if text.startswith(old) and text.count(b'"upload_sequence"') == 1:
            return b'{"upload_sequence":%d,' % numbers[0] + text[len(old):]
    entry = dict(value) if value is not None else parse_json(text or b"")
    entry.update(upload_sequence=numbers[0], fetches_in_upload=numbers[1], matches_in_upload=numbers[2])
    # Compact, one line: no raw newline can appear, which keeps TAIL_MARKER unique.
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
