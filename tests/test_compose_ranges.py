"""No cliff at S3's limits: a kept body is copied in ranges (at most a copy part each, within the
part count), a killed append between copy parts changes nothing, and an object past the largest
size is refused. On moto and Ceph RGW, with the store's limits lowered on the real code path."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import build_batch, make_s3_store, read_day
from rig.s3servers import S3Server

from uploader import daily
from uploader.errors import StoreRejected
from uploader.publish import append_batches
from uploader.store.capabilities import (
    COPY_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_COPY_PART_SIZE,
    MIN_PART_SIZE,
    PART_SIZE,
)
from uploader.store.s3 import S3Store
from uploader.store.s3_compose import copy_ranges

CHILD = Path(__file__).parent / "rig" / "crash_child.py"
TZ = pytz.timezone("America/New_York")
DAY = daily.day_key("logs", datetime(2025, 7, 10).date())
KEY = DAY
T0 = datetime(2025, 7, 10, 16, 0, tzinfo=pytz.utc)
LIMIT = MIN_COPY_PART_SIZE  # the smallest copy part the store takes: 10 MiB
MiB = 1 << 20


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _copies(store: S3Store) -> list[tuple[int, int]]:
    """The (first, last) range of every UploadPartCopy the store sends from now on, as sent."""
    store.capabilities()  # the probe's own copies are not counted
    sent: list[tuple[int, int]] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        first, last = params["CopySourceRange"].removeprefix("bytes=").split("-")
        sent.append((int(first), int(last)))

    store.client.meta.events.register("before-parameter-build.s3.UploadPartCopy", record)
    return sent


def _uploads(server: S3Server, bucket: str) -> list[dict[str, Any]]:
    return list(server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _assert_cover(ranges: list[tuple[int, int]], keep: int, limit: int) -> None:
    """The ranges copy bytes 0..keep-1 once each, in order, each a valid part of at most ``limit``."""
    assert ranges[0][0] == 0 and ranges[-1][1] == keep - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert all(MIN_PART_SIZE <= last - first + 1 <= limit for first, last in ranges)


@pytest.mark.parametrize("keep", [MIN_PART_SIZE, LIMIT - 1, LIMIT, LIMIT + 1, 3 * LIMIT - 1, 3 * LIMIT,
                                  3 * LIMIT + 1, 10 * LIMIT + 12345])
def test_copy_ranges_cover_the_kept_bytes_in_as_few_parts_as_the_limit_allows(keep: int) -> None:
    """Ranges of at most the copy part, equal to a byte and never below S3's smallest part,
    as many as ceil(keep / limit)."""
    ranges = copy_ranges(keep, LIMIT, MAX_PARTS)
    assert len(ranges) == _ceil(keep, LIMIT)
    _assert_cover(ranges, keep, LIMIT)
    assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1


def test_copy_ranges_grow_to_fit_the_part_count_and_respect_s3_sizes() -> None:
    """The copy takes at most half the parts, its parts growing past the copy part size to fit;
    a copy part size out of S3's bounds is brought within them; a day of S3's largest size fits."""
    assert copy_ranges(0, LIMIT, MAX_PARTS) == []
    grown = copy_ranges(10 * LIMIT, LIMIT, 8)
    assert len(grown) == 4 and min(b - a + 1 for a, b in grown) > LIMIT
    _assert_cover(grown, 10 * LIMIT, _ceil(10 * LIMIT, 4))
    assert len(copy_ranges(3 * LIMIT, MIN_PART_SIZE, MAX_PARTS)) == 3  # 5 MiB is raised to 10 MiB
    assert len(copy_ranges(3 * MAX_PART_SIZE, 2 * MAX_PART_SIZE, MAX_PARTS)) == 3  # capped at 5 GiB
    assert len(copy_ranges(20 << 30, COPY_PART_SIZE, MAX_PARTS)) == 40  # 20 GiB in 512 MiB parts
    largest = copy_ranges(MAX_OBJECT_SIZE, COPY_PART_SIZE, MAX_PARTS)
    assert len(largest) <= MAX_PARTS // 2 and max(b - a + 1 for a, b in largest) <= MAX_PART_SIZE
    with pytest.raises(ValueError):
        copy_ranges(3 * MAX_PART_SIZE, LIMIT, 4)  # two parts of at most 5 GiB cannot hold 15 GiB


def test_composed_object_is_the_kept_bytes_then_the_new_ones(s3_server: S3Server, bucket: str) -> None:
    """Around part boundaries (a multiple of the copy part, one byte more, one less), compose
    sends ceil(keep / limit) UploadPartCopy requests, as planned, and the object is exactly the
    kept prefix followed by the new bytes (which span two parts)."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size = LIMIT
    sent = _copies(store)
    rng = random.Random(7)
    old = rng.randbytes(2 * LIMIT + 4096)
    new = rng.randbytes(PART_SIZE + 3)
    for keep in (2 * LIMIT, 2 * LIMIT + 1, 2 * LIMIT - 1, LIMIT):
        etag = store.put(KEY, old, {"v": "old"})
        sent.clear()
        pieces = [new[:100], new[100:PART_SIZE], new[PART_SIZE:]]  # parts of PART_SIZE and 3 bytes
        store.compose(KEY, keep, pieces, {"v": str(keep)}, if_match=etag)
        assert sent == copy_ranges(keep, LIMIT, MAX_PARTS) and len(sent) == _ceil(keep, LIMIT), keep
        data, info = store.get(KEY)
        assert data == old[:keep] + new, keep
        assert info.metadata == {"v": str(keep)}
    assert _uploads(s3_server, bucket) == []


def test_a_range_from_an_offset_is_copied_in_parts_and_nothing_else_sent(s3_server: S3Server, bucket: str) -> None:
    """compose(start=...) with no new bytes (a gzip day's padding dropped): the ranges planned for
    ``keep``, each moved by ``start``, and no UploadPart at all; the object is exactly that range."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size = LIMIT
    sent = _copies(store)
    uploaded: list[int] = []
    store.client.meta.events.register("before-parameter-build.s3.UploadPart",
                                      lambda params, **kw: uploaded.append(params["PartNumber"]))
    old = random.Random(5).randbytes(2 * LIMIT + MiB)
    etag = store.put(KEY, old, {"v": "old"})
    start, keep = MiB + 3, 2 * LIMIT - 3
    store.compose(KEY, keep, [], {"v": "trimmed"}, if_match=etag, start=start)
    assert sent == [(start + first, start + last) for first, last in copy_ranges(keep, LIMIT, MAX_PARTS)]
    assert len(sent) == 2 and uploaded == []
    data, info = store.get(KEY)
    assert data == old[start:start + keep] and info.metadata == {"v": "trimmed"}
    assert _uploads(s3_server, bucket) == []


def test_copy_parts_grow_when_the_part_count_is_short(s3_server: S3Server, bucket: str) -> None:
    """With the part limit lowered to 4, a kept body of 3 copy parts is copied in 2 larger ones,
    leaving 2 parts for the new bytes; new bytes needing a third are refused, nothing written."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size, store.max_parts = LIMIT, 4
    sent = _copies(store)
    old = random.Random(3).randbytes(3 * LIMIT - MiB)
    etag = store.put(KEY, old, {})
    keep = len(old) - 1000
    store.compose(KEY, keep, [b"n" * PART_SIZE, b"n"], {}, if_match=etag)  # two new parts
    assert len(sent) == 2 and min(b - a + 1 for a, b in sent) > LIMIT
    before = store.get(KEY)[0]
    assert before == old[:keep] + b"n" * (PART_SIZE + 1)
    with pytest.raises(ValueError, match="more than 4 parts"):
        store.compose(KEY, keep, [b"m" * PART_SIZE, b"m" * PART_SIZE, b"m"], {})
    assert store.get(KEY)[0] == before and _uploads(s3_server, bucket) == []


def test_an_object_past_the_largest_size_is_refused_and_nothing_written(s3_server: S3Server, bucket: str) -> None:
    """An append that would pass S3's largest object is one permanent error naming the limit:
    before any copy when its first part crosses, after the copy (aborted) when a later one does."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size = LIMIT
    sent = _copies(store)
    old = b"d" * (2 * LIMIT)
    store.put(KEY, old, {})
    store.max_object_size = len(old) + 8 * MiB  # a lowered stand-in for 5 TiB
    with pytest.raises(StoreRejected, match="would pass the largest object S3 stores \\(28 MiB\\)") as refused:
        store.compose(KEY, len(old), [b"x" * (8 * MiB + 1)], {})
    assert sent == [] and "log less per day" in str(refused.value)
    with pytest.raises(StoreRejected, match="28 MiB"):
        store.compose(KEY, len(old), [b"y" * PART_SIZE, b"z" * MiB], {})  # the second part crosses
    assert len(sent) == 2  # copied, then refused and aborted
    assert store.get(KEY)[0] == old and _uploads(s3_server, bucket) == []


def _append(store: S3Store, seqs: list[int], when: datetime, pad: int = 400_000) -> Any:
    return append_batches(store, "logs", TZ, [build_batch(s, pad=pad) for s in seqs], when)


def test_a_day_past_the_copy_part_is_appended_many_times_every_batch_once(
    s3_server: S3Server, bucket: str,
) -> None:
    """Through the uploader's own append, with the copy part lowered to 10 MiB: a day that
    grows past it and then past twice it is appended again and again, its body copied in as
    many ranges as planned, and every batch is stored exactly once (one repeated)."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size = LIMIT
    sent = _copies(store)
    assert _append(store, [1, 2, 3], T0).path == "new"  # ~12 MiB
    for seq in range(4, 8):
        size = store.head(KEY).size  # type: ignore[union-attr]
        sent.clear()
        result = _append(store, [seq], T0 + timedelta(minutes=seq))
        assert result.path == "tail" and result.stored == [build_batch(seq).batch_id]
        keep = sent[-1][1] + 1
        assert size - 64 * 1024 < keep < size and len(sent) == _ceil(keep, LIMIT) >= 2
        _assert_cover(sent, keep, LIMIT)
    again = _append(store, [7, 8], T0 + timedelta(minutes=9))
    assert again.already == [build_batch(7).batch_id] and again.stored == [build_batch(8).batch_id]
    day = read_day(s3_server.admin, bucket, KEY)
    assert day.problems == [] and day.size > 3 * LIMIT
    assert day.uploads == 8 and day.meta["batch_ids_sha256"] == daily.ids_digest(build_batch(s).batch_id for s in range(1, 9))
    assert set(day.fetch_ids.values()) == {1} and len(day.fetch_ids) == 80


def test_a_kill_between_copy_parts_changes_nothing_and_the_next_append_lands_once(
    s3_server: S3Server, bucket: str, tmp_path: Path,
) -> None:
    """SIGKILLed right after its 2nd of 3 UploadPartCopy requests, an append leaves the day as it
    was and one unfinished upload, which remove_leftovers removes; the batch, appended again,
    is stored exactly once."""
    store = make_s3_store(s3_server, bucket)
    store.copy_part_size = LIMIT
    _append(store, [1, 2, 3, 4, 5, 6], T0, pad=360_000)  # ~22 MiB: three copy parts
    before = store.get(KEY)[0]
    assert _ceil(len(before), LIMIT) == 3
    batch = tmp_path / "batch"
    batch.write_bytes(build_batch(7, pad=1000).to_json())
    child = subprocess.run([sys.executable, str(CHILD), "compose", s3_server.endpoint, bucket, str(batch),
                            str(LIMIT), "2", (T0 + timedelta(minutes=7)).isoformat()], timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert store.get(KEY)[0] == before
    left = _uploads(s3_server, bucket)
    assert [u["Key"] for u in left] == [KEY]
    parts = s3_server.admin.list_parts(Bucket=bucket, Key=KEY, UploadId=left[0]["UploadId"]).get("Parts", [])
    assert [p["PartNumber"] for p in parts] == [1, 2]
    removed = store.remove_leftovers(writer_started=True)
    assert removed == [f"{KEY} (unfinished multipart upload)"] and _uploads(s3_server, bucket) == []
    result = _append(store, [7], T0 + timedelta(minutes=8), pad=1000)
    assert result.stored == [build_batch(7).batch_id]
    day = read_day(s3_server.admin, bucket, KEY)
    assert day.problems == [] and day.uploads == 7 and set(day.fetch_ids.values()) == {1}
    assert day.meta["batch_ids_sha256"] == daily.ids_digest(build_batch(s).batch_id for s in range(1, 8))
