"""The service: every stream (watcher → cut → spool → one upload worker per destination →
store), one scheduler for their jobs, one metrics port.

It knows nothing of processes or signals: ``start``, ``stop``, and the two jobs
(``close_out``, ``retry_tick``) that APScheduler runs and tests may call directly. The clock
is injectable so tests can cross midnight without waiting for one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime

import pytz
from apscheduler.schedulers.background import BackgroundScheduler
from watchdog.observers import Observer

from uploader.config import Config
from uploader.local.spool import Spool
from uploader.metrics import DestinationView, Metrics, ServiceView, StreamView
from uploader.metrics.http import serve
from uploader.publish.status import StatusFile
from uploader.schedule import CloseOutTrigger
from uploader.service.stream import StreamRunner

__all__ = ["Service"]

log = logging.getLogger(__name__)


class Service:
    """One running uploader. ``start`` holds every stream's spool lock until ``stop``."""

    def __init__(self, config: Config, clock: Callable[[], datetime] = lambda: datetime.now(pytz.utc)) -> None:
        self.config = config
        self.clock = clock
        # Metrics exist only where they are served ([metrics] listen = "" turns them off).
        self.metrics = Metrics() if config.metrics.enabled else None
        # One inotify instance and thread watch every stream's file.
        self._observer = Observer()
        recorder = self.metrics.recorder if self.metrics is not None else None
        self.streams = [StreamRunner(config, s, clock, recorder, self._observer) for s in config.streams]
        self.scheduler = BackgroundScheduler(timezone=pytz.utc)
        self._running = threading.Event()  # started and not stopping: what /healthz reports
        self._resources = ExitStack()

    # The first stream and its first destination: what a one-stream caller (a test) looks at.
    @property
    def spool(self) -> Spool:
        return self.streams[0].spool

    @property
    def status(self) -> StatusFile:
        return self.streams[0].workers[0].status

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Take the locks, finish what a previous run left, then watch and schedule."""
        try:
            for stream in self.streams:
                stream.lock(self._resources)
            self._serve_metrics()  # a port in use refuses the start before anything runs
            self._observer.start()
            for stream in self.streams:
                stream.start()
                self.scheduler.add_job(stream.close_out, CloseOutTrigger(stream.tz, stream.stream.day.close_out_at),
                                       id=f"close-out:{stream.name}", misfire_grace_time=3600, coalesce=True,
                                       max_instances=1)
                self.scheduler.add_job(stream.retry_tick, "interval", seconds=stream.stream.spool.retry_interval_s,
                                       id=f"retry:{stream.name}", coalesce=True, max_instances=1)
            self.scheduler.start()
        except BaseException:
            # Nothing it started may outlive a failed start: the locks go with the threads.
            self._halt(final_drain=False)
            self._resources.close()
            raise
        self._running.set()
        log.info("service_started streams=%d destinations=%d", len(self.streams),
                 sum(len(s.workers) for s in self.streams))

    def stop(self) -> None:
        """Finish the cuts under way, upload what is spooled one last time, release the locks."""
        log.info("service_stopping")
        try:
            self._halt(final_drain=True)
            log.info("service_stopped left_in_spool=%d", sum(len(s.spool.pending_batches()) for s in self.streams))
        finally:
            self._resources.close()

    def _halt(self, final_drain: bool) -> None:
        """Stop the scheduler, the watchers and the workers (each worker's last upload runs on
        its own thread, so a destination that is down does not hold back the others')."""
        self._running.clear()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for stream in self.streams:
            stream.halt(final_drain)
        for stream in self.streams:
            stream.join()
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join()

    # -- jobs (every stream's) -----------------------------------------------------------------

    def close_out(self) -> None:
        for stream in self.streams:
            stream.close_out()

    def retry_tick(self) -> None:
        for stream in self.streams:
            stream.retry_tick()

    # -- internals -------------------------------------------------------------------------

    def _serve_metrics(self) -> None:
        if self.metrics is None:
            return
        self.metrics.observe(ServiceView(
            streams=[StreamView(
                name=s.name, tz=s.tz, today=s.today, trouble=s.watcher.trouble,
                destinations=[DestinationView(name=w.name, queue=w.queue, closed_through=w.closed_through,
                                              running=w.alive) for w in s.workers],
            ) for s in self.streams],
            running=self._running.is_set,
            max_pending_age_s=self.config.metrics.healthz_max_pending_age_s,
        ))
        for stream in self.streams:
            for worker in stream.workers:
                last = worker.status.snapshot()["last_success"]
                try:
                    at = datetime.fromisoformat(last["at"]).timestamp()
                except (TypeError, KeyError, ValueError):
                    continue  # no success recorded yet (or an unreadable one): the gauge says 0, "not yet"
                self.metrics.recorder(stream.name, worker.name).seed_last_success(at)
        self._resources.enter_context(serve(self.config.metrics, self.metrics))
