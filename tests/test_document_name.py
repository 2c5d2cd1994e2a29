"""Each stream's day documents under its own name (``streams.NAME.document_name``): the keys that
``publish`` and the ``Uploader`` write, and every command that finds a day by its key (`verify D`,
`verify --all`, `export D`, `repair D --dry-run`), on a folder, moto and Ceph RGW; the seed's
``all_api_json_log_{date}.json`` where no name is given; the expiry rule filtering on the name."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import SERVERS, build_batch, uploader, write_config, write_streams_config
from rig.s3servers import S3Server
from test_streams_cli import write_and_cut

from uploader import daily, publish
from uploader.config import Config, load_config
from uploader.local.spool import Spool
from uploader.publish.forms import pad_key
from uploader.publish.status import StatusFile
from uploader.publish.uploader import Uploader
from uploader.store import lifecycle, open_store

DAY = date(2025, 7, 10)
NOW = datetime(2025, 7, 11, 4, 5, tzinfo=pytz.utc)  # after the day, in New York too
NAMES = {"odds": "odds-feed_{date}.json", "ticks": "T2_{date}_ticks.json"}  # ticks: gzip days


@pytest.fixture(params=["directory", *SERVERS])
def destination(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The one destination both streams ship to: a folder, or a fresh bucket on moto or Ceph RGW."""
    if request.param == "directory":
        return {"backend": "directory", "path": "data/bucket"}
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return {"backend": "s3", "endpoint": server.endpoint, "bucket": server.new_bucket()}


def named_streams(tmp_path: Path, destination: dict[str, Any], **more: dict[str, Any]) -> Path:
    """Streams odds (plain days) and ticks (gzip days), each under its own prefix and name."""
    return write_streams_config(tmp_path, {"odds": ["main"], "ticks": ["main"]}, {"main": destination},
                                streams__odds={"document_name": NAMES["odds"]},
                                streams__ticks={"document_name": NAMES["ticks"], "compression": "gzip"}, **more)


def expected_key(prefix: str, name: str, gzip: bool = False) -> str:
    return f"{prefix}/{name.replace('{date}', DAY.isoformat())}" + (".gz" if gzip else "")


def ok(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    done = uploader(*args, "--config", str(config))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done


def test_each_stream_writes_and_finds_its_days_under_its_own_name(tmp_path: Path,
                                                                   destination: dict[str, Any]) -> None:
    """append_batches and close_day write exactly <prefix>/<name with the day> (.json.gz for the
    gzip stream) and nothing else but the padding; verify D, verify --all, export D and
    repair D --dry-run find each stream's day under its name, with no stray object."""
    path = named_streams(tmp_path, destination)
    config = load_config(path)
    keys = {}
    for stream in config.streams:
        storage = stream.destinations[0].storage
        store = open_store(storage)
        key = expected_key(storage.prefix, NAMES[stream.name], gzip=stream.name == "ticks")
        batches = [build_batch(seq, DAY, fetches=3) for seq in (1, 2)]
        appended = publish.append_batches(store, storage.prefix, stream.day.tz, batches, NOW,
                                          compression=storage.compression, name=storage.document_name)
        closed = publish.close_day(store, storage.prefix, stream.day.tz, DAY, NOW,
                                   compression=storage.compression, name=storage.document_name)
        assert (appended.key, closed.key, appended.stored) == (key, key, [b.batch_id for b in batches])
        assert set(store.list(storage.prefix + "/")) - {pad_key(storage.prefix)} == {key}
        assert daily.day_of_key(storage.prefix, key, storage.document_name) == DAY
        keys[stream.name] = key

    one = ok("verify", DAY.isoformat(), config=path).stdout
    for key in keys.values():
        assert f"verify: {key}: 2 uploads, 6 fetches, 30 matches, closed=True" in one
    assert one.count("verify: OK") == 2

    every = ok("verify", "--all", config=path).stdout.splitlines()
    assert every.count(f"{DAY}  OK  2 uploads, 6 fetches, 30 matches, closed") == 2
    assert every.count("verify: 1 day(s), 0 with problems or missing, 0 stray object(s), 0 left open") == 2

    for name in keys:
        export = ok("export", DAY.isoformat(), "--stream", name, config=path)
        assert [json.loads(line)["FETCH_HEADER"]["fetch_id"] for line in export.stdout.splitlines()] == \
            [f"f-{seq}-{i}" for seq in (1, 2) for i in range(3)]
        assert f"export: 6 fetches of 2 uploads of {DAY} written to stdout (jsonl)" in export.stderr

    repair = ok("repair", DAY.isoformat(), "--dry-run", config=path).stdout
    for key in keys.values():
        assert f"repair: {key} is sound; nothing to change" in repair


def uploaded_with(config: Config, stream: str) -> tuple[str, set[str]]:
    """Fetches of DAY written to ``stream``'s file, cut, uploaded and the day closed by the
    uploader `run` and `replay` use; the key of its document and every key under its prefix."""
    write_and_cut(config, stream, 5)
    view = config.view(config.select(stream)[0])
    store = open_store(view.storage)
    shipper = Uploader.for_config(view, Spool(view.spool.dir), store, StatusFile(view.state / "status.json"),
                                  clock=lambda: NOW)
    report = shipper.drain()
    assert (report.batches, report.failed, shipper.close_days([DAY])) == (1, 0, [DAY])
    key = daily.day_key(view.storage.prefix, DAY, name=view.storage.document_name)
    return key, set(store.list(view.storage.prefix + "/"))


def test_without_a_name_all_api_keeps_the_seed_name_and_others_their_own(tmp_path: Path) -> None:
    """A config without [streams] and the stream all_api write the seed's
    all_api_json_log_YYYY-MM-DD.json; another stream without a name writes
    <NAME>_json_log_YYYY-MM-DD.json, and one with a name writes that name, through the Uploader."""
    legacy = load_config(write_config(tmp_path / "legacy"))
    assert uploaded_with(legacy, "all_api") == ("logs/all_api_json_log_2025-07-10.json",
                                                {"logs/all_api_json_log_2025-07-10.json"})

    path = write_streams_config(tmp_path / "streams", {"all_api": ["main"], "odds": ["main"], "ticks": ["main"]},
                                {"main": {"backend": "directory", "path": "data/bucket"}},
                                streams__ticks={"document_name": NAMES["ticks"]})
    config = load_config(path)
    for stream, key in (("all_api", "all_api_rotating_logs/all_api_json_log_2025-07-10.json"),
                        ("odds", "odds_rotating_logs/odds_json_log_2025-07-10.json"),
                        ("ticks", "ticks_rotating_logs/T2_2025-07-10_ticks.json")):
        assert uploaded_with(config, stream) == (key, {key})


def test_a_document_under_another_name_is_stray_to_verify_all(tmp_path: Path) -> None:
    """Under a stream's prefix, a day document named as the seed's (or another stream's) is not
    one of its days: `verify --all` lists it as stray and exits 1; `verify D` reads the stream's own."""
    path = named_streams(tmp_path, {"backend": "directory", "path": "data/bucket"})
    config = load_config(path)
    storage = config.select("odds")[0].destinations[0].storage
    store = open_store(storage)
    publish.append_batches(store, storage.prefix, pytz.utc, [build_batch(1, DAY)], NOW, name=storage.document_name)
    seed_named = daily.day_key(storage.prefix, DAY)
    store.put(seed_named, b"{}", {})
    audit = uploader("verify", "--all", "--stream", "odds", "--config", str(path))
    assert audit.returncode == 1, audit.stdout + audit.stderr
    assert f"stray       {seed_named}  (not a daily document, quarantine or probe object)" in audit.stdout
    assert f"{DAY}  OK  1 uploads, 10 fetches, 50 matches, open" in audit.stdout


def test_the_expiry_rule_filters_on_the_name_before_its_date() -> None:
    """The day documents' rule filters on <prefix>/ and the name up to {date}, under the same ID
    as the seed's rule: a bucket holding the seed name's rules holds ours, the day rule differing,
    and installing replaces it in place."""
    seed = lifecycle.desired_rules("odds_rotating_logs", 30)
    named = lifecycle.desired_rules("odds_rotating_logs", 30, NAMES["odds"])
    assert [r["ID"] for r in named] == [r["ID"] for r in seed]
    assert [r["Filter"]["Prefix"] for r in named] == [
        "odds_rotating_logs/", "odds_rotating_logs/odds-feed_", "odds_rotating_logs/quarantine/"]
    assert seed[1]["Filter"]["Prefix"] == "odds_rotating_logs/all_api_json_log_"
    found = lifecycle.compare(lifecycle.BucketLifecycle(seed), "odds_rotating_logs", 30, NAMES["odds"])
    assert [f.state for f in found.findings] == [lifecycle.RuleState.PRESENT, lifecycle.RuleState.DIFFERS,
                                                 lifecycle.RuleState.PRESENT]
    assert found.other_rules == 0 and found.changed
    merged = lifecycle.merge(lifecycle.BucketLifecycle(seed), "odds_rotating_logs", 30, NAMES["odds"])
    assert merged.rules == named


def test_check_fix_installs_the_named_rule(tmp_path: Path, s3_server: S3Server) -> None:
    """`check --fix` on a stream with a document name installs the expiry rule on that name's
    start, and the server gives it back as sent."""
    bucket = s3_server.new_bucket()
    path = named_streams(tmp_path, {"backend": "s3", "endpoint": s3_server.endpoint, "bucket": bucket},
                         destinations__main={"retention_days": 30})
    ok("check", "--fix", "--stream", "odds", config=path)
    rules = s3_server.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    days = [r for r in rules if r["ID"] == "all-api-uploader-expire-day-documents:odds_rotating_logs"]
    assert [r["Filter"] for r in days] == [{"Prefix": "odds_rotating_logs/odds-feed_"}]


def test_day_key_and_day_of_key_follow_the_name() -> None:
    """day_key puts the day where {date} is (and .gz for a gzip day); day_of_key reads it back
    from that name's keys only, plain or gzip, and by default both keep the seed's name."""
    name = NAMES["ticks"]
    assert daily.day_key("p", DAY, name=name) == "p/T2_2025-07-10_ticks.json"
    assert daily.day_key("p/", DAY, gzip=True, name=name) == "p/T2_2025-07-10_ticks.json.gz"
    assert daily.day_key("p", DAY) == "p/all_api_json_log_2025-07-10.json"
    for key in ("p/T2_2025-07-10_ticks.json", "p/T2_2025-07-10_ticks.json.gz"):
        assert daily.day_of_key("p", key, name) == DAY and daily.day_of_key("p", key) is None
    for key in ("p/T2_2025-02-30_ticks.json", "p/T2_2025-07-10_ticks.jsonx", "q/T2_2025-07-10_ticks.json",
                "p/x/T2_2025-07-10_ticks.json", "p/T2_2025-7-10_ticks.json"):
        assert daily.day_of_key("p", key, name) is None, key
    assert daily.day_of_key("p", "p/all_api_json_log_2025-07-10.json") == DAY
