"""Which of a stream's destinations have which spooled batches and quarantined spans.

A stream that ships to several destinations keeps one spool: a batch stays in ``batches/``
until every destination has acknowledged it, and only then goes to the archive (a span to
``quarantine/sent/``). Each destination marks what it acknowledged with an empty file named
like the spooled one in ``<its state folder>/delivered/``. A mark is written after the store's
acknowledgement and never fsynced: a mark lost to a crash only makes that destination send the
batch again, which its document acknowledges without storing it twice (DESIGN §5.7); a mark is
never there for a batch the destination does not have. A stream with one destination writes
no marks at all, so its spool is the spool of the release before destinations.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from uploader.files import DIR_MODE, FILE_MODE
from uploader.local.spool import Spool, SpooledBatch

__all__ = ["Delivery", "DeliveryQueue"]

log = logging.getLogger(__name__)

MARKS = "delivered"


class Delivery:
    """The destinations of one stream's spool, and the lock that retires what all of them have."""

    def __init__(self, spool: Spool, destinations: Sequence[tuple[str, Path]]) -> None:
        """``destinations``: (name, state folder) of each, in the config's order."""
        self.spool = spool
        # Held only while marking and moving local files, never across a store request: one
        # destination's outage cannot hold it.
        self.lock = threading.Lock()
        self._marks = {name: state / MARKS for name, state in destinations}

    def prepare(self) -> None:
        """Make each destination's state and marks folders (0700), for a process that writes:
        a report (`status`) only reads, and may run on a spool it cannot write."""
        if self.shared:
            for folder in self._marks.values():
                _private_folder(folder)

    def queue(self, name: str) -> DeliveryQueue:
        return DeliveryQueue(self, name)

    @property
    def shared(self) -> bool:
        return len(self._marks) > 1

    def marked(self, name: str) -> set[str]:
        """Names of the spooled files destination ``name`` has acknowledged."""
        if not self.shared:
            return set()
        try:
            return set(os.listdir(self._marks[name]))
        except FileNotFoundError:
            return set()

    def mark(self, name: str, files: Sequence[str]) -> list[str]:
        """Mark ``files`` acknowledged by ``name``; return those every destination now has. Call
        with ``lock`` held."""
        if not self.shared:
            return list(files)
        folder = self._marks[name]
        for f in files:
            os.close(os.open(folder / f, os.O_WRONLY | os.O_CREAT, FILE_MODE))
        others = [self.marked(other) for other in self._marks if other != name]
        return [f for f in files if all(f in marks for marks in others)]

    def forget(self, files: Sequence[str]) -> None:
        """Drop the marks of files that left the spool. Call with ``lock`` held."""
        if not self.shared:
            return
        for folder in self._marks.values():
            for f in files:
                (folder / f).unlink(missing_ok=True)

    def tidy(self) -> int:
        """Drop marks whose file is no longer spooled (a crash between the move and ``forget``)."""
        if not self.shared:
            return 0
        spooled = set(os.listdir(self.spool.batches_dir)) | set(os.listdir(self.spool.quarantine_dir))
        with self.lock:
            stale = {f for name in self._marks for f in self.marked(name)} - spooled
            self.forget(sorted(stale))
        return len(stale)


class DeliveryQueue:
    """One destination's view of the spool: what it has not acknowledged yet."""

    def __init__(self, delivery: Delivery, name: str) -> None:
        self.delivery = delivery
        self.name = name
        self.spool = delivery.spool

    @classmethod
    def only(cls, spool: Spool, state: Path | None = None) -> DeliveryQueue:
        """The queue of a stream's one destination: every spooled batch."""
        return Delivery(spool, [("default", state or spool.root)]).queue("default")

    def pending_batches(self, day: date | None = None) -> list[SpooledBatch]:
        """Batches waiting for this destination, oldest (lowest seq) first."""
        entries = self.spool.pending_batches(day)
        marked = self.delivery.marked(self.name)
        return [e for e in entries if e.path.name not in marked] if marked else entries

    def marked(self) -> set[str]:
        return self.delivery.marked(self.name)

    @contextmanager
    def acknowledged(self, files: Sequence[str]) -> Iterator[list[str]]:
        """Mark ``files`` as this destination's; yield those every destination has, for the
        caller to move out of the spool, then drop their marks. Holds the stream's lock."""
        with self.delivery.lock:
            done = self.delivery.mark(self.name, files)
            yield done
            self.delivery.forget(done)


def _private_folder(folder: Path) -> None:
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for f in (folder, folder.parent):
        if f.stat().st_mode & 0o777 != DIR_MODE:
            os.chmod(f, DIR_MODE)
