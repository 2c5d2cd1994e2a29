"""`uploader repair` streams: a day of tens of MiB, plain and gzip, rebuilt on moto and Ceph RGW in
memory that does not grow with it; entries out of the archive's order; a document changed between
the read and the write; the seed's layout; a sound day, a dry run; a long line of garbage."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import pytz
from helpers import NY, build_batch, write_config
from rig.s3servers import S3Server

from uploader import daily
from uploader.commands.repair import RepairOutcome, repair_day
from uploader.config import load_config
from uploader.daily.salvage import Salvage, salvaged
from uploader.daily.verifier import verify
from uploader.local.archive import Archive
from uploader.local.batch import Batch
from uploader.local.spool import Spool
from uploader.store import PART_SIZE, ObjectInfo
from uploader.store.directory import DirectoryStore

DAY = date(2025, 7, 10)
REPO = Path(__file__).resolve().parent.parent
T0 = datetime(2025, 7, 10, 16, tzinfo=pytz.utc)
MIB = 1 << 20
STAMP = "07/10/2025 08:00:00 AM EDT"
UPLOADS = 320  # of 10 fetches of 10 KB: a 32 MiB day
# What a repair holds beyond a one-upload repair whatever the day's size: read and inflate buffers
# (1 MiB pieces), zlib's state, a line; and for a plain day the store's 8 MiB parts, of which
# s3_compose holds up to five at once (the first two for the whole write, the one being sent, its
# pieces, the next being joined). A gzip day's parts are its compressed bytes: small.
BUFFERS_KIB = 8 * 1024
PLAIN_PARTS_KIB = 5 * PART_SIZE // 1024


# `uploader` (its arguments after the file's name) in a process that, as it exits, writes its own
# VmHWM line of /proc/self/status to the file argv[1]. Read by the process itself: the ru_maxrss
# wait4 reports for a child counts the parent's memory it was forked from.
_WITH_HWM = (
    "import atexit, sys\n"
    "from uploader.cli import main\n"
    "out = sys.argv.pop(1)\n"
    "def hwm():\n"
    "    with open('/proc/self/status') as status, open(out, 'w') as f:\n"
    "        f.write(next(line for line in status if line.startswith('VmHWM:')))\n"
    "atexit.register(hwm)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def measured(*args: str, config: Path, folder: Path) -> tuple[int, str, int]:
    """One `uploader` command as its own process: exit code, stdout, and its peak RSS (VmHWM) in KiB."""
    hwm = folder / "hwm"
    proc = subprocess.run([sys.executable, "-c", _WITH_HWM, str(hwm), *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=180, cwd=REPO, env=dict(os.environ), check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout, int(hwm.read_text().split()[1])


def archive(spool: Spool, *batches: Batch) -> None:
    """``batches`` as an upload leaves them: in the spool's archive."""
    spool.commit([spool.stage_batch(batch) for batch in batches])
    Archive(spool).add(spool.pending_batches(), T0.timestamp())


def line(batch: Batch, sequence: int) -> bytes:
    """``batch``'s upload line (§5.2) as an append at its cut time writes it."""
    return daily.entry_head(batch.header, sequence, batch.cut_at) + batch.fetch_data + b"}"


@pytest.fixture(scope="module")
def baseline_kib(tmp_path_factory: pytest.TempPathFactory, moto_server: S3Server) -> int:
    """The peak RSS of `uploader repair` on a day of one small upload: what the process needs anyway."""
    folder = tmp_path_factory.mktemp("baseline")
    bucket = moto_server.new_bucket()
    config = write_config(folder, s3=(moto_server.endpoint, bucket))
    archive(Spool(load_config(config).spool.dir), build_batch(1, day=DAY))
    code, out, kib = measured("repair", DAY.isoformat(), config=config, folder=folder)
    assert code == 0 and "verify: OK" in out, out
    return kib


@pytest.mark.parametrize("form", ["plain", "gzip"])
def test_a_day_of_tens_of_mib_is_repaired_in_memory_that_does_not_grow_with_it(
    tmp_path: Path, s3_server: S3Server, bucket: str, baseline_kib: int, form: str
) -> None:
    """A 32 MiB day cut short (its metadata lost) and missing an upload in the middle is rebuilt
    from the bucket and the archive, every upload after the gap renumbered, and verifies. The
    process grows past a one-upload repair by its buffers (for a plain day the write's 8 MiB parts,
    a few held at once) and by less than an eighth of the day beyond them: holding the day would
    take several times its size."""
    batches = [build_batch(seq, day=DAY, pad=10_000) for seq in range(1, UPLOADS + 1)]
    lines = [line(b, seq) for seq, b in enumerate(batches, start=1)]
    gap = UPLOADS // 2  # this upload never reached the bucket (the archive has it), nor did the last, cut short
    stored = [line(b, seq) for seq, b in enumerate(batches[:gap - 1] + batches[gap:], start=1)]
    body = daily.HEAD + b"\n" + b",\n".join(stored)
    body = body[:len(body) - len(stored[-1]) // 2]
    size = len(body)
    assert size > 30 * MIB
    key = daily.day_key("logs", DAY, gzip=form == "gzip")
    s3_server.admin.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body, 1) if form == "gzip" else body)
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    # The archive holds the batches from the gap on: those before it were pruned.
    archive(Spool(load_config(config).spool.dir), *batches[gap - 1:])

    code, out, kib = measured("repair", DAY.isoformat(), config=config, folder=tmp_path)
    assert code == 0, out
    assert f"uploads kept from the bucket: {UPLOADS - 2}" in out and "uploads restored from the local archive: 2" in out
    assert f"total_uploads_today: unreadable -> {UPLOADS}" in out and "verify: OK" in out
    grown = kib - baseline_kib - BUFFERS_KIB - (PLAIN_PARTS_KIB if form == "plain" else 0)
    assert grown < size / 8 / 1024, f"peak RSS {kib} KiB for a {size >> 20} MiB day, {baseline_kib} KiB for one upload"

    written = s3_server.admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    plain = gzip.decompress(written) if form == "gzip" else written
    # The bucket's lines as they were stored, those after the gap with their sequence spliced in;
    # the archive's as an append writes them.
    entries, tail = plain.split(daily.TAIL_MARKER)
    assert entries == daily.HEAD + b"\n" + b",\n".join(lines)
    meta = json.loads(tail[:-2])
    assert meta["batch_ids_sha256"] == daily.ids_digest(b.batch_id for b in batches) and "batch_ids" not in meta


class ChangedOnSecondRead(DirectoryStore):
    """The embedded store, but another writer replaces the day's document just as repair opens it
    the second time (between the salvage and the write)."""

    reads = 0

    @contextmanager
    def stream(self, key: str) -> Iterator[tuple[BinaryIO, ObjectInfo]]:
        self.reads += 1
        if self.reads == 2:
            data, _ = self.get(key)
            self.put(key, data + b" ", {})
        with super().stream(key) as opened:
            yield opened


def _embedded(tmp_path: Path, store_type: type[DirectoryStore] = DirectoryStore) -> tuple[Any, DirectoryStore, Spool]:
    config = load_config(write_config(tmp_path))
    return config, store_type(config.storage.directory.path, prefix="logs"), Spool(config.spool.dir)


def test_bucket_entries_out_of_the_archive_s_order_are_rebuilt_in_seq_order(tmp_path: Path) -> None:
    """Entries the bucket holds in another order than their seqs come out in seq order (set aside on
    disk meanwhile, not held), with an archived one restored between them; the result verifies."""
    config, store, spool = _embedded(tmp_path)
    batches = [build_batch(seq, day=DAY) for seq in range(1, 5)]
    doc = daily.new_document(DAY, NY.zone)
    for seq in (4, 3, 1):
        doc = daily.merge_batches(doc, [batches[seq - 1]], T0, NY).document
    key = daily.day_key("logs", DAY)
    store.put(key, daily.serialize(doc), {})
    archive(spool, *batches)
    result = repair_day(config, store, spool, DAY)
    assert result.outcome is RepairOutcome.WRITTEN and result.verified, result.messages
    written = json.loads(store.get(key)[0])
    assert [u["batch_id"] for u in written["uploads"]] == [b.batch_id for b in batches]
    assert verify(written) == []
    assert not list(spool.root.glob("tmp*"))


def test_a_document_changed_between_the_read_and_the_write_is_not_overwritten(tmp_path: Path) -> None:
    """When the document read for the plan is not the one read again for the write, nothing is
    written: the outcome says it changed meanwhile, and the other writer's bytes stay."""
    config, store, spool = _embedded(tmp_path, ChangedOnSecondRead)
    batches = [build_batch(seq, day=DAY) for seq in range(1, 4)]
    doc = daily.merge_batches(daily.new_document(DAY, NY.zone), batches[:2], T0, NY).document
    key = daily.day_key("logs", DAY)
    store.put(key, daily.serialize(doc)[:-20], {})
    archive(spool, batches[2])
    result = repair_day(config, store, spool, DAY)
    assert result.outcome is RepairOutcome.CHANGED_MEANWHILE
    assert "changed while it was being repaired; nothing was overwritten" in result.messages[-1].text
    assert store.get(key)[0] == daily.serialize(doc)[:-20] + b" "


def test_the_seed_s_layout_is_rebuilt_in_ours_from_a_second_parse(tmp_path: Path) -> None:
    """A day the old logger wrote (metadata first, pretty-printed, an entry without a batch id
    stored twice) is read twice through ijson and written in our layout; it verifies, fetches kept."""
    config, store, spool = _embedded(tmp_path)
    fetches = build_batch(1, day=DAY).fetches
    entry = {"upload_sequence": 1, "upload_timestamp": STAMP, "matches_in_upload": 50, "fetches_in_upload": 10,
             "fetch_data": fetches}
    # One upload only: `verify` counts entries without a batch id as the id None, stored twice.
    seed = {"daily_metadata": {"date": DAY.isoformat(), "total_uploads_today": 2, "total_matches_today": 100},
            "uploads": [entry, dict(entry, upload_sequence=2)]}
    key = daily.day_key("logs", DAY)
    store.put(key, json.dumps(seed, indent=2).encode(), {})
    result = repair_day(config, store, spool, DAY)
    said = [m.text for m in result.messages]
    assert result.outcome is RepairOutcome.WRITTEN and result.verified, said
    assert "repair: uploads stored twice in the bucket, kept once: 1" in said
    data = store.get(key)[0]
    assert data.startswith(daily.HEAD + b"\n{") and data.count(b"\n") == 4
    written = json.loads(data)
    assert written["uploads"] == [entry] and verify(written) == []


def test_a_sound_day_is_read_and_left_alone_and_a_dry_run_writes_nothing(tmp_path: Path) -> None:
    """A sound document is reported sound and not written; a damaged one under --dry-run is planned
    and reported, and the bucket keeps its bytes."""
    config, store, spool = _embedded(tmp_path)
    batches = [build_batch(seq, day=DAY) for seq in (1, 2)]
    archive(spool, *batches)
    key = daily.day_key("logs", DAY)
    doc = daily.serialize(daily.merge_batches(daily.new_document(DAY, NY.zone), batches, T0, NY).document)
    store.put(key, doc, {})
    etag = store.head(key).etag  # type: ignore[union-attr]
    sound = repair_day(config, store, spool, DAY)
    assert sound.outcome is RepairOutcome.SOUND
    assert sound.messages[-1].text == f"repair: {key} is sound; nothing to change"
    store.put(key, doc[:-30], {})
    dry = repair_day(config, store, spool, DAY, dry_run=True)
    assert dry.outcome is RepairOutcome.DRY_RUN and dry.messages[-1].text == "repair: dry run; nothing written"
    assert "repair: uploads restored from the local archive: 0" in [m.text for m in dry.messages]
    assert store.get(key)[0] == doc[:-30] and etag != store.head(key).etag  # type: ignore[union-attr]


def test_a_long_line_of_garbage_is_read_past_not_held(tmp_path: Path) -> None:
    """20 MiB of garbage without a newline between two uploads costs only itself: reported with its
    length, the upload after it kept, and the document written back without it."""
    config, store, spool = _embedded(tmp_path)
    batches = [build_batch(seq, day=DAY) for seq in (1, 2)]
    data = daily.serialize(daily.merge_batches(daily.new_document(DAY, NY.zone), batches, T0, NY).document)
    first_end = data.index(b",\n", len(daily.HEAD) + 1) + 2
    garbage = b"\x00garbage" * (20 * MIB // 8)
    key = daily.day_key("logs", DAY)
    store.put(key, data[:first_end] + garbage + b"\n" + data[first_end:], {})
    found = Salvage()
    with store.stream(key) as (stream, _):
        kept = [s.place for s in salvaged(stream, found)]
    assert kept == [2, 4] and found.damage == [f"line 3: not a complete upload ({len(garbage)} bytes)"]
    result = repair_day(config, store, spool, DAY)
    assert result.outcome is RepairOutcome.WRITTEN and result.verified
    assert json.loads(store.get(key)[0])["uploads"] == json.loads(data)["uploads"]
