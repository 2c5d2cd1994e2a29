"""Private, crash-safe file writes: the modes, the temporary-name-fsync-rename dance, folder fsyncs.

One home for what the spool, the status file, the capability findings and the directory backend
all need, so that each writes files the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DIR_MODE", "FILE_MODE", "TMP", "atomic_write", "fsync_dir", "write_all"]

DIR_MODE = 0o700
FILE_MODE = 0o600
TMP = ".tmp"  # atomic_write's temporary name; left behind only by a crash mid-write


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: os.write may write less than asked (a signal, a nearly full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
    """Make the names in folder ``path`` durable (its files' contents are fsynced apart)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, mode: int = FILE_MODE, sync_dir: bool = True, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` via a temp name, fsync, rename; then fsync the folder.

    ``durable=False`` skips both fsyncs: still never a torn file, but it may be lost to a
    power cut (fine for advisory state).
    """
    tmp = path.with_name(f".{path.name}{TMP}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # A full disk must not also fill up with half-written temp files, one per attempt.
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir and durable:
        fsync_dir(path.parent)
