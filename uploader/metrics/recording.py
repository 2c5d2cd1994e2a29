"""``BoundRecorder``: the ``uploader.recorder.Recorder`` of one stream and one destination.

It makes its labelled children once, when it is created, so that every series (each ``kind``
of failure, each append ``path``) exists at 0 before its first event, and an event is a plain
increment with no label lookup. What a scrape reads back from it (the store's capabilities,
the day documents' counters) is kept here too, per (stream, destination).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import date

from uploader.metrics.families import APPEND_PATHS, FAILURE_KINDS, Families
from uploader.recorder import AppendReport, CapabilitiesUsed, CloseReport, CutReport, FailureKind

__all__ = ["DAYS_KEPT", "BoundRecorder"]

DAYS_KEPT = 2  # today and yesterday: yesterday's closing shows after midnight


class BoundRecorder:
    """What the core of one (stream, destination) reports, as Prometheus metrics; never raises."""

    enabled = True

    def __init__(self, families: Families, stream: str, destination: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self.destination = destination
        self._clock = clock
        f, s, d = families, (stream,), (stream, destination)
        # A stream's destinations share these: one cut feeds them all.
        self._fetches_cut, self._matches_cut, self._batches_cut = (
            f.fetches_cut.labels(*s), f.matches_cut.labels(*s), f.batches_cut.labels(*s))
        self._quarantined_records = f.quarantined_records.labels(*s)
        self._quarantined_bytes = f.quarantined_bytes.labels(*s)
        self._fetches_uploaded, self._matches_uploaded, self._batches_uploaded = (
            f.fetches_uploaded.labels(*d), f.matches_uploaded.labels(*d), f.batches_uploaded.labels(*d))
        self._attempts = f.append_attempts.labels(*d)
        self._rewrites = f.append_rewrites.labels(*d)
        self._sent, self._received = f.append_sent.labels(*d), f.append_received.labels(*d)
        self._failures = {kind: f.append_failures.labels(*d, kind) for kind in FAILURE_KINDS}
        self._durations = {path: f.append_duration.labels(*d, path) for path in APPEND_PATHS}
        self._duration_family = f.append_duration
        self._last_success = f.last_success.labels(*d)
        self._lock = threading.Lock()
        self._caps: CapabilitiesUsed | None = None
        self._days: dict[date, dict[str, str]] = {}

    # -- the Recorder --------------------------------------------------------------------------

    def cut(self, report: CutReport) -> None:
        self._batches_cut.inc(report.batches.batches)
        self._fetches_cut.inc(report.batches.fetches)
        self._matches_cut.inc(report.batches.matches)
        self._quarantined_records.inc(report.quarantined)
        self._quarantined_bytes.inc(report.quarantined_bytes)

    def appended(self, report: AppendReport) -> None:
        self._attempts.inc()
        self._rewrites.inc(max(0, report.attempts - 1))
        self._batches_uploaded.inc(report.batches.batches)
        self._fetches_uploaded.inc(report.batches.fetches)
        self._matches_uploaded.inc(report.batches.matches)
        duration = self._durations.get(report.path)
        if duration is None:  # a path newer than APPEND_PATHS: counted all the same
            duration = self._duration_family.labels(self.stream, self.destination, report.path)
        duration.observe(report.seconds)
        self._sent.inc(report.bytes_sent)
        self._received.inc(report.bytes_received)
        self._last_success.set(self._clock())
        self._used(report.capabilities)

    def append_failed(self, kind: FailureKind) -> None:
        self._attempts.inc()
        self._failures[kind.value].inc()

    def day_document(self, day: date, user_metadata: Mapping[str, str]) -> None:
        with self._lock:
            self._days[day] = dict(user_metadata)
            for old in sorted(self._days)[:-DAYS_KEPT]:
                del self._days[old]

    def day_closed(self, report: CloseReport) -> None:
        self.day_document(report.day, report.user_metadata)
        self._used(report.capabilities)

    # -- wiring --------------------------------------------------------------------------------

    def seed_last_success(self, at: float) -> None:
        """Start from the last success a previous run recorded, not from "never"."""
        self._last_success.set(at)

    def seen(self) -> tuple[CapabilitiesUsed | None, dict[date, dict[str, str]]]:
        """The capabilities last used and the latest days' counters, as a scrape reports them."""
        with self._lock:
            return self._caps, dict(self._days)

    def _used(self, caps: CapabilitiesUsed | None) -> None:
        if caps is None:
            return  # nothing planned (a recorder fed by hand): the last findings stand
        with self._lock:
            self._caps = caps
