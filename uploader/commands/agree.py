"""Whether a stream's destinations hold the same day: `uploader verify D` with several destinations.

Each destination's document is streamed once (by ``verify.verify_day``, which re-counts it as
well) into ``DocumentIds``: its batch ids in order, its fetch ids and its metadata's counters;
never a fetch. ``compare`` then says what differs, against the first destination, both ways.
Pure: values in, lines out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from uploader.daily import fetch_id_of

__all__ = ["COUNTERS", "Agreement", "DocumentIds", "compare"]

COUNTERS = ("total_uploads_today", "total_fetches_today", "total_matches_today", "closed")
_SHOWN = 3  # ids quoted in a line that says some are missing


@dataclass
class DocumentIds:
    """What is kept of one destination's document to compare it: ids and counters only."""

    batch_ids: list[Any] = field(default_factory=list)
    fetch_ids: Counter[str] = field(default_factory=Counter)
    counters: dict[str, Any] | None = None  # from daily_metadata; None until read (or unreadable)
    missing: bool = False

    def add(self, upload: Any) -> None:
        """One upload entry as it streams by."""
        if not isinstance(upload, dict):
            self.batch_ids.append(None)
            return
        self.batch_ids.append(upload.get("batch_id"))
        data = upload.get("fetch_data")
        if isinstance(data, list):
            self.fetch_ids.update(fid for fid in (fetch_id_of(f) for f in data) if fid is not None)

    def finish(self, meta: Any) -> None:
        """The document's daily_metadata, once read."""
        if isinstance(meta, dict):
            self.counters = {name: bool(meta.get(name)) if name == "closed" else meta.get(name) for name in COUNTERS}


@dataclass
class Agreement:
    """The destinations compared, and every difference found ([] means they agree)."""

    names: list[str]
    differences: list[str]
    uploads: int = 0
    fetches: int = 0
    complete: str | None = None  # a destination holding every batch any other holds, if one does

    @property
    def ok(self) -> bool:
        return not self.differences

    def lines(self, day: str, stream: str) -> list[str]:
        if self.ok:
            return [f"destinations agree: {', '.join(self.names)} ({self.uploads} uploads, {self.fetches} fetches)"]
        lines = [f"destinations differ: {', '.join(self.names)}", *(f"  {d}" for d in self.differences)]
        lacking = [n for n in self.names if n != self.complete]
        if self.complete is not None and len(lacking) == 1:
            lines.append(f"  Try: uploader repair {day} --stream {stream} --from {self.complete} "
                         f"--destination {lacking[0]}")
        return lines


def compare(docs: Sequence[tuple[str, DocumentIds]]) -> Agreement:
    """Each destination's document against the first's: documents present, batch ids and their
    order, fetch ids, counters."""
    (first, ref), others = docs[0], docs[1:]
    found = Agreement([name for name, _ in docs], [], len(ref.batch_ids), sum(ref.fetch_ids.values()))
    for name, doc in others:
        if ref.missing or doc.missing:
            found.differences += _presence(first, ref, name, doc)
            continue
        found.differences += _batches(first, ref, name, doc)
        found.differences += _fetches(first, ref, name, doc)
        found.differences += _counters(first, ref, name, doc)
    holders = [(name, set(doc.batch_ids)) for name, doc in docs if not doc.missing]
    union = set().union(*(ids for _, ids in holders))
    found.complete = next((name for name, ids in holders if ids == union), None)
    return found


def _presence(first: str, ref: DocumentIds, name: str, doc: DocumentIds) -> list[str]:
    if ref.missing and doc.missing:
        return []  # neither has the day: nothing differs between them (verify says it is missing)
    lacking, holder, held = (name, first, ref) if doc.missing else (first, name, doc)
    return [f"{lacking} has no document; {holder} has one of {len(held.batch_ids)} upload(s)"]


def _batches(first: str, ref: DocumentIds, name: str, doc: DocumentIds) -> list[str]:
    lines = _lacks(name, first, "batch(es)", doc.batch_ids, ref.batch_ids)
    lines += _lacks(first, name, "batch(es)", ref.batch_ids, doc.batch_ids)
    if not lines and ref.batch_ids != doc.batch_ids:
        at = next(i for i, (a, b) in enumerate(zip(ref.batch_ids, doc.batch_ids, strict=False), start=1) if a != b)
        lines.append(f"{name} holds the batches in another order than {first} (first at upload {at})")
    return lines


def _fetches(first: str, ref: DocumentIds, name: str, doc: DocumentIds) -> list[str]:
    lines = _lacks(name, first, "fetch(es)", doc.fetch_ids, ref.fetch_ids)
    lines += _lacks(first, name, "fetch(es)", ref.fetch_ids, doc.fetch_ids)
    if not lines and ref.fetch_ids != doc.fetch_ids:
        lines.append(f"{name} stores some fetches another number of times than {first}")
    return lines


def _counters(first: str, ref: DocumentIds, name: str, doc: DocumentIds) -> list[str]:
    if ref.counters is None or doc.counters is None:
        unreadable = [n for n, d in ((first, ref), (name, doc)) if d.counters is None]
        return [f"counters: the daily_metadata of {' and '.join(unreadable)} cannot be read"]
    return [f"{counter}: {first} {ref.counters[counter]}, {name} {doc.counters[counter]}"
            for counter in COUNTERS if ref.counters[counter] != doc.counters[counter]]


def _lacks(lacking: str, holder: str, what: str, mine: Any, theirs: Any) -> list[str]:
    """``lacking`` lacks the ids ``holder`` has (``theirs`` not in ``mine``), the first few named."""
    have = set(mine)
    missing = [i for i in dict.fromkeys(theirs) if i not in have]
    if not missing:
        return []
    shown = ", ".join(str(i) for i in missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
    return [f"{lacking} lacks {len(missing)} {what} {holder} has: {shown}"]
