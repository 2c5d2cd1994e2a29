"""Prometheus metrics of `uploader run`: ``Metrics``, the Recorder with its own registry.

The core (``local.cut.Cutter``, ``publish.uploader.Uploader``) reports events through
``uploader.recorder.Recorder`` and knows nothing of this package. ``Metrics`` turns them into
counters and histograms in its own ``CollectorRegistry`` (never the process-global one), plus
collectors that look at the spool and at the service when Prometheus scrapes (depth, age of the
oldest batch, the closed-days watermark), never in a loop and never with a request to the store.
``health`` is what /healthz answers; ``uploader.metrics.http`` serves both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from datetime import time as wall_time

import pytz
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from uploader import __version__
from uploader.local.spool import Spool
from uploader.recorder import AppendReport, CapabilitiesUsed, CloseReport, CutReport, FailureKind
from uploader.schedule import wall_instant
from uploader.store.capabilities import Capabilities

__all__ = [
    "APPEND_PATHS",
    "CAPABILITY_NAMES",
    "FAILURE_KINDS",
    "Metrics",
    "ServiceView",
    "spool_depth",
]

APPEND_PATHS = ("new", "rewrite", "tail")
FAILURE_KINDS = tuple(kind.value for kind in FailureKind)  # transient, permanent, conflict
# An append takes milliseconds on loopback and seconds for a day's backlog over a slow link.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The capabilities a probe decides (booleans of Capabilities other than the probe's own state).
CAPABILITY_NAMES = tuple(f.name for f in fields(Capabilities) if f.type in ("bool", bool) and f.name != "conclusive")
_DAYS_KEPT = 2  # today and yesterday: yesterday's closing shows after midnight


@dataclass(frozen=True)
class ServiceView:
    """What a scrape or a /healthz request reads from the running service."""

    spool: Spool
    tz: pytz.BaseTzInfo
    today: Callable[[], date]
    closed_through: Callable[[], date | None]
    running: Callable[[], bool]
    max_pending_age_s: float


def spool_depth(spool: Spool, now: float) -> tuple[int, int, float]:
    """(batches, bytes, age in seconds of the oldest) waiting in the spool; age 0 when empty."""
    count = size = 0
    oldest: float | None = None
    for entry in spool.pending_batches():
        try:
            st = entry.path.stat()
        except FileNotFoundError:
            continue  # uploaded between the listing and now
        count += 1
        size += st.st_size
        # A batch file is written once, at its cut, and renamed, never rewritten: mtime is the cut.
        oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    return count, size, 0.0 if oldest is None else max(0.0, now - oldest)


class Metrics:
    """The recorder of `uploader run`, with its own registry."""

    enabled = True

    def __init__(self) -> None:
        # A *_created sample per counter doubles the series for nothing PromQL uses (a process-wide
        # switch: this process serves no other registry).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = CollectorRegistry()
        r = self.registry
        Info("uploader_build", "The uploader's version.", registry=r).info({"version": __version__})
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self._count_cuts()
        self._count_appends()
        self.last_success = Gauge("uploader_last_success_timestamp_seconds",
                                  "When an append last succeeded (Unix time; 0: not yet).", registry=r)
        self._lock = threading.Lock()
        self._caps: CapabilitiesUsed | None = None
        self._days: dict[date, dict[str, str]] = {}
        self._view: ServiceView | None = None
        r.register(_Seen(self))

    def _counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)  # exposed with the _total suffix

    def _count_cuts(self) -> None:
        counter = self._counter
        self.fetches_cut = counter("uploader_fetches_cut", "Fetches cut from the local file into the spool.")
        self.matches_cut = counter("uploader_matches_cut", "Matches (FETCH_FOOTER.total_matches) of fetches cut.")
        self.batches_cut = counter("uploader_batches_cut", "Batches cut into the spool.")
        self.quarantined_records = counter("uploader_quarantined_records",
                                           "Malformed spans cut out of the local file into the quarantine.")
        self.quarantined_bytes = counter("uploader_quarantined_bytes", "Bytes of the quarantined spans.")

    def _count_appends(self) -> None:
        counter = self._counter
        self.fetches_uploaded = counter("uploader_fetches_uploaded",
                                        "Fetches of batches the store acknowledged (stored, or already there).")
        self.matches_uploaded = counter("uploader_matches_uploaded", "Matches of the fetches uploaded.")
        self.batches_uploaded = counter("uploader_batches_uploaded", "Batches the store acknowledged.")
        self.append_attempts = counter("uploader_append_attempts",
                                       "Appends to a day's document tried (one per day group per drain).")
        self.append_failures = counter(
            "uploader_append_failures",
            "Appends that failed, by kind: transient (retried with backoff), permanent (credentials, "
            "bucket: fix it), conflict (another writer kept winning).", ["kind"])
        self.append_rewrites = counter(
            "uploader_append_retried_writes",
            "Writes redone inside a successful append (a lost race re-read, a refused feature's fallback).")
        self.append_duration = Histogram(
            "uploader_append_duration_seconds",
            "Time one successful append took, by path: new (a day's first), rewrite (body sent again), "
            "tail (server-side append), none (every batch already there).",
            ["path"], buckets=_DURATION_BUCKETS, registry=self.registry)
        self.append_sent = counter("uploader_append_sent_bytes", "Bytes appends sent to the store.")
        self.append_received = counter("uploader_append_received_bytes", "Bytes appends read from the store.")
        # Every label value exists from the start, so increase() sees the first failure.
        for kind in FAILURE_KINDS:
            self.append_failures.labels(kind)
        for path in APPEND_PATHS:
            self.append_duration.labels(path)

    # -- the Recorder ------------------------------------------------------------------------

    def cut(self, report: CutReport) -> None:
        self.batches_cut.inc(report.batches.batches)
        self.fetches_cut.inc(report.batches.fetches)
        self.matches_cut.inc(report.batches.matches)
        self.quarantined_records.inc(report.quarantined)
        self.quarantined_bytes.inc(report.quarantined_bytes)

    def appended(self, report: AppendReport) -> None:
        self.append_attempts.inc()
        self.append_rewrites.inc(max(0, report.attempts - 1))
        self.batches_uploaded.inc(report.batches.batches)
        self.fetches_uploaded.inc(report.batches.fetches)
        self.matches_uploaded.inc(report.batches.matches)
        self.append_duration.labels(report.path).observe(report.seconds)
        self.append_sent.inc(report.bytes_sent)
        self.append_received.inc(report.bytes_received)
        self.last_success.set(time.time())
        self._used(report.capabilities)

    def append_failed(self, kind: FailureKind) -> None:
        self.append_attempts.inc()
        self.append_failures.labels(kind.value).inc()

    def day_document(self, day: date, user_metadata: Mapping[str, str]) -> None:
        with self._lock:
            self._days[day] = dict(user_metadata)
            for old in sorted(self._days)[:-_DAYS_KEPT]:
                del self._days[old]

    def day_closed(self, report: CloseReport) -> None:
        self.day_document(report.day, report.user_metadata)
        self._used(report.capabilities)

    # -- wiring ------------------------------------------------------------------------------

    def observe(self, view: ServiceView) -> None:
        """Report the spool and the service's state at each scrape, and answer /healthz from them."""
        self._view = view
        self.registry.register(_ServiceState(view))

    def seed_last_success(self, at: float) -> None:
        """Start from the last success a previous run recorded, not from "never"."""
        self.last_success.set(at)

    def health(self) -> str | None:
        """None when healthy, else the reason in one line (what /healthz answers with a 503)."""
        view = self._view
        if view is None or not view.running():
            return "service not running (starting or stopping)"
        try:
            _, _, age = spool_depth(view.spool, time.time())
        except OSError as exc:
            return f"spool unreadable: {exc.strerror or exc}"
        if age > view.max_pending_age_s:
            return (f"oldest pending batch is {age:.0f}s old (limit {view.max_pending_age_s:g}s): "
                    "uploads are not getting through")
        return None

    def _used(self, caps: CapabilitiesUsed | None) -> None:
        if caps is None:
            return  # nothing planned (a recorder fed by hand): the last findings stand
        with self._lock:
            self._caps = caps

    def _seen(self) -> tuple[CapabilitiesUsed | None, dict[date, dict[str, str]]]:
        with self._lock:
            return self._caps, dict(self._days)


class _Seen:
    """Scrape-time view of what the service last saw: store capabilities, day documents."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        caps, days = self._metrics._seen()
        yield from _capability_families(caps)
        yield from _day_families(days)


def _capability_families(caps: CapabilitiesUsed | None) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "uploader_store_capabilities_probed",
        "1 when the capabilities in use were found by a probe of the server (S3), 0 before the first "
        "append or where none is needed (directory backend).",
        value=1.0 if caps is not None and caps.probed_at > 0 else 0.0)
    if caps is None:
        return
    yield GaugeMetricFamily("uploader_store_capabilities_probed_timestamp_seconds",
                            "When the capabilities in use were probed (Unix time; 0: never).",
                            value=caps.probed_at)
    yield GaugeMetricFamily("uploader_store_capabilities_conclusive",
                            "0 when a passing fault left a finding unsure (probed again within the hour).",
                            value=1.0 if caps.conclusive else 0.0)
    family = GaugeMetricFamily("uploader_store_capability",
                               "Whether the server honours a capability the last append relied on or did "
                               "without (0: the fallback path is used).", labels=["capability"])
    for name in CAPABILITY_NAMES:
        family.add_metric([name], 1.0 if caps.honoured.get(name) else 0.0)
    yield family


def _day_families(days: dict[date, dict[str, str]]) -> Iterator[Metric]:
    docs = {
        "uploads": GaugeMetricFamily("uploader_day_uploads", "total_uploads_today of the day's document, as "
                                     "read after the service last wrote it.", labels=["day"]),
        "fetches": GaugeMetricFamily("uploader_day_fetches", "total_fetches_today of the day's document.",
                                     labels=["day"]),
        "matches": GaugeMetricFamily("uploader_day_matches", "total_matches_today of the day's document.",
                                     labels=["day"]),
        "closed": GaugeMetricFamily("uploader_day_closed", "1 once the day's document is marked closed.",
                                    labels=["day"]),
    }
    for day, meta in sorted(days.items()):
        label = [day.isoformat()]
        for name in ("uploads", "fetches", "matches"):
            docs[name].add_metric(label, _number(meta.get(f"total-{name}")))
        docs["closed"].add_metric(label, 1.0 if meta.get("closed") == "true" else 0.0)
    yield from docs.values()


class _ServiceState:
    """Scrape-time view of the spool and of the days closed."""

    def __init__(self, view: ServiceView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        v = self._view
        batches, size, age = spool_depth(v.spool, time.time())
        yield GaugeMetricFamily("uploader_spool_batches", "Batches waiting in the spool for upload.", value=batches)
        yield GaugeMetricFamily("uploader_spool_bytes", "Bytes of the batches waiting in the spool.", value=size)
        yield GaugeMetricFamily("uploader_spool_oldest_batch_age_seconds",
                                "Age of the oldest batch waiting in the spool (0: none waiting).", value=age)
        today = v.today()
        yield GaugeMetricFamily(
            "uploader_today_start_timestamp_seconds",
            "Local midnight that began today in [day] timezone (Unix time): alert rules compare with it, "
            "since Prometheus knows only UTC.", value=_midnight(today, v.tz))
        through = v.closed_through()
        if through is not None:
            yield GaugeMetricFamily(
                "uploader_days_closed_through_timestamp_seconds",
                "End (local midnight) of the latest day D such that every day up to D that had uploads is "
                "closed (Unix time); equals uploader_today_start_timestamp_seconds once yesterday is closed.",
                value=_midnight(through + timedelta(days=1), v.tz))


def _midnight(day: date, tz: pytz.BaseTzInfo) -> float:
    return wall_instant(day, wall_time(0), tz).timestamp()


def _number(text: str | None) -> float:
    try:
        return float(int(text or "0"))
    except ValueError:
        return 0.0
