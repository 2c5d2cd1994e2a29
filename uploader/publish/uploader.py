"""Spool → store: upload due batches (group commit per day), quarantine, and day closes.

``Uploader.drain`` is synchronous, so the service's worker thread and `uploader replay` share
it. A batch leaves the spool only after the store acknowledged it; a failure keeps it spooled
with a per-batch backoff (``retry.compute_backoff``) recorded in the status file.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path

import pytz

from uploader import daily, publish
from uploader.config import Compression, Config
from uploader.errors import StoreError, StoreRejected, UnreadableBatch
from uploader.local.archive import Archive, ArchivePolicy
from uploader.local.batch import BatchHeader
from uploader.local.delivery import DeliveryQueue
from uploader.local.quarantine import Quarantine
from uploader.local.spool import Spool, SpooledBatch
from uploader.publish import quarantine
from uploader.publish.cache import WriteCache
from uploader.publish.listed import ListedIndex
from uploader.publish.status import RetryState, StatusFile
from uploader.recorder import (
    NO_METRICS,
    AppendReport,
    CapabilitiesUsed,
    CloseReport,
    Recorder,
    Tally,
    failure_kind,
)
from uploader.retry import compute_backoff
from uploader.store import LEFTOVER_AGE_S, PART_SIZE, Store
from uploader.store.capabilities import Capabilities

__all__ = ["Uploader", "DrainReport"]

log = logging.getLogger(__name__)

# A group commit streams its batches' bytes into the write one file at a time, so its memory does
# not grow with its size: one append may carry a day's whole backlog. The bound only keeps one
# append well inside S3's 10,000 parts (PART_SIZE each), so a failure redoes a bounded amount.
GROUP_MAX_BYTES = 4000 * PART_SIZE
GROUP_MAX_BATCHES = 100_000  # a day of fetches ten times over; the benchmarks set 1 to compare
_REPEAT_LOG_S = 60.0
_OBJECT_NAMED = re.compile(r"s3://\S+?: ")  # "<request> s3://<bucket>/<key>: <what went wrong>"
PRUNE_EVERY_S = 60.0


@dataclass
class DrainReport:
    batches: int = 0
    fetches: int = 0
    matches: int = 0
    failed: int = 0
    left: int = 0
    errors: list[str] = field(default_factory=list)


class Uploader:
    """Moves spooled batches into the store; one instance per process, one caller at a time."""

    def __init__(
        self,
        spool: Spool,
        store: Store,
        prefix: str,
        tz: pytz.BaseTzInfo,
        status: StatusFile,
        max_backoff_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(pytz.utc),
        rand: Callable[[], float] = random.random,
        archive: ArchivePolicy | None = None,
        metrics: Recorder = NO_METRICS,
        compression: Compression = Compression.NONE,
        queue: DeliveryQueue | None = None,
        state_dir: Path | None = None,
        store_backoff_cap_s: float | None = None,
        document_name: str = daily.DEFAULT_NAME,
    ) -> None:
        """``queue``: what this destination has yet to acknowledge (every spooled batch where the
        stream has one destination); ``state_dir``: its own state (ids/), the spool by default;
        ``document_name``: the stream's day document name pattern (``daily.day_key``)."""
        self.spool = spool
        self.queue = queue or DeliveryQueue.only(spool)
        self.store = store
        self.prefix = prefix
        self.document_name = document_name
        self.tz = tz
        self.compression = compression  # of new days; a day keeps the form it was started in
        self.status = status
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.rand = rand
        self._last_logged: dict[str, float] = {}
        self._written = WriteCache()
        self._listed = ListedIndex((state_dir or spool.root) / "ids",
                                   lambda day: [e.batch_id for e in self.queue.pending_batches(day)])
        self.archive_policy = archive or ArchivePolicy()
        self._archive = Archive(spool)
        self._quarantined = Quarantine(spool)
        self._archive_bytes: int | None = None  # known after the first prune, then kept up to date
        self._next_prune = 0.0
        self.metrics = metrics
        # The destination's own backoff, beside each batch's: after a store failure nothing is
        # tried until it ends, however many batches are cut meanwhile, so a store that is down
        # costs a request per backoff, not one per cut (reset by the next success).
        self._store_failures = 0
        self._store_ready_at = 0.0
        # At most this long, so a store that comes back is found within a retry tick; each
        # batch's own backoff still grows to max_backoff_s.
        self.store_backoff_cap_s = max_backoff_s if store_backoff_cap_s is None else store_backoff_cap_s

    @classmethod
    def for_config(
        cls,
        config: Config,
        spool: Spool,
        store: Store,
        status: StatusFile,
        clock: Callable[[], datetime] = lambda: datetime.now(pytz.utc),
        metrics: Recorder = NO_METRICS,
        queue: DeliveryQueue | None = None,
    ) -> Uploader:
        """The uploader `run` and the one-shot commands use, set up from the config (one
        stream's destination)."""
        archive = ArchivePolicy(config.spool.archive_days * 86400.0, int(config.spool.archive_max_mb * (1 << 20)))
        return cls(spool, store, config.storage.prefix, config.day.tz, status, config.spool.max_backoff_s,
                   clock=clock, archive=archive, metrics=metrics, compression=config.storage.compression,
                   queue=queue, state_dir=config.state, store_backoff_cap_s=config.spool.retry_interval_s,
                   document_name=config.storage.document_name)

    def next_due(self) -> float | None:
        """POSIX time when the earliest spooled batch may be tried, None if the spool is empty."""
        pending = self.queue.pending_batches()
        if not pending:
            return None
        return max(self._store_ready_at, min(self.status.retry_state(e.batch_id).next_at for e in pending))

    def resting(self) -> bool:
        """Whether the store failed last and its backoff has not ended: try nothing of it yet."""
        return self.clock().timestamp() < self._store_ready_at

    def _store_failed(self) -> None:
        self._store_failures += 1
        delay = compute_backoff(self._store_failures, self.store_backoff_cap_s, self.rand())
        self._store_ready_at = self.clock().timestamp() + delay

    def drain(
        self,
        *,
        ignore_backoff: bool = False,
        day: date | None = None,
        progress: Callable[[int], None] = lambda handled: None,
    ) -> DrainReport:
        """Upload every due batch, oldest first, one append per day group; stop at a store error."""
        report = DrainReport()
        if not ignore_backoff and self.resting():
            report.left = len(self.queue.pending_batches(day))
            return report
        pending = self.queue.pending_batches(day)
        now_ts = self.clock().timestamp()
        due = [e for e in pending if ignore_backoff or self.status.retry_state(e.batch_id).next_at <= now_ts]
        for group in _groups(due):
            try:
                self._upload_group(group, report, progress)
            except StoreError as exc:
                self._failed(group, exc, report)
                break  # the store is failing: later groups would only fail the same way
            progress(report.batches + report.failed)
        report.left = len(self.queue.pending_batches(day))
        return report

    def _upload_group(
        self, group: list[SpooledBatch], report: DrainReport, progress: Callable[[int], None] = lambda n: None
    ) -> None:
        readable: list[tuple[SpooledBatch, BatchHeader]] = []
        for entry in group:
            try:
                readable.append((entry, entry.header()))
            except UnreadableBatch as exc:
                self._unreadable(exc, report)
        if not readable:
            return
        started = time.monotonic()
        try:
            streamed = itertools.count(report.batches + report.failed + 1)
            result = publish.append_batches(self.store, self.prefix, self.tz, [e for e, _ in readable],
                                            self.clock(), self._written,
                                            on_streamed=lambda header: progress(next(streamed)),
                                            compression=self.compression, listed=self._listed,
                                            name=self.document_name)
        except UnreadableBatch as exc:
            # Found while streaming: nothing was written. Hold that batch back; the rest go next time.
            self._unreadable(exc, report)
            return
        ms = (time.monotonic() - started) * 1000
        self._store_failures, self._store_ready_at = 0, 0.0
        self._retire([e for e, _ in readable])
        headers = [h for _, h in readable]
        fetches = sum(h.fetch_count for h in headers)
        matches = sum(h.matches for h in headers)
        report.batches += len(headers)
        report.fetches += fetches
        report.matches += matches
        day = headers[0].day.isoformat()
        self.status.update(
            success={"at": self.clock().isoformat(), "day": day, "batches": len(headers), "fetches": fetches},
            done=[h.batch_id for h in headers],
            opened=[day],
        )
        stored_ids = set(result.stored)
        stored = [h for h in headers if h.batch_id in stored_ids]
        log.info(  # fetches and matches of the batches stored now; `already` ones were stored before
            "upload day=%s batches=%d fetches=%d matches=%d already=%d path=%s bytes=%d ms=%.1f attempts=%d",
            day, len(stored), sum(h.fetch_count for h in stored), sum(h.matches for h in stored),
            len(result.already), result.path, result.bytes_sent, ms, result.attempts,
        )
        self.metrics.appended(AppendReport(Tally.of(headers), str(result.path), ms / 1000, result.attempts,
                                           result.bytes_sent, result.bytes_received, _used(result.capabilities)))
        self.metrics.day_document(result.day, result.counters)

    def _unreadable(self, exc: UnreadableBatch, report: DrainReport) -> None:
        # One damaged file must not hold back the others; it stays, is retried with backoff, and reported.
        report.errors.append(str(exc))
        self._note_failure(exc.batch_id, str(exc))
        log.error("spool_unreadable batch=%s error=%s", exc.batch_id, exc)

    def _retire(self, uploaded: list[SpooledBatch]) -> None:
        """Take acknowledged batches out of the queue: into the archive (kept for `uploader repair`,
        which is pruned here), or deleted where no archive is kept."""
        with self.queue.acknowledged([e.path.name for e in uploaded]) as everywhere:
            # Where the stream has other destinations, a batch moves once all of them have it.
            done = set(everywhere)
            self._move_out([e for e in uploaded if e.path.name in done])

    def _move_out(self, uploaded: list[SpooledBatch]) -> None:
        if not uploaded:
            return
        policy = self.archive_policy
        if not policy.enabled:
            self.spool.remove(uploaded)
            return
        now = self.clock().timestamp()
        added = self._archive.add(uploaded, now)
        if self._archive_bytes is not None:
            self._archive_bytes += added
        over = self._archive_bytes is not None and self._archive_bytes > policy.max_bytes
        # Listing a week of batches costs milliseconds: not on every append, but at once when full.
        if over or time.monotonic() >= self._next_prune:
            kept = self._archive.prune(now, policy)
            self._quarantined.prune_sent(now, policy.max_age_s)  # what is in the bucket: the same age rule
            self._archive_bytes = kept.bytes
            self._next_prune = time.monotonic() + PRUNE_EVERY_S

    def _failed(self, group: list[SpooledBatch], exc: StoreError, report: DrainReport) -> None:
        message = str(exc)
        self._store_failed()
        report.failed += len(group)
        report.errors.append(message)
        attempts = 0
        for entry in group:
            attempts = self._note_failure(entry.batch_id, message)
        self.status.update(error={"at": self.clock().isoformat(), "message": message,
                                  "permanent": isinstance(exc, StoreRejected)})
        self.metrics.append_failed(failure_kind(exc))
        level = logging.ERROR if isinstance(exc, StoreRejected) else logging.WARNING
        if self._first_in_a_minute("upload_failed", message):
            log.log(level, "upload_failed day=%s batches=%d attempt=%d error=%s (batches stay spooled)",
                    group[0].day, len(group), attempts, message)
        else:
            log.debug("upload_failed day=%s batches=%d attempt=%d error=%s", group[0].day, len(group), attempts, message)

    def _first_in_a_minute(self, event: str, message: str) -> bool:
        """Whether ``event`` with ``message`` is due to be logged: an outage or a missing
        permission fails every attempt the same way, so it is said once a minute, not at every
        try. The object named in it does not count: the same refusal of a probe object (a fresh
        name each try) or of another day's document is the same failure. Each event has its own
        minute: an INFO line of the start's tidy must not silence the upload's WARNING."""
        kind = event + " " + _OBJECT_NAMED.sub("s3://...: ", message)
        now = time.monotonic()
        if now - self._last_logged.get(kind, -_REPEAT_LOG_S) < _REPEAT_LOG_S:
            return False
        self._last_logged[kind] = now
        return True

    def _note_failure(self, batch_id: str, message: str) -> int:
        state = self.status.retry_state(batch_id)
        attempts = state.attempts + 1
        delay = compute_backoff(attempts, self.max_backoff_s, self.rand())
        self.status.update(failed={batch_id: RetryState(attempts, self.clock().timestamp() + delay, message)})
        return attempts

    def upload_quarantine(self) -> int:
        """Send quarantined bytes to ``<prefix>/quarantine/``; keep them locally as well."""
        sent = 0
        for item, path in self._quarantined.pending(skip=self.queue.marked()):
            try:
                key = quarantine.upload_quarantine(self.store, self.prefix, item)
            except StoreError as exc:
                log.debug("quarantine_upload_failed name=%s error=%s", item.name, exc)
                self._store_failed()
                break
            with self.queue.acknowledged([path.name]) as everywhere:
                if everywhere:
                    self._quarantined.mark_sent(path)
            log.info("quarantine_uploaded key=%s bytes=%d reason=%r", key, len(item.raw), item.reason)
            sent += 1
        return sent

    def tidy(self, writer_started: bool = False) -> bool:
        """Remove what killed probes and appends left in the bucket (run by the prefix's writer);
        ``writer_started``: just after taking the single-writer lock (see
        ``Store.remove_leftovers``). Return whether it could.

        A failure only postpones it: nothing depends on it but the bucket's bill and quota (a
        killed append's parts hold a copy of the day until aborted).
        """
        try:
            removed = self.store.remove_leftovers(older_than_s=LEFTOVER_AGE_S, writer_started=writer_started)
        except StoreError as exc:
            # Uploads go on without it; a refusal (a permission missing) is the operator's to fix.
            if self._first_in_a_minute("leftovers_kept", str(exc)):
                log.log(logging.WARNING if isinstance(exc, StoreRejected) else logging.INFO,
                        "leftovers_kept error=%s (uploads go on; tried again later)", exc)
            return False
        if removed:
            log.info("leftovers_removed count=%d first=%s", len(removed), removed[0])
        return True

    def close_days(self, days: list[date]) -> list[date]:
        """Close each day whose batches are all uploaded; return the days closed."""
        closed = []
        for day in sorted(days):
            if self.queue.pending_batches(day):
                continue  # not yet: closing now would make its remaining uploads "late"
            try:
                closing = publish.close_day(self.store, self.prefix, self.tz, day, self.clock(), self._written,
                                            self.compression, self.document_name)
            except StoreError as exc:
                log.warning("close_failed day=%s error=%s (will retry)", day, exc)
                self._store_failed()
                break
            self.status.update(closed=[day.isoformat()])
            self.metrics.day_closed(CloseReport(day, closing.counters, _used(closing.capabilities)))
            log.info("day_closed day=%s", day)
            closed.append(day)
        if closed:
            self._listed.prune(self.clock().timestamp())  # days long closed take no more uploads
        return closed


def _used(caps: Capabilities | None) -> CapabilitiesUsed | None:
    """The server's findings an append or close was planned with, as the metrics take them."""
    if caps is None:
        return None
    honoured = {f.name: value for f in fields(caps) if isinstance(value := getattr(caps, f.name), bool)}
    honoured.pop("conclusive")  # the probe's own state, not a capability
    return CapabilitiesUsed(honoured, caps.probed_at, caps.conclusive)


def _groups(entries: list[SpooledBatch]) -> list[list[SpooledBatch]]:
    """Group batches by day (days in order of their oldest batch), bounded in count and bytes."""
    by_day: dict[date, list[SpooledBatch]] = {}
    for e in entries:  # already in seq order
        by_day.setdefault(e.day, []).append(e)
    groups: list[list[SpooledBatch]] = []
    for day_entries in by_day.values():
        current: list[SpooledBatch] = []
        size = 0
        for e in day_entries:
            try:
                e_size = e.path.stat().st_size
            except FileNotFoundError:
                continue
            if current and (len(current) >= GROUP_MAX_BATCHES or size + e_size > GROUP_MAX_BYTES):
                groups.append(current)
                current, size = [], 0
            current.append(e)
            size += e_size
        if current:
            groups.append(current)
    return groups
