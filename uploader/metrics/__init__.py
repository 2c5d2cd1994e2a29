"""Prometheus metrics of `uploader run`: the hooks the core calls, one registry, /metrics and /healthz.

The core (``cut.Cutter``, ``upload.Uploader``) reports events through the small ``Recorder``
interface; ``NO_METRICS`` is the default, so the core runs and is tested without any of this.
``Metrics`` is the real recorder: counters and histograms in its own ``CollectorRegistry`` (never
the process-global one), plus collectors that look at the spool and at the service when
Prometheus scrapes (depth, age of the oldest batch, the closed-days watermark), never in a loop
and never with a request to the store. ``serve`` binds /metrics and /healthz to the configured
address; a bind that fails is a ``ConfigError`` naming ``metrics.listen``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta
from datetime import time as wall_time
from typing import TYPE_CHECKING, Any, Protocol, Self, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

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
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer

from uploader import __version__
from uploader.config import MetricsConfig
from uploader.errors import ConfigError, PreconditionFailed, StoreError, StoreRejected
from uploader.schedule import wall_instant
from uploader.local.spool import BatchHeader, QuarantineItem, Spool
from uploader.store import Capabilities, Store

if TYPE_CHECKING:
    from uploader.publish import AppendResult

__all__ = [
    "APPEND_PATHS",
    "CAPABILITY_NAMES",
    "FAILURE_KINDS",
    "NO_METRICS",
    "Metrics",
    "MetricsServer",
    "Recorder",
    "ServiceView",
    "failure_kind",
    "serve",
    "spool_depth",
]

log = logging.getLogger(__name__)

APPEND_PATHS = ("new", "rewrite", "tail")
FAILURE_KINDS = ("transient", "permanent", "conflict")
# An append takes milliseconds on loopback and seconds for a day's backlog over a slow link.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The capabilities a probe decides (booleans of Capabilities other than the probe's own state).
CAPABILITY_NAMES = tuple(f.name for f in fields(Capabilities) if f.type in ("bool", bool) and f.name != "conclusive")
_DAYS_KEPT = 2  # today and yesterday: yesterday's closing shows after midnight


class Recorder(Protocol):
    """What the core tells the metrics; every method is cheap and never raises."""

    enabled: bool

    def cut(self, batches: Sequence[BatchHeader], quarantined: Sequence[QuarantineItem]) -> None:
        """A cut committed these batches and quarantined these spans."""

    def appended(self, result: AppendResult, headers: Sequence[BatchHeader], seconds: float) -> None:
        """One append stored (or acknowledged) these batches."""

    def append_failed(self, exc: StoreError) -> None:
        """One append failed; its batches stay spooled."""

    def day_document(self, day: date, user_metadata: dict[str, str]) -> None:
        """The day's document now carries these counters (its user metadata, as a HEAD read it)."""


class _NoMetrics:
    """The recorder where metrics are off: does nothing."""

    enabled = False

    def cut(self, batches: Sequence[BatchHeader], quarantined: Sequence[QuarantineItem]) -> None:
        pass

    def appended(self, result: AppendResult, headers: Sequence[BatchHeader], seconds: float) -> None:
        pass

    def append_failed(self, exc: StoreError) -> None:
        pass

    def day_document(self, day: date, user_metadata: dict[str, str]) -> None:
        pass


NO_METRICS: Recorder = _NoMetrics()


def failure_kind(exc: StoreError) -> str:
    """transient (retry heals it), permanent (an operator must fix something), conflict (lost races)."""
    if isinstance(exc, StoreRejected):
        return "permanent"
    if isinstance(exc, PreconditionFailed):
        return "conflict"
    return "transient"


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
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=r)  # exposed with the _total suffix

        self.fetches_cut = counter("uploader_fetches_cut", "Fetches cut from the local file into the spool.")
        self.matches_cut = counter("uploader_matches_cut", "Matches (FETCH_FOOTER.total_matches) of fetches cut.")
        self.batches_cut = counter("uploader_batches_cut", "Batches cut into the spool.")
        self.quarantined_records = counter("uploader_quarantined_records",
                                           "Malformed spans cut out of the local file into the quarantine.")
        self.quarantined_bytes = counter("uploader_quarantined_bytes", "Bytes of the quarantined spans.")
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
            ["path"], buckets=_DURATION_BUCKETS, registry=r)
        self.append_sent = counter("uploader_append_sent_bytes", "Bytes appends sent to the store.")
        self.append_received = counter("uploader_append_received_bytes", "Bytes appends read from the store.")
        self.last_success = Gauge("uploader_last_success_timestamp_seconds",
                                  "When an append last succeeded (Unix time; 0: not yet).", registry=r)
        # Every label value exists from the start, so increase() sees the first failure.
        for kind in FAILURE_KINDS:
            self.append_failures.labels(kind)
        for path in APPEND_PATHS:
            self.append_duration.labels(path)
        self._lock = threading.Lock()
        self._caps: Capabilities | None = None
        self._days: dict[date, dict[str, str]] = {}
        self._view: ServiceView | None = None
        r.register(_Seen(self))

    # -- the Recorder ------------------------------------------------------------------------

    def cut(self, batches: Sequence[BatchHeader], quarantined: Sequence[QuarantineItem]) -> None:
        self.batches_cut.inc(len(batches))
        self.fetches_cut.inc(sum(b.fetch_count for b in batches))
        self.matches_cut.inc(sum(b.matches for b in batches))
        self.quarantined_records.inc(len(quarantined))
        self.quarantined_bytes.inc(sum(len(q.raw) for q in quarantined))

    def appended(self, result: AppendResult, headers: Sequence[BatchHeader], seconds: float) -> None:
        self.append_attempts.inc()
        self.append_rewrites.inc(max(0, result.attempts - 1))
        self.batches_uploaded.inc(len(headers))
        self.fetches_uploaded.inc(sum(h.fetch_count for h in headers))
        self.matches_uploaded.inc(sum(h.matches for h in headers))
        self.append_duration.labels(result.path).observe(seconds)
        self.append_sent.inc(result.bytes_sent)
        self.append_received.inc(result.bytes_received)
        self.last_success.set(time.time())

    def append_failed(self, exc: StoreError) -> None:
        self.append_attempts.inc()
        self.append_failures.labels(failure_kind(exc)).inc()

    def day_document(self, day: date, user_metadata: dict[str, str]) -> None:
        with self._lock:
            self._days[day] = dict(user_metadata)
            for old in sorted(self._days)[:-_DAYS_KEPT]:
                del self._days[old]

    # -- wiring ------------------------------------------------------------------------------

    def watch(self, store: Store) -> Store:
        """``store``, reporting the capabilities each append was planned with (no extra request)."""
        # The proxy forwards everything else untouched; it has every method of the protocol.
        return cast(Store, _CapabilityWatch(store, self._used))

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

    def _used(self, caps: Capabilities) -> None:
        with self._lock:
            self._caps = caps

    def _seen(self) -> tuple[Capabilities | None, dict[date, dict[str, str]]]:
        with self._lock:
            return self._caps, dict(self._days)


class _CapabilityWatch:
    """A Store whose ``capabilities`` answers are remembered for the metrics."""

    def __init__(self, store: Store, used: Callable[[Capabilities], None]) -> None:
        self._store = store
        self._used = used

    def capabilities(self, refresh: bool = False) -> Capabilities:
        caps = self._store.capabilities(refresh)
        self._used(caps)
        return caps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Seen:
    """Scrape-time view of what the service last saw: store capabilities, day documents."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        caps, days = self._metrics._seen()
        yield GaugeMetricFamily(
            "uploader_store_capabilities_probed",
            "1 when the capabilities in use were found by a probe of the server (S3), 0 before the first "
            "append or where none is needed (directory backend).",
            value=1.0 if caps is not None and caps.probed_at > 0 else 0.0)
        if caps is not None:
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
                family.add_metric([name], 1.0 if getattr(caps, name) else 0.0)
            yield family
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


# -- the HTTP side ---------------------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: a scrape every 15 s is not an event."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """/metrics and /healthz served from a daemon thread until ``close``."""

    def __init__(self, httpd: WSGIServer, listen: str) -> None:
        self._httpd = httpd
        self.listen = listen
        self.port: int = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(config: MetricsConfig, metrics: Metrics) -> MetricsServer:
    """Bind ``config.listen`` and serve; ConfigError naming metrics.listen if it cannot be bound."""
    app = _app(metrics)
    hint = 'stop what uses it, or choose another metrics.listen ("" turns metrics off)'
    try:
        family = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        httpd = make_server(config.host, config.port, app, server_class=Server, handler_class=_Quiet)
    except socket.gaierror as exc:
        raise ConfigError("metrics.listen", f"cannot resolve {config.host!r}: {exc.strerror}",
                          "use an IP address such as 127.0.0.1") from None
    except OSError as exc:
        raise ConfigError("metrics.listen", f"cannot listen on {config.listen}: {exc.strerror or exc}", hint) from None
    log.info("metrics_listening address=%s paths=/metrics,/healthz", config.listen)
    return MetricsServer(httpd, config.listen)


def _app(metrics: Metrics) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            problem = metrics.health()
            body = f"{problem or 'ok'}\n".encode()
            status = "200 OK" if problem is None else "503 Service Unavailable"
        elif path in ("/metrics", "/"):
            return cast(Iterable[bytes], exposition(environ, start_response))
        else:
            body, status = b"not found: try /metrics or /healthz\n", "404 Not Found"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app
