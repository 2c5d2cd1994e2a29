"""The local spool: the folder batches wait in for upload, and the order they are cut in.

Layout: ``batches/<seq>-<day>-<batch_id>.json`` waiting for upload (``batch.py``'s format);
``archive/`` the same files once the store acknowledged them (``archive.py``); ``quarantine/``
spans that were not well-formed fetches, ``quarantine/sent/`` once in the bucket
(``quarantine.py``); ``journal.json`` + ``journal.kept`` while a cut's rewrite is unfinished
(``journal.py``); ``state.json`` the next sequence number; ``lock`` held by the one process
that may change the spool (``lock.py``). Folders 0700, files 0600.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from uploader.errors import SpoolError, UnreadableBatch
from uploader.files import DIR_MODE, FILE_MODE, TMP, atomic_write, fsync_dir, write_all
from uploader.local import lock
from uploader.local.batch import Batch, BatchHeader, QuarantineItem, fetch_data_from, header_from

__all__ = ["PENDING", "Spool", "SpooledBatch", "list_batches"]

log = logging.getLogger(__name__)

PENDING = ".pending"  # written by a cut that has not committed yet; invisible to uploads
_BATCH_NAME = re.compile(r"^(\d{12})-(\d{4}-\d{2}-\d{2})-([0-9a-f]+)\.json$")


@dataclass(frozen=True)
class SpooledBatch:
    """A batch file in the spool, known from its name alone (no need to read it)."""

    path: Path
    seq: int
    day: date
    batch_id: str

    def load(self) -> Batch:
        """The whole batch, fetches parsed (repair, tests; uploads use ``header`` and ``fetch_data``)."""
        with self._reading():
            return Batch.from_json(self.path.read_bytes())

    def header(self) -> BatchHeader:
        """The batch's header: the file's first line only (the whole file in 0.1.0's form)."""
        with self._reading(), open(self.path, "rb") as f:
            return header_from(f.readline(), f.read)

    def fetch_data(self) -> bytes:
        """The fetches exactly as the day document stores them, checked against the digest the
        cut recorded (no parsing)."""
        with self._reading(), open(self.path, "rb") as f:
            return fetch_data_from(f.readline(), f.read())

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableBatch(
                f"spooled batch {self.path} cannot be read: {exc}",
                "move the file aside and report it; the other batches are unaffected",
                self.batch_id,
            ) from exc


def list_batches(folder: Path, day: date | None) -> list[SpooledBatch]:
    """Batch files in ``folder`` (of ``day`` if given), by seq."""
    out = []
    for name in os.listdir(folder):
        m = _BATCH_NAME.match(name)
        if m:
            entry = SpooledBatch(folder / name, int(m[1]), date.fromisoformat(m[2]), m[3])
            if day is None or entry.day == day:
                out.append(entry)
    return sorted(out, key=lambda e: e.seq)


class Spool:
    """Durable local state under one folder (the layout is in the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.batches_dir = root / "batches"
        self.archive_dir = root / "archive"
        self.quarantine_dir = root / "quarantine"
        self.sent_dir = self.quarantine_dir / "sent"
        self.ids_dir = root / "ids"  # made by the uploader's ListedIndex when it first writes there
        self._state_path = root / "state.json"
        self._seq_lock = threading.Lock()
        for d in (root, self.batches_dir, self.archive_dir, self.quarantine_dir, self.sent_dir):
            self._make_private(d)
        try:
            self._next_seq = self._recover_next_seq()
        except PermissionError as exc:
            raise lock.access_error(root, Path(exc.filename or root), exc, "read") from None

    def _make_private(self, folder: Path) -> None:
        """Create ``folder`` 0700, or bring an existing one back to 0700.

        Nothing is written when the folder is already right, so a command that only reads
        (`status`) still works on a spool it may not write (a read-only mount).
        """
        try:
            st = folder.stat()
        except FileNotFoundError:
            try:
                folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                st = folder.stat()
            except OSError as exc:
                raise lock.access_error(self.root, folder, exc, "create the spool folder") from None
        except OSError as exc:  # looked at first: "cannot create" would be wrong for one that exists
            raise lock.access_error(self.root, folder, exc, "read the spool folder") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"spool path {folder} is not a folder",
                             "move that file aside, or set spool.dir elsewhere")
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            try:
                os.chmod(folder, DIR_MODE)
            except OSError as exc:
                raise lock.access_error(self.root, folder, exc, "chmod 0700 the spool folder") from None

    # -- single instance -------------------------------------------------------------------

    def locked(self, what: str = "uploader") -> AbstractContextManager[None]:
        """Hold the spool's exclusive lock; raise AlreadyRunning if another process has it."""
        return lock.hold(self.root, what)

    def is_locked(self) -> bool:
        """True if some process holds the lock (a running service); takes nothing itself."""
        return lock.is_held(self.root)

    # -- sequence numbers ------------------------------------------------------------------

    def _recover_next_seq(self) -> int:
        try:
            persisted = int(json.loads(self._state_path.read_bytes())["next_seq"])
        except FileNotFoundError:
            persisted = 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("spool_state_unreadable path=%s error=%s action=derive-from-files", self._state_path, exc)
            persisted = 1
        seen = [int(p.name[:12]) for d in (self.batches_dir, self.archive_dir, self.quarantine_dir, self.sent_dir)
                for p in d.iterdir() if p.name[:12].isdigit()]
        return max([persisted, *(s + 1 for s in seen)])

    def allocate_seqs(self, n: int) -> list[int]:
        """Reserve ``n`` sequence numbers; they only ever grow, across restarts too."""
        with self._seq_lock:
            first = self._next_seq
            self._next_seq += n
            atomic_write(self._state_path, json.dumps({"next_seq": self._next_seq}).encode(), sync_dir=False)
            return list(range(first, first + n))

    # -- batches ---------------------------------------------------------------------------

    def stage(self, batches: list[Batch], quarantined: list[QuarantineItem]) -> list[str]:
        """Write batches and quarantined bytes under pending names that uploads ignore (``commit``
        makes them visible); return the names. Durable on return.

        Every file is written first and all are fsynced after, so the filesystem commits them
        together rather than one fsync after another. No temporary name is needed: a pending
        file is never listed in a journal before it is whole and durable, and recovery
        discards any other.
        """
        files: list[tuple[str, bytes]] = []
        for b in batches:
            files.append((f"batches/{b.seq:012d}-{b.day.isoformat()}-{b.batch_id}.json", b.to_json()))
        for q in quarantined:
            files += [(f"quarantine/{q.name}.json", q.note()), (f"quarantine/{q.name}.bin", q.raw)]
        fds = []
        try:
            for name, data in files:
                fds.append(self._write_pending(self.root / (name + PENDING), data))
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        return [name for name, _ in files]

    def stage_batch(self, batch: Batch) -> str:
        """One batch, staged on its own (see ``stage``)."""
        [name] = self.stage([batch], [])
        return name

    @staticmethod
    def _write_pending(path: Path, data: bytes) -> int:
        """Write ``data`` as ``path`` (mode 0600) and return the open descriptor, not yet fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)  # a full disk must not keep half a file
            raise
        return fd

    def sync_names(self) -> None:
        """Make file names in the batch and quarantine folders durable (their contents are).

        Called for staged names before the journal commits, and for promoted names before the
        journal goes.
        """
        fsync_dir(self.batches_dir)
        fsync_dir(self.quarantine_dir)

    def commit(self, names: list[str]) -> None:
        """Make staged files visible; idempotent, so recovery may run it again.

        No fsync here: until ``sync_names`` the journal still lists these names, and
        recovery promotes them again after a crash.
        """
        for name in names:
            staged = self.root / (name + PENDING)
            if staged.exists():
                os.replace(staged, self.root / name)

    def discard_staged(self) -> int:
        """Remove pending files of a cut that never committed (its bytes are still in the file)."""
        staged = [p for d in (self.batches_dir, self.quarantine_dir)
                  for pattern in ("*" + PENDING, ".*" + TMP) for p in d.glob(pattern)]
        for p in staged:
            p.unlink()
        return len(staged)

    def pending_batches(self, day: date | None = None) -> list[SpooledBatch]:
        """Committed batches waiting for upload, oldest (lowest seq) first."""
        return list_batches(self.batches_dir, day)

    def remove(self, entries: list[SpooledBatch]) -> None:
        """Forget batches the store has acknowledged (when no archive is kept)."""
        for e in entries:
            e.path.unlink(missing_ok=True)
