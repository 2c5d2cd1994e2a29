"""Many streams, each mirrored to two destinations, in one service, on Ceph RGW and moto.

Every fetch of every stream lands exactly once in every destination; a destination that is down
holds back only its own uploads (the stream's other destination and the other streams go on),
keeps the stream's batches spooled until it has them, and catches up alone when it returns.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import (
    FakeClock,
    build_batch,
    healthz,
    make_s3_store,
    scrape,
    stored_days,
    uploader,
    value,
    wait_for,
    write_streams_config,
)
from rig.faultproxy import FaultProxy

from uploader.config import load_config
from uploader.fetchlog import FetchWriter
from uploader.service import Service


def fetch_ids(server: Any, bucket: str, prefix: str) -> Counter[str]:
    """How many times each fetch id is stored in the day documents under ``prefix``."""
    found: Counter[str] = Counter()
    for day in stored_days(server.admin, bucket, prefix):
        assert not day.problems, day.problems
        found.update(day.fetch_ids)
    return found


def write(config_dir: Path, stream: str, n: int) -> list[str]:
    writer = FetchWriter(config_dir / "data" / f"{stream}.json")
    return [writer.append({"stream": stream, "i": i}, i % 4) for i in range(n)]


def spooled(config_dir: Path, stream: str, folder: str = "batches") -> list[str]:
    return sorted(p.name for p in (config_dir / "data" / "spool" / stream / folder).iterdir())


def test_two_streams_each_mirrored_store_every_fetch_once_everywhere(tmp_path, ceph_server, moto_server):
    """Streams a and b, each on Ceph RGW and on moto: all four documents hold every fetch of
    their stream once, and each batch leaves the spool only once both destinations have it."""
    ceph_bucket, moto_bucket = ceph_server.new_bucket(), moto_server.new_bucket()
    path = write_streams_config(
        tmp_path, {"a": ["ceph", "moto"], "b": ["ceph", "moto"]},
        {"ceph": {"backend": "s3", "endpoint": ceph_server.endpoint, "bucket": ceph_bucket},
         "moto": {"backend": "s3", "endpoint": moto_server.endpoint, "bucket": moto_bucket}},
        streams__a={"batch_size": 5}, streams__b={"batch_size": 4})
    service = Service(load_config(path))
    service.start()
    try:
        written = {"a": write(tmp_path, "a", 35), "b": write(tmp_path, "b", 24)}
        for stream, ids in written.items():
            for server, bucket in ((ceph_server, ceph_bucket), (moto_server, moto_bucket)):
                wait_for(lambda: sum(fetch_ids(server, bucket, f"{stream}_rotating_logs").values()) >= len(ids),
                         timeout=30, what=f"stream {stream} in {server.name}")
                assert fetch_ids(server, bucket, f"{stream}_rotating_logs") == Counter(ids)
        wait_for(lambda: not spooled(tmp_path, "a") and not spooled(tmp_path, "b"), what="spools emptied")
    finally:
        service.stop()
    assert len(spooled(tmp_path, "a", "archive")) == 7 and len(spooled(tmp_path, "b", "archive")) == 6
    # Marks go with the batch: nothing is left to say who has what.
    for stream in ("a", "b"):
        spool = tmp_path / "data" / "spool" / stream
        assert not list((spool / "delivered").iterdir()) and not list((spool / "destinations/moto/delivered").iterdir())
        assert json.loads((spool / "destinations/moto/status.json").read_text())["last_success"]["batches"] > 0


@pytest.fixture
def mirror_down(tmp_path, ceph_server, moto_server):
    """Stream a on Ceph RGW and on a mirror (moto behind a proxy that can go down); stream b on
    Ceph RGW and a moto backup of its own."""
    buckets = {"ceph": ceph_server.new_bucket(), "mirror": moto_server.new_bucket(), "backup": moto_server.new_bucket()}
    with FaultProxy((moto_server.host, moto_server.port)) as proxy:
        path = write_streams_config(
            tmp_path, {"a": ["ceph", "mirror"], "b": ["ceph", "backup"]},
            {"ceph": {"backend": "s3", "endpoint": ceph_server.endpoint, "bucket": buckets["ceph"]},
             "mirror": {"backend": "s3", "endpoint": proxy.url, "bucket": buckets["mirror"]},
             "backup": {"backend": "s3", "endpoint": moto_server.endpoint, "bucket": buckets["backup"]}},
            streams__a={"batch_size": 5}, streams__b={"batch_size": 5})
        yield load_config(path), proxy, buckets


def test_a_destination_down_holds_back_only_itself_and_catches_up_alone(tmp_path, mirror_down, ceph_server,
                                                                         moto_server):
    config, proxy, buckets = mirror_down
    service = Service(config)
    service.start()
    try:
        proxy.go_down()
        written = {"a": write(tmp_path, "a", 20), "b": write(tmp_path, "b", 20)}
        healthy = [(ceph_server, buckets["ceph"], "a"), (ceph_server, buckets["ceph"], "b"),
                   (moto_server, buckets["backup"], "b")]
        for server, bucket, stream in healthy:
            wait_for(lambda: fetch_ids(server, bucket, f"{stream}_rotating_logs") == Counter(written[stream]),
                     timeout=20, what=f"stream {stream} in {bucket} while the mirror is down")
        assert not fetch_ids(moto_server, buckets["mirror"], "a_rotating_logs")
        # The mirror has none of a's batches, so they all wait in a's spool; b's spool is empty.
        assert len(spooled(tmp_path, "a")) == 4 and not spooled(tmp_path, "b")
        mirror_state = tmp_path / "data" / "spool" / "a" / "destinations" / "mirror"
        status = json.loads((mirror_state / "status.json").read_text())
        assert status["last_error"] and not status["last_error"]["permanent"]
        assert len(list((tmp_path / "data" / "spool" / "a" / "delivered").iterdir())) == 4

        proxy.come_up()
        wait_for(lambda: fetch_ids(moto_server, buckets["mirror"], "a_rotating_logs") == Counter(written["a"]),
                 timeout=30, what="the mirror catching up")
        wait_for(lambda: not spooled(tmp_path, "a"), what="a's batches archived once both have them")
    finally:
        proxy.come_up()
        service.stop()
    # Nothing was stored twice anywhere while the mirror came back.
    for server, bucket, stream in [*healthy, (moto_server, buckets["mirror"], "a")]:
        assert fetch_ids(server, bucket, f"{stream}_rotating_logs") == Counter(written[stream])
    assert len(spooled(tmp_path, "a", "archive")) == 4


def test_a_destination_uses_the_keys_of_its_own_profile(tmp_path, monkeypatch, ceph_server):
    """Two providers need two key pairs: a destination's `profile` picks its keys from boto3's
    shared files, over the environment's; a profile that is not there is one clear refusal."""
    from uploader.config import config_from_dict
    from uploader.errors import StoreRejected
    from uploader.store import open_store

    creds = tmp_path / "credentials"
    creds.write_text("[other-provider]\naws_access_key_id = obviously-fake-key-id\n"
                     "aws_secret_access_key = fake-secret-not-a-real-one\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    bucket = ceph_server.new_bucket()

    def store(profile: str | None):  # noqa: ANN202
        s3 = {"endpoint_url": ceph_server.endpoint, "bucket": bucket, "region": "us-east-1",
              "addressing_style": "path", "max_attempts": 1}
        if profile:
            s3["profile"] = profile
        config = config_from_dict({"storage": {"backend": "s3", "s3": s3}}, base=tmp_path)
        return open_store(config.storage)

    store(None).put("logs/x", b"the environment's keys", {})  # the suite's keys, from the environment
    with pytest.raises(StoreRejected, match="InvalidAccessKeyId|credentials|refused"):
        store("other-provider").put("logs/y", b"the profile's keys, which Ceph does not know", {})
    with pytest.raises(StoreRejected, match="profile 'missing' is not in"):
        store("missing").put("logs/z", b"no such profile", {})


def test_each_log_line_of_a_service_thread_names_its_stream_and_destination():
    """The modules that log know no stream: the line names the one its thread works for."""
    import io
    import logging
    import threading

    from uploader.logs import NameTheStream
    from uploader.threads import thread_name, working_for

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(NameTheStream())
    log = logging.getLogger("test.streams.names")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        for name in (thread_name("upload-worker", "odds", "backup"), thread_name("watcher", "odds"), "other"):
            t = threading.Thread(target=log.info, args=("upload day=%s", "2026-11-29"), name=name)
            t.start()
            t.join()
        log.info("close_out stream=odds through=2026-11-28")
        with working_for("odds"):
            log.info("cut day=%s", "2026-11-28")  # the stream's start-up, on the main thread
    finally:
        log.removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "upload day=2026-11-29 stream=odds destination=backup",
        "upload day=2026-11-29 stream=odds",
        "upload day=2026-11-29",
        "close_out stream=odds through=2026-11-28",
        "cut day=2026-11-28 stream=odds",
    ]


def test_a_gone_bucket_and_an_unreadable_file_trouble_only_their_own_stream(tmp_path, moto_server, unused_port):
    """Stream a's bucket is deleted, stream c's file cannot be opened (a link to itself): stream b
    uploads on as if nothing happened, and /healthz, /metrics and `status` name a's destination
    and c, each with its reason."""
    gone = moto_server.new_bucket()
    path = write_streams_config(
        tmp_path, {"a": ["gone"], "b": ["local"], "c": ["other"]},
        {"gone": {"backend": "s3", "endpoint": moto_server.endpoint, "bucket": gone},
         "local": {"backend": "directory", "path": "data/bucket-b"},
         "other": {"backend": "directory", "path": "data/bucket-c"}},
        metrics={"listen": f"127.0.0.1:{unused_port}", "healthz_max_pending_age_s": 1},
        streams__a={"batch_size": 2}, streams__b={"batch_size": 2}, streams__c={"batch_size": 2})
    config = load_config(path)
    moto_server.admin.delete_bucket(Bucket=gone)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "c.json").symlink_to("c.json")
    service = Service(config)
    service.start()
    try:
        write(tmp_path, "a", 4)
        b_ids = write(tmp_path, "b", 10)
        folder = tmp_path / "data" / "bucket-b" / "b_rotating_logs"
        wait_for(lambda: sum(json.loads(p.read_bytes())["daily_metadata"]["total_fetches_today"]
                             for p in folder.glob("*.json")) == 10 if folder.is_dir() else False,
                 what="stream b uploaded while a and c are in trouble")
        status, reason = wait_for(lambda: (h := healthz(unused_port))[0] == 503 and "stream c" in h[1] and
                                  "stream a destination gone" in h[1] and h, timeout=20, what="/healthz naming a and c")
        assert "Too many levels of symbolic links" in reason and "oldest pending batch" in reason
        assert "stream b" not in reason
        samples = scrape(unused_port)
        assert value(samples, "uploader_stream_trouble", stream="c") == 1
        assert value(samples, "uploader_stream_trouble", stream="b") == 0
        assert value(samples, "uploader_append_failures_total", stream="a", destination="gone", kind="permanent") >= 1
        assert value(samples, "uploader_batches_uploaded_total", stream="b", destination="local") == 5
        assert len(spooled(tmp_path, "a")) == 2  # kept, retried with backoff
        status = uploader("status", "--config", str(path))
        assert status.returncode == 1 and "PROBLEMS" in status.stdout, status.stdout + status.stderr
        problems = [line for line in status.stdout.splitlines() if line.startswith("PROBLEMS: ")]
        assert problems[0] == "PROBLEMS: stream a, destination gone: 2 batch(es) being retried"
        assert problems[1].startswith(f"PROBLEMS: stream c, destination other: {tmp_path}/data/c.json cannot be read: ")
        assert len(problems) == 2 and f"file           {tmp_path}/data/c.json: cannot be read (Too many levels " \
            "of symbolic links)" in status.stdout
    finally:
        service.stop()
    assert sorted(b_ids) == sorted(json.loads(p.read_bytes())["uploads"][i]["fetch_data"][j]["FETCH_HEADER"]["fetch_id"]
                                   for p in folder.glob("*.json") for i in range(5) for j in range(2))


def test_a_failing_destination_backs_off_as_a_whole_not_once_per_cut(tmp_path, moto_server):
    """Cuts keep waking a destination's worker while its store is down. Each batch has its own
    backoff, but a batch cut meanwhile has none yet: the destination's own backoff keeps it from
    being tried at every cut. Nothing is tried before that backoff ends; then one append (which
    fails again and doubles it); once the store answers, everything goes in one append and the
    backoff is gone."""
    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.publish.uploader import Uploader

    clock = FakeClock(datetime(2026, 11, 29, 15, 0, tzinfo=pytz.utc))
    spool = Spool(tmp_path / "spool")
    with FaultProxy((moto_server.host, moto_server.port)) as proxy:
        uploader = Uploader(spool, make_s3_store(proxy.url, moto_server.new_bucket(), max_attempts=1), "logs",
                            pytz.utc, StatusFile(tmp_path / "status.json"), max_backoff_s=600, clock=clock,
                            rand=lambda: 0.0)

        def cut(seq: int) -> None:
            spool.commit([spool.stage_batch(build_batch(seq, day=date(2026, 11, 29)))])

        proxy.go_down()
        cut(1)
        assert uploader.drain().failed == 1 and uploader.resting()
        for seq in range(2, 12):  # ten cuts, each waking the worker, within the backoff (0.5 s)
            cut(seq)
            assert uploader.drain().failed == 0, "a batch cut during the backoff was tried"
        assert uploader.next_due() == clock.now.timestamp() + 0.5
        clock.now += timedelta(seconds=0.5)
        assert uploader.drain().failed == 11  # one append of every batch due, failing again
        assert uploader.next_due() == clock.now.timestamp() + 1.0  # doubled
        proxy.come_up()
        clock.now += timedelta(seconds=1.0)
        assert uploader.drain().batches == 11 and not uploader.resting()
        cut(12)
        assert uploader.drain().batches == 1  # no backoff left after a success


def test_a_store_down_from_the_start_is_a_warning_at_its_first_failed_upload(tmp_path, caplog, unused_port):
    """The start's tidy meets the dead store first and says so at INFO; the first failed upload
    is still a WARNING, not silenced for a minute as the same message."""
    import logging

    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.publish.uploader import Uploader

    spool = Spool(tmp_path / "spool")
    uploader = Uploader(spool, make_s3_store(f"http://127.0.0.1:{unused_port}", "nowhere", max_attempts=1), "logs",
                        pytz.utc, StatusFile(tmp_path / "status.json"), 600)
    spool.commit([spool.stage_batch(build_batch(1, day=date(2026, 11, 29)))])
    with caplog.at_level(logging.INFO, logger="uploader.publish.uploader"):
        assert not uploader.tidy(writer_started=True)
        assert uploader.drain().failed == 1
    said = [(r.levelno, r.getMessage().split()[0]) for r in caplog.records]
    assert said == [(logging.INFO, "leftovers_kept"), (logging.WARNING, "upload_failed")]
