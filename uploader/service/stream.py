"""One stream of the service: its file, watcher and cut, its spool, and one worker per destination.

A stream shares nothing with another that one stream's trouble can hold: its own spool lock,
watcher thread, cut, upload workers, backoff and closing queue. The close-out and retry jobs
only ask (a cut, a wake-up) and never wait, so a stuck stream cannot hold the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import ExitStack
from datetime import date, datetime, timedelta

import pytz
from watchdog.observers.api import BaseObserver

from uploader.config import Config, StreamConfig
from uploader.errors import SpoolError
from uploader.local.cut import CutOutcome, Cutter
from uploader.local.delivery import Delivery
from uploader.local.spool import Spool
from uploader.local.watcher import Watcher
from uploader.recorder import NO_METRICS, Recorder
from uploader.service.worker import DestinationWorker
from uploader.threads import thread_name, working_for

__all__ = ["StreamRunner"]

log = logging.getLogger(__name__)


class StreamRunner:
    """Watch one stream's file, cut it into its spool, and ship the spool to every destination."""

    def __init__(self, config: Config, stream: StreamConfig, clock: Callable[[], datetime],
                 recorder: Callable[[str, str], Recorder] | None, observer: BaseObserver | None) -> None:
        """``recorder(stream, destination)`` gives the metrics of each; None when metrics are off."""
        self.name = stream.name
        self.stream = stream
        self.tz: pytz.BaseTzInfo = stream.day.tz
        self.clock = clock
        self.spool = Spool(stream.spool.dir)
        self.delivery = Delivery(self.spool, [(d.name, d.state_dir) for d in stream.destinations])

        def metrics_of(dest: str) -> Recorder:
            return NO_METRICS if recorder is None else recorder(stream.name, dest)

        self.workers = [
            DestinationWorker(config.view(stream, dest), self.spool, self.delivery.queue(dest.name), clock,
                              metrics_of(dest.name))
            for dest in stream.destinations
        ]
        self.cutter = Cutter(stream.watch.file, self.spool, self.tz, stream.watch.batch_size, clock=clock,
                             metrics=metrics_of(stream.destinations[0].name))
        self.watcher = Watcher(self.cutter, on_cut=self._on_cut, name=thread_name("watcher", stream.name),
                               observer=observer)
        self._closed_out_through: date | None = None

    def today(self) -> date:
        return self.clock().astimezone(self.tz).date()

    def lock(self, resources: ExitStack) -> None:
        """Take the spool's lock, held until ``resources`` close; check each store can be trusted."""
        resources.enter_context(self.spool.locked("uploader run"))
        self.delivery.prepare()
        for worker in self.workers:
            worker.store.preflight()  # an untrusted certificate: say so now, not at every upload

    def start(self) -> None:
        """Finish what a previous run left, then upload and watch."""
        with working_for(self.name):
            self.cutter.recover()
            self.delivery.tidy()
            self._cut_past_days()
            self._close_past_days(self.today() - timedelta(days=1))
        for worker in self.workers:
            worker.start()
        self.watcher.start()
        log.info("stream_started stream=%s file=%s spool=%s batch_size=%d timezone=%s pending=%d destinations=%s",
                 self.name, self.stream.watch.file, self.spool.root, self.stream.watch.batch_size,
                 self.stream.day.timezone, len(self.spool.pending_batches()),
                 ",".join(f"{w.name}:{w.store.describe()}" for w in self.workers))

    def halt(self, final_drain: bool) -> None:
        """Stop watching (a cut under way finishes), then ask every worker to stop."""
        self.watcher.stop()
        for worker in self.workers:
            worker.stop(final_drain)

    def join(self) -> None:
        for worker in self.workers:
            worker.join()

    # -- jobs ------------------------------------------------------------------------------

    def close_out(self) -> None:
        """Cut every past day's records, even short batches; then queue those days for closing."""
        yesterday = self.today() - timedelta(days=1)
        log.info("close_out stream=%s through=%s", self.name, yesterday)
        self.watcher.request_cut(close_through=yesterday).add_done_callback(
            lambda cut: self._closed_out(yesterday, cut))

    def retry_tick(self) -> None:
        """Wake the workers and the watcher; also catch a close-out that the clock jumped past."""
        if self._closed_out_through is not None and self._closed_out_through < self.today() - timedelta(days=1):
            self.close_out()
        self.watcher.poke()
        for worker in self.workers:
            worker.kick()

    # -- internals -------------------------------------------------------------------------

    def _closed_out(self, through: date, cut: Future[list[CutOutcome]]) -> None:
        if cut.exception() is not None:
            log.error("close_out_failed stream=%s error=%s (retried at the next tick)", self.name, cut.exception())
            return  # the retry tick sees the close-out is still due
        self._close_past_days(through)

    def _cut_past_days(self) -> None:
        """Records of past days left in the file (down at midnight) are cut now, short or not."""
        yesterday = self.today() - timedelta(days=1)
        try:
            while (outcome := self.cutter.cut(close_through=yesterday)).more or outcome.batches:
                pass
        except (SpoolError, OSError) as exc:
            # Not fatal, for this stream or the others: the file keeps the records, and the
            # watcher retries on the next event (and reports the trouble while it lasts).
            log.error("startup_cut_failed stream=%s error=%s", self.name, exc)

    def _close_past_days(self, through: date) -> None:
        """Queue for closing every past day some destination has open or still has batches of."""
        today = self.today()
        for worker in self.workers:
            days = {date.fromisoformat(d) for d in worker.status.open_days()}
            days |= {e.day for e in worker.queue.pending_batches()}
            worker.close({d for d in days if d < today}, through)
        self._closed_out_through = through

    def _on_cut(self, outcome: CutOutcome) -> None:
        for worker in self.workers:
            worker.kick()
