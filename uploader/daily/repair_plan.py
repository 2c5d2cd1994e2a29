"""`uploader repair`: rebuild a day's document from what the bucket still holds and the archive.

``plan_repair`` is pure. Its sources are every complete upload entry salvaged from the bucket's
document (however damaged) and the day's batches in the local archive. Each batch goes in once
(by batch_id; the old logger's entries, which have none, by their fetch ids). Entries keep the
order of their spool sequence numbers where the archive knows them; older ones come first, in
the bucket's order. Counters are recomputed from the fetches themselves; ``closed`` and
``closed_at`` are kept from the old metadata when it could be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from uploader.daily import fetch_id_of, fetch_matches, new_document, upload_entry
from uploader.daily.salvage import Salvage
from uploader.local.batch import Batch
from uploader.stamps import format_stamp

__all__ = ["RepairPlan", "plan_repair"]

_COUNTERS = ("total_uploads_today", "total_fetches_today", "total_matches_today")
_NO_DOCUMENT = ["no document in the bucket"]


@dataclass
class RepairPlan:
    """The rebuilt document and where its uploads came from."""

    day: date
    document: dict[str, Any]
    from_bucket: int = 0
    from_archive: int = 0
    duplicates: int = 0  # entries found twice in the bucket, kept once
    damage: list[str] = field(default_factory=list)
    before: dict[str, Any] | None = None  # the old metadata's counters, if it could be read
    changed: bool = True

    @property
    def after(self) -> dict[str, Any]:
        meta = self.document["daily_metadata"]
        return {name: meta[name] for name in _COUNTERS}

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
        closed = self.document["daily_metadata"]["closed"]
        lines.append(f"closed: {closed}" + ("" if self.before is not None else " (no old metadata to keep it from)"))
        return lines


def _identity(entry: dict[str, Any]) -> str:
    batch_id = entry.get("batch_id")
    if isinstance(batch_id, str) and batch_id:
        return batch_id
    return "fetches:" + ",".join(str(fetch_id_of(f)) for f in entry.get("fetch_data") or [])


def plan_repair(
    day: date,
    timezone: str,
    found: Salvage | None,
    archived: Sequence[Batch],
    now: datetime,
    tz: pytz.BaseTzInfo,
) -> RepairPlan:
    """The document ``day`` should have, from the salvaged bucket entries and the archive."""
    seq_of = {b.batch_id: b.seq for b in archived}
    keyed: list[tuple[tuple[int, int], dict[str, Any]]] = []
    seen: set[str] = set()
    plan = RepairPlan(day, new_document(day, timezone))
    for index, entry in enumerate(found.entries if found else []):
        ident = _identity(entry)
        if ident in seen:
            plan.duplicates += 1
            continue
        seen.add(ident)
        # Entries the archive no longer has are older than everything it has.
        keyed.append(((1, seq_of[ident]) if ident in seq_of else (0, index), dict(entry)))
        plan.from_bucket += 1
    for batch in sorted(archived, key=lambda b: b.seq):
        if batch.batch_id in seen:
            continue
        seen.add(batch.batch_id)
        keyed.append(((1, batch.seq), upload_entry(batch, 0, batch.cut_at)))
        plan.from_archive += 1
    keyed.sort(key=lambda k: k[0])
    uploads = [entry for _, entry in keyed]
    old = found.meta if found and isinstance(found.meta, dict) else None
    meta, recounted = _metadata(day, timezone, uploads, old, now, tz)
    plan.document = {"uploads": uploads, "daily_metadata": meta}
    plan.damage = list(found.damage) if found else list(_NO_DOCUMENT)
    if old is not None:
        plan.before = {name: old.get(name) for name in _COUNTERS}
    plan.changed = bool(plan.damage or plan.duplicates or plan.from_archive or plan.before != plan.after
                        or recounted)
    return plan


def _metadata(
    day: date, timezone: str, uploads: list[dict[str, Any]], old: dict[str, Any] | None,
    now: datetime, tz: pytz.BaseTzInfo,
) -> tuple[dict[str, Any], bool]:
    """The recomputed metadata, and whether any upload's own numbers had to be corrected."""
    meta: dict[str, Any] = new_document(day, timezone)["daily_metadata"]
    recounted = False
    if old is not None:
        meta["timezone"] = old.get("timezone") or timezone
        meta["closed"] = bool(old.get("closed"))
        meta["closed_at"] = old.get("closed_at") if meta["closed"] else None
    fetches = matches = 0
    for sequence, entry in enumerate(uploads, start=1):
        data = entry.get("fetch_data") or []
        counted = [fetch_matches(f) for f in data]
        recount = {
            "upload_sequence": sequence,
            "fetches_in_upload": len(data),
            # Footers that cannot be read (only the old logger's, if any) keep the stated sum.
            "matches_in_upload": sum(c or 0 for c in counted) if None not in counted else entry.get("matches_in_upload", 0),
        }
        recounted = recounted or any(entry.get(k) != v for k, v in recount.items())
        entry.update(recount)
        fetches += recount["fetches_in_upload"]
        matches += int(recount["matches_in_upload"] or 0)
    ids = [_identity(e) for e in uploads]
    stamps = [e.get("upload_timestamp") for e in uploads if e.get("upload_timestamp")]
    meta.update({
        "total_uploads_today": len(uploads),
        "total_fetches_today": fetches,
        "total_matches_today": matches,
        "first_upload_today": stamps[0] if stamps else None,
        "last_upload": stamps[-1] if stamps else None,
        "matches_in_this_upload": uploads[-1]["matches_in_upload"] if uploads else 0,
        "batch_ids": [e.get("batch_id") for e in uploads],
        "late_uploads": [i for i in (old or {}).get("late_uploads", []) if i in ids],
        "repaired_at": format_stamp(now, tz),
    })
    return meta, recounted
