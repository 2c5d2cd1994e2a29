"""Prometheus metrics of `uploader run`: ``Metrics``, one registry for every stream and destination.

The core (``local.cut.Cutter``, ``publish.uploader.Uploader``) reports events through
``uploader.recorder.Recorder`` and knows nothing of this package. ``Metrics.recorder(stream,
destination)`` hands out the Recorder of one (stream, destination), whose events become labelled
counters and histograms (``families``, ``recording``) in ``Metrics``' own ``CollectorRegistry``
(never the process-global one). ``observe`` gives it the service's ``ServiceView`` (``views``),
read only when Prometheus scrapes (``scrape``: queues, days, trouble) or /healthz asks
(``health``), never in a loop and never with a request to the store. ``uploader.metrics.http``
serves both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import (
    CollectorRegistry,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from uploader import __version__
from uploader.metrics.families import APPEND_PATHS, FAILURE_KINDS, Families
from uploader.metrics.health import health
from uploader.metrics.recording import BoundRecorder
from uploader.metrics.scrape import CAPABILITY_NAMES, Scrape
from uploader.metrics.views import (
    DestinationView,
    PendingQueue,
    ServiceView,
    StreamView,
    spool_depth,
)

__all__ = [
    "APPEND_PATHS",
    "CAPABILITY_NAMES",
    "FAILURE_KINDS",
    "BoundRecorder",
    "DestinationView",
    "Metrics",
    "PendingQueue",
    "ServiceView",
    "StreamView",
    "spool_depth",
]


class Metrics:
    """The metrics of `uploader run`: one registry, a Recorder per (stream, destination)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # A *_created sample per counter doubles the series for nothing PromQL uses (a process-wide
        # switch: this process serves no other registry).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
        self.registry = CollectorRegistry()
        self._clock = clock
        Info("uploader_build", "The uploader's version.", registry=self.registry).info({"version": __version__})
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._families = Families(self.registry)
        self._lock = threading.Lock()
        self._recorders: dict[tuple[str, str], BoundRecorder] = {}
        self._view: ServiceView | None = None
        self.registry.register(Scrape(self._state, clock))

    def recorder(self, stream: str, destination: str) -> BoundRecorder:
        """The Recorder of one stream's destination (the same one each time); its series start at 0."""
        with self._lock:
            rec = self._recorders.get((stream, destination))
            if rec is None:
                rec = self._recorders[stream, destination] = BoundRecorder(
                    self._families, stream, destination, self._clock)
            return rec

    def observe(self, view: ServiceView) -> None:
        """Report the service's streams at each scrape, and answer /healthz from them."""
        with self._lock:
            self._view = view

    def health(self) -> str | None:
        """None when healthy, else in one line every stream and destination in trouble and why."""
        with self._lock:
            view = self._view
        return health(view, self._clock())

    def _state(self) -> tuple[ServiceView | None, Sequence[BoundRecorder]]:
        with self._lock:
            return self._view, list(self._recorders.values())
