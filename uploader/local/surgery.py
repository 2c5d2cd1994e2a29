"""The local file's bytes moved in place: the shift a cut makes, and the finish of one cut short.

Every move keeps the file's inode (the pipeline's writers hold it open) and copies forward a
chunk at a time, which is safe because bytes only ever move towards the front.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from uploader.errors import SpoolError
from uploader.local.journal import CHUNK, CutJournal, digest_range

__all__ = ["Recovered", "finish_rewrite", "shift_tail"]


class Recovered(Enum):
    """The state recovery found an interrupted cut's file in (for the log)."""

    FILE_REPLACED = "file-replaced"
    NOT_STARTED = "not-started"
    SHIFTED = "shifted"  # kept bytes in front, the old tail still behind them
    DONE = "done"
    MID_SHIFT = "mid-shift"  # rebuilt from journal.kept


def finish_rewrite(fd: int, j: CutJournal, kept_path: Path) -> Recovered:
    """Bring the file to ``kept + whatever was appended after the journal``; safe to repeat.

    Returns which state the file was found in, for the log.
    """
    size = os.fstat(fd).st_size
    if size >= j.size and digest_range(fd, 0, j.length) == j.digest:
        shift_tail(fd, 0, j.length, size)  # not started (or nothing visible yet): do it all
        return Recovered.NOT_STARTED
    tail_intact = size >= j.size and digest_range(fd, j.size - j.tail_len, j.size) == j.tail_digest
    if digest_range(fd, 0, j.kept_len) == j.kept_digest:
        if tail_intact:
            shift_tail(fd, j.kept_len, j.size, size)  # shifted, not yet truncated
            return Recovered.SHIFTED
        return Recovered.DONE
    # Cut short mid-shift: the front is a mix; the copy holds the kept bytes.
    if not tail_intact:
        raise SpoolError(
            f"the local file changed during an interrupted cut (now {size} bytes, expected >= {j.size})",
            "something else rewrote it; inspect the file and the spool journal before restarting",
        )
    with open(kept_path, "rb") as f:
        off = 0
        while chunk := f.read(CHUNK):
            os.pwrite(fd, chunk, off)
            off += len(chunk)
    shift_tail(fd, j.kept_len, j.size, size)
    return Recovered.MID_SHIFT


def shift_tail(fd: int, dest: int, src: int, size: int, sync: bool = True) -> None:
    """Move bytes [src:size] to ``dest`` and truncate there; forward copy is safe as dest < src."""
    off = 0
    while src + off < size:
        chunk = os.pread(fd, min(CHUNK, size - src - off), src + off)
        os.pwrite(fd, chunk, dest + off)
        off += len(chunk)
    os.ftruncate(fd, dest + off)
    if sync:
        os.fsync(fd)
