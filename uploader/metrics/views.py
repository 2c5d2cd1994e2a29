"""What a scrape or /healthz reads from the running service: its streams, their destinations, queues.

The service hands ``Metrics.observe`` one ``ServiceView``; every field is a value or a callable
read at scrape time, so the metrics never hold the service's objects beyond these reads.
``spool_depth`` measures one destination's queue (also used by ``uploader status``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol

import pytz

__all__ = ["DestinationView", "PendingBatch", "PendingQueue", "ServiceView", "StreamView", "spool_depth"]


class PendingBatch(Protocol):
    """A batch file waiting in a spool (``local.spool.SpooledBatch`` is one)."""

    @property
    def path(self) -> Path: ...


class PendingQueue(Protocol):
    """What a destination has not acknowledged yet (``local.spool.Spool`` is one)."""

    def pending_batches(self) -> Sequence[PendingBatch]:
        """The waiting batches, oldest first; OSError when the folder cannot be listed."""
        ...


@dataclass(frozen=True)
class DestinationView:
    """One destination of a stream: its queue, its closed days, its upload worker."""

    name: str
    queue: PendingQueue  # the batches THIS destination has not acknowledged yet
    closed_through: Callable[[], date | None]
    running: Callable[[], bool]  # its upload worker thread is alive


@dataclass(frozen=True)
class StreamView:
    """One stream: its zone and day, its destinations, and whether its local file can be watched."""

    name: str
    tz: pytz.BaseTzInfo
    today: Callable[[], date]
    destinations: Sequence[DestinationView]
    trouble: Callable[[], str | None]  # None, or why the local file cannot be watched or cut


@dataclass(frozen=True)
class ServiceView:
    """The whole service as a scrape or a /healthz request sees it."""

    streams: Sequence[StreamView]
    running: Callable[[], bool]  # started and not stopping
    max_pending_age_s: float


def spool_depth(queue: PendingQueue, now: float) -> tuple[int, int, float]:
    """(batches, bytes, age in seconds of the oldest) waiting in ``queue``; age 0 when empty.

    One listing and one stat per batch; OSError when the listing fails.
    """
    count = size = 0
    oldest: float | None = None
    for entry in queue.pending_batches():
        try:
            st = entry.path.stat()
        except FileNotFoundError:
            continue  # uploaded between the listing and now
        count += 1
        size += st.st_size
        # A batch file is written once, at its cut, and renamed, never rewritten: mtime is the cut.
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    return count, size, 0.0 if oldest is None else max(0.0, now - oldest)
