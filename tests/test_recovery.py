"""The way back, as an operator uses it on moto and Ceph RGW: the local archive, `repair` of a
deleted, truncated or garbage-tailed day, `export` round trips, `verify --all`, bad input."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import NY, build_batch, write_config
from rig.s3servers import S3Server

from uploader import daily
from uploader.config import load_config
from uploader.daily.verifier import verify
from uploader.local.archive import Archive, ArchivePolicy
from uploader.local.quarantine import Quarantine
from uploader.local.records import Fetch, scan
from uploader.local.spool import Spool

DAY = date(2025, 7, 10)
KEY = daily.day_key("logs", DAY)
REPO = Path(__file__).resolve().parent.parent
BATCHES = 6


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    """One `uploader` command as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=180, cwd=REPO, env=dict(os.environ), check=False)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The single line a user-caused error prints (exit ``code``, no traceback)."""
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def day_uploaded(tmp_path: Path, s3_server: S3Server, bucket: str) -> tuple[Path, S3Server, str, list[str]]:
    """A config on the test's server whose day DAY was uploaded by `replay` from six spooled
    batches (so the archive holds them too); returns (config, server, bucket, fetch ids)."""
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    spool = Spool(load_config(config).spool.dir)
    ids = []
    for seq in range(1, BATCHES + 1):
        batch = build_batch(seq, day=DAY, matches_each=seq)
        spool.commit([spool.stage_batch(batch)])
        ids += batch.fetch_ids
    assert "uploaded 6 batch(es)" in ok(cli("replay", config=config))
    return config, s3_server, bucket, ids


def document(server: S3Server, bucket: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(server.admin.get_object(Bucket=bucket, Key=KEY)["Body"].read())
    return doc


def fetch_ids(doc: dict[str, Any]) -> list[str]:
    return [f["FETCH_HEADER"]["fetch_id"] for u in doc["uploads"] for f in u["fetch_data"]]


def test_uploaded_batches_are_archived_privately_and_status_shows_them(day_uploaded: Any) -> None:
    """After the upload the batches sit in the archive (0700 folder, 0600 files), none pending."""
    config, *_ = day_uploaded
    spool = Spool(load_config(config).spool.dir)
    assert spool.pending_batches() == [] and len(Archive(spool).batches(DAY)) == BATCHES
    assert stat.S_IMODE(spool.archive_dir.stat().st_mode) == 0o700
    assert {stat.S_IMODE(e.path.stat().st_mode) for e in Archive(spool).batches()} == {0o600}
    status = json.loads(ok(cli("status", "--json", config=config)))
    assert status["archive"]["batches"] == BATCHES and status["archive"]["first_day"] == DAY.isoformat()


def test_a_deleted_day_is_restored_from_the_archive(day_uploaded: Any) -> None:
    """Document deleted → repair rebuilds it from the archive: same fetches, counters = fetches, verify 0."""
    config, server, bucket, ids = day_uploaded
    before = document(server, bucket)
    server.admin.delete_object(Bucket=bucket, Key=KEY)
    out = ok(cli("repair", DAY.isoformat(), config=config))
    assert "restored from the local archive: 6" in out and "verify: OK" in out
    after = document(server, bucket)
    assert fetch_ids(after) == ids
    meta = after["daily_metadata"]
    assert meta["total_fetches_today"] == len(ids)
    assert meta["total_matches_today"] == before["daily_metadata"]["total_matches_today"] == 10 * sum(range(1, 7))
    assert "verify: OK" in ok(cli("verify", DAY.isoformat(), config=config))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_day_keeps_what_the_bucket_has_and_fills_in_the_rest(day_uploaded: Any, damage: str) -> None:
    """Truncated mid-way (or with garbage appended): every complete upload is kept from the bucket,
    the rest comes from the archive, nothing is doubled, and a closed day stays closed."""
    config, server, bucket, ids = day_uploaded
    assert ok(cli("close-day", DAY.isoformat(), config=config))
    spool = Spool(load_config(config).spool.dir)
    for e in Archive(spool).batches(DAY)[:2]:
        e.path.unlink()  # pruned from the archive: these two can only come from the bucket
    body = server.admin.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    lines = body.split(b"\n")
    if damage == "truncated":
        broken = b"\n".join(lines[:4]) + b"\n" + lines[4][: len(lines[4]) // 2]  # uploads 1-3 whole, 4 cut
    else:
        broken = body + b"\x00\xffnot json at all\n{]"
    server.admin.put_object(Bucket=bucket, Key=KEY, Body=broken)
    assert cli("verify", DAY.isoformat(), config=config).returncode == 1
    dry = ok(cli("repair", DAY.isoformat(), "--dry-run", config=config))
    assert "dry run; nothing written" in dry
    assert server.admin.get_object(Bucket=bucket, Key=KEY)["Body"].read() == broken
    out = ok(cli("repair", DAY.isoformat(), config=config))
    if damage == "truncated":
        assert "kept from the bucket: 3" in out and "restored from the local archive: 3" in out
        assert "total_fetches_today: unreadable -> 60" in out
    else:
        assert "kept from the bucket: 6" in out and "restored from the local archive: 0" in out
        assert "total_fetches_today: 60 -> 60" in out and "closed: True" in out
    after = document(server, bucket)
    assert fetch_ids(after) == ids
    assert verify(after) == []
    assert after["daily_metadata"]["closed"] is (damage == "garbage")


def test_export_round_trips_through_the_parser(day_uploaded: Any, tmp_path: Path) -> None:
    """`export --format bookended` fed to the parser gives the document's fetches, in order, in
    their day; `jsonl` gives one line per fetch with its upload's sequence and batch id."""
    config, server, bucket, ids = day_uploaded
    out = tmp_path / "day.txt"
    proc = ok(cli("export", DAY.isoformat(), "--format", "bookended", "--output", str(out), config=config))
    assert proc == ""
    items = scan(out.read_bytes(), NY, datetime.now(pytz.utc)).items
    assert all(isinstance(i, Fetch) for i in items)
    doc = document(server, bucket)
    assert [i.document for i in items] == [f for u in doc["uploads"] for f in u["fetch_data"]]  # type: ignore[union-attr]
    assert {i.day for i in items} == {DAY} and [i.fetch_id for i in items] == ids  # type: ignore[union-attr]
    lines = ok(cli("export", DAY.isoformat(), config=config)).splitlines()
    first = json.loads(lines[0])
    assert len(lines) == len(ids) and first["upload_sequence"] == 1
    assert first["batch_id"] == doc["uploads"][0]["batch_id"] and first["FETCH_HEADER"]["fetch_id"] == ids[0]
    assert not list(tmp_path.glob("*.partial"))


def test_verify_all_reports_every_kind_of_problem(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A good day, a doubled day, a missing day, a past day left open and a stray object: each is
    reported on its own line, and the exit code is 1."""
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    put = s3_server.admin.put_object
    good = daily.merge_batches(daily.new_document(date(2025, 7, 1), "America/New_York"),
                               [build_batch(1, day=date(2025, 7, 1))], datetime(2025, 7, 1, 16, tzinfo=pytz.utc), NY)
    closed = daily.close_document(good.document, datetime(2025, 7, 2, 5, tzinfo=pytz.utc), NY)
    put(Bucket=bucket, Key=daily.day_key("logs", date(2025, 7, 1)), Body=daily.serialize(closed),
        Metadata=daily.user_metadata(closed["daily_metadata"]))
    doubled = daily.merge_batches(daily.new_document(date(2025, 7, 2), "America/New_York"),
                                  [build_batch(2, day=date(2025, 7, 2))], datetime(2025, 7, 2, 16, tzinfo=pytz.utc), NY)
    doc = doubled.document
    doc["uploads"].append(dict(doc["uploads"][0], upload_sequence=2))
    put(Bucket=bucket, Key=daily.day_key("logs", date(2025, 7, 2)), Body=json.dumps(doc).encode())
    put(Bucket=bucket, Key=daily.day_key("logs", date(2025, 7, 4)), Body=daily.serialize(closed))  # 07-01's
    put(Bucket=bucket, Key="logs/notes.txt", Body=b"stray")
    put(Bucket=bucket, Key="logs/quarantine/000000000001-0-abc", Body=b"junk, but ours")
    proc = cli("verify", "--all", config=config)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:4]] == [
        ["2025-07-01", "OK"], ["2025-07-02", "PROBLEMS"], ["2025-07-03", "MISSING"], ["2025-07-04", "PROBLEMS"]]
    assert "stored 2 times" in lines[1] and "the object's key says 2025-07-04" in lines[3]
    assert any(line.startswith("stray") and "logs/notes.txt" in line for line in lines)
    assert not any("logs/quarantine/" in line for line in lines)
    assert any(line.startswith("left open") and "2025-07-02" in line for line in lines)
    since = cli("verify", "--since", "2025-07-04", config=config)
    assert [line.split()[0] for line in since.stdout.splitlines() if line[:1].isdigit()] == ["2025-07-04"]


def test_bad_input_gets_one_line_and_changes_nothing(day_uploaded: Any, tmp_path: Path) -> None:
    """A malformed day, a day with nothing to rebuild from, an unreadable archive file: one clear
    line each (exit 2 for usage, 1 otherwise), and the bucket is left as it was."""
    config, server, bucket, _ = day_uploaded
    etag = server.admin.head_object(Bucket=bucket, Key=KEY)["ETag"]
    for command in ("export", "repair", "verify"):
        line = one_line_error(cli(command, "2025-13-40", config=config), 2)
        assert "not a date" in line and "YYYY-MM-DD" in line
    assert "no document for 2025-07-09" in one_line_error(cli("export", "2025-07-09", config=config), 1)
    line = one_line_error(cli("repair", "2025-07-09", config=config), 1)
    assert "nothing to rebuild 2025-07-09 from" in line
    archived = Archive(Spool(load_config(config).spool.dir)).batches(DAY)[0].path
    archived.write_bytes(b"{ this is not a batch")
    line = one_line_error(cli("repair", DAY.isoformat(), config=config), 1)
    assert archived.name in line and "nothing was changed in the bucket" in line and "move it aside" in line
    assert server.admin.head_object(Bucket=bucket, Key=KEY)["ETag"] == etag
    assert "cannot write" in one_line_error(
        cli("export", DAY.isoformat(), "--output", str(tmp_path / "no" / "such" / "dir.txt"), config=config), 2)


def test_check_reports_versioning_and_what_it_protects(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """check says versioning is off (and why to turn it on); once enabled, it says so."""
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    out = ok(cli("check", config=config))
    assert "bucket versioning: off" in out and "stray overwrite or delete can be undone" in out
    s3_server.admin.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    out = ok(cli("check", config=config))
    assert "bucket versioning: enabled" in out and "can be undone" not in out


def _spool_with(tmp_path: Path, archived: list[tuple[int, float]], pending: list[tuple[int, float]]) -> Spool:
    """A spool whose archive holds batches (seq, uploaded at) and whose queue holds (seq, cut at)."""
    spool = Spool(tmp_path / "spool")
    for seq, at in archived:
        spool.commit([spool.stage_batch(build_batch(seq, day=DAY, pad=1000))])
        [entry] = [e for e in spool.pending_batches() if e.seq == seq]
        Archive(spool).add([entry], at)
    for seq, at in pending:
        spool.commit([spool.stage_batch(build_batch(seq, day=DAY, pad=1000))])
        [entry] = [e for e in spool.pending_batches() if e.seq == seq]
        os.utime(entry.path, (at, at))
    return spool


def test_archive_pruning_by_age_never_touches_a_pending_batch(tmp_path: Path) -> None:
    """Batches uploaded more than archive_days ago go; a pending batch, however old, stays."""
    now = 1_800_000_000.0
    spool = _spool_with(tmp_path, [(1, now - 9 * 86400), (2, now - 8 * 86400), (3, now - 86400)],
                        pending=[(4, now - 30 * 86400)])
    old_sent, new_sent = spool.sent_dir / "q-old.bin", spool.sent_dir / "q-new.bin"
    waiting = spool.quarantine_dir / "q-w.bin"
    for path, age in ((old_sent, 9 * 86400), (new_sent, 86400), (waiting, 30 * 86400)):
        path.write_bytes(b"junk")
        os.utime(path, (now - age, now - age))
    kept = Archive(spool).prune(now, ArchivePolicy(max_age_s=7 * 86400, max_bytes=1 << 30))
    Quarantine(spool).prune_sent(now, max_age_s=7 * 86400)  # the uploader prunes both together
    assert [e.seq for e in Archive(spool).batches()] == [3] and kept.batches == 1
    assert [e.seq for e in spool.pending_batches()] == [4]
    assert (old_sent.exists(), new_sent.exists(), waiting.exists()) == (False, True, True)


def test_archive_pruning_by_size_drops_the_oldest_first(tmp_path: Path) -> None:
    """Past archive_max_mb, the earliest uploaded go first until the archive fits."""
    now = 1_800_000_000.0
    spool = _spool_with(tmp_path, [(1, now - 300), (2, now - 200), (3, now - 100)], pending=[(4, now - 400)])
    size = Archive(spool).summary().bytes // 3
    kept = Archive(spool).prune(now, ArchivePolicy(max_age_s=7 * 86400, max_bytes=2 * size + size // 2))
    assert [e.seq for e in Archive(spool).batches()] == [2, 3] and kept.bytes <= 2 * size + size // 2
    assert [e.seq for e in spool.pending_batches()] == [4]


def test_no_archive_when_archive_days_is_zero(tmp_path: Path) -> None:
    """With archive_days = 0 an uploaded batch is simply removed, as before the archive existed."""
    config = write_config(tmp_path, spool={"dir": "data/spool", "archive_days": 0})
    cfg = load_config(config)
    spool = Spool(cfg.spool.dir)
    spool.commit([spool.stage_batch(build_batch(1, day=DAY))])
    assert "uploaded 1 batch(es)" in ok(cli("replay", config=config))
    assert spool.pending_batches() == [] and Archive(spool).batches() == []
