"""The cut: move complete records from the front of the local file into the spool, crash-safely.

``plan.plan_cut`` decides what to cut; ``Cutter`` carries the plan out:

1. without the lock, scan and stage batches and quarantined bytes in the spool (pending names,
   invisible to uploads, fsynced): writers only append, so the front cannot change;
2. still without the lock, write the cut journal (length + digest of the cut bytes, the file's
   size, a copy of the bytes after the cut, a digest of the last ones, the inode), durably:
   the commit point;
3. under the flock: check the file is the one planned on (inode, a few KiB of the front), move
   the bytes after the cut to the front in place (same inode) and truncate. No fsync and
   nothing proportional to the cut: the pipeline waits O(bytes kept);
4. after the lock: fsync the file, promote the staged files, clear the journal.

A crash before 2 leaves the file untouched and the staged files are discarded on restart; a
crash after 2 is finished by ``recover`` from the journal, whatever the writer appended since.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pytz

from uploader.errors import SpoolError
from uploader.local.batch import BatchHeader, QuarantineItem
from uploader.local.journal import SAMPLE, CutJournal, Journal
from uploader.local.plan import (
    MAX_CUT,
    WINDOW,
    CutPlan,
    batches_of,
    cut_budget,
    plan_cut,
    quarantined_of,
)
from uploader.local.records import scan
from uploader.local.spool import Spool
from uploader.local.surgery import Recovered, finish_rewrite, shift_tail
from uploader.recorder import NO_METRICS, CutReport, Recorder, Tally
from uploader.stamps import format_stamp

__all__ = ["CutOutcome", "Cutter", "Refusal"]

log = logging.getLogger(__name__)

# Batches one cut takes at most: each leaves its header in memory until the cut commits (~2 KiB).
_MAX_CUT_BATCHES = 10_000
_JOURNAL_TRIES = 3


class Refusal(Enum):
    """Why a journaled cut was not carried out under the lock."""

    FILE_REPLACED = "file-replaced"  # another file is at the path: never write into it
    FILE_CHANGED = "file-changed-under-us"  # shrank, or its front is not what was planned on
    APPENDED_TOO_MUCH = "appended-too-much-meanwhile"  # journal again, then retry


@dataclass
class _Staged:
    """A planned cut whose batches are durable under pending names, not yet committed.

    It is built window by window, keeping of each only what the outcome and the log lines need,
    so memory holds one window's bytes however much the cut takes.
    """

    started: float
    length: int = 0  # bytes to remove from the front: the windows' plans end to end
    headers: list[BatchHeader] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # each batch's bytes in the file, for the log
    fallbacks: list[tuple[str, int, str, date]] = field(default_factory=list)  # (id, offset, source, day)
    quarantined: list[QuarantineItem] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)  # of the bytes cut, for recovery
    samples: tuple[bytes, bytes] = (b"", b"")  # the cut's first and last bytes, to re-check cheaply
    outcome: CutOutcome | None = None


@dataclass(frozen=True)
class CutOutcome:
    batches: list[BatchHeader] = field(default_factory=list)  # headers only: a cut may be large
    quarantined: list[QuarantineItem] = field(default_factory=list)
    removed: int = 0  # bytes removed from the front of the file
    scanned_to: int = 0  # where the unfinished tail starts, after the removal
    records_left: int = 0  # well-formed records before ``scanned_to``
    more: bool = False  # the file holds more than one cut may take: cut again


class Cutter:
    """Cuts the local file into the spool. Not thread-safe: one thread (the watcher) owns it."""

    def __init__(
        self,
        path: Path,
        spool: Spool,
        tz: pytz.BaseTzInfo,
        batch_size: int,
        clock: Callable[[], datetime] = lambda: datetime.now(pytz.utc),
        max_cut_bytes: int = MAX_CUT,
        metrics: Recorder = NO_METRICS,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.spool = spool
        self.journal = Journal(spool.root)
        self.tz = tz
        self.batch_size = batch_size
        self.clock = clock
        self.max_cut_bytes = max_cut_bytes
        self.window_bytes = WINDOW
        self.max_cut_batches = _MAX_CUT_BATCHES

    def recover(self) -> None:
        """Finish a cut interrupted by a crash, or discard one that never committed."""
        journal = self.journal.read()
        if journal is None:
            n = self.spool.discard_staged()
            if n:
                log.warning("cut_discarded staged_files=%d reason=crash-before-commit", n)
            return
        self.spool.commit(journal.pending)
        n = self.spool.discard_staged()  # a later cut that never committed
        if n:
            log.warning("cut_discarded staged_files=%d reason=crash-before-commit", n)
        fd = self._open()
        if fd is None:
            log.error("cut_recovery_file_missing path=%s action=clear-journal", self.path)
            self.journal.clear()
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if journal.inode not in (-1, os.fstat(fd).st_ino):
                # Another file is at the path now: never write into it. The cut's records are
                # kept in the spool (promoted above); the old file is no longer read.
                state = Recovered.FILE_REPLACED
            else:
                state = finish_rewrite(fd, journal, self.journal.kept_path)
            self.journal.clear()
            log.warning("cut_recovered path=%s state=%s removed=%d", self.path, state.value, journal.length)
        finally:
            os.close(fd)

    def cut(self, close_through: date | None = None) -> CutOutcome:
        """Cut what is complete at the front of the file; see the module docstring.

        Everything slow or durable happens without the flock: scanning, staging, the journal
        (writers only append, so the front cannot change under us), and afterwards the fsyncs
        and the promotion of the batches. The pipeline waits only for a cheap re-check and the
        move of the kept bytes: O(bytes kept), no fsync.
        """
        fd = self._open()
        if fd is None:
            return CutOutcome()
        try:
            staged = self._stage(fd, close_through)
            assert staged.outcome is not None
            if staged.length == 0:
                return staged.outcome
            for attempt in range(1, _JOURNAL_TRIES + 1):
                journal = self._write_journal(fd, staged)
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    why = self._shift_locked(fd, staged, journal, last_try=attempt == _JOURNAL_TRIES)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                if why is not Refusal.APPENDED_TOO_MUCH:
                    break
                log.debug("cut_rejournal attempt=%d reason=%s", attempt, why.value)
            if why is not None:
                self._abandon(staged, journal, why)
                return CutOutcome()
            return self._finish(fd, staged)
        finally:
            os.close(fd)

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None

    def _stage(self, fd: int, close_through: date | None) -> _Staged:
        """Plan and stage everything complete at the front, up to ``cut_budget``, a window at
        a time. Taking all of it in one cut keeps what the cut leaves behind small, and that is
        what the journal copies and the shift moves under the lock: a cut of one window at a
        time moved the whole rest of the file for every window (quadratic in a backlog)."""
        size = os.fstat(fd).st_size
        now = self.clock()
        budget = cut_budget(shutil.disk_usage(self.spool.root).free, self.max_cut_bytes, self.window_bytes)
        staged = _Staged(started=time.monotonic())
        while True:
            buf, consumed, plan, final = self._plan_window(fd, staged.length, size, now, close_through,
                                                           budget)
            if plan.length:
                self._stage_window(buf, plan, now, staged)
            full = staged.length >= budget or len(staged.headers) >= self.max_cut_batches
            if not plan.length or final or full:
                break
        try:
            if staged.names:
                self.spool.sync_names()
        except OSError as exc:
            raise self._spool_failed("write to the spool", exc) from exc
        staged.outcome = CutOutcome(
            batches=staged.headers,
            quarantined=staged.quarantined,
            removed=staged.length,
            # Offsets of the last window, read from where the cut now ends.
            scanned_to=consumed - plan.length,
            records_left=plan.records_left,
            more=full,
        )
        return staged

    def _plan_window(
        self, fd: int, base: int, size: int, now: datetime, close_through: date | None, budget: int,
    ) -> tuple[bytes, int, CutPlan, bool]:
        """Read from ``base`` and plan the batches there: (bytes, bytes scanned, plan, whether the
        window reached the end of the file). Reads more only when no batch ends in the window."""
        budget -= base
        want = min(size - base, self.window_bytes)
        while True:
            buf = os.pread(fd, want, base)
            final = base + want >= size
            result = scan(buf, self.tz, now, keep_documents=False)
            # A day's short last batch is closed only where the file ends, not where a window does.
            plan = plan_cut(result.items, self.batch_size, close_through if final else None, budget)
            if plan.batches or final or (result.items and want >= budget):
                return buf, result.consumed, plan, final
            want = min(size - base, want * 4)  # the next batch ends beyond what we read: read more

    def _stage_window(self, buf: bytes, plan: CutPlan, now: datetime, staged: _Staged) -> None:
        """Write one window's batches and quarantined spans under pending names (durable)."""
        base = staged.length
        stamp = format_stamp(now, self.tz)
        seqs = self.spool.allocate_seqs(len(plan.batches) + len(plan.quarantined))
        batches = batches_of(buf, plan, seqs, stamp)
        quarantined = quarantined_of(buf, plan, seqs[len(batches):], base, stamp, now.astimezone(self.tz).date())
        try:
            staged.names += self.spool.stage(batches, quarantined)
        except OSError as exc:
            raise self._spool_failed("write to the spool", exc) from exc
        staged.headers += [b.header for b in batches]
        staged.sizes += [sum(f.size for f in pb.fetches) for pb in plan.batches]
        staged.fallbacks += [(f.fetch_id, base + f.start, f.time_source, f.day)
                             for pb in plan.batches for f in pb.fetches if f.time_source != "marker"]
        staged.quarantined += quarantined
        staged.digest.update(memoryview(buf)[:plan.length])
        n = min(SAMPLE, plan.length)
        head = staged.samples[0] if base else buf[:n]
        staged.samples = (head, buf[plan.length - n:plan.length])
        staged.length += plan.length

    def _write_journal(self, fd: int, staged: _Staged) -> CutJournal:
        """The commit point, made durable before the lock: recovery finishes the cut from here."""
        try:
            journal = self.journal.record(fd, staged.length, os.fstat(fd).st_size, staged.digest.hexdigest(),
                                          staged.names)
            self.journal.write(journal)
        except OSError as exc:
            raise self._spool_failed("write the cut journal in", exc) from exc
        return journal

    def _shift_locked(
        self, fd: int, staged: _Staged, j: CutJournal, last_try: bool = False,
    ) -> Refusal | None:
        """Under the flock: move the kept bytes (and any appended since the journal) to the front
        and truncate; no fsync, nothing proportional to the cut. Returns why not, or None."""
        st = os.fstat(fd)
        try:
            at_path = os.stat(self.path).st_ino
        except FileNotFoundError:
            at_path = -1
        if st.st_ino != j.inode or at_path != j.inode:
            return Refusal.FILE_REPLACED
        head, tail = staged.samples
        if st.st_size < j.size or os.pread(fd, len(head), 0) != head or \
                os.pread(fd, len(tail), j.length - len(tail)) != tail:
            return Refusal.FILE_CHANGED
        if st.st_size - j.size > j.length - j.tail_len:
            # So much was appended since the journal that the shift would overwrite what recovery
            # reads to tell its progress: journal again (outside the lock), or, on the last try
            # of a writer bursting faster than the journal's fsync, here (the one slow path).
            if not last_try:
                return Refusal.APPENDED_TOO_MUCH
            j = self._write_journal(fd, staged)
            st = os.fstat(fd)
        shift_tail(fd, 0, j.length, st.st_size, sync=False)
        return None

    def _finish(self, fd: int, staged: _Staged) -> CutOutcome:
        """After the lock: make the rewrite durable, promote the batches, clear the journal."""
        outcome = staged.outcome
        assert outcome is not None
        os.fsync(fd)
        self.spool.commit(staged.names)
        self.spool.sync_names()
        self.journal.clear()
        ms = (time.monotonic() - staged.started) * 1000
        for b, size in zip(outcome.batches, staged.sizes):
            log.info("cut day=%s batch=%s seq=%d fetches=%d matches=%d bytes=%d ms=%.1f",
                     b.day, b.batch_id, b.seq, b.fetch_count, b.matches, size, ms)
        for fallback in staged.fallbacks:
            log.warning("fetch_time_fallback fetch_id=%s offset=%d source=%s day=%s", *fallback)
        for q in outcome.quarantined:
            log.warning(
                "quarantined file=%s offset=%d bytes=%d reason=%r saved=%s",
                self.path, q.offset, len(q.raw), q.reason, q.name,
            )
        self.metrics.cut(CutReport(Tally.of(outcome.batches), len(outcome.quarantined),
                                   sum(len(q.raw) for q in outcome.quarantined)))
        return outcome

    def _abandon(self, staged: _Staged, journal: CutJournal, why: Refusal) -> None:
        """Undo a journaled cut that was not carried out (the file is as it was)."""
        if why is Refusal.FILE_REPLACED:
            # The records cut are no longer in the file at the path: keep them, cut once.
            self.spool.commit(staged.names)
            self.spool.sync_names()
            self.journal.clear()
            log.warning("cut_file_replaced path=%s batches=%d (kept in the spool)", self.path, len(staged.names))
            return
        # The journal goes first: staged files without a journal are discarded on recovery.
        self.journal.clear()
        self.spool.discard_staged()
        log.warning("cut_abandoned path=%s reason=%s", self.path, why.value)

    def _spool_failed(self, what: str, exc: OSError) -> SpoolError:
        """Undo the staged files of a cut that could not commit; the local file is untouched."""
        self.spool.discard_staged()
        return SpoolError(
            f"cannot {what} {self.spool.root}: {exc.strerror or exc}; the local file was left untouched",
            "free disk space (or fix permissions) under spool.dir; the cut is retried on the next write",
        )
