"""The commands on a config of two streams, one shipping to two destinations: `status` per stream
and destination, `replay --stream`, `verify D` comparing a stream's destinations, `repair D --from`
rebuilding one destination's document from another's (on two folders, and on moto beside a folder),
and every bad name refused in one line."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import NY, uploader, write_streams_config
from rig.s3servers import S3Server
from test_cli import one_line_error

from uploader import daily
from uploader.config import Config, StreamConfig, load_config
from uploader.fetchlog import FetchWriter
from uploader.local.cut import Cutter
from uploader.local.spool import Spool
from uploader.store import Store, open_store

DAY = date(2025, 7, 10)
COUNTERS = ("total_uploads_today", "total_fetches_today", "total_matches_today", "closed")


def two_streams(tmp_path: Path, linode: dict[str, Any] | None = None, **extra: dict[str, Any]) -> Path:
    """Stream all_api to linode and backup (two folders, or ``linode`` as given), stream odds to
    linode alone; batches of 10 fetches."""
    dests = {"linode": linode or {"backend": "directory", "path": "data/linode"},
             "backup": {"backend": "directory", "path": "data/backup"}, **extra}
    streams = {"all_api": ["linode", "backup"], "odds": ["linode", *extra]}
    return write_streams_config(tmp_path, streams, dests, streams__all_api={"batch_size": 10},
                                streams__odds={"batch_size": 10})


def stream(config: Config, name: str) -> StreamConfig:
    return config.select(name)[0]


def write_and_cut(config: Config, name: str, n: int, start: int = 0) -> list[str]:
    """``n`` fetches of DAY written to stream ``name``'s file, then cut into its spool (the last
    batch short, as at close-out); their ids."""
    s = stream(config, name)
    s.watch.file.parent.mkdir(parents=True, exist_ok=True)
    writer = FetchWriter(s.watch.file, s.day.timezone)
    when = NY.localize(datetime(2025, 7, 10, 16, 15))
    ids = [writer.append({"stream": name, "i": i}, total_matches=i % 4, now=when) for i in range(start, start + n)]
    cutter = Cutter(s.watch.file, Spool(s.spool.dir), s.day.tz, s.watch.batch_size)
    while (outcome := cutter.cut(close_through=DAY)).more or outcome.batches:
        pass
    return ids


def store_of(config: Config, name: str, dest: str) -> Store:
    s = stream(config, name)
    return open_store(config.view(s, next(d for d in s.destinations if d.name == dest)).storage)


def key_of(config: Config, name: str) -> str:
    storage = stream(config, name).destinations[0].storage
    return daily.day_key(storage.prefix, DAY, name=storage.document_name)


def document(config: Config, name: str, dest: str) -> tuple[list[str], dict[str, Any]]:
    """The batch ids of DAY's document in ``dest``, in order, and its metadata's counters."""
    doc = json.loads(store_of(config, name, dest).get(key_of(config, name))[0])
    meta = doc["daily_metadata"]
    return [u["batch_id"] for u in doc["uploads"]], {k: meta[k] for k in COUNTERS}


def ok(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    done = uploader(*args, "--config", str(config))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
    return done


# -- status --------------------------------------------------------------------------------------


def test_status_has_a_section_and_an_object_per_stream_and_destination(tmp_path: Path, unused_port: int) -> None:
    """Each destination's own pending, each stream's quarantine and archive; a destination whose
    counters cannot be read makes it exit 1, naming it; `--stream` of a one-destination stream
    prints the form of before streams, with "stream" and "destination"."""
    down = {"backend": "s3", "endpoint": f"http://127.0.0.1:{unused_port}", "bucket": "b"}
    path = two_streams(tmp_path, down=down)
    config = load_config(path)
    write_and_cut(config, "all_api", 25)
    write_and_cut(config, "odds", 12)
    ok("replay", "--stream", "all_api", "--destination", "linode", config=path)

    text = uploader("status", "--config", str(path))
    assert text.returncode == 1, text.stderr
    sections = text.stdout.split("\nstream ")
    assert [s.splitlines()[0] for s in sections] == [
        "stream all_api, destination linode:", "all_api, destination backup:", "odds, destination linode:",
        "odds, destination down:"]
    assert "  spool          0 batch(es) pending (-)" in sections[0]
    assert f"  spool          3 batch(es) pending ({DAY}: 3)" in sections[1]
    assert "archive        0 uploaded batch(es)" in sections[1]  # none leaves before backup has it
    assert f"  spool          2 batch(es) pending ({DAY}: 2)" in sections[2]
    assert text.stdout.splitlines()[-1] == "PROBLEMS: stream odds, destination down: today's counters cannot be read"

    report = json.loads(uploader("status", "--json", "--config", str(path)).stdout)
    assert report["service_running"] is False
    assert [(r["stream"], r["destination"], r["spool_depth"]) for r in report["streams"]] == [
        ("all_api", "linode", 0), ("all_api", "backup", 3), ("odds", "linode", 2), ("odds", "down", 2)]
    assert report["streams"][0]["last_success"]["batches"] == 3 and report["streams"][1]["last_success"] is None
    assert "error" in report["streams"][3]["today"] and "error" not in report["streams"][2]["today"]
    assert report["problems"] == ["stream odds, destination down: today's counters cannot be read"]

    one = uploader("status", "--json", "--stream", "all_api", "--destination", "backup", "--config", str(path))
    assert one.returncode == 0, one.stderr
    flat = json.loads(one.stdout)
    assert (flat["stream"], flat["destination"], flat["spool_depth"]) == ("all_api", "backup", 3)
    assert flat["spool"] == str(stream(config, "all_api").spool.dir) and "streams" not in flat


# -- replay, close-day, check ---------------------------------------------------------------


def test_replay_of_one_stream_ships_it_to_both_destinations_and_leaves_the_other(tmp_path: Path) -> None:
    """`replay --stream all_api`: both destinations hold its batches, its spool is empty (each
    batch archived once both have it); odds' batches still wait. Then `close-day` closes the day
    in each destination, and `check` reports on each, headed."""
    path = two_streams(tmp_path)
    config = load_config(path)
    write_and_cut(config, "all_api", 25)
    write_and_cut(config, "odds", 5)
    done = ok("replay", "--stream", "all_api", config=path)
    assert done.stdout.splitlines() == [
        "stream all_api, destination linode:",
        "replay: uploaded 3 batch(es), 25 fetches, 36 matches; 0 left in the spool",
        "stream all_api, destination backup:",
        "replay: uploaded 3 batch(es), 25 fetches, 36 matches; 0 left in the spool"]
    assert document(config, "all_api", "linode") == document(config, "all_api", "backup")
    assert Spool(stream(config, "all_api").spool.dir).pending_batches() == []
    assert len(list((stream(config, "all_api").spool.dir / "archive").iterdir())) == 3
    assert len(Spool(stream(config, "odds").spool.dir).pending_batches()) == 1

    closed = ok("close-day", DAY.isoformat(), "--stream", "all_api", config=path)
    assert closed.stdout.count(f"close-day: {DAY} is closed") == 2
    assert document(config, "all_api", "backup")[1]["closed"] is True
    check = ok("--stream", "all_api", "check", config=path)
    assert check.stdout.count("OK: the store is usable") == 2
    assert "stream all_api, destination backup:" in check.stdout.splitlines()


# -- verify D compares; repair --from rebuilds ----------------------------------------------------


@pytest.fixture(params=["folders", "moto"])
def mirrored(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The two-stream config: all_api's linode destination a folder, or a bucket on moto."""
    if request.param == "folders":
        return two_streams(tmp_path)
    server: S3Server = request.getfixturevalue("moto_server")
    return two_streams(tmp_path, {"backend": "s3", "endpoint": server.endpoint, "bucket": server.new_bucket()})


def test_verify_compares_destinations_and_repair_from_restores_the_one_behind(mirrored: Path) -> None:
    """Both destinations shipped: verify says they agree. One batch shipped to linode only: verify
    names the batch, the fetches and the counters backup lacks, exit 1. `repair --from linode`
    rebuilds backup's document as linode's (same batch ids in order, same counters), a second run
    writes nothing, and the replay after it acknowledges the batch without storing it twice.
    Then linode's document is deleted and rebuilt from backup's the same way."""
    path, config = mirrored, load_config(mirrored)
    write_and_cut(config, "all_api", 25)
    ok("replay", config=path)
    agree = ok("verify", DAY.isoformat(), "--stream", "all_api", config=path)
    assert agree.stdout.splitlines()[-1] == "destinations agree: linode, backup (3 uploads, 25 fetches)"

    ids = write_and_cut(config, "all_api", 10, start=25)
    ok("replay", "--destination", "linode", "--stream", "all_api", config=path)
    late = Spool(stream(config, "all_api").spool.dir).pending_batches()[0].batch_id
    differ = uploader("verify", DAY.isoformat(), "--stream", "all_api", "--config", str(path))
    assert differ.returncode == 1, differ.stderr
    lines = differ.stdout.splitlines()
    assert lines[lines.index("destinations differ: linode, backup"):] == [
        "destinations differ: linode, backup",
        f"  backup lacks 1 batch(es) linode has: {late}",
        f"  backup lacks 10 fetch(es) linode has: {', '.join(ids[:3])}, ...",
        "  total_uploads_today: linode 4, backup 3",
        "  total_fetches_today: linode 35, backup 25",
        "  total_matches_today: linode 51, backup 36",
        f"  Try: uploader repair {DAY} --stream all_api --from linode --destination backup"]

    repaired = ok("repair", DAY.isoformat(), "--stream", "all_api", "--from", "linode", config=path)
    assert "repair: 1 batch(es) of 2025-07-10 still wait in the spool" in repaired.stdout
    assert repaired.stdout.splitlines()[-1].endswith("verify: OK")
    assert document(config, "all_api", "backup") == document(config, "all_api", "linode")
    _idempotent(config, path, "backup", "linode")
    ok("replay", "--stream", "all_api", config=path)  # backup's batch: already in its document
    assert Spool(stream(config, "all_api").spool.dir).pending_batches() == []
    assert ok("verify", DAY.isoformat(), "--stream", "all_api", config=path).stdout.count("destinations agree") == 1

    store_of(config, "all_api", "linode").delete(key_of(config, "all_api"))
    gone = uploader("verify", DAY.isoformat(), "--stream", "all_api", "--config", str(path))
    assert gone.returncode == 1
    assert "  linode has no document; backup has one of 4 upload(s)" in gone.stdout.splitlines()
    ok("repair", DAY.isoformat(), "--stream", "all_api", "--from", "backup", config=path)
    assert document(config, "all_api", "linode") == document(config, "all_api", "backup")
    _idempotent(config, path, "linode", "backup")


def _idempotent(config: Config, path: Path, target: str, source: str) -> None:
    """A second `repair --from` finds the target holding what the source does and writes nothing."""
    store, key = store_of(config, "all_api", target), key_of(config, "all_api")
    before = store.head(key)
    again = ok("repair", DAY.isoformat(), "--stream", "all_api", "--from", source, config=path)
    assert f"repair: {target}'s {key} already holds what {source}'s does; nothing to change" in again.stdout
    assert store.head(key) == before


def test_repair_from_refuses_to_drop_what_the_target_has_more(tmp_path: Path) -> None:
    """Rebuilding the destination that is ahead from the one behind would drop batches: refused,
    exit 1, nothing written; the hint names the other way round."""
    path = two_streams(tmp_path)
    config = load_config(path)
    write_and_cut(config, "all_api", 15)
    ok("replay", "--stream", "all_api", "--destination", "linode", config=path)
    ok("replay", "--stream", "all_api", "--destination", "backup", config=path)
    write_and_cut(config, "all_api", 5, start=15)
    ok("replay", "--stream", "all_api", "--destination", "linode", config=path)
    before = store_of(config, "all_api", "linode").head(key_of(config, "all_api"))
    done = uploader("repair", DAY.isoformat(), "--stream", "all_api", "--from", "backup", "--config", str(path))
    assert done.returncode == 1
    assert "would drop them, so nothing was written. Try: `uploader repair 2025-07-10 --stream all_api --from linode " \
           "--destination backup`" in done.stderr
    assert store_of(config, "all_api", "linode").head(key_of(config, "all_api")) == before


# -- bad names --------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["status", "--stream", "nope"],
     "uploader: no stream named 'nope' in the config. Try: use one of: all_api, odds"),
    (["--stream", "nope", "replay", "--dry-run"],
     "uploader: no stream named 'nope' in the config. Try: use one of: all_api, odds"),
    (["verify", "--all", "--stream", "odds", "--destination", "backup"],
     "uploader: no destination named 'backup' in stream odds. Try: use one of: linode"),
    (["check", "--destination", "nope"],
     "uploader: no destination named 'nope' in streams all_api, odds. Try: use one of: linode, backup"),
    (["export", DAY.isoformat()],
     "uploader: export works on one stream and the config has 2. Try: add --stream NAME (one of: all_api, odds)"),
    (["repair", DAY.isoformat(), "--from", "linode"],
     ("uploader: repair --from rebuilds one stream's document and the config has 2 streams. "
      "Try: add --stream NAME (one of: all_api, odds)")),
    (["repair", DAY.isoformat(), "--stream", "all_api", "--from", "backup", "--destination", "backup"],
     ("uploader: --from backup is the destination to rebuild. "
      "Try: rebuild another from it: --from backup --destination NAME (one of: linode)")),
    (["repair", DAY.isoformat(), "--stream", "odds", "--from", "linode"],
     ("uploader: stream odds has one destination (linode): no other to rebuild from. Try: run repair without "
      "--from: it rebuilds from the document itself and the local archive")),
], ids=["status", "before-the-command", "destination", "destination-anywhere", "export", "repair-streams",
        "repair-itself", "repair-alone"])
def test_a_bad_name_is_one_line_naming_the_known_ones(tmp_path: Path, args: list[str], expected: str) -> None:
    """An unknown stream or destination, or a command that needs one stream or another destination
    than it was given: exit 2, one line naming the names the config knows."""
    path = two_streams(tmp_path)
    assert one_line_error(uploader(*args, "--config", str(path)), 2) == expected
