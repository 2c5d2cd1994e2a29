"""Cut planning, pure: which front bytes of the local file to cut, and the batches they make.

``plan_cut`` decides from scanned items which bytes to cut and how they group into batches
(at most ``batch_size`` fetches, never two days in one batch) and what is quarantined;
``batches_of`` and ``quarantined_of`` turn a planned window's bytes into the batch files' and
quarantine files' contents. ``cut.Cutter`` carries the plan out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from uploader.local.batch import Batch, QuarantineItem, batch_digest, fetch_data_of
from uploader.local.records import Fetch, Item, Malformed

__all__ = ["MAX_CUT", "WINDOW", "CutPlan", "PlannedBatch", "batches_of", "cut_budget", "plan_cut", "quarantined_of"]

# Plan and stage this much of the file at a time (more only if one record is bigger): memory
# holds one window's bytes, however large the cut.
WINDOW = 8 << 20
# Bytes one cut takes at most (see cut_budget): large, so that what a cut leaves behind, which
# it copies to the journal and moves under the lock, stays small.
MAX_CUT = 4 << 30


@dataclass(frozen=True)
class PlannedBatch:
    """The fetches of one batch to be."""

    fetches: list[Fetch]

    @property
    def day(self) -> date:
        return self.fetches[0].day


@dataclass(frozen=True)
class CutPlan:
    """What to cut from the front of the scanned bytes."""

    length: int  # bytes to remove from the front of the file
    batches: list[PlannedBatch] = field(default_factory=list)
    quarantined: list[Malformed] = field(default_factory=list)
    records_left: int = 0  # well-formed records left after ``length`` in the scanned bytes


def plan_cut(
    items: Sequence[Item],
    batch_size: int,
    close_through: date | None = None,
    max_bytes: int = MAX_CUT,
) -> CutPlan:
    """Plan a cut of the front of the file.

    A batch closes at ``batch_size`` fetches, when the next fetch belongs to another day, or
    (for close-out) when its day is on or before ``close_through`` and no more fetches follow.
    Malformed spans are cut with the batch they sit in, or at once when between batches.
    """
    batches: list[PlannedBatch] = []
    quarantined: list[Malformed] = []
    group: list[Fetch] = []
    group_bad: list[Malformed] = []
    length = 0
    size = 0

    def close() -> None:
        nonlocal length, size, group, group_bad
        batches.append(PlannedBatch(group))
        quarantined.extend(group_bad)
        length = max(group[-1].end, *(m.end for m in group_bad)) if group_bad else group[-1].end
        size = length
        group, group_bad = [], []

    for item in items:
        if size >= max_bytes and not group:
            break
        if isinstance(item, Malformed):
            if group:
                group_bad.append(item)
            else:
                quarantined.append(item)
                length = size = item.end
            continue
        if group and item.day != group[0].day:
            close()
            if size >= max_bytes:
                break
        group.append(item)
        if len(group) == batch_size:
            close()
    if group and close_through is not None and group[0].day <= close_through:
        close()
    left = sum(1 for i in items if isinstance(i, Fetch) and i.start >= length)
    return CutPlan(length=length, batches=batches, quarantined=quarantined, records_left=left)


def cut_budget(free_bytes: int, limit: int = MAX_CUT, window: int = WINDOW) -> int:
    """How many bytes one cut may take, given the free space where the spool is.

    Until a cut commits, its batches are on disk twice (staged in the spool, still in the
    file), so it takes at most half the free space: a cut that cannot fit would fail and be
    retried for ever, while a smaller one frees room for the next. At least a window, so a
    nearly full disk still makes progress (or fails plainly on the spool write).
    """
    return min(limit, max(window, free_bytes // 2))


def batches_of(buf: bytes, plan: CutPlan, seqs: Sequence[int], cut_at: str) -> list[Batch]:
    """The batches a plan of ``buf`` makes, numbered ``seqs``: each one's id a digest of its
    records' bytes, its fetches the records' own bodies (never re-encoded)."""
    return [
        Batch(
            batch_id=batch_digest([buf[f.start:f.end] for f in pb.fetches]),
            seq=seq,
            day=pb.day,
            cut_at=cut_at,
            fetch_data=fetch_data_of([buf[f.body[0]:f.body[1]] for f in pb.fetches]),
            matches=sum(f.matches for f in pb.fetches),
            fetch_count=len(pb.fetches),
            fetch_ids=[f.fetch_id for f in pb.fetches],
        )
        for pb, seq in zip(plan.batches, seqs)
    ]


def quarantined_of(
    buf: bytes, plan: CutPlan, seqs: Sequence[int], base: int, detected_at: str, day: date,
) -> list[QuarantineItem]:
    """The quarantine items of a plan of ``buf``, which starts ``base`` bytes into the file."""
    return [
        QuarantineItem(
            name=f"{seq:012d}-{base + m.start}-{batch_digest([buf[m.start:m.end]])[:12]}",
            raw=buf[m.start:m.end],
            reason=m.reason,
            offset=base + m.start,
            detected_at=detected_at,
            day=day,
        )
        for m, seq in zip(plan.quarantined, seqs)
    ]
