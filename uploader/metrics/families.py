"""The counters, histogram and gauges the core's events feed, labelled by stream and destination.

One ``Families`` per registry. What is cut from a stream's local file is labelled ``stream``
only (the cut happens once, whatever the destinations); everything about uploads is labelled
``stream`` and ``destination``. The scrape-time gauges live in ``uploader.metrics.scrape``.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from uploader.recorder import FailureKind

__all__ = ["APPEND_PATHS", "DESTINATION", "FAILURE_KINDS", "STREAM", "Families"]

STREAM = ("stream",)
DESTINATION = ("stream", "destination")
# publish.plan.AppendPath's values (tests/test_metrics.py keeps the two equal): every path
# exists from the start, like every kind of failure.
APPEND_PATHS = ("new", "rewrite", "tail", "none")
FAILURE_KINDS = tuple(kind.value for kind in FailureKind)  # transient, permanent, conflict
# An append takes milliseconds on loopback and seconds for a day's backlog over a slow link.
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Families:
    """Every event-fed metric of one registry (the children are made by ``BoundRecorder``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._cuts()
        self._appends()
        self.last_success = Gauge("uploader_last_success_timestamp_seconds",
                                  "When an append last succeeded (Unix time; 0: not yet).", DESTINATION,
                                  registry=registry)

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        return Counter(name, doc, labels, registry=self._registry)  # exposed with the _total suffix

    def _cuts(self) -> None:
        counter = self._counter
        self.fetches_cut = counter("uploader_fetches_cut", "Fetches cut from the local file into the spool.", STREAM)
        self.matches_cut = counter("uploader_matches_cut", "Matches (FETCH_FOOTER.total_matches) of fetches cut.",
                                   STREAM)
        self.batches_cut = counter("uploader_batches_cut", "Batches cut into the spool.", STREAM)
        self.quarantined_records = counter("uploader_quarantined_records",
                                           "Malformed spans cut out of the local file into the quarantine.", STREAM)
        self.quarantined_bytes = counter("uploader_quarantined_bytes", "Bytes of the quarantined spans.", STREAM)

    def _appends(self) -> None:
        counter = self._counter
        self.fetches_uploaded = counter("uploader_fetches_uploaded",
                                        "Fetches of batches the store acknowledged (stored, or already there).",
                                        DESTINATION)
        self.matches_uploaded = counter("uploader_matches_uploaded", "Matches of the fetches uploaded.", DESTINATION)
        self.batches_uploaded = counter("uploader_batches_uploaded", "Batches the store acknowledged.", DESTINATION)
        self.append_attempts = counter("uploader_append_attempts",
                                       "Appends to a day's document tried (one per day group per drain).",
                                       DESTINATION)
        self.append_failures = counter(
            "uploader_append_failures",
            "Appends that failed, by kind: transient (retried with backoff), permanent (credentials, "
            "bucket: fix it), conflict (another writer kept winning).", (*DESTINATION, "kind"))
        self.append_rewrites = counter(
            "uploader_append_retried_writes",
            "Writes redone inside a successful append (a lost race re-read, a refused feature's fallback).",
            DESTINATION)
        self.append_duration = Histogram(
            "uploader_append_duration_seconds",
            "Time one successful append took, by path: new (a day's first), rewrite (body sent again), "
            "tail (server-side append), none (every batch already there).",
            (*DESTINATION, "path"), buckets=_DURATION_BUCKETS, registry=self._registry)
        self.append_sent = counter("uploader_append_sent_bytes", "Bytes appends sent to the store.", DESTINATION)
        self.append_received = counter("uploader_append_received_bytes", "Bytes appends read from the store.",
                                       DESTINATION)
