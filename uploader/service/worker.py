"""One destination of one stream: its store, its uploader and the thread that drives them.

Each destination has its own worker, backoff, status file and closing queue, so a store that
is down or refusing only holds back its own uploads: the stream's other destinations, and the
other streams, go on. The worker wakes on a cut, on the stream's retry tick and when the
earliest batch's backoff ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

from uploader.config import Config
from uploader.local.delivery import DeliveryQueue
from uploader.local.spool import Spool
from uploader.publish.status import StatusFile
from uploader.publish.uploader import Uploader
from uploader.recorder import Recorder
from uploader.store import LEFTOVER_AGE_S, open_store
from uploader.threads import thread_name

__all__ = ["DestinationWorker"]

log = logging.getLogger(__name__)

TIDY_EVERY_S = 24 * 3600.0


class DestinationWorker:
    """Uploads one stream's spool to one destination, on its own thread."""

    def __init__(self, config: Config, spool: Spool, queue: DeliveryQueue, clock: Callable[[], datetime],
                 metrics: Recorder) -> None:
        """``config``: the view of this stream and destination (``Config.view``)."""
        self.name = config.destination
        self.config = config
        self.clock = clock
        self.store = open_store(config.storage, config.state)
        self.status = StatusFile(config.state / "status.json")
        self.uploader = Uploader.for_config(config, spool, self.store, self.status, clock=clock, metrics=metrics,
                                            queue=queue)
        self.queue = queue
        self._to_close: set[date] = set()
        self._to_close_lock = threading.Lock()
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._final_drain = False
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=thread_name("upload-worker", config.stream, self.name))
        self._closed_through: date | None = None
        # A killed predecessor's unfinished appends go first (one listing); the rest once a day.
        self._tidy_at_start = True
        self._next_tidy = time.monotonic() + LEFTOVER_AGE_S

    def start(self) -> None:
        self._thread.start()
        self.kick()

    def kick(self) -> None:
        self._kick.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, final_drain: bool) -> None:
        """Ask the thread to end, after one last upload of everything spooled when ``final_drain``."""
        self._final_drain = final_drain
        self._stopping.set()
        self._kick.set()

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join()

    def close(self, days: set[date], through: date) -> None:
        """Queue ``days`` for closing; every day up to ``through`` is then due closed."""
        with self._to_close_lock:
            self._to_close |= days
        if self._closed_through is None or through > self._closed_through:
            self._closed_through = through
        self.kick()

    def closed_through(self) -> date | None:
        """The latest day D such that every day up to D that had uploads is closed; None before start."""
        through = self._closed_through
        with self._to_close_lock:
            waiting = min(self._to_close, default=None)
        if through is None or waiting is None:
            return through
        return min(through, waiting - timedelta(days=1))

    def _loop(self) -> None:
        while not self._stopping.is_set():
            due = self.uploader.next_due()
            timeout = None if due is None else max(0.0, due - self.clock().timestamp())
            self._kick.wait(timeout)
            self._kick.clear()
            if self._stopping.is_set():
                break
            try:
                self._pass()
            except Exception:  # a bug must not kill the worker: batches stay spooled, we retry
                log.exception("upload_worker_error stream=%s destination=%s (batches stay spooled; retrying)",
                              self.config.stream, self.name)
                self._stopping.wait(self.config.spool.retry_interval_s)
        if self._final_drain:
            self._last_pass()

    def _pass(self) -> None:
        if self.uploader.resting():
            return  # woken by a cut while the store is failing: its backoff decides, not the cuts
        if self._tidy_at_start:
            self._tidy_at_start = not self.uploader.tidy(writer_started=True)
        self.uploader.drain()
        if self.uploader.resting():
            return  # the store is failing: quarantine, tidy and closes wait for its backoff too
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

    def _last_pass(self) -> None:
        try:
            report = self.uploader.drain(ignore_backoff=True)
            self.uploader.upload_quarantine()
        except Exception:
            log.exception("upload_worker_error stream=%s destination=%s (batches stay spooled)",
                          self.config.stream, self.name)
            return
        log.info("destination_stopped stream=%s destination=%s uploaded=%d left_in_spool=%d",
                 self.config.stream, self.name, report.batches, report.left)
