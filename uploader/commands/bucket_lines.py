"""`uploader repair`'s second read: the kept entries of the document salvaged, read again as the
rebuilt document is written, handed out in the plan's order without holding the day in memory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from uploader.daily.repair_plan import Planned, RepairPlan, entry_line
from uploader.daily.salvage import Salvaged
from uploader.errors import PreconditionFailed, SpoolError

__all__ = ["BucketLines", "ReadChanged"]


class ReadChanged(PreconditionFailed):
    """Raised when the document salvaged is no longer the one read for the plan."""


class BucketLines:
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
        """The line of the entry ``planned`` names; ReadChanged if the document no longer
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
        raise ReadChanged(f"the document read again lacks the upload found at {place} before")

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
