"""The uploader's exception tree; every message says what failed and what to do.

    UploaderError
    ├── ConfigError          bad or unsafe configuration (exit 2)
    ├── UsageError           a command-line value that cannot be used, e.g. --output (exit 2)
    ├── AlreadyRunning       another process holds the spool lock
    ├── SpoolError           the local spool cannot be written or read
    │   └── UnreadableBatch  one spooled batch file is damaged: hold it back, go on with the rest
    └── StoreError           the object store failed
        ├── StoreUnavailable transient: retry later, keep the batch
        │   └── CapabilityLost  the server refused a feature it had honoured: use the fallback
        ├── StoreRejected    permanent: fix credentials, bucket or permissions
        ├── ObjectNotFound   the key does not exist (not a failure by itself)
        └── PreconditionFailed  a conditional write lost a race: re-read and retry
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ExitCode",
    "UploaderError",
    "ConfigError",
    "UsageError",
    "AlreadyRunning",
    "SpoolError",
    "StoreError",
    "StoreUnavailable",
    "CapabilityLost",
    "StoreRejected",
    "EncryptionRefused",
    "ObjectNotFound",
    "PreconditionFailed",
]


class ExitCode(IntEnum):
    """What a command's exit status means (docs/DESIGN.md §9)."""

    OK = 0  # done, nothing wrong
    PROBLEMS = 1  # problems found or work left undone; any UploaderError but the two below
    USAGE = 2  # bad usage or configuration: ConfigError, UsageError


class UploaderError(Exception):
    """Base of every error the uploader raises on purpose.

    ``hint`` is the "what to do" part, printed by the CLI as "Try: ...".
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}. Try: {self.hint}" if self.hint else self.message


class ConfigError(UploaderError):
    """Raised when the config file is missing, unreadable, unsafe, or holds a bad value."""

    def __init__(self, field: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"config {field}: {reason}", hint)
        self.field = field
        self.reason = reason


class UsageError(UploaderError):
    """Raised when a command-line value passed parsing but cannot be used (an --output that
    cannot be written); like bad usage, the CLI exits 2."""


class AlreadyRunning(UploaderError):
    """Raised when another uploader process already holds the spool folder's lock."""


class SpoolError(UploaderError):
    """Raised when the local spool (batches, journal, quarantine) cannot be written or read."""


class UnreadableBatch(SpoolError):
    """Raised when one spooled batch file cannot be read or fails its digest; the others are fine."""

    def __init__(self, message: str, hint: str | None, batch_id: str) -> None:
        super().__init__(message, hint)
        self.batch_id = batch_id


class StoreError(UploaderError):
    """Base of object-store failures; raised as one of the subclasses below."""


class StoreUnavailable(StoreError):
    """Raised for transient failures (connection, timeout, 500, 503 SlowDown): retry later."""


class CapabilityLost(StoreUnavailable):
    """Raised when the server refused an optional feature (a conditional header, a range copy)
    that its probe had found honoured; the store has stopped using it, so a retry takes the
    fallback path at once."""


class StoreRejected(StoreError):
    """Raised for permanent failures (AccessDenied, InvalidAccessKeyId, NoSuchBucket): fix and retry."""


class EncryptionRefused(StoreRejected):
    """Raised when the server refuses a request for its encryption headers (400): SSE over plain
    http, or an SSE-C object read with another key than the one it was written with."""


class ObjectNotFound(StoreError):
    """Raised when the requested key does not exist."""


class PreconditionFailed(StoreError):
    """Raised when a conditional write (If-Match / If-None-Match) lost a race: re-read and retry."""
