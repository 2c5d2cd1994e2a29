"""The quarantine queue: spans of the local file that were not well-formed fetches.

The cut stages each span as ``quarantine/<name>.bin`` (the bytes, verbatim) and ``<name>.json``
(why, where, when). The uploader sends them to the bucket and moves them to
``quarantine/sent/``, where they stay as long as the archive keeps batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from uploader.files import fsync_dir
from uploader.local.batch import QuarantineItem
from uploader.local.spool import Spool

__all__ = ["Quarantine", "QuarantineSummary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarantineSummary:
    """Quarantined spans kept in the spool: not yet in the bucket, and sent."""

    not_sent_spans: int = 0
    not_sent_bytes: int = 0
    sent_spans: int = 0
    sent_bytes: int = 0


class Quarantine:
    """The spool's ``quarantine/`` folder and its ``sent/``."""

    def __init__(self, spool: Spool) -> None:
        self.folder = spool.quarantine_dir
        self.sent_folder = spool.sent_dir

    def pending(self, skip: Collection[str] = ()) -> list[tuple[QuarantineItem, Path]]:
        """Spans not yet in the bucket, oldest first, with the path to pass to ``mark_sent``;
        ``skip``: names of those already sent to this destination."""
        out = []
        for p in sorted(self.folder.glob("*.bin")):
            if p.name in skip:
                continue
            try:
                item = QuarantineItem.from_files(p.stem, p.read_bytes(), p.with_suffix(".json").read_bytes())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # The bytes matter, their note less: ship them without it rather than stall.
                log.warning("quarantine_note_unreadable name=%s error=%s (sent without it)", p.stem, exc)
                item = QuarantineItem(name=p.stem, raw=p.read_bytes(), reason=f"note unreadable: {exc}",
                                      offset=-1, detected_at="", day=None)
            out.append((item, p))
        return out

    def mark_sent(self, path: Path) -> None:
        """Keep the local copy, out of the upload queue."""
        for p in (path, path.with_suffix(".json")):
            if p.exists() or p == path:  # the note may be gone (see pending)
                os.replace(p, self.sent_folder / p.name)
        fsync_dir(self.folder)

    def prune_sent(self, now: float, max_age_s: float) -> None:
        """Drop sent spans older than ``max_age_s`` (the archive's age rule)."""
        for sent in self.sent_folder.iterdir():
            try:
                if now - sent.stat().st_mtime > max_age_s:
                    sent.unlink()
            except FileNotFoundError:
                continue

    def summary(self) -> QuarantineSummary:
        """Spans and bytes quarantined, not yet sent and sent, for `uploader status`."""
        not_sent = _sizes(self.folder.glob("*.bin"))
        sent = _sizes(self.sent_folder.glob("*.bin"))
        return QuarantineSummary(len(not_sent), sum(not_sent), len(sent), sum(sent))


def _sizes(paths: Iterator[Path]) -> list[int]:
    """Sizes of the files that still exist (a concurrent upload or prune may move one away)."""
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:
            continue
    return out
