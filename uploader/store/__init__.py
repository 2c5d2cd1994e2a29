"""The object-store protocol every backend implements, and the factory that picks one from config.

Keys are "/"-separated strings; ETags are returned quoted, as S3 does (``'"<hex>"'``), and accepted
quoted or not. User metadata is a small dict of ASCII strings (x-amz-meta-* on S3), keys lower case.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from uploader.config import StorageConfig
from uploader.store.capabilities import FULL_CAPABILITIES, MIN_PART_SIZE, PART_SIZE, Capabilities

__all__ = [
    "FULL_CAPABILITIES",
    "LEFTOVER_AGE_S",
    "MIN_PART_SIZE",
    "PART_SIZE",
    "Capabilities",
    "ObjectInfo",
    "Store",
    "normalize_etag",
    "open_store",
    "probe_prefix",
]

# Older than this, a probe object or a multipart upload under our prefix is no one's work in
# flight: there is one writer per prefix, and no append or probe takes an hour.
LEFTOVER_AGE_S = 3600.0


def normalize_etag(etag: str) -> str:
    """An ETag in S3's quoted form, whichever form it came in."""
    return f'"{etag.strip().strip(chr(34))}"'


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about one object."""

    key: str
    size: int
    etag: str
    metadata: dict[str, str] = field(default_factory=dict)
    # The encryption at rest the server says the object has ("SSE-C", "AES256", "aws:kms"); "" for
    # none said (and always for the directory backend).
    encryption: str = ""


@runtime_checkable
class Store(Protocol):
    """A bucket of objects. Every method raises StoreUnavailable (transient: retry later) or
    StoreRejected (permanent: credentials, bucket, permissions) when the store itself fails."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and user metadata of ``key``; None if it does not exist."""
        ...

    def get(
        self, key: str, suffix: int | None = None, *, span: tuple[int, int] | None = None
    ) -> tuple[bytes, ObjectInfo]:
        """The object's bytes and its info: only the last ``suffix`` bytes if given, or only bytes
        ``span`` = (start, end) if given (end excluded and cut at the object's end; start within it).

        ``ObjectInfo.size`` is always the whole object's size. Raises ObjectNotFound if missing.
        """
        ...

    def stream(self, key: str) -> AbstractContextManager[tuple[BinaryIO, ObjectInfo]]:
        """The object as a readable stream (memory stays bounded whatever its size), and its info.

        Raises ObjectNotFound if missing; a failure while reading raises StoreUnavailable.
        """
        ...

    def put(
        self,
        key: str,
        body: bytes,
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        """Write the whole object and return its new ETag.

        ``if_match``: write only if the current ETag equals it; ``if_none_match``: write only if
        the key does not exist. Raises PreconditionFailed when the condition does not hold (a
        missing key fails ``if_match``).
        """
        ...

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
        """Write the object as ``keep`` bytes of ``source`` (default: ``key`` itself, as it is now)
        from byte ``start`` on (default: its first bytes), followed by ``pieces``.

        Returns the new ETag as the write's own answer gave it, or None where the server does not
        say (Ceph RGW completes multipart uploads with an empty ETag).

        The kept bytes stay on the server (never sent by the client; S3 copies them in ranges
        of at most 512 MiB, all in the one write); ``keep`` is 0 or at least
        ``capabilities().min_copy`` (S3 copies no part below 5 MiB: ValueError), and ``start +
        keep`` within the source's size. ``source`` is another key of the same bucket,
        read as it is when copied: the conditions are on ``key`` only. ``pieces`` are streamed, so
        memory stays bounded whatever their total. Conditions as for ``put``; PreconditionFailed
        when one does not hold, where the server lets that be checked (else a HEAD just before
        the write checks it, under the single-writer lock); ObjectNotFound if ``keep`` and the
        source is missing. StoreRejected, nothing written, for an object past S3's largest (5 TiB).
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``, sorted; [] if none."""
        ...

    def versioning(self) -> str:
        """The bucket's versioning: "enabled", "suspended", "off", or "unknown (<why>)"."""
        ...

    def capabilities(self, refresh: bool = False) -> Capabilities:
        """What the server honours; never raises for a feature the server lacks.

        Found by a probe on first use and remembered (in the spool, when the store has a memo)
        for a day; ``refresh`` probes now. Raises only what would stop any upload.
        """
        ...

    def remove_leftovers(
        self, older_than_s: float = 0.0, uploads: bool = True, *, writer_started: bool = False
    ) -> builtins.list[str]:
        """Remove what interrupted work left under the prefix: objects of killed probes and
        checks at least ``older_than_s`` old and, with ``uploads``, unfinished multipart uploads
        on S3 (a killed append's parts take space until aborted; only the prefix's one writer
        may call this with ``uploads``). ``writer_started``: the caller has just taken the
        single-writer lock, so an unfinished upload of anything but a probe is a dead writer's
        whatever its age. Return what was removed."""
        ...

    def describe(self) -> str:
        """Where the objects live, for logs and reports (never includes credentials)."""
        ...

    def preflight(self) -> None:
        """Refuse at start what no retry can fix (StoreRejected): an S3 endpoint whose TLS
        certificate is not trusted. A store that is only unreachable passes: the spool keeps
        the batches until it is back. No request is made."""
        ...


def probe_prefix(prefix: str) -> str:
    """Where probes and `uploader check` put their throwaway objects, under the documents' prefix."""
    return f"{prefix.strip('/')}/.uploader-check"


def open_store(storage: StorageConfig, state_dir: Path | None = None) -> Store:
    """The configured backend, built from plain values; S3 connects lazily on first use.

    ``state_dir`` (the spool folder) is where S3 capability findings are remembered between runs.
    """
    if storage.backend == "directory":
        from uploader.store.directory import DirectoryStore

        return DirectoryStore(storage.directory.path, prefix=storage.prefix)
    from uploader.store.memo import CapabilityMemo, memo_path
    from uploader.store.s3 import S3Store

    s3 = storage.s3
    request_checksum, response_checksum = s3.checksum_mode
    return S3Store(
        bucket=s3.bucket,
        endpoint_url=s3.endpoint_url,
        region=s3.region,
        addressing_style=s3.addressing_style,
        request_checksum_calculation=request_checksum,
        response_checksum_validation=response_checksum,
        connect_timeout_s=s3.connect_timeout_s,
        read_timeout_s=s3.read_timeout_s,
        max_attempts=s3.max_attempts,
        prefix=storage.prefix,
        memo=CapabilityMemo(memo_path(state_dir)) if state_dir is not None else None,
        spill_dir=state_dir,
        ca_bundle=str(s3.ca_bundle) if s3.ca_bundle is not None else None,
        encryption=s3.encryption,
        profile=s3.profile,
    )
