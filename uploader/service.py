"""The service: wires watcher → cut → spool → upload worker → store, plus the scheduled jobs.

It knows nothing of processes or signals: ``start``, ``stop``, and the two jobs
(``close_out``, ``retry_tick``) that APScheduler runs and tests may call directly. The clock
is injectable so tests can cross midnight without waiting for one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import date, datetime, timedelta

import pytz
from apscheduler.schedulers.background import BackgroundScheduler

from uploader.config import Config
from uploader.errors import SpoolError
from uploader.local.cut import CutOutcome, Cutter
from uploader.local.spool import Spool
from uploader.local.watcher import Watcher
from uploader.metrics import Metrics, ServiceView
from uploader.metrics.http import serve
from uploader.publish.status import StatusFile
from uploader.publish.uploader import Uploader
from uploader.recorder import NO_METRICS
from uploader.schedule import CloseOutTrigger
from uploader.store import LEFTOVER_AGE_S, Store, open_store

__all__ = ["Service"]

log = logging.getLogger(__name__)

TIDY_EVERY_S = 24 * 3600.0


class Service:
    """One running uploader. ``start`` holds the spool lock until ``stop``."""

    def __init__(
        self,
        config: Config,
        store: Store | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(pytz.utc),
    ) -> None:
        self.config = config
        self.tz = config.day.tz
        self.clock = clock
        self.spool = Spool(config.spool.dir)
        # Metrics exist only where they are served ([metrics] listen = "" turns them off).
        self.metrics = Metrics() if config.metrics.enabled else None
        recorder = self.metrics or NO_METRICS
        self.store = store or open_store(config.storage, config.spool.dir)
        self.status = StatusFile(config.spool.dir / "status.json")
        self.cutter = Cutter(config.watch.file, self.spool, self.tz, config.watch.batch_size, clock=clock,
                             metrics=recorder)
        self.uploader = Uploader.for_config(config, self.spool, self.store, self.status, clock=clock,
                                            metrics=recorder)
        self.watcher = Watcher(self.cutter, on_cut=self._on_cut)
        self.scheduler = BackgroundScheduler(timezone=self.tz)
        self._to_close: set[date] = set()
        self._to_close_lock = threading.Lock()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._running = threading.Event()  # started and not stopping: what /healthz reports
        self._worker = threading.Thread(target=self._work_loop, name="upload-worker", daemon=True)
        self._resources = ExitStack()
        self._closed_through: date | None = None
        # A killed predecessor's unfinished appends go first (one listing); the rest once a day.
        self._tidy_at_start = True
        self._next_tidy = time.monotonic() + LEFTOVER_AGE_S

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the lock, finish what a previous run left, then watch and schedule."""
        self._resources.enter_context(self.spool.locked("uploader run"))
        try:
            self.store.preflight()  # an untrusted certificate: say so now, not at every upload
            self._serve_metrics()  # first: a port in use refuses the start before anything runs
            self.cutter.recover()
            self._cut_past_days()
            self._schedule_close_of_past_days()
            self._worker.start()
            self._kick.set()
            self.watcher.start()
            self.scheduler.add_job(self.close_out, CloseOutTrigger(self.tz, self.config.day.close_out_at),
                                   id="close-out", misfire_grace_time=3600, coalesce=True, max_instances=1)
            self.scheduler.add_job(self.retry_tick, "interval", seconds=self.config.spool.retry_interval_s,
                                   id="retry", coalesce=True, max_instances=1)
            self.scheduler.start()
        except BaseException:
            # Nothing it started may outlive a failed start: the lock goes with the threads.
            self._halt()
            self._resources.close()
            raise
        self._running.set()
        log.info(
            "service_started file=%s spool=%s store=%s batch_size=%d timezone=%s pending=%d",
            self.config.watch.file, self.config.spool.dir, self.store.describe(),
            self.config.watch.batch_size, self.config.day.timezone, len(self.spool.pending_batches()),
        )

    def stop(self) -> None:
        """Finish the cut under way, stop the worker, try one last upload, release the lock."""
        log.info("service_stopping")
        try:
            self._halt()
            report = self.uploader.drain(ignore_backoff=True)
            self.uploader.upload_quarantine()
            log.info("service_stopped uploaded=%d left_in_spool=%d", report.batches, report.left)
        finally:
            self._resources.close()

    def _halt(self) -> None:
        """Stop the scheduler, the watcher and the upload worker, whichever of them run."""
        self._running.clear()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.watcher.stop()
        self._stopping.set()
        self._kick.set()
        if self._worker.is_alive():
            self._worker.join()

    def closed_through(self) -> date | None:
        """The latest day D such that every day up to D that had uploads is closed; None before start."""
        through = self._closed_through
        with self._to_close_lock:
            waiting = min(self._to_close, default=None)
        if through is None or waiting is None:
            return through
        return min(through, waiting - timedelta(days=1))

    def today(self) -> date:
        return self.clock().astimezone(self.tz).date()

    # -- jobs ------------------------------------------------------------------------------

    def close_out(self) -> None:
        """Cut and upload every past day's records, then close those days (idempotent)."""
        yesterday = self.today() - timedelta(days=1)
        log.info("close_out through=%s", yesterday)
        self.watcher.request_cut(close_through=yesterday).result()
        self._schedule_close_of_past_days()
        self._closed_through = yesterday
        self._kick.set()

    def retry_tick(self) -> None:
        """Wake the upload worker; also catch a close-out that the clock jumped past."""
        if self._closed_through is not None and self._closed_through < self.today() - timedelta(days=1):
            self.close_out()
        self.watcher.poke()
        self._kick.set()

    # -- internals -------------------------------------------------------------------------

    def _serve_metrics(self) -> None:
        if self.metrics is None:
            return
        self.metrics.observe(ServiceView(
            spool=self.spool, tz=self.tz, today=self.today, closed_through=self.closed_through,
            running=lambda: self._running.is_set() and self._worker.is_alive(),
            max_pending_age_s=self.config.metrics.healthz_max_pending_age_s,
        ))
        last = self.status.snapshot()["last_success"]
        try:
            self.metrics.seed_last_success(datetime.fromisoformat(last["at"]).timestamp())
        except (TypeError, KeyError, ValueError):
            pass  # no success recorded yet (or an unreadable one): the gauge says 0, "not yet"
        self._resources.enter_context(serve(self.config.metrics, self.metrics))

    def _cut_past_days(self) -> None:
        """Records of past days left in the file (down at midnight) are cut now, short or not."""
        yesterday = self.today() - timedelta(days=1)
        try:
            while (outcome := self.cutter.cut(close_through=yesterday)).more or outcome.batches:
                pass
        except SpoolError as exc:
            # Not fatal: the file keeps the records and the watcher retries on the next event.
            log.error("startup_cut_failed error=%s", exc)

    def _on_cut(self, outcome: CutOutcome) -> None:
        self._kick.set()

    def _schedule_close_of_past_days(self) -> None:
        today = self.today()
        days = {date.fromisoformat(d) for d in self.status.open_days()}
        days |= {e.day for e in self.spool.pending_batches()}
        with self._to_close_lock:
            self._to_close |= {d for d in days if d < today}
        if self._closed_through is None:
            self._closed_through = today - timedelta(days=1)

    def _work_loop(self) -> None:
        while not self._stopping.is_set():
            due = self.uploader.next_due()
            timeout = None if due is None else max(0.0, due - self.clock().timestamp())
            self._kick.wait(timeout)
            self._kick.clear()
            if self._stopping.is_set():
                break
            try:
                if self._tidy_at_start:
                    self._tidy_at_start = not self.uploader.tidy(writer_started=True)
                self.uploader.drain()
                self.uploader.upload_quarantine()
                if time.monotonic() >= self._next_tidy:
                    self._next_tidy = time.monotonic() + TIDY_EVERY_S
                    self.uploader.tidy()
                with self._to_close_lock:
                    days = sorted(self._to_close)
                if days:
                    closed = self.uploader.close_days(days)
                    with self._to_close_lock:
                        self._to_close -= set(closed)
            except Exception:  # a bug must not kill the worker: batches stay spooled, we retry
                log.exception("upload_worker_error (batches stay spooled; retrying)")
                self._stopping.wait(self.config.spool.retry_interval_s)
