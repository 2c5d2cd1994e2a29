"""The gauges computed when Prometheus scrapes: queues, days, stream trouble, store capabilities.

Nothing here runs between scrapes, and a scrape reads only the service's memory and one listing
of each destination's queue: never a store request. A read that fails leaves out what it would
have given (a queue that cannot be listed has no spool gauges; /healthz says why) and the rest of
the scrape goes on, so a scrape never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields
from datetime import date, timedelta
from datetime import time as wall_time
from typing import TypeVar

import pytz
from prometheus_client.core import GaugeMetricFamily, Metric

from uploader.metrics.families import DESTINATION, STREAM
from uploader.metrics.recording import BoundRecorder
from uploader.metrics.views import ServiceView, spool_depth
from uploader.recorder import CapabilitiesUsed
from uploader.schedule import wall_instant
from uploader.store.capabilities import Capabilities

__all__ = ["CAPABILITY_NAMES", "Scrape"]

log = logging.getLogger(__name__)

T = TypeVar("T")
# The capabilities a probe decides (booleans of Capabilities other than the probe's own state).
CAPABILITY_NAMES = tuple(f.name for f in fields(Capabilities) if f.type in ("bool", bool) and f.name != "conclusive")
_UNKNOWN_TROUBLE: str | None = "its state could not be read"  # a trouble() that raised


class Scrape:
    """The registry's collector of every scrape-time family."""

    def __init__(self, state: Callable[[], tuple[ServiceView | None, Sequence[BoundRecorder]]],
                 clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock
        self._logged: set[tuple[str, str, str]] = set()  # (stream, destination, what) failed and logged

    def collect(self) -> Iterator[Metric]:
        """The service's state (once observed), then what the recorders saw."""
        view, recorders = self._state()
        if view is not None:
            yield from self._service_families(view, self._clock())
        yield from _capability_families(recorders)
        yield from _day_families(recorders)

    def _service_families(self, view: ServiceView, now: float) -> Iterator[Metric]:
        fam = _service_families()
        for stream in view.streams:
            s = stream.name
            problem = self._read(stream.trouble, _UNKNOWN_TROUBLE, s, "", "trouble")
            fam["trouble"].add_metric([s], 0.0 if problem is None else 1.0)
            today = self._read(stream.today, None, s, "", "today")
            if today is not None:
                fam["today"].add_metric([s], _midnight(today, stream.tz))
            for dest in stream.destinations:
                labels = [s, dest.name]
                try:
                    depth = spool_depth(dest.queue, now)
                except OSError:
                    pass  # /healthz says why; the other gauges still go out
                except Exception as exc:  # noqa: BLE001 - a scrape never raises (DESIGN §10)
                    self._failed(s, dest.name, "queue", exc)
                else:
                    for name, number in zip(("batches", "bytes", "age"), depth, strict=True):
                        fam[name].add_metric(labels, number)
                through = self._read(dest.closed_through, None, s, dest.name, "closed_through")
                if through is not None:
                    fam["closed"].add_metric(labels, _midnight(through + timedelta(days=1), stream.tz))
        yield from fam.values()

    def _read(self, read: Callable[[], T], default: T, stream: str, destination: str, what: str) -> T:
        """``read()``, or ``default`` when it raises: one bad view must not cost the whole scrape."""
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - a scrape never raises (DESIGN §10)
            self._failed(stream, destination, what, exc)
            return default

    def _failed(self, stream: str, destination: str, what: str, exc: Exception) -> None:
        # Once per (stream, destination, what): a scrape every 15 s must not repeat it all day.
        if (stream, destination, what) not in self._logged:
            self._logged.add((stream, destination, what))
            log.warning("metrics_read_failed stream=%s destination=%s what=%s error=%r",
                        stream, destination or "-", what, exc)


def _service_families() -> dict[str, GaugeMetricFamily]:
    return {
        "trouble": GaugeMetricFamily(
            "uploader_stream_trouble", "1 while the stream's local file cannot be watched or cut (/healthz "
            "says why).", labels=STREAM),
        "today": GaugeMetricFamily(
            "uploader_today_start_timestamp_seconds",
            "Local midnight that began today in the stream's zone (Unix time): alert rules compare with it, "
            "since Prometheus knows only UTC.", labels=STREAM),
        "batches": GaugeMetricFamily("uploader_spool_batches", "Batches waiting for upload to the destination.",
                                     labels=DESTINATION),
        "bytes": GaugeMetricFamily("uploader_spool_bytes", "Bytes of the batches waiting for the destination.",
                                   labels=DESTINATION),
        "age": GaugeMetricFamily("uploader_spool_oldest_batch_age_seconds",
                                 "Age of the oldest batch waiting for the destination (0: none waiting).",
                                 labels=DESTINATION),
        "closed": GaugeMetricFamily(
            "uploader_days_closed_through_timestamp_seconds",
            "End (local midnight) of the latest day D such that every day up to D that had uploads is closed "
            "at the destination (Unix time); equals uploader_today_start_timestamp_seconds once yesterday is "
            "closed.", labels=DESTINATION),
    }


def _capability_families(recorders: Sequence[BoundRecorder]) -> Iterator[Metric]:
    probed = GaugeMetricFamily(
        "uploader_store_capabilities_probed",
        "1 when the capabilities in use were found by a probe of the server (S3), 0 before the first "
        "append or where none is needed (directory backend).", labels=DESTINATION)
    probed_at = GaugeMetricFamily("uploader_store_capabilities_probed_timestamp_seconds",
                                  "When the capabilities in use were probed (Unix time; 0: never).",
                                  labels=DESTINATION)
    conclusive = GaugeMetricFamily("uploader_store_capabilities_conclusive",
                                   "0 when a passing fault left a finding unsure (probed again within the hour).",
                                   labels=DESTINATION)
    honoured = GaugeMetricFamily("uploader_store_capability",
                                 "Whether the server honours a capability the last append relied on or did "
                                 "without (0: the fallback path is used).", labels=(*DESTINATION, "capability"))
    for rec in recorders:
        caps: CapabilitiesUsed | None = rec.seen()[0]
        labels = [rec.stream, rec.destination]
        probed.add_metric(labels, 1.0 if caps is not None and caps.probed_at > 0 else 0.0)
        if caps is None:
            continue  # present once the store has been used
        probed_at.add_metric(labels, caps.probed_at)
        conclusive.add_metric(labels, 1.0 if caps.conclusive else 0.0)
        for name in CAPABILITY_NAMES:
            honoured.add_metric([*labels, name], 1.0 if caps.honoured.get(name) else 0.0)
    yield from (probed, probed_at, conclusive, honoured)


def _day_families(recorders: Sequence[BoundRecorder]) -> Iterator[Metric]:
    labels = (*DESTINATION, "day")
    docs = {
        "uploads": GaugeMetricFamily("uploader_day_uploads", "total_uploads_today of the day's document, as "
                                     "read after the service last wrote it.", labels=labels),
        "fetches": GaugeMetricFamily("uploader_day_fetches", "total_fetches_today of the day's document.",
                                     labels=labels),
        "matches": GaugeMetricFamily("uploader_day_matches", "total_matches_today of the day's document.",
                                     labels=labels),
        "closed": GaugeMetricFamily("uploader_day_closed", "1 once the day's document is marked closed.",
                                    labels=labels),
    }
    for rec in recorders:
        for day, meta in sorted(rec.seen()[1].items()):
            values = [rec.stream, rec.destination, day.isoformat()]
            for name in ("uploads", "fetches", "matches"):
                docs[name].add_metric(values, _number(meta.get(f"total-{name}")))
            docs["closed"].add_metric(values, 1.0 if meta.get("closed") == "true" else 0.0)
    yield from docs.values()


def _midnight(day: date, tz: pytz.BaseTzInfo) -> float:
    return wall_instant(day, wall_time(0), tz).timestamp()


def _number(text: str | None) -> float:
    try:
        return float(int(text or "0"))
    except ValueError:
        return 0.0
