"""The archive: batches the store acknowledged, kept a while in the spool for `uploader repair`.

An acknowledged batch's file moves from ``batches/`` to ``archive/`` unchanged, its mtime set to
the upload time; ``prune`` drops what is older than the policy's age, then the oldest until the
archive fits its size. Nothing waiting for upload is ever in it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date

from uploader.local.spool import Spool, SpooledBatch, list_batches

__all__ = ["Archive", "ArchivePolicy", "ArchiveSummary"]


@dataclass(frozen=True)
class ArchivePolicy:
    """How long (after upload) and how much of the uploaded batches the archive keeps."""

    max_age_s: float = 7 * 86400.0
    max_bytes: int = 1024 << 20

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 and self.max_bytes > 0


@dataclass(frozen=True)
class ArchiveSummary:
    """What the local archive of uploaded batches holds."""

    batches: int = 0
    bytes: int = 0
    first_day: date | None = None
    last_day: date | None = None


class Archive:
    """The spool's ``archive/`` folder."""

    def __init__(self, spool: Spool) -> None:
        self.folder = spool.archive_dir

    def batches(self, day: date | None = None) -> list[SpooledBatch]:
        """Uploaded batches still kept (of ``day`` if given), oldest (lowest seq) first."""
        return list_batches(self.folder, day)

    def add(self, entries: list[SpooledBatch], now: float) -> int:
        """Move batches the store has acknowledged into the archive; return the bytes moved.

        Their mtime becomes ``now``: the archive keeps batches for a while after their upload.
        No fsync: a move lost to a power cut brings the batch back, and the daily document
        acknowledges its batch_id instead of storing it twice.
        """
        moved = 0
        for e in entries:
            target = self.folder / e.path.name
            try:
                os.replace(e.path, target)
                os.utime(target, (now, now))
                moved += target.stat().st_size
            except FileNotFoundError:
                continue
        return moved

    def prune(self, now: float, policy: ArchivePolicy) -> ArchiveSummary:
        """Drop batches uploaded longer ago than the policy keeps them, then the oldest until
        the archive holds at most its size; return what is left."""
        kept: list[tuple[float, int, int, SpooledBatch]] = []
        for e in self.batches():
            try:
                st = e.path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime > policy.max_age_s:
                e.path.unlink(missing_ok=True)
            else:
                kept.append((st.st_mtime, e.seq, st.st_size, e))
        kept.sort(key=lambda k: (k[0], k[1]))
        total = sum(k[2] for k in kept)
        while kept and total > policy.max_bytes:
            _, _, size, e = kept.pop(0)
            e.path.unlink(missing_ok=True)
            total -= size
        days = [k[3].day for k in kept]
        return ArchiveSummary(len(kept), total, min(days, default=None), max(days, default=None))

    def summary(self) -> ArchiveSummary:
        """Count, bytes and span of days of the archive, for `uploader status`."""
        entries = self.batches()
        size = 0
        for e in entries:
            try:
                size += e.path.stat().st_size
            except FileNotFoundError:
                continue
        days = [e.day for e in entries]
        return ArchiveSummary(len(entries), size, min(days, default=None), max(days, default=None))
