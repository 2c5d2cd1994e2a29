"""The cut journal: the record a cut commits to before it touches the local file, and its files.

``journal.json`` says what the cut took (length and digest of the front), what stays (a copy in
``journal.kept``, its digest) and how to tell the rewrite's progress (a digest of the file's
last bytes before the cut, which the shift never overwrites; the inode). Written durably before
the file's lock is taken, so nothing durable is destroyed without a copy; removed when the cut
is done. ``surgery.finish_rewrite`` carries an interrupted cut through from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from uploader.errors import SpoolError
from uploader.files import FILE_MODE, atomic_write

__all__ = ["CHUNK", "SAMPLE", "CutJournal", "Journal", "digest_range"]

CHUNK = 1 << 20  # bytes read or copied at a time
SAMPLE = 4096  # bytes compared to tell the file is still the one planned on, and its progress


@dataclass(frozen=True)
class CutJournal:
    """A cut committed to: the rewrite of the local file may not have happened, or finished.

    ``length``/``digest``: the cut bytes at the front of the file. ``size``: the file's size when
    journaled; ``kept_*``: its bytes [length:size], which move to the front. ``tail_digest``
    covers the last ``tail_len`` bytes before ``size``: intact, they tell a shift not yet
    truncated from a finished one. ``inode``: the file cut; another file at the path is never
    written into. ``pending``: the staged names the cut promotes.
    """

    length: int
    digest: str
    size: int
    kept_len: int
    kept_digest: str
    tail_len: int
    tail_digest: str
    inode: int
    pending: list[str]

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CutJournal:
        d = json.loads(data)
        if "rest_digest" in d:
            # 0.1.0's journal: its digest of [kept_len:size] is the same check over the whole
            # region; the inode was not recorded (-1: the file at the path).
            d["tail_len"], d["tail_digest"], d["inode"] = d["size"] - d["kept_len"], d.pop("rest_digest"), -1
        return cls(**d)


def digest_range(fd: int, start: int, end: int) -> str:
    """sha256 of the file's bytes [start:end], read a chunk at a time."""
    h = hashlib.sha256()
    for off in range(start, end, CHUNK):
        h.update(os.pread(fd, min(CHUNK, end - off), off))
    return h.hexdigest()


class Journal:
    """The journal's files in the spool folder."""

    def __init__(self, root: Path) -> None:
        self.path = root / "journal.json"
        self.kept_path = root / "journal.kept"

    def record(self, fd: int, length: int, size: int, digest: str, pending: list[str]) -> CutJournal:
        """The journal of cutting ``length`` bytes (``digest``) from the open file of ``size``
        bytes; copies the bytes that stay to ``journal.kept`` (durable). Not yet written."""
        kept_len = size - length
        kept = hashlib.sha256()
        if kept_len:
            # The copy lets recovery rebuild the kept bytes if the shift itself is cut short.
            out = os.open(self.kept_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                for off in range(length, size, CHUNK):
                    chunk = os.pread(fd, min(CHUNK, size - off), off)
                    kept.update(chunk)
                    os.write(out, chunk)
                os.fsync(out)
            finally:
                os.close(out)
        tail_len = min(SAMPLE, max(1, length // 4))
        return CutJournal(length=length, digest=digest, size=size, kept_len=kept_len,
                          kept_digest=kept.hexdigest(), tail_len=tail_len,
                          tail_digest=digest_range(fd, size - tail_len, size),
                          inode=os.fstat(fd).st_ino, pending=pending)

    def read(self) -> CutJournal | None:
        """The journal of an unfinished cut, or None."""
        try:
            return CutJournal.from_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise SpoolError(f"cut journal {self.path} is unreadable: {exc}",
                             "inspect it; do not delete it unless the local file is known to be intact") from exc

    def write(self, journal: CutJournal) -> None:
        """Commit the cut: durable on return."""
        atomic_write(self.path, journal.to_json())

    def clear(self) -> None:
        """The cut is done."""
        self.path.unlink(missing_ok=True)
        self.kept_path.unlink(missing_ok=True)
        # No fsync: a journal that comes back after a power cut finds its cut already done
        # (kept bytes at the front) and is simply cleared again.
