"""Prometheus /metrics and /healthz of `uploader run`: ``Metrics`` over fake views of two streams with
two destinations each, a real process through an S3 outage on moto and Ceph RGW, the in-process
service across midnight, and the [metrics] config refused in one line."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import pytz
from helpers import NY, FakeClock, healthz, scrape, value, wait_for, write_config
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rig.faultproxy import FaultProxy

from uploader.config import load_config
from uploader.errors import ConfigError
from uploader.fetchlog import FetchWriter
from uploader.metrics import (
    APPEND_PATHS,
    CAPABILITY_NAMES,
    FAILURE_KINDS,
    DestinationView,
    Metrics,
    ServiceView,
    StreamView,
)
from uploader.publish.plan import AppendPath
from uploader.recorder import (
    AppendReport,
    CapabilitiesUsed,
    CloseReport,
    CutReport,
    FailureKind,
    Tally,
)
from uploader.service import Service

REPO = Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "scripts" / "simulate_pipeline.py"
D = date(2025, 7, 10)
EVENING = NY.localize(datetime(2025, 7, 10, 23, 50))
TOKYO = pytz.timezone("Asia/Tokyo")
# A legacy config (no [streams]) is one stream, all_api, shipping to one destination, default.
S = {"stream": "all_api"}
SD = {**S, "destination": "default"}

def run_uploader(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args], capture_output=True, text=True, timeout=60,
                          check=False)


def simulate(config: Path, count: int, ledger: Path) -> list[dict]:
    """Write ``count`` fetches through the pipeline's writer; return the whole ledger so far."""
    subprocess.run([sys.executable, str(SIMULATOR), "--config", str(config), "--rate", "0", "--count", str(count),
                    "--size-kib", "2", "--ledger", str(ledger)], check=True, timeout=120, capture_output=True)
    return [json.loads(line) for line in ledger.read_text().splitlines()]


def metrics_config(port: int, **extra: object) -> dict[str, object]:
    return {"listen": f"127.0.0.1:{port}", **extra}


# -- Metrics over fake views: two streams, two destinations each ------------------------------

NOW = 1_752_200_000.0  # 2025-07-11 02:13:20 UTC: 2025-07-10 in New York, 2025-07-11 in Tokyo
PAIRS = [("orders", "s3"), ("orders", "backup"), ("quotes", "s3"), ("quotes", "backup")]


@dataclass(frozen=True)
class FakeBatch:
    path: Path


@dataclass
class FakeQueue:
    """A destination's queue: batch files in a folder, and how often it was listed."""

    folder: Path
    error: OSError | None = None
    listings: int = 0

    def add(self, name: str, size: int, age_s: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        path.write_bytes(b"x" * size)
        os.utime(path, (NOW - age_s, NOW - age_s))

    def pending_batches(self) -> list[FakeBatch]:
        self.listings += 1
        if self.error is not None:
            raise self.error
        return [FakeBatch(p) for p in sorted(self.folder.glob("*"))]


@dataclass
class FakeService:
    """What the service would hand ``Metrics.observe``: switches a test flips, queues it fills."""

    root: Path
    running: bool = True
    queues: dict[tuple[str, str], FakeQueue] = field(default_factory=dict)
    workers: dict[tuple[str, str], bool] = field(default_factory=dict)
    closed: dict[tuple[str, str], date | None] = field(default_factory=dict)
    trouble: dict[str, str | None] = field(default_factory=dict)

    def view(self, max_pending_age_s: float = 900) -> ServiceView:
        zones = {"orders": NY, "quotes": TOKYO}
        streams = [StreamView(name=s, tz=zones[s], today=self._today(zones[s]),
                              destinations=[self._destination(s, d) for ss, d in PAIRS if ss == s],
                              trouble=lambda s=s: self.trouble.get(s))
                   for s in ("orders", "quotes")]
        return ServiceView(streams=streams, running=lambda: self.running, max_pending_age_s=max_pending_age_s)

    def _destination(self, stream: str, name: str) -> DestinationView:
        key = (stream, name)
        queue = self.queues.setdefault(key, FakeQueue(self.root / stream / name))
        return DestinationView(name=name, queue=queue, closed_through=lambda: self.closed.get(key),
                               running=lambda: self.workers.get(key, True))

    @staticmethod
    def _today(tz: pytz.BaseTzInfo) -> Callable[[], date]:
        return lambda: datetime.fromtimestamp(NOW, tz).date()


@pytest.fixture
def fake(tmp_path: Path) -> FakeService:
    return FakeService(tmp_path)


@pytest.fixture
def observed(fake: FakeService) -> Metrics:
    """Metrics at NOW, observing ``fake``, with a recorder made for every (stream, destination)."""
    metrics = Metrics(clock=lambda: NOW)
    metrics.observe(fake.view())
    for stream, destination in PAIRS:
        metrics.recorder(stream, destination)
    return metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_recorder_is_one_per_stream_and_destination():
    """Asking twice for a (stream, destination) gives the same recorder; another pair, another one."""
    metrics = Metrics()
    assert metrics.recorder("orders", "s3") is metrics.recorder("orders", "s3")
    assert metrics.recorder("orders", "s3") is not metrics.recorder("orders", "backup")
    assert metrics.recorder("orders", "s3").enabled


def test_every_series_of_a_recorder_exists_at_zero_from_its_creation(observed):
    """Each kind of failure, each append path, every counter and last_success are 0 for each pair
    before any event, so increase() sees the first one."""
    for stream, destination in PAIRS:
        pair = {"stream": stream, "destination": destination}
        for kind in FAILURE_KINDS:
            assert sample(observed, "uploader_append_failures_total", **pair, kind=kind) == 0
        for path in APPEND_PATHS:
            assert sample(observed, "uploader_append_duration_seconds_count", **pair, path=path) == 0
        for name in ("batches_uploaded", "fetches_uploaded", "matches_uploaded", "append_attempts",
                     "append_retried_writes", "append_sent_bytes", "append_received_bytes"):
            assert sample(observed, f"uploader_{name}_total", **pair) == 0, name
        assert sample(observed, "uploader_last_success_timestamp_seconds", **pair) == 0
        assert sample(observed, "uploader_store_capabilities_probed", **pair) == 0
        for name in ("fetches_cut", "matches_cut", "batches_cut", "quarantined_records", "quarantined_bytes"):
            assert sample(observed, f"uploader_{name}_total", stream=stream) == 0, name


def test_append_paths_are_the_publishers():
    """Every path the publisher can report has its series from the start."""
    assert set(APPEND_PATHS) == {p.value for p in AppendPath}


def test_events_count_under_their_own_stream_and_destination(observed):
    """A cut counts under its stream only; appends, failures and last_success under their pair only."""
    observed.recorder("orders", "backup").cut(CutReport(Tally(2, 20, 7), quarantined=1, quarantined_bytes=19))
    caps = CapabilitiesUsed({"range_copy": True}, probed_at=NOW - 60)
    observed.recorder("orders", "backup").appended(
        AppendReport(Tally(1, 10, 4), "tail", 0.2, attempts=3, bytes_sent=500, bytes_received=80, capabilities=caps))
    observed.recorder("quotes", "s3").append_failed(FailureKind.PERMANENT)
    observed.recorder("quotes", "backup").seed_last_success(NOW - 3600)

    assert sample(observed, "uploader_batches_cut_total", stream="orders") == 2
    assert sample(observed, "uploader_fetches_cut_total", stream="orders") == 20
    assert sample(observed, "uploader_matches_cut_total", stream="orders") == 7
    assert sample(observed, "uploader_quarantined_bytes_total", stream="orders") == 19
    assert sample(observed, "uploader_batches_cut_total", stream="quotes") == 0
    backup = {"stream": "orders", "destination": "backup"}
    assert sample(observed, "uploader_fetches_uploaded_total", **backup) == 10
    assert sample(observed, "uploader_matches_uploaded_total", **backup) == 4
    assert sample(observed, "uploader_append_retried_writes_total", **backup) == 2
    assert sample(observed, "uploader_append_sent_bytes_total", **backup) == 500
    assert sample(observed, "uploader_append_duration_seconds_count", **backup, path="tail") == 1
    assert sample(observed, "uploader_last_success_timestamp_seconds", **backup) == NOW
    assert sample(observed, "uploader_store_capability", **backup, capability="range_copy") == 1
    assert sample(observed, "uploader_store_capabilities_probed_timestamp_seconds", **backup) == NOW - 60
    assert sample(observed, "uploader_fetches_uploaded_total", stream="orders", destination="s3") == 0
    assert sample(observed, "uploader_store_capability", stream="orders", destination="s3",
                  capability="range_copy") is None  # present once that store has been used
    failed = {"stream": "quotes", "destination": "s3"}
    assert sample(observed, "uploader_append_failures_total", **failed, kind="permanent") == 1
    assert sample(observed, "uploader_append_attempts_total", **failed) == 1
    assert sample(observed, "uploader_append_failures_total", stream="quotes", destination="backup",
                  kind="permanent") == 0
    assert sample(observed, "uploader_last_success_timestamp_seconds", stream="quotes",
                  destination="backup") == NOW - 3600


def test_day_gauges_keep_the_two_latest_days_of_each_destination(observed):
    """Each (stream, destination) reports the counters of its own two latest days written."""
    s3 = observed.recorder("orders", "s3")
    for n in (8, 9, 10):
        s3.day_document(date(2025, 7, n), {"total-uploads": str(n), "total-fetches": "100", "total-matches": "7"})
    observed.recorder("orders", "backup").day_closed(
        CloseReport(date(2025, 7, 8), {"total-uploads": "3", "closed": "true"}))
    on_s3 = {"stream": "orders", "destination": "s3"}
    assert sample(observed, "uploader_day_uploads", **on_s3, day="2025-07-08") is None
    assert sample(observed, "uploader_day_uploads", **on_s3, day="2025-07-09") == 9
    assert sample(observed, "uploader_day_uploads", **on_s3, day="2025-07-10") == 10
    assert sample(observed, "uploader_day_closed", **on_s3, day="2025-07-10") == 0
    on_backup = {"stream": "orders", "destination": "backup"}
    assert sample(observed, "uploader_day_uploads", **on_backup, day="2025-07-08") == 3
    assert sample(observed, "uploader_day_closed", **on_backup, day="2025-07-08") == 1
    assert sample(observed, "uploader_day_uploads", stream="quotes", destination="s3", day="2025-07-10") is None


def test_scrape_reports_each_queue_each_zone_and_each_stream_trouble(fake, observed):
    """Spool gauges per destination from its own queue, today's start per stream in its own zone,
    the closed watermark per destination, and the trouble gauge per stream."""
    fake.queues["orders", "s3"].add("1.json", 100, age_s=30)
    fake.queues["orders", "s3"].add("2.json", 50, age_s=10)
    fake.queues["quotes", "backup"].add("1.json", 7, age_s=5)
    fake.closed["orders", "backup"] = date(2025, 7, 9)
    fake.trouble["quotes"] = "cannot read data/quotes.json: Permission denied"

    def spool(stream: str, destination: str) -> tuple[float | None, ...]:
        pair = {"stream": stream, "destination": destination}
        return tuple(sample(observed, f"uploader_spool_{n}", **pair) for n in ("batches", "bytes",
                                                                              "oldest_batch_age_seconds"))

    assert spool("orders", "s3") == (2, 150, 30)
    assert spool("orders", "backup") == (0, 0, 0)
    assert spool("quotes", "backup") == (1, 7, 5)
    assert sample(observed, "uploader_today_start_timestamp_seconds", stream="orders") == \
        NY.localize(datetime(2025, 7, 10)).timestamp()
    assert sample(observed, "uploader_today_start_timestamp_seconds", stream="quotes") == \
        TOKYO.localize(datetime(2025, 7, 11)).timestamp()
    assert sample(observed, "uploader_days_closed_through_timestamp_seconds", stream="orders",
                  destination="backup") == NY.localize(datetime(2025, 7, 10)).timestamp()
    assert sample(observed, "uploader_days_closed_through_timestamp_seconds", stream="orders",
                  destination="s3") is None  # nothing known closed yet
    assert sample(observed, "uploader_stream_trouble", stream="quotes") == 1
    assert sample(observed, "uploader_stream_trouble", stream="orders") == 0
    fake.trouble["quotes"] = None
    assert sample(observed, "uploader_stream_trouble", stream="quotes") == 0


def test_every_uploader_series_names_its_stream(observed):
    """In the exposition every uploader_* series carries stream (and destination where it is per
    destination), but for the build info."""
    text = generate_latest(observed.registry).decode()
    per_stream = {"uploader_fetches_cut_total", "uploader_matches_cut_total", "uploader_batches_cut_total",
                  "uploader_quarantined_records_total", "uploader_quarantined_bytes_total",
                  "uploader_today_start_timestamp_seconds", "uploader_stream_trouble"}
    seen = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith("uploader_") or s.name == "uploader_build_info":
                continue
            seen.add(s.name)
            assert "stream" in s.labels, s
            assert ("destination" in s.labels) == (s.name not in per_stream), s
    assert per_stream <= seen
    assert {"uploader_spool_batches", "uploader_last_success_timestamp_seconds",
            "uploader_append_duration_seconds_bucket"} <= seen


def test_a_scrape_lists_each_destination_queue_once(fake, observed):
    """One listing per destination's queue per scrape, however many gauges come from it."""
    generate_latest(observed.registry)
    assert {key: q.listings for key, q in fake.queues.items()} == dict.fromkeys(PAIRS, 1)


def test_health_is_none_while_every_stream_and_destination_is_well(fake, observed):
    """Running, workers alive, no trouble, batches younger than the bound: healthy."""
    fake.queues["quotes", "s3"].add("1.json", 10, age_s=899)
    assert observed.health() is None


def test_health_before_observing_or_while_stopping_says_not_running(fake):
    """Not observed yet, or not running: the one reason is that the service does not run."""
    metrics = Metrics(clock=lambda: NOW)
    assert metrics.health() == "service not running (starting or stopping)"
    fake.running = False
    fake.trouble["orders"] = "cannot read data/orders.json: Permission denied"
    metrics.observe(fake.view())
    assert metrics.health() == "service not running (starting or stopping)"


def test_health_names_every_stream_and_destination_in_trouble_on_one_line(fake, observed):
    """A stopped worker, a stale batch and a stream's trouble each name their stream (and
    destination), joined in one line; the well ones are not mentioned."""
    fake.workers["orders", "backup"] = False
    fake.queues["quotes", "s3"].add("1.json", 10, age_s=1800)
    fake.trouble["quotes"] = "cannot read data/quotes.json: Permission denied"
    assert observed.health() == (
        "stream orders destination backup: upload worker stopped; "
        "stream quotes: cannot read data/quotes.json: Permission denied; "
        "stream quotes destination s3: oldest pending batch is 1800s old (limit 900s): "
        "uploads are not getting through")


def test_unreadable_queue_leaves_out_its_gauges_and_health_names_it(fake, observed):
    """A queue whose listing fails: the scrape goes on without its spool gauges, /healthz names it."""
    fake.queues["quotes", "backup"].error = PermissionError(13, "Permission denied", "/spool/quotes/batches")
    fake.queues["orders", "s3"].add("1.json", 10, age_s=1)
    text = generate_latest(observed.registry).decode()
    assert 'uploader_spool_batches{destination="backup",stream="quotes"}' not in text
    assert sample(observed, "uploader_spool_batches", stream="orders", destination="s3") == 1
    assert sample(observed, "uploader_stream_trouble", stream="quotes") == 0
    assert observed.health() == \
        "stream quotes destination backup: spool unreadable: Permission denied (/spool/quotes/batches)"


def test_a_view_that_raises_costs_only_what_it_would_have_given(fake, observed, caplog):
    """A callback of the view that raises: its gauge is left out (trouble counts as trouble), the
    rest of the scrape goes out, logged once however often it is scraped."""
    def no_closed_through() -> date | None:
        raise RuntimeError("boom")

    def no_trouble() -> str | None:
        raise RuntimeError("bad")

    view = fake.view()
    s3 = DestinationView("s3", fake.queues["orders", "s3"], no_closed_through, lambda: True)
    streams = [StreamView("orders", NY, view.streams[0].today, [s3], no_trouble), view.streams[1]]
    observed.observe(ServiceView(streams, view.running, view.max_pending_age_s))
    with caplog.at_level(logging.WARNING, logger="uploader.metrics.scrape"):
        generate_latest(observed.registry)
        generate_latest(observed.registry)
    assert sample(observed, "uploader_days_closed_through_timestamp_seconds", stream="orders",
                  destination="s3") is None
    assert sample(observed, "uploader_spool_batches", stream="orders", destination="s3") == 0
    assert sample(observed, "uploader_stream_trouble", stream="orders") == 1
    assert sample(observed, "uploader_stream_trouble", stream="quotes") == 0
    assert [r.getMessage().split(" error=")[0] for r in caplog.records] == [
        "metrics_read_failed stream=orders destination=- what=trouble",
        "metrics_read_failed stream=orders destination=s3 what=closed_through"]
    assert observed.health() == "stream orders: state unreadable: RuntimeError('bad')"


# -- the real service ---------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_and_healthz_of_a_real_run_through_an_outage(tmp_path, s3_server, bucket, unused_port):
    """35 fetches across an outage: /metrics shows the failures, then 30 fetches uploaded and an empty
    spool after the drain; /healthz is 503 while a batch waits past its bound, 200 after."""
    port = unused_port
    ledger_path = tmp_path / "ledger.jsonl"
    with FaultProxy((s3_server.host, s3_server.port)) as proxy:
        config = write_config(tmp_path, s3=(proxy.url, bucket),
                              metrics=metrics_config(port, healthz_max_pending_age_s=2))
        proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: healthz(port) == (200, "ok\n"), timeout=30, what="the service up and healthy")
            simulate(config, 15, ledger_path)
            wait_for(lambda: value(scrape(port), "uploader_batches_uploaded_total", **SD) == 1, timeout=30,
                     what="the first batch uploaded")

            proxy.mode = "reset"
            ledger = simulate(config, 20, ledger_path)
            wait_for(lambda: (m := scrape(port)) and value(m, "uploader_spool_batches", **SD) == 2
                     and (value(m, "uploader_append_failures_total", **SD, kind="transient") or 0) > 0,
                     timeout=30, what="two batches spooled and failing during the outage")
            _, reason = wait_for(lambda: (h := healthz(port))[0] == 503 and h, timeout=30,
                                      what="/healthz to turn 503")
            assert reason.startswith("stream all_api destination default: oldest pending batch is ")
            assert reason.count("\n") == 1
            during = scrape(port)
            assert value(during, "uploader_spool_oldest_batch_age_seconds", **SD) >= 2
            assert value(during, "uploader_spool_bytes", **SD) > 0
            assert value(during, "uploader_fetches_uploaded_total", **SD) == 10

            back_at = time.time()
            proxy.mode = "pass"
            wait_for(lambda: (m := scrape(port)) and value(m, "uploader_spool_batches", **SD) == 0
                     and value(m, "uploader_fetches_uploaded_total", **SD) == 30, timeout=60, what="the spool drained")
            wait_for(lambda: healthz(port) == (200, "ok\n"), timeout=30, what="/healthz back to 200")
            day = ledger[0]["day"]
            wait_for(lambda: value(scrape(port), "uploader_day_fetches", **SD, day=day) == 30, timeout=30,
                     what="the day's counters read back")
            final = scrape(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    matches = sum(r["matches"] for r in ledger[:30])
    for what, labels in (("cut", S), ("uploaded", SD)):
        assert value(final, f"uploader_fetches_{what}_total", **labels) == 30
        assert value(final, f"uploader_batches_{what}_total", **labels) == 3
        assert value(final, f"uploader_matches_{what}_total", **labels) == matches
    assert value(final, "uploader_quarantined_records_total", **S) == 0
    failures = {k: value(final, "uploader_append_failures_total", **SD, kind=k) for k in FAILURE_KINDS}
    assert failures["transient"] > 0 and failures["permanent"] == 0 and failures["conflict"] == 0
    by_path = {p: value(final, "uploader_append_duration_seconds_count", **SD, path=p) for p in APPEND_PATHS}
    assert by_path["new"] == 1 and by_path["rewrite"] >= 1 and by_path["tail"] == 0  # a small day is rewritten
    assert value(final, "uploader_append_attempts_total", **SD) == sum(by_path.values()) + sum(failures.values())
    assert value(final, "uploader_append_sent_bytes_total", **SD) > 0
    assert value(final, "uploader_append_received_bytes_total", **SD) is not None
    assert value(final, "uploader_spool_batches", **SD) == 0 and value(final, "uploader_spool_bytes", **SD) == 0
    assert value(final, "uploader_spool_oldest_batch_age_seconds", **SD) == 0
    assert back_at <= value(final, "uploader_last_success_timestamp_seconds", **SD) <= time.time()
    assert value(final, "uploader_stream_trouble", **S) == 0
    assert value(final, "uploader_day_uploads", **SD, day=day) == 3
    assert value(final, "uploader_day_matches", **SD, day=day) == matches
    assert value(final, "uploader_day_closed", **SD, day=day) == 0
    assert value(final, "uploader_store_capabilities_probed", **SD) == 1
    assert {n for n in CAPABILITY_NAMES
            if value(final, "uploader_store_capability", **SD, capability=n) is not None} == set(CAPABILITY_NAMES)
    # Both servers copy ranges.
    assert value(final, "uploader_store_capability", **SD, capability="range_copy") == 1


def test_closing_yesterday_moves_the_closed_watermark_to_today(tmp_path, unused_port):
    """Across midnight the closed-through watermark falls behind today's start until yesterday is
    closed, then catches up; garbage in the file counts as quarantined."""
    config = load_config(write_config(tmp_path, metrics=metrics_config(unused_port)))
    config.watch.file.parent.mkdir(parents=True, exist_ok=True)
    config.watch.file.write_bytes(b"not a fetch at all\n")
    writer = FetchWriter(config.watch.file)
    for i in range(12):
        writer.append({}, 2, fetch_id=f"d{i:02d}", now=EVENING + timedelta(seconds=i))
    clock = FakeClock(EVENING)
    service = Service(config, clock=clock)
    service.start()
    try:
        port = unused_port
        assert healthz(port) == (200, "ok\n")
        m = wait_for(lambda: (m := scrape(port)) and value(m, "uploader_batches_uploaded_total", **SD) == 1 and m,
                     what="the first batch uploaded")
        assert value(m, "uploader_quarantined_records_total", **S) == 1
        assert value(m, "uploader_quarantined_bytes_total", **S) == len(b"not a fetch at all\n")
        start_of_d = NY.localize(datetime(2025, 7, 10)).timestamp()
        assert value(m, "uploader_today_start_timestamp_seconds", **S) == start_of_d
        assert value(m, "uploader_days_closed_through_timestamp_seconds", **SD) == start_of_d  # D-1: nothing open

        clock.now = NY.localize(datetime(2025, 7, 11, 0, 0, 20))
        m = scrape(port)
        start_of_next = NY.localize(datetime(2025, 7, 11)).timestamp()
        assert value(m, "uploader_today_start_timestamp_seconds", **S) == start_of_next
        assert value(m, "uploader_days_closed_through_timestamp_seconds", **SD) == start_of_d  # D not closed yet

        clock.now = NY.localize(datetime(2025, 7, 11, 0, 0, 31))
        service.close_out()
        m = wait_for(lambda: (m := scrape(port)) and value(m, "uploader_day_closed", **SD, day=D.isoformat()) == 1 and m,
                     what="D closed")
        wait_for(lambda: value(scrape(port), "uploader_days_closed_through_timestamp_seconds", **SD) == start_of_next,
                 what="the watermark at today's start")
        assert value(m, "uploader_day_fetches", **SD, day=D.isoformat()) == 12
        assert value(m, "uploader_fetches_cut_total", **S) == 12 and value(m, "uploader_batches_cut_total", **S) == 2
    finally:
        service.stop()
    assert healthz(unused_port) == (0, "not answering")  # the server went with the service


def test_metrics_port_in_use_refuses_the_start_in_one_line(tmp_path, unused_port):
    """`run` with metrics.listen on a port something else listens on: exit 2, one line naming the key."""
    config = write_config(tmp_path, metrics=metrics_config(unused_port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", unused_port))
        taken.listen()
        res = run_uploader("run", "--config", str(config))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"uploader: config metrics.listen: cannot listen on 127.0.0.1:{unused_port}")
    assert "in use" in lines[0]
    status = run_uploader("status", "--json", "--config", str(config))
    assert json.loads(status.stdout)["service_running"] is False  # the spool lock went with it


@pytest.mark.parametrize("listen", ["0.0.0.0:{port}", "[::]:{port}", "192.0.2.10:{port}", "example.com:{port}"])
def test_non_loopback_metrics_need_the_opt_in(tmp_path, unused_port, listen):
    """A listen address beyond loopback is refused at start (exit 2, one line) unless allow_remote = true."""
    address = listen.format(port=unused_port)
    config = write_config(tmp_path, metrics={"listen": address})
    res = run_uploader("run", "--config", str(config))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"uploader: config metrics.listen: {address} would serve"), \
        res.stderr
    assert "metrics.allow_remote = true" in lines[0]
    opted_in = load_config(write_config(tmp_path, metrics={"listen": address, "allow_remote": True}))
    assert opted_in.metrics.listen == address and opted_in.metrics.port == unused_port


@pytest.mark.parametrize(("metrics", "expect"), [
    ({"listen": "9464"}, "metrics.listen: not an address to listen on"),
    ({"listen": "127.0.0.1"}, "metrics.listen: not an address to listen on"),
    ({"listen": "127.0.0.1:99999"}, "metrics.listen: not an address to listen on"),
    ({"listen": "127.0.0.1:9464/metrics"}, "metrics.listen: not an address to listen on"),
    ({"listen": 9464}, "metrics.listen: must be a string"),
    ({"allow_remote": "yes"}, "metrics.allow_remote: must be true or false"),
    ({"healthz_max_pending_age_s": 0}, "metrics.healthz_max_pending_age_s: must be greater than 0"),
    ({"port": 9464}, "metrics.port: unknown key"),
])
def test_bad_metrics_config_is_refused_naming_the_key(tmp_path, metrics, expect):
    """Bad [metrics] values are refused at load, the message naming the key."""
    with pytest.raises(ConfigError, match=expect):
        load_config(write_config(tmp_path, metrics=metrics))


def test_metrics_defaults_and_off(tmp_path):
    """Without a [metrics] table `run` serves on 127.0.0.1:9464 with a 900 s bound; listen = "" is off."""
    path = tmp_path / "config.toml"
    path.write_text('[watch]\nfile = "f.json"\n')
    default = load_config(path).metrics
    assert (default.enabled, default.host, default.port, default.healthz_max_pending_age_s) == \
        (True, "127.0.0.1", 9464, 900.0)
    assert not load_config(write_config(tmp_path, metrics={"listen": ""})).metrics.enabled
