"""ListedIndex: the batch ids each day's document lists, so an append knows which of its batches
the document holds already without reading the document.

A document's tail carries only the digest of its entries' ids (§5.4 ``batch_ids_sha256``), so an
append sends the same few hundred bytes of metadata however many uploads the day has had. The
ids themselves are kept here, in memory for the days in use and in ``<spool>/ids/`` (one id per
line, added after each write, never fsynced), and used only when their digest is the one the
tail holds: a lost, stale or foreign copy costs one read of the whole document, never a batch
stored twice or left out. After a write whose answer was lost, the tail's digest is matched by
adding to what was known some of the day's batches still in the spool (a first run of them, or
any subsequence of the first few), so a retry reads nothing either.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from uploader import daily
from uploader.daily import ListedIds
from uploader.daily.reading import DocumentError, read_document
from uploader.errors import StoreRejected
from uploader.files import DIR_MODE, atomic_write
from uploader.store import Store

__all__ = ["KEEP_S", "ListedIndex"]

log = logging.getLogger(__name__)

KEEP_S = 3 * 86400.0  # a file untouched this long is removed: its day takes no more uploads
_MEMORY_DAYS = 4  # days kept in memory: today, yesterday closing, a late replay or two
_MAX_TRIED = 12  # batches tried in every combination after a lost answer (4,095 digests); then a read


class ListedIndex:
    """The ids each day's document lists, as last written or read; ``folder`` None: memory only.
    ``spooled(day)``: the ids of that day's batches still in the spool, oldest first; a write
    whose answer was lost stored some of them."""

    def __init__(self, folder: Path | None = None, spooled: Callable[[date], Sequence[str]] = lambda day: ()) -> None:
        self._folder = folder
        self._spooled = spooled
        self._known: dict[str, ListedIds] = {}
        self._saved: dict[str, tuple[int, str]] = {}  # each key's file: how many ids, their digest
        self.bytes_read = 0  # by whole reads of documents, since this index was made

    def listed(
        self, store: Store, key: str, day: date, meta: dict[str, Any], batch_ids: Sequence[str]
    ) -> ListedIds:
        """The ids the document of ``day`` at ``key`` lists (a copy the caller may extend), given
        its tail's metadata ``meta`` and the ids of the batches about to be appended, in order."""
        known = self._known.get(key)
        if known is None:
            known = self._load(key) or ListedIds()  # none kept: maybe our first write's answer was lost
        if known.matches(meta):
            return known.copy()
        spooled = dict.fromkeys([*self._spooled(day), *batch_ids])
        landed = _landed(known, meta, [b for b in spooled if b not in known])
        if landed is not None:
            log.info("publish.listed_recovered key=%s ids=%d", key, len(landed))
            found = known.copy()
            for batch_id in landed:
                found.add(batch_id)
            return found
        return self._read(store, key, day, meta)

    def remember(self, key: str, ids: ListedIds) -> None:
        """Note the ids the document at ``key`` lists now (after a write, or a read)."""
        self._known.pop(key, None)
        self._known[key] = ids
        while len(self._known) > _MEMORY_DAYS:
            self._known.pop(next(iter(self._known)))
        if self._folder is not None:
            self._save(key, ids)

    def prune(self, now: float, keep_s: float = KEEP_S) -> int:
        """Remove the files of days untouched for ``keep_s`` seconds; returns how many."""
        removed = 0
        if self._folder is None or not self._folder.is_dir():
            return 0
        for path in self._folder.glob("*.ids"):
            try:
                if now - path.stat().st_mtime > keep_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def _read(self, store: Store, key: str, day: date, meta: dict[str, Any]) -> ListedIds:
        """Every id the document of ``day`` at ``key`` lists in its entries, from one streamed read
        of it."""
        started = time.monotonic()
        try:
            with store.stream(key) as (stream, info):
                ids = daily.listed_in_entries(entry for kind, entry in read_document(stream) if kind == "upload")
        except DocumentError as exc:
            raise StoreRejected(f"{key} is damaged, so which batches it holds is unknown: {exc}",
                                f"run: uploader repair {day}") from exc
        if not ids.matches(meta):
            # The entries are the truth; a digest that disagrees was edited by hand (verify says so).
            log.warning("publish.listed_mismatch key=%s ids=%d; the tail's batch_ids_sha256 does not match "
                        "its entries (run uploader verify)", key, len(ids))
        self.bytes_read += info.size
        log.info("publish.listed_read key=%s ids=%d bytes=%d ms=%d", key, len(ids), info.size,
                 int((time.monotonic() - started) * 1000))
        return ids

    def _path(self, key: str) -> Path:
        assert self._folder is not None
        return self._folder / (hashlib.sha256(key.encode("utf-8")).hexdigest()[:24] + ".ids")

    def _load(self, key: str) -> ListedIds | None:
        if self._folder is None:
            return None
        try:
            lines = self._path(key).read_text("utf-8").splitlines()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        except OSError as exc:
            log.warning("publish.listed_unreadable key=%s error=%s", key, exc)
            return None
        if not lines or lines[0] != key:
            return None
        ids = ListedIds(lines[1:])
        self._saved[key] = (len(ids), ids.digest)
        return ids

    def _save(self, key: str, ids: ListedIds) -> None:
        path = self._path(key)
        every = list(ids)
        count, digest = self._saved.get(key, (-1, ""))
        try:
            if 0 <= count <= len(every) and daily.ids_digest(every[:count]) == digest and path.exists():
                if count < len(every):  # the file holds the first ids: the new ones are added
                    with path.open("a", encoding="utf-8") as out:
                        out.write("".join(f"{batch_id}\n" for batch_id in every[count:]))
            else:
                assert self._folder is not None
                self._folder.mkdir(mode=DIR_MODE, exist_ok=True)
                atomic_write(path, "".join(f"{line}\n" for line in [key, *every]).encode("utf-8"), durable=False)
            self._saved[key] = (len(every), ids.digest)
        except OSError as exc:
            # Only a cache: without it the next start reads the day once.
            log.warning("publish.listed_unsaved key=%s error=%s", key, exc)
            self._saved.pop(key, None)


def _landed(known: ListedIds, meta: dict[str, Any], spooled: list[str]) -> Sequence[str] | None:
    """What writes whose answers were lost stored, if they held some of ``spooled`` (in order):
    the ids that, added to ``known``, give the tail's digest. A write holds the oldest batches
    due, so a first run of them is tried first (a backlog's group commit), then every
    subsequence of the first few (some waited out a backoff while later ones were written)."""
    want = meta.get("batch_ids_sha256")
    run = known.run_giving(spooled, want)
    if run is not None:
        return spooled[:run]
    few = spooled[:_MAX_TRIED]
    for size in range(len(few) - 1, 0, -1):
        for chosen in itertools.combinations(few, size):
            if known.digest_with(chosen) == want:
                return chosen
    return None
