"""The watcher: notices appends to the local file and runs the cut once enough records are complete.

A watchdog observer on the file's folder only wakes the watcher thread; that one thread owns
the read offset and the ``Cutter``, so offsets never race with a rewrite. It reads just the
bytes appended since the last look and counts END marker lines; at ``batch_size`` it cuts.
Close-out and shutdown ask the same thread for a cut through ``request_cut``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from uploader.errors import UploaderError
from uploader.local.cut import CutOutcome, Cutter
from uploader.local.records import count_end_markers

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20
_LINE_HEAD = 32  # enough of a partial line to recognise a marker when its newline arrives


@dataclass
class _Tail:
    """What the watcher knows of the file: identity, how far it has read, END lines seen."""

    inode: int | None = None
    offset: int = 0
    ends: int = 0
    partial: bytes = b""  # the start of the line under way at ``offset``


# Only what can mean new bytes or another file at the path. Opens and reads (the watcher's own
# included) must never wake it, or every look at the file causes the next one: a busy loop.
# Given to the observer, this also narrows the inotify mask, so the kernel does not even queue them.
WAKE_EVENTS: tuple[type[FileSystemEvent], ...] = (
    FileModifiedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
)


class _Wake(FileSystemEventHandler):
    def __init__(self, path: Path, wake: Callable[[], None]) -> None:
        self.path = str(path)
        self.wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Checked here too: observers other than inotify may not narrow what they emit.
        if isinstance(event, WAKE_EVENTS) and self.path in (event.src_path, event.dest_path):
            self.wake()


class Watcher:
    """Runs on its own thread; ``on_cut`` is called (on that thread) after every cut that moved bytes."""

    def __init__(
        self,
        cutter: Cutter,
        on_cut: Callable[[CutOutcome], None] = lambda outcome: None,
        rescan_s: float = 60.0,
        name: str = "watcher",
        observer: BaseObserver | None = None,
    ) -> None:
        """``observer``: a started watchdog observer shared with other watchers (one inotify
        instance and thread for every stream of a service), stopped by its owner; by default
        the watcher has its own."""
        self.cutter = cutter
        self.path = cutter.path
        self.batch_size = cutter.batch_size
        self.on_cut = on_cut
        # A safety net for missed events (network filesystems); cheap, and never a busy loop.
        self.rescan_s = rescan_s
        self._tail = _Tail()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._requests: list[tuple[date | None, Future[list[CutOutcome]]]] = []
        self._requests_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._own_observer = observer is None
        self._observer: BaseObserver = Observer() if observer is None else observer
        self._error_logged: str | None = None

    def start(self) -> None:
        """Watch the file's folder (created if missing) and start the watcher thread."""
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._observer.schedule(_Wake(self.path, self.poke), str(folder), recursive=False,
                                    event_filter=list(WAKE_EVENTS))
            if self._own_observer:
                self._observer.start()
        except OSError as exc:
            raise UploaderError(
                f"cannot watch {folder}: {exc.strerror or exc}",
                "make the folder of watch.file exist and readable for this user (for inotify limits: "
                "sysctl fs.inotify.max_user_watches / max_user_instances)",
            ) from None
        self._thread.start()
        self.poke()

    def trouble(self) -> str | None:
        """Why the file cannot be watched or cut right now (None: it can), as last logged."""
        return self._error_logged

    def poke(self) -> None:
        """Ask the watcher thread to look at the file (any thread may call this)."""
        self._wake.set()

    def request_cut(self, close_through: date | None = None) -> Future[list[CutOutcome]]:
        """Cut now even below batch_size, closing batches of days up to ``close_through``."""
        fut: Future[list[CutOutcome]] = Future()
        with self._requests_lock:
            self._requests.append((close_through, fut))
        self.poke()
        return fut

    def stop(self, timeout: float = 30.0) -> None:
        """Stop watching; a cut under way finishes first. Safe on a watcher that never started."""
        self._stopping.set()
        self._wake.set()
        threads: list[threading.Thread] = [self._thread]
        if self._own_observer:
            self._observer.stop()
            threads.append(self._observer)
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout)

    # -- the watcher thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.rescan_s)
            self._wake.clear()
            if self._stopping.is_set():
                break
            try:
                self._serve_requests()
                self._refresh()
                while self._tail.ends >= self.batch_size:
                    outcome = self._cut(None)
                    self._refresh()
                    if not (outcome.removed or outcome.more):
                        break  # the END lines belonged to malformed records: wait for more
                self._error_logged = None
            except UploaderError as exc:
                self._log_once(str(exc))
            except OSError as exc:
                self._log_once(f"cannot read {self.path}: {exc.strerror or exc}")
        # Requests made while stopping still get an answer.
        self._serve_requests()

    def _log_once(self, message: str) -> None:
        if message != self._error_logged:
            log.error("watch_error path=%s error=%s", self.path, message)
            self._error_logged = message
        # Retry on the next event or rescan; the file and spool are left as they were.

    def _serve_requests(self) -> None:
        with self._requests_lock:
            requests, self._requests = self._requests, []
        for close_through, fut in requests:
            try:
                outcomes = [self._cut(close_through)]
                while outcomes[-1].more:
                    outcomes.append(self._cut(close_through))
                fut.set_result(outcomes)
            except Exception as exc:  # the requester decides what to do with it
                fut.set_exception(exc)

    def _cut(self, close_through: date | None) -> CutOutcome:
        outcome = self.cutter.cut(close_through)
        try:
            st = os.stat(self.path)
            inode: int | None = st.st_ino
        except FileNotFoundError:
            inode = None
        # The cut scanned the file itself under the lock: take its word for where we are.
        self._tail = _Tail(inode=inode, offset=outcome.scanned_to, ends=outcome.records_left)
        if outcome.removed:
            self.on_cut(outcome)
        return outcome

    def _refresh(self) -> None:
        """Read what was appended since the last look and count END lines in it."""
        t = self._tail
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            if t.inode is not None:
                log.info("watch_file_gone path=%s", self.path)
            self._tail = _Tail()
            return
        try:
            st = os.fstat(fd)
            if st.st_ino != t.inode or st.st_size < t.offset:
                if t.inode is not None:
                    log.info("watch_file_replaced path=%s size=%d", self.path, st.st_size)
                t = self._tail = _Tail(inode=st.st_ino)
            while t.offset < st.st_size:
                chunk = os.pread(fd, min(_READ_CHUNK, st.st_size - t.offset), t.offset)
                if not chunk:
                    break
                t.offset += len(chunk)
                data = t.partial + chunk
                last_nl = data.rfind(b"\n")
                if last_nl < 0:
                    t.partial = data[:_LINE_HEAD]
                    continue
                t.ends += count_end_markers(data[: last_nl + 1], at_line_start=True)
                t.partial = data[last_nl + 1 :][:_LINE_HEAD]
        finally:
            os.close(fd)
