"""The service in-process, on the directory bucket, moto and Ceph RGW: midnight close-out with an
injected clock, down at midnight, S3 outage."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta

import pytest
import pytz
from helpers import NY, SERVERS, FakeClock, make_s3_store, read_only, wait_for, write_config
from rig.faultproxy import FaultProxy

from uploader import daily
from uploader.config import load_config
from uploader.daily.verifier import verify
from uploader.errors import AlreadyRunning, UploaderError
from uploader.fetchlog import FetchWriter
from uploader.local.spool import Spool
from uploader.service import Service
from uploader.store import Store, open_store

D = date(2025, 7, 10)
EVENING = NY.localize(datetime(2025, 7, 10, 23, 50))


def doc(store: Store, day: date) -> dict:
    data, _ = store.get(daily.day_key("logs", day))
    return json.loads(data)


def fetch_ids(document: dict) -> list[str]:
    return [f["FETCH_HEADER"]["fetch_id"] for u in document["uploads"] for f in u["fetch_data"]]


@pytest.fixture
def backend(request, tmp_path):
    """(config, store) for the directory backend or a real S3 server (moto, Ceph RGW)."""
    if request.param in SERVERS:
        server = request.getfixturevalue(f"{request.param}_server")
        path = write_config(tmp_path, s3=(server.endpoint, server.new_bucket()))
    else:
        path = write_config(tmp_path)
    config = load_config(path)
    return config, open_store(config.storage)


@pytest.mark.parametrize("backend", ["directory", *SERVERS], indirect=True)
def test_midnight_close_out_with_injected_clock(backend):
    """Day D's fetches, a short last batch included, land in D's closed document; D+1's in D+1's."""
    config, store = backend
    clock = FakeClock(EVENING)
    service = Service(config, clock=clock)
    writer = FetchWriter(config.watch.file)
    service.start()
    try:
        for i in range(23):
            writer.append({}, 2, fetch_id=f"d{i:02d}", now=EVENING + timedelta(seconds=i))
        wait_for(lambda: len(fetch_ids(doc(store, D))) == 20 if store.head(daily.day_key("logs", D)) else False,
                 what="two batches of D uploaded")
        after_midnight = NY.localize(datetime(2025, 7, 11, 0, 0, 31))
        for i in range(4):
            writer.append({}, 1, fetch_id=f"e{i}", now=after_midnight + timedelta(seconds=i))
        clock.now = after_midnight + timedelta(seconds=10)
        service.close_out()
        wait_for(lambda: doc(store, D)["daily_metadata"]["closed"], what="D closed")
        d_doc = doc(store, D)
        assert fetch_ids(d_doc) == [f"d{i:02d}" for i in range(23)]
        assert [u["fetches_in_upload"] for u in d_doc["uploads"]] == [10, 10, 3]
        assert d_doc["daily_metadata"]["total_matches_today"] == 46
        for i in range(4, 10):
            writer.append({}, 1, fetch_id=f"e{i}", now=after_midnight + timedelta(seconds=i))
        wait_for(lambda: store.head(daily.day_key("logs", D + timedelta(days=1))), what="D+1 document")
        assert fetch_ids(doc(store, D + timedelta(days=1))) == [f"e{i}" for i in range(10)]
        assert not doc(store, D + timedelta(days=1))["daily_metadata"]["closed"]
    finally:
        service.stop()


@pytest.mark.parametrize("backend", ["directory", *SERVERS], indirect=True)
def test_down_at_midnight_closes_yesterday_on_start(backend):
    """Yesterday's records found in the file at start land in yesterday's document, which is closed."""
    config, store = backend
    writer = FetchWriter(config.watch.file)
    config.watch.file.parent.mkdir(parents=True, exist_ok=True)
    for i in range(7):
        writer.append({}, 3, fetch_id=f"y{i}", now=EVENING + timedelta(seconds=i))
    clock = FakeClock(NY.localize(datetime(2025, 7, 11, 9, 0)))
    service = Service(config, clock=clock)
    service.start()
    try:
        wait_for(lambda: store.head(daily.day_key("logs", D)) and doc(store, D)["daily_metadata"]["closed"],
                 what="yesterday uploaded and closed")
        d_doc = doc(store, D)
        assert fetch_ids(d_doc) == [f"y{i}" for i in range(7)]
        assert d_doc["daily_metadata"]["total_matches_today"] == 21
        assert config.watch.file.read_bytes() == b""
    finally:
        service.stop()


@pytest.mark.parametrize("backend", ["directory"], indirect=True)
def test_second_instance_is_refused(backend):
    """While one service holds the spool, a second one refuses with AlreadyRunning."""
    config, _ = backend
    first = Service(config)
    first.start()
    try:
        with pytest.raises(AlreadyRunning, match="stop the running"):
            Service(config).start()
    finally:
        first.stop()


def test_s3_outage_piles_up_then_drains(tmp_path, s3_server, bucket):
    """With S3 unreachable the service keeps cutting into the spool, then drains all once it is back."""
    with FaultProxy((s3_server.host, s3_server.port)) as proxy:
        config = load_config(write_config(tmp_path, s3=(proxy.url, bucket)))
        store = make_s3_store(s3_server, bucket)  # straight to the server, around the proxy
        now = datetime.now(pytz.utc)
        today = now.astimezone(NY).date()
        service = Service(config)
        writer = FetchWriter(config.watch.file)
        service.start()
        try:
            proxy.mode = "reset"
            for i in range(40):
                writer.append({}, 1, fetch_id=f"o{i:02d}", now=now)
            wait_for(lambda: len(service.spool.pending_batches()) == 4, what="4 batches spooled during the outage")
            wait_for(lambda: service.status.snapshot()["last_error"], what="the failure recorded")
            assert proxy.counts["reset"] > 0
            assert store.head(daily.day_key("logs", today)) is None
            proxy.mode = "pass"
            wait_for(lambda: not service.spool.pending_batches(), timeout=30, what="the spool drained")
            document = doc(store, today)
            assert sorted(fetch_ids(document)) == [f"o{i:02d}" for i in range(40)]
            assert verify(document) == []
        finally:
            service.stop()


def test_a_failed_start_leaves_nothing_running(tmp_path):
    """A start that fails half way (the watch folder cannot be made: a read-only mount) stops the
    upload worker it had started and releases the spool lock; `uploader run` says it in one line."""
    (tmp_path / "ro").mkdir()
    config = load_config(write_config(tmp_path, watch={"file": "ro/data/all_api.json"}))
    service = Service(config)
    with read_only(tmp_path / "ro"):
        with pytest.raises(UploaderError, match="cannot watch .*ro/data: Read-only file system"):
            service.start()
        assert not [t.name for t in threading.enumerate() if t.name.startswith(("upload-worker", "watcher"))]
        with Spool(config.spool.dir).locked("test"):
            pass  # the lock was released
        run = subprocess.run([sys.executable, "-m", "uploader.cli", "run", "--config", str(tmp_path / "config.toml")],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert [line for line in run.stderr.splitlines() if line.startswith("uploader: ")] == [
        f"uploader: cannot watch {tmp_path}/ro/data: Read-only file system. Try: make the folder of watch.file "
        "exist and readable for this user (for inotify limits: sysctl fs.inotify.max_user_watches / "
        "max_user_instances)"]
