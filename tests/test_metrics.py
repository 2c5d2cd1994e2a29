"""Prometheus /metrics and /healthz of `uploader run`: a real process through an S3 outage on moto
and Ceph RGW, the in-process service across midnight, and the [metrics] config refused in one line."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from helpers import NY, FakeClock, wait_for, write_config
from prometheus_client.parser import text_string_to_metric_families
from rig.faultproxy import FaultProxy

from uploader.config import load_config
from uploader.errors import ConfigError
from uploader.fetchlog import FetchWriter
from uploader.metrics import CAPABILITY_NAMES
from uploader.service import Service

REPO = Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "scripts" / "simulate_pipeline.py"
D = date(2025, 7, 10)
EVENING = NY.localize(datetime(2025, 7, 10, 23, 50))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample /metrics serves, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, "not answering"


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
            wait_for(lambda: value(scrape(port), "uploader_batches_uploaded_total") == 1, timeout=30,
                     what="the first batch uploaded")

            proxy.mode = "reset"
            ledger = simulate(config, 20, ledger_path)
            wait_for(lambda: (m := scrape(port)) and value(m, "uploader_spool_batches") == 2
                     and (value(m, "uploader_append_failures_total", kind="transient") or 0) > 0,
                     timeout=30, what="two batches spooled and failing during the outage")
            _, reason = wait_for(lambda: (h := healthz(port))[0] == 503 and h, timeout=30,
                                      what="/healthz to turn 503")
            assert "oldest pending batch" in reason and reason.count("\n") == 1
            during = scrape(port)
            assert value(during, "uploader_spool_oldest_batch_age_seconds") >= 2
            assert value(during, "uploader_spool_bytes") > 0
            assert value(during, "uploader_fetches_uploaded_total") == 10

            back_at = time.time()
            proxy.mode = "pass"
            wait_for(lambda: (m := scrape(port)) and value(m, "uploader_spool_batches") == 0
                     and value(m, "uploader_fetches_uploaded_total") == 30, timeout=60, what="the spool drained")
            wait_for(lambda: healthz(port) == (200, "ok\n"), timeout=30, what="/healthz back to 200")
            day = ledger[0]["day"]
            wait_for(lambda: value(scrape(port), "uploader_day_fetches", day=day) == 30, timeout=30,
                     what="the day's counters read back")
            final = scrape(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    matches = sum(r["matches"] for r in ledger[:30])
    for what in ("cut", "uploaded"):
        assert value(final, f"uploader_fetches_{what}_total") == 30
        assert value(final, f"uploader_batches_{what}_total") == 3
        assert value(final, f"uploader_matches_{what}_total") == matches
    assert value(final, "uploader_quarantined_records_total") == 0
    failures = {k: value(final, "uploader_append_failures_total", kind=k) for k in ("transient", "permanent", "conflict")}
    assert failures["transient"] > 0 and failures["permanent"] == 0 and failures["conflict"] == 0
    by_path = {p: value(final, "uploader_append_duration_seconds_count", path=p) for p in ("new", "rewrite", "tail")}
    assert by_path["new"] == 1 and by_path["rewrite"] >= 1 and by_path["tail"] == 0  # a small day is rewritten
    assert value(final, "uploader_append_attempts_total") == sum(by_path.values()) + sum(failures.values())
    assert value(final, "uploader_append_sent_bytes_total") > 0
    assert value(final, "uploader_append_received_bytes_total") is not None
    assert value(final, "uploader_spool_batches") == 0 and value(final, "uploader_spool_bytes") == 0
    assert value(final, "uploader_spool_oldest_batch_age_seconds") == 0
    assert back_at <= value(final, "uploader_last_success_timestamp_seconds") <= time.time()
    assert value(final, "uploader_day_uploads", day=day) == 3
    assert value(final, "uploader_day_matches", day=day) == matches
    assert value(final, "uploader_day_closed", day=day) == 0
    assert value(final, "uploader_store_capabilities_probed") == 1
    assert {n for n in CAPABILITY_NAMES if value(final, "uploader_store_capability", capability=n) is not None} \
        == set(CAPABILITY_NAMES)
    assert value(final, "uploader_store_capability", capability="range_copy") == 1  # both servers copy ranges


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
        m = wait_for(lambda: (m := scrape(port)) and value(m, "uploader_batches_uploaded_total") == 1 and m,
                     what="the first batch uploaded")
        assert value(m, "uploader_quarantined_records_total") == 1
        assert value(m, "uploader_quarantined_bytes_total") == len(b"not a fetch at all\n")
        start_of_d = NY.localize(datetime(2025, 7, 10)).timestamp()
        assert value(m, "uploader_today_start_timestamp_seconds") == start_of_d
        assert value(m, "uploader_days_closed_through_timestamp_seconds") == start_of_d  # D-1: nothing open

        clock.now = NY.localize(datetime(2025, 7, 11, 0, 0, 20))
        m = scrape(port)
        start_of_next = NY.localize(datetime(2025, 7, 11)).timestamp()
        assert value(m, "uploader_today_start_timestamp_seconds") == start_of_next
        assert value(m, "uploader_days_closed_through_timestamp_seconds") == start_of_d  # D not closed yet

        clock.now = NY.localize(datetime(2025, 7, 11, 0, 0, 31))
        service.close_out()
        m = wait_for(lambda: (m := scrape(port)) and value(m, "uploader_day_closed", day=D.isoformat()) == 1 and m,
                     what="D closed")
        wait_for(lambda: value(scrape(port), "uploader_days_closed_through_timestamp_seconds") == start_of_next,
                 what="the watermark at today's start")
        assert value(m, "uploader_day_fetches", day=D.isoformat()) == 12
        assert value(m, "uploader_fetches_cut_total") == 12 and value(m, "uploader_batches_cut_total") == 2
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
