"""What the core reports to the metrics: the ``Recorder`` interface, its events, and ``NO_METRICS``.

The cut and the uploader report plain facts (counts, bytes, seconds, what kind of failure)
through this interface and know nothing else of metrics; ``uploader.metrics`` implements it
with Prometheus, and ``NO_METRICS`` stands in where metrics are off, so the core runs and is
tested without them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Protocol

from uploader.errors import PreconditionFailed, StoreError, StoreRejected

__all__ = [
    "NO_METRICS",
    "AppendReport",
    "CapabilitiesUsed",
    "CloseReport",
    "CutReport",
    "FailureKind",
    "Recorder",
    "Tally",
    "failure_kind",
]


class FailureKind(Enum):
    """Why an append failed, as an operator acts on it."""

    TRANSIENT = "transient"  # a retry heals it
    PERMANENT = "permanent"  # an operator must fix something (credentials, bucket)
    CONFLICT = "conflict"  # another writer kept winning


def failure_kind(exc: StoreError) -> FailureKind:
    """The kind of a store failure."""
    if isinstance(exc, StoreRejected):
        return FailureKind.PERMANENT
    if isinstance(exc, PreconditionFailed):
        return FailureKind.CONFLICT
    return FailureKind.TRANSIENT


class _Counted(Protocol):
    @property
    def fetch_count(self) -> int: ...

    @property
    def matches(self) -> int: ...


@dataclass(frozen=True)
class Tally:
    """Batches, and the fetches and matches in them."""

    batches: int = 0
    fetches: int = 0
    matches: int = 0

    @classmethod
    def of(cls, batches: Iterable[_Counted]) -> Tally:
        listed = list(batches)
        return cls(len(listed), sum(b.fetch_count for b in listed), sum(b.matches for b in listed))


@dataclass(frozen=True)
class CutReport:
    """One committed cut: the batches it made and the malformed spans it quarantined."""

    batches: Tally
    quarantined: int = 0
    quarantined_bytes: int = 0


@dataclass(frozen=True)
class CapabilitiesUsed:
    """What the server honours, as the store's findings said when an append or close was planned."""

    honoured: Mapping[str, bool]  # capability name (a field of store.Capabilities) -> honoured
    probed_at: float = 0.0  # POSIX time of the probe that found them; 0: never probed (directory)
    conclusive: bool = True  # False: a passing fault left a finding unsure


@dataclass(frozen=True)
class AppendReport:
    """One append the store acknowledged (stored, or every batch already there)."""

    batches: Tally
    path: str  # how it was written: new, rewrite, tail, none
    seconds: float
    attempts: int = 1  # writes it took; more than one: a lost race re-read, a refused feature's fallback
    bytes_sent: int = 0
    bytes_received: int = 0
    capabilities: CapabilitiesUsed | None = None  # what the append was planned with


@dataclass(frozen=True)
class CloseReport:
    """One day closed (or found closed already)."""

    day: date
    user_metadata: Mapping[str, str]  # the document's counters now
    capabilities: CapabilitiesUsed | None = None  # what the close was planned with


class Recorder(Protocol):
    """What the core tells the metrics; every method is cheap and never raises."""

    enabled: bool

    def cut(self, report: CutReport) -> None:
        """A cut committed."""

    def appended(self, report: AppendReport) -> None:
        """One append stored (or acknowledged) its batches."""

    def append_failed(self, kind: FailureKind) -> None:
        """One append failed; its batches stay spooled."""

    def day_document(self, day: date, user_metadata: Mapping[str, str]) -> None:
        """The day's document now carries these counters (its user metadata)."""

    def day_closed(self, report: CloseReport) -> None:
        """A day's document is closed."""


class _NoMetrics:
    """The recorder where metrics are off: does nothing."""

    enabled = False

    def cut(self, report: CutReport) -> None:
        pass

    def appended(self, report: AppendReport) -> None:
        pass

    def append_failed(self, kind: FailureKind) -> None:
        pass

    def day_document(self, day: date, user_metadata: Mapping[str, str]) -> None:
        pass

    def day_closed(self, report: CloseReport) -> None:
        pass


NO_METRICS: Recorder = _NoMetrics()
