"""The object-store protocol every backend implements, and the factory that picks one from config.

Keys are "/"-separated strings; ETags are returned quoted, as S3 does (``'"<hex>"'``), and accepted
quoted or not. User metadata is a small dict of ASCII strings (x-amz-meta-* on S3), keys lower case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..config import StorageConfig

__all__ = [
    "FULL_CAPABILITIES",
    "MIN_PART_SIZE",
    "Capabilities",
    "ObjectInfo",
    "Store",
    "normalize_etag",
    "open_store",
]

# S3 refuses a multipart part below 5 MiB unless it is the last one.
MIN_PART_SIZE = 5 * 1024 * 1024


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


@dataclass(frozen=True)
class Capabilities:
    """Which parts of the S3 API the server honours, each probed for real (both outcomes).

    ``conditional_put``: PUT with If-None-Match: * is refused on an existing key and accepted on a
    new one, and If-Match with a stale ETag is refused and with the current one accepted.
    ``etag_forms``: which ETag spellings If-Match accepts ("quoted", "unquoted").
    ``range_copy``: UploadPartCopy with CopySourceRange copies exactly that range.
    ``copy_source_if_match``: UploadPartCopy refuses a stale CopySourceIfMatch.
    ``complete_if_match``: CompleteMultipartUpload refuses a stale If-Match.
    ``suffix_range``: GET with ``Range: bytes=-N`` returns only the last N bytes.
    ``complete_etag``: CompleteMultipartUpload answers with the new object's ETag.
    """

    conditional_put: bool
    etag_forms: tuple[str, ...]
    range_copy: bool
    copy_source_if_match: bool
    complete_if_match: bool
    suffix_range: bool
    complete_etag: bool

    @property
    def server_side_append(self) -> bool:
        """Whether a large append can copy the body server-side and send only the tail."""
        return self.range_copy and self.suffix_range

    @property
    def conditional_append(self) -> bool:
        """Whether a server-side append is refused when the object changed since it was read."""
        return self.copy_source_if_match or self.complete_if_match

    def rows(self) -> list[tuple[str, str]]:
        """(capability, finding) pairs for a report."""

        def yes(flag: bool) -> str:
            return "yes" if flag else "no"

        return [
            ("conditional PUT (If-None-Match / If-Match)", yes(self.conditional_put)),
            ("If-Match ETag forms accepted", ", ".join(self.etag_forms) or "none"),
            ("UploadPartCopy with CopySourceRange", yes(self.range_copy)),
            ("UploadPartCopy with CopySourceIfMatch", yes(self.copy_source_if_match)),
            ("CompleteMultipartUpload with If-Match", yes(self.complete_if_match)),
            ("suffix Range GET (bytes=-N)", yes(self.suffix_range)),
            ("ETag in CompleteMultipartUpload answer", yes(self.complete_etag)),
        ]


FULL_CAPABILITIES = Capabilities(
    conditional_put=True,
    etag_forms=("quoted", "unquoted"),
    range_copy=True,
    copy_source_if_match=True,
    complete_if_match=True,
    suffix_range=True,
    complete_etag=True,
)


@runtime_checkable
class Store(Protocol):
    """A bucket of objects. Every method raises StoreUnavailable (transient: retry later) or
    StoreRejected (permanent: credentials, bucket, permissions) when the store itself fails."""

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and user metadata of ``key``; None if it does not exist."""
        ...

    def get(self, key: str, suffix: int | None = None) -> tuple[bytes, ObjectInfo]:
        """The object's bytes (only the last ``suffix`` bytes if given) and its info.

        ``ObjectInfo.size`` is always the whole object's size. Raises ObjectNotFound if missing.
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

    def replace_tail(
        self, key: str, keep: int, data: bytes, metadata: dict[str, str], *, if_match: str
    ) -> str:
        """Replace the object with its first ``keep`` bytes followed by ``data``; return the ETag.

        The kept bytes stay on the server (never sent by the client); S3 needs ``keep`` of at
        least MIN_PART_SIZE (a smaller first part is refused: ValueError). Raises PreconditionFailed
        if the object's ETag is no longer ``if_match`` (or it is gone), where the server lets
        that be checked; ObjectNotFound if the key is missing.
        """
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix``, sorted; [] if none."""
        ...

    def capabilities(self) -> Capabilities:
        """What the server honours, probed on first call and remembered for this instance."""
        ...

    def describe(self) -> str:
        """Where the objects live, for logs and reports (never includes credentials)."""
        ...


def open_store(storage: StorageConfig) -> Store:
    """The configured backend, built from plain values; S3 connects lazily on first use."""
    if storage.backend == "directory":
        from .directory import DirectoryStore

        return DirectoryStore(storage.directory.path)
    from .s3 import S3Store

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
        probe_prefix=f"{storage.prefix}/.uploader-check",
    )
