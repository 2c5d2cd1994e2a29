"""The embedded default backend: objects as files under a folder, with S3's ETags and conditions.

Layout::

    <root>/<key>                      the object's bytes, exactly
    <root>/.uploader/meta/<key>.json  sidecar: etag, size, mtime_ns, user metadata
    <root>/.uploader/tmp/             temporary files, renamed into place
    <root>/.uploader/lock             flock'd around every check-and-write

Writes go to a temporary file that is fsynced, renamed over the object and the folder fsynced,
so a reader sees the old object or the new one, never a mix. The sidecar records the size and
mtime of the bytes it describes; if a crash left it describing older bytes, the ETag is
recomputed from the file rather than trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from uploader.config import DEFAULT_PREFIX
from uploader.errors import ObjectNotFound, PreconditionFailed, StoreRejected, StoreUnavailable
from uploader.files import fsync_dir
from uploader.store import FULL_CAPABILITIES, ObjectInfo, normalize_etag, probe_prefix
from uploader.store.capabilities import Capabilities

__all__ = ["DirectoryStore"]

log = logging.getLogger(__name__)

_INTERNAL = ".uploader"
_CHUNK = 1024 * 1024
# Everything the S3 path uses, and a copy of any size: the kept bytes are copied locally, so there
# is no smallest part (and a gzip day needs no padding, DESIGN §5.10).
_CAPABILITIES = replace(FULL_CAPABILITIES, min_copy=0)


class DirectoryStore:
    """A Store whose bucket is a local folder; honours every capability the S3 path uses, and
    copies kept bytes of any size."""

    def __init__(self, root: Path | str, prefix: str = DEFAULT_PREFIX) -> None:
        self.root = Path(root)
        self.probe_prefix = probe_prefix(prefix)
        self._meta = self.root / _INTERNAL / "meta"
        self._tmp = self.root / _INTERNAL / "tmp"
        self._thread_lock = threading.Lock()

    def describe(self) -> str:
        return f"directory {self.root}"

    def preflight(self) -> None:
        pass  # a folder has no certificate; one that cannot be written fails the first write plainly

    def capabilities(self, refresh: bool = False) -> Capabilities:
        return _CAPABILITIES

    def remove_leftovers(
        self, older_than_s: float = 0.0, uploads: bool = True, *, writer_started: bool = False
    ) -> list[str]:
        # Only `uploader check` writes here (a killed check can leave its round-trip object).
        cutoff = time.time() - older_than_s
        removed = []
        for key in self.list(self.probe_prefix + "/"):
            info = self._path(key).stat()
            if info.st_mtime <= cutoff:
                self.delete(key)
                removed.append(key)
        return removed

    # -- reading -------------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        with self._locked():
            return self._info(key)

    def get(
        self, key: str, suffix: int | None = None, *, span: tuple[int, int] | None = None
    ) -> tuple[bytes, ObjectInfo]:
        if span is not None and (suffix is not None or span[1] <= span[0]):
            raise ValueError(f"get: a suffix or a span of at least one byte, not {suffix=} {span=}")
        with self._locked():
            info = self._info(key)
            if info is None:
                raise ObjectNotFound(f"no object {key} in {self.root}")
            with self._translate(key), open(self._path(key), "rb") as f:
                if span is not None:
                    f.seek(span[0])
                    return f.read(span[1] - span[0]), info
                if suffix is not None and suffix < info.size:
                    f.seek(info.size - suffix)
                return f.read(), info

    @contextmanager
    def stream(self, key: str) -> Iterator[tuple[BinaryIO, ObjectInfo]]:
        with self._locked():
            info = self._info(key)
            if info is None:
                raise ObjectNotFound(f"no object {key} in {self.root}")
            # Opened under the lock: a later replace swaps the name, this handle keeps the old bytes.
            with self._translate(key):
                f = open(self._path(key), "rb")  # noqa: SIM115 - closed below, after the caller read
        with f:
            yield f, info

    def versioning(self) -> str:
        return "not applicable (a local directory)"

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._translate(prefix):
            if not self.root.is_dir():
                return []
            for dirpath, dirnames, filenames in os.walk(self.root):
                if Path(dirpath) == self.root and _INTERNAL in dirnames:
                    dirnames.remove(_INTERNAL)
                for name in filenames:
                    key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        body: bytes,
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        with self._locked():
            self._check(key, if_match, if_none_match)

            def write(f: BinaryIO) -> str:
                f.write(body)
                return hashlib.md5(body, usedforsecurity=False).hexdigest()

            return self._commit(key, write, metadata)

    def compose(
        self,
        key: str,
        keep: int,
        pieces: Iterable[bytes],
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        source: str | None = None,
        start: int = 0,
    ) -> str | None:
        origin = source or key  # where the kept bytes come from
        with self._locked():
            if keep:
                info = self._info(origin)
                if info is None:
                    raise ObjectNotFound(f"no object {origin} in {self.root}")
                if start + keep > info.size:
                    raise ValueError(f"bytes {start}..{start + keep} are beyond the size of {origin}, {info.size}")
            self._check(key, if_match, if_none_match)

            def write(f: BinaryIO) -> str:
                # One pass: copy the kept bytes and stream the pieces, hashing as we go.
                digest = hashlib.md5(usedforsecurity=False)
                if keep:
                    with open(self._path(origin), "rb") as src:
                        src.seek(start)
                        left = keep
                        while left:
                            chunk = src.read(min(_CHUNK, left))
                            if not chunk:
                                raise StoreUnavailable(f"{origin} shrank while being copied")
                            digest.update(chunk)
                            f.write(chunk)
                            left -= len(chunk)
                for piece in pieces:
                    digest.update(piece)
                    f.write(piece)
                return digest.hexdigest()

            return self._commit(key, write, metadata)

    def delete(self, key: str) -> None:
        with self._locked(), self._translate(key):
            for path, top in ((self._path(key), self.root), (self._sidecar(key), self._meta)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                _prune_empty(path.parent, top)
            log.debug("store.deleted key=%s", key)

    # -- internals -----------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == _INTERNAL:
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def _sidecar(self, key: str) -> Path:
        return self._meta / f"{key}.json"

    def _info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        with self._translate(key):
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            side: dict[str, Any] = {}
            try:
                side = json.loads(self._sidecar(key).read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                pass
            etag = side.get("etag")
            if etag is None or side.get("size") != st.st_size or side.get("mtime_ns") != st.st_mtime_ns:
                log.warning("store.sidecar_stale key=%s; recomputing etag", key)
                etag = normalize_etag(_md5_file(path))
            return ObjectInfo(key=key, size=st.st_size, etag=etag, metadata=dict(side.get("metadata", {})))

    def _check(self, key: str, if_match: str | None, if_none_match: bool) -> None:
        if not (if_match or if_none_match):
            return
        info = self._info(key)
        if if_none_match and info is not None:
            raise PreconditionFailed(f"{key} already exists (If-None-Match)")
        if if_match is not None and (info is None or info.etag != normalize_etag(if_match)):
            raise PreconditionFailed(f"{key} changed since it was read (If-Match)")

    def _commit(self, key: str, write: Any, metadata: dict[str, str]) -> str:
        """Write a temp file with ``write(f) -> md5 hex``, then atomically move it and its sidecar."""
        path = self._path(key)
        with self._translate(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            side_path = self._sidecar(key)
            side_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp / f"{os.getpid()}-{threading.get_ident()}.data"
            with open(tmp, "wb") as f:
                md5hex = write(f)
                f.flush()
                os.fsync(f.fileno())
            st = tmp.stat()
            etag = normalize_etag(md5hex)
            side = {"etag": etag, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "metadata": metadata}
            side_tmp = tmp.with_suffix(".json")
            with open(side_tmp, "w", encoding="utf-8") as f:
                json.dump(side, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            os.replace(side_tmp, side_path)
            fsync_dir(path.parent)
            fsync_dir(side_path.parent)
        log.debug("store.written key=%s bytes=%d", key, st.st_size)
        return etag

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The thread lock orders threads of this process; flock orders other processes.
        with self._thread_lock, self._translate("lock"):
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / _INTERNAL / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    @contextmanager
    def _translate(self, key: str) -> Iterator[None]:
        try:
            yield
        except PermissionError as exc:
            raise StoreRejected(
                f"permission denied writing {key} under {self.root}",
                "make storage.directory.path writable by the uploader's user",
            ) from exc
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | IsADirectoryError | NotADirectoryError):
                raise
            raise StoreUnavailable(f"cannot access {key} under {self.root}: {exc.strerror}", "check the disk") from exc


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _prune_empty(folder: Path, top: Path) -> None:
    # Keys are names, not folders: drop folders a delete left empty, as a bucket would show it.
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
