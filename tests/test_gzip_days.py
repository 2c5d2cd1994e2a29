"""Gzip-compressed day documents (docs/DESIGN.md §5.10): appended in O(batch) on every backend,
read back by `gunzip`, Python's gzip and DuckDB as exactly the plain document, each day keeping
the form it was started in."""

from __future__ import annotations

import base64
import gzip
import json
import random
import string
import subprocess
import sys
import zlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import pytz
from helpers import make_s3_store, read_day, write_config
from rig import chaos
from rig.faultproxy import FaultProxy, Rule
from rig.s3servers import S3Server

from uploader import daily
from uploader.config import Compression
from uploader.daily import gzip_form
from uploader.daily.verifier import verify
from uploader.local.batch import Batch
from uploader.publish import append_batches, close_day
from uploader.publish.forms import pad_key
from uploader.publish.listed import ListedIndex
from uploader.store import ObjectInfo, Store
from uploader.store.directory import DirectoryStore
from uploader.store.s3 import S3Store

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
T0 = datetime(2025, 7, 10, 16, 0, 0, tzinfo=pytz.utc)
PREFIX = "logs"
GZ = daily.day_key(PREFIX, DAY, gzip=True)
PLAIN = daily.day_key(PREFIX, DAY)
NOT_IMPLEMENTED = (501, "NotImplemented")


def odds_batch(seq: int, make_batch: Any, fetches: int = 10) -> Batch:
    """A batch whose fetches compress as the pipeline's do (repeated keys, varied numbers)."""
    rng = random.Random(seq)
    batch: Batch = make_batch(seq, fetches=fetches)
    for f in batch.fetches:
        f["RAW_API_DATA"]["events"] = [
            {"id": rng.randrange(10**6), "home": rng.choice(string.ascii_uppercase) * 8,
             "odds": [round(rng.uniform(1.01, 9.0), 2) for _ in range(12)]}
            for _ in range(40)
        ]
    return Batch.of(batch_id=batch.batch_id, seq=seq, day=batch.day, cut_at=batch.cut_at, fetches=batch.fetches,
                    matches=batch.matches, fetch_ids=batch.fetch_ids)


def noise_batch(seq: int, make_batch: Any, size: int) -> Batch:
    """A batch of about ``size`` bytes that gzip shrinks only to ~3/4 (base64 of random bytes): a day
    past 5 MiB compressed in one append."""
    rng = random.Random(seq)
    batch: Batch = make_batch(seq, fetches=4)
    for f in batch.fetches:
        f["RAW_API_DATA"]["noise"] = base64.b64encode(rng.randbytes(size // 4 * 3 // 4)).decode()
    return Batch.of(batch_id=batch.batch_id, seq=seq, day=batch.day, cut_at=batch.cut_at, fetches=batch.fetches,
                    matches=batch.matches, fetch_ids=batch.fetch_ids)


def gzip_append(store: Store, batches: list[Batch], minute: int, listed: ListedIndex | None = None) -> Any:
    return append_batches(store, PREFIX, TZ, batches, T0 + timedelta(minutes=minute), compression=Compression.GZIP,
                          listed=listed)


def stored_document(store: Store, key: str = GZ) -> tuple[bytes, dict[str, Any]]:
    data, _ = store.get(key)
    plain = gzip.decompress(data)
    return plain, json.loads(plain)


def gunzip(data: bytes) -> bytes:
    """What `gzip -dc` makes of an object."""
    return subprocess.run(["gzip", "-dc"], input=data, capture_output=True, check=True).stdout


def padded(data: bytes) -> bool:
    return data[:gzip_form.PAD_SIZE] == gzip_form.pad()


# -- the form, on values -------------------------------------------------------------------------


def test_members_read_as_one_document_by_every_reader(tmp_path: Path) -> None:
    """Padding, entry and tail members inflate to exactly the plain bytes: Python's gzip, zlib,
    `gunzip` and DuckDB's read_json agree."""
    plain = [daily.HEAD, b'{"a": 1}', b',\n{"a": 2}']
    tail = b'\n],\n"daily_metadata": {"n": 2}}\n'
    blob = (gzip_form.pad() + b"".join(gzip_form.compress_member(plain[:2]))
            + b"".join(gzip_form.compress_member(plain[2:])) + gzip_form.tail_member(tail))
    assert gzip_form.PAD_SIZE >= 5 << 20
    whole = b"".join(plain) + tail
    assert gzip.decompress(blob) == whole == gzip_form.decompress(blob)
    path = tmp_path / "day.json.gz"
    path.write_bytes(blob)
    assert subprocess.run(["gunzip", "-c", str(path)], capture_output=True, check=True).stdout == whole
    rows = duckdb.sql(f"select uploads, daily_metadata from read_json('{path}')").fetchall()
    assert rows == [([{"a": 1}, {"a": 2}], {"n": 2})]


def test_the_tail_is_found_by_its_member_not_by_a_lookalike() -> None:
    """A tail signature inside compressed data (here: stored data) is not taken for the tail."""
    decoy = gzip_form.TAIL_SIGNATURE * 3
    tail = b'\n],\n"daily_metadata": {}}\n'
    entries = b"".join(gzip_form.compress_member([b"[", decoy]))
    blob = entries + gzip_form.tail_member(tail)
    assert gzip_form.split_tail(blob, len(blob)) == (len(entries), tail)
    assert gzip_form.split_tail(blob[-10:], len(blob)) is None  # too short a suffix: read more
    assert zlib.decompress(blob, 31)  # still a gzip file


# -- appends, on the directory backend, moto and Ceph RGW ----------------------------------------


def test_a_gzip_day_grows_by_the_batch_and_reads_as_the_plain_one(store: Store, make_batch: Any) -> None:
    """Many appends to a gzip day: on S3, after the first (a copy of the padding), each sends
    about the compressed batch and reads at most 64 KiB; the directory, which needs no padding,
    writes a day below 5 MiB again from the copy it read, as it does a plain one. The document
    inflates to what the plain form stores, counters and all."""
    assert store.capabilities().server_side_append
    pads = store.capabilities().min_copy > 0  # S3's smallest copied part; the directory copies any
    listed = ListedIndex()  # the day's batch ids, known as a running service knows them
    first = gzip_append(store, [odds_batch(1, make_batch)], 1, listed)
    assert first.path == "new"
    results = []
    for seq in range(2, 9):
        batch = odds_batch(seq, make_batch)
        before = 0 if pads else store.head(GZ).size  # type: ignore[union-attr]
        result = gzip_append(store, [batch], seq, listed)
        compressed = len(gzip.compress(json.dumps(batch.fetches).encode(), 6))
        results.append(result)
        assert result.stored == [batch.batch_id]
        assert result.bytes_sent <= before + 2 * compressed + 64 * 1024, (seq, result.bytes_sent, compressed)
        assert result.bytes_received <= before + 64 * 1024
    assert {r.path for r in results} == {"tail" if pads else "rewrite"}
    plain, doc = stored_document(store)
    assert [u["upload_sequence"] for u in doc["uploads"]] == list(range(1, 9))
    assert verify(doc, store.head(GZ).metadata) == []  # type: ignore[union-attr]
    stored = store.head(GZ).size  # type: ignore[union-attr]
    assert padded(store.get(GZ)[0]) == pads
    padding = gzip_form.PAD_SIZE if pads else 0
    if isinstance(store, S3Store):  # a gzip file, which clients must not inflate in transit (§5.10)
        head = store.client.head_object(Bucket=store.bucket, Key=GZ)
        assert head["ContentType"] == "application/gzip" and "ContentEncoding" not in head
    # Random odds compress less than the pipeline's fetches (12x, docs/BENCHMARKS.md), even so:
    assert (stored - padding) * 2 < len(plain)


def test_close_and_late_uploads_on_a_gzip_day(store: Store, make_batch: Any) -> None:
    """A closed gzip day is unpadded, closing it again changes nothing, and a late upload lands."""
    gzip_append(store, [odds_batch(1, make_batch)], 1)
    closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=13), compression=Compression.GZIP)
    assert closed.path in ("tail", "rewrite") and not padded(store.get(GZ)[0])
    assert closed.etag in (None, store.head(GZ).etag)  # type: ignore[union-attr]
    again = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=14), compression=Compression.GZIP)
    assert again.path == "none" and again.etag == store.head(GZ).etag  # type: ignore[union-attr]
    late = gzip_append(store, [odds_batch(2, make_batch)], 15 * 60)
    assert late.stored and not padded(store.get(GZ)[0])
    _, doc = stored_document(store)
    meta = doc["daily_metadata"]
    assert meta["closed"] is True and meta["late_uploads"] == [late.stored[0]]
    assert verify(doc, store.head(GZ).metadata) == []  # type: ignore[union-attr]


def test_a_day_keeps_the_form_it_was_started_in(store: Store, make_batch: Any) -> None:
    """Switching the setting mid-day changes nothing for that day: a plain day stays plain under
    gzip, a gzip day stays gzip under none; only a new day takes the new form."""
    append_batches(store, PREFIX, TZ, [make_batch(1)], T0)
    gzip_append(store, [make_batch(2)], 2)
    assert store.head(GZ) is None
    assert [u["upload_sequence"] for u in json.loads(store.get(PLAIN)[0])["uploads"]] == [1, 2]
    other = DAY + timedelta(days=1)
    append_batches(store, PREFIX, TZ, [make_batch(3, day=other)], T0, compression=Compression.GZIP)
    append_batches(store, PREFIX, TZ, [make_batch(4, day=other)], T0)
    assert store.head(daily.day_key(PREFIX, other)) is None
    _, doc = stored_document(store, daily.day_key(PREFIX, other, gzip=True))
    assert len(doc["uploads"]) == 2


def test_the_padding_object_is_written_once_and_copied(s3_server: S3Server, bucket: str, make_batch: Any) -> None:
    """On S3 a new gzip day opens with the padding, copied from the one padding object."""
    store = make_s3_store(s3_server, bucket)
    assert store.capabilities().server_side_append
    gzip_append(store, [make_batch(1)], 1)
    pad = store.head(pad_key(PREFIX))
    assert pad is not None and pad.size == gzip_form.PAD_SIZE
    append_batches(store, PREFIX, TZ, [make_batch(2, day=DAY + timedelta(days=1))], T0,
                   compression=Compression.GZIP)
    assert store.head(pad_key(PREFIX)).etag == pad.etag  # type: ignore[union-attr]
    assert store.get(GZ)[0][:gzip_form.PAD_SIZE] == gzip_form.pad()


@pytest.mark.parametrize("refused", [("UploadPartCopy",), ("UploadPartCopy", "CreateMultipartUpload", "GetObject")])
def test_a_server_that_cannot_append_server_side_gets_unpadded_gzip_days(
    s3_server: S3Server, bucket: str, make_batch: Any, refused: tuple[str, ...],
) -> None:
    """Without range copies (or multipart, or suffix reads) a gzip day starts unpadded and each
    append rewrites it: still every batch once, still what gunzip reads as the plain document."""
    rules = [Rule(op=op, when=(lambda r: "range" in r.headers) if op == "GetObject" else None, answer=NOT_IMPLEMENTED)
             for op in refused]
    with FaultProxy((s3_server.host, s3_server.port)) as proxy:
        proxy.rules[:] = rules
        store = make_s3_store(proxy.url, bucket)
        assert not store.capabilities().server_side_append
        results = [gzip_append(store, [odds_batch(i, make_batch)], i) for i in range(1, 5)]
        closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=13), compression=Compression.GZIP)
    assert [r.path for r in results] == ["new", "rewrite", "rewrite", "rewrite"] and closed.path == "rewrite"
    stored = read_day(s3_server.client(), bucket, GZ)
    assert stored.problems == [] and stored.uploads == 4 and stored.meta["closed"] is True
    assert stored.size < gzip_form.PAD_SIZE and s3_server.keys(bucket) == [GZ]


# -- closing drops the padding --------------------------------------------------------------------


class _Killed(BaseException):
    """The process dying: nothing after it runs, no handler catches it."""


class _DiesBeforeTrim:
    """Our own Store wrapper: the process dies at the trim's first request (its ranged GET), right
    after the close's write, as a SIGKILL there would leave it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(
        self, key: str, suffix: int | None = None, *, span: tuple[int, int] | None = None
    ) -> tuple[bytes, ObjectInfo]:
        if span is not None:
            raise _Killed
        return self.inner.get(key, suffix)


@pytest.mark.parametrize("content", ["small", "large"])
def test_a_closed_gzip_day_loses_its_padding_and_still_takes_late_uploads(
    s3_server: S3Server, bucket: str, make_batch: Any, content: str,
) -> None:
    """A close killed between its write and the trim leaves the day closed and padded; the next
    close drops the padding: the object becomes its content members, which inflate (`gzip -dc`)
    to the same document byte for byte, copied on the server from 5 MiB on when the content is
    5 MiB or more, else read and written back. A late upload then lands exactly once."""
    store = make_s3_store(s3_server, bucket)
    first = noise_batch(1, make_batch, 15 << 19) if content == "large" else odds_batch(1, make_batch)
    gzip_append(store, [first], 1)
    with pytest.raises(_Killed):
        close_day(_DiesBeforeTrim(store), PREFIX, TZ, DAY, T0 + timedelta(hours=13), compression=Compression.GZIP)
    before, old = store.get(GZ)
    document = gunzip(before)
    assert padded(before) and json.loads(document)["daily_metadata"]["closed"] is True
    assert (len(before) - gzip_form.PAD_SIZE >= 5 << 20) == (content == "large")

    copies: list[str] = []
    store.client.meta.events.register("before-parameter-build.s3.UploadPartCopy",
                                      lambda params, **kw: copies.append(params["CopySourceRange"]))
    closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=14), compression=Compression.GZIP)
    after, info = store.get(GZ)
    assert closed.path == "none" and after == before[gzip_form.PAD_SIZE:] and gunzip(after) == document
    assert info.metadata == old.metadata and info.metadata["closed"] == "true"
    if content == "large":  # copied on the server: nothing sent
        assert copies == [f"bytes={gzip_form.PAD_SIZE}-{len(before) - 1}"] and closed.bytes_sent == 0
    else:  # read and written back
        assert copies == [] and closed.bytes_sent == len(after)
    assert s3_server.keys(bucket) == sorted([GZ, pad_key(PREFIX)])
    assert not s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=15), compression=Compression.GZIP).bytes_sent == 0
    assert store.get(GZ)[0] == after  # closed and trimmed: nothing more to do

    late = odds_batch(2, make_batch)
    result = gzip_append(store, [late], 16 * 60)
    assert result.stored == [late.batch_id] and result.path == ("tail" if content == "large" else "rewrite")
    assert gzip_append(store, [late], 16 * 60 + 1).already == [late.batch_id]
    day = read_day(s3_server.admin, bucket, GZ)
    assert day.problems == [] and day.uploads == 2 and set(day.fetch_ids.values()) == {1}
    assert day.meta["late_uploads"] == [late.batch_id] and not padded(store.get(GZ)[0])


def test_a_directory_gzip_day_is_never_padded(tmp_path: Path, make_batch: Any) -> None:
    """The directory backend copies any size locally: a gzip day starts without padding, appends
    past 5 MiB copy the day and send the batch, and no padding object is written; a padded day
    an earlier version left there loses its padding when closed."""
    store = DirectoryStore(tmp_path / "bucket")
    assert store.capabilities().min_copy == 0
    results = [gzip_append(store, [noise_batch(1, make_batch, 15 << 19)], 1)]
    results += [gzip_append(store, [odds_batch(seq, make_batch)], seq) for seq in (2, 3)]
    assert [r.path for r in results] == ["new", "tail", "tail"]
    assert all(r.bytes_sent < 64 * 1024 for r in results[1:])
    data, _ = store.get(GZ)
    assert not padded(data) and gzip_form.is_gzip(data) and store.head(pad_key(PREFIX)) is None
    small = daily.day_key(PREFIX, DAY + timedelta(days=1), gzip=True)
    assert append_batches(store, PREFIX, TZ, [make_batch(4, day=DAY + timedelta(days=1))], T0,
                          compression=Compression.GZIP).path == "new"
    assert store.head(small).size < 64 * 1024  # type: ignore[union-attr]

    closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=13), compression=Compression.GZIP)
    data, info = store.get(GZ)
    assert closed.path == "tail" and not padded(data) and json.loads(gunzip(data))["daily_metadata"]["closed"]
    store.put(GZ, gzip_form.pad() + data, info.metadata)  # as an earlier version stored it
    assert close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=14), compression=Compression.GZIP).path == "none"
    assert store.get(GZ)[0] == data and store.list("") == sorted([GZ, small])


# -- a running service, killed again and again ---------------------------------------------------


@pytest.mark.slow
def test_gzip_days_under_kill_9_chaos_read_back_by_gunzip_and_duckdb(tmp_path: Path, moto_server: S3Server) -> None:
    """SIGKILLs and S3 faults with gzip days: every fetch stored once; each day, inflated by
    `gzip -d` and loaded with json, and read by DuckDB, has the fetches and counters `verify`
    finds. (On Ceph RGW the same runs with SSE-C: tests/test_encryption.py.)"""
    s3 = moto_server
    summary = chaos.run(duration=12, seed=7, kill_interval=1.2, rate=15, fault_rate=0.3, down_every=8,
                        fetch_kib=32, span_hours=1, workdir=tmp_path / "chaos", server=s3, compression="gzip")
    print(summary.line())
    assert summary.problems == [], summary.problems[:20]
    assert (summary.lost, summary.doubled, summary.wrong_day) == (0, 0, 0)
    assert summary.kills >= 4 and summary.fetches > 100
    client = s3.client()
    keys = s3.keys(summary.bucket, chaos.PREFIX + "/")
    days = [k for k in keys if daily.day_of_key(chaos.PREFIX, k)]
    assert days and all(k.endswith(".json.gz") for k in days), keys
    for key in days:
        path = tmp_path / key.rsplit("/", 1)[1]
        path.write_bytes(client.get_object(Bucket=summary.bucket, Key=key)["Body"].read())
        doc = json.loads(subprocess.run(["gzip", "-dc", str(path)], capture_output=True, check=True).stdout)
        stored = read_day(client, summary.bucket, key)
        assert stored.problems == []
        assert len(doc["uploads"]) == stored.uploads
        assert doc["daily_metadata"] == stored.meta
        [(uploads, meta)] = duckdb.sql(f"select uploads, daily_metadata from read_json('{path}', "
                                       "maximum_object_size=1000000000)").fetchall()
        assert [u["batch_id"] for u in uploads] == [u["batch_id"] for u in doc["uploads"]]
        assert meta["total_fetches_today"] == doc["daily_metadata"]["total_fetches_today"] == stored.fetches


# -- the operator's commands on gzip days ---------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "uploader.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_verify_export_status_and_repair_find_a_gzip_day(tmp_path: Path, make_batch: Any) -> None:
    """On the embedded backend: `verify` (one day, --all), `export`, `status` and `repair` find
    the day under its .json.gz key; the padding object is no stray; a day under both keys is a
    problem; a repaired gzip day stays gzip."""
    config = write_config(tmp_path, storage={"compression": "gzip"})
    store = DirectoryStore(tmp_path / "data" / "bucket", prefix=PREFIX)
    today = datetime.now(TZ).date()
    batches = [make_batch(i, day=today) for i in (1, 2, 3)]
    for i, batch in enumerate(batches):
        append_batches(store, PREFIX, TZ, [batch], T0 + timedelta(minutes=i), compression=Compression.GZIP)
    key = daily.day_key(PREFIX, today, gzip=True)
    day = today.isoformat()

    one = _cli("verify", day, "--config", str(config))
    assert one.returncode == 0 and f"{key}: 3 uploads, 30 fetches" in one.stdout, one.stdout + one.stderr
    every = _cli("verify", "--all", "--config", str(config))
    assert every.returncode == 0 and "0 stray object(s)" in every.stdout, every.stdout
    exported = _cli("export", day, "--config", str(config))
    ids = [daily.fetch_id_of(json.loads(line)) for line in exported.stdout.splitlines()]
    assert sorted(ids) == sorted(i for b in batches for i in b.fetch_ids)
    status = json.loads(_cli("status", "--json", "--config", str(config)).stdout)
    assert status["today"]["total_uploads_today"] == 3

    # Damaged: repair rebuilds it, in its form, from what it still holds.
    data, _ = store.get(key)
    store.put(key, data[:-200], {})
    repaired = _cli("repair", day, "--config", str(config))
    assert "verify: OK" in repaired.stdout, repaired.stdout + repaired.stderr
    assert store.head(daily.day_key(PREFIX, today)) is None and gzip.decompress(store.get(key)[0])

    # Under both keys (never written so): verify --all says so.
    plain = daily.serialize(json.loads(gzip.decompress(store.get(key)[0])))
    store.put(daily.day_key(PREFIX, today), plain, {})
    both = _cli("verify", "--all", "--config", str(config))
    assert both.returncode == 1 and "stored under 2 keys" in both.stdout, both.stdout
