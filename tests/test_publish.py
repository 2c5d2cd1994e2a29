"""Appending batches to the day document on every backend: counters, exactly once, O(batch) large
appends, closing days, racing writers, quarantine uploads."""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytz

from uploader import daily
from uploader.daily.verifier import verify
from uploader.local.batch import QuarantineItem
from uploader.publish import SMALL_LIMIT, append_batches, close_day
from uploader.publish.cache import WriteCache
from uploader.publish.listed import ListedIndex
from uploader.publish.quarantine import upload_quarantine
from uploader.store import Store
from uploader.store.s3 import S3Store

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
T0 = datetime(2025, 7, 10, 16, 0, 0, tzinfo=pytz.utc)
PREFIX = "logs"
KEY = daily.day_key(PREFIX, DAY)
DEADLINE_S = 30


def _load(store: Store) -> dict[str, Any]:
    data, _ = store.get(KEY)
    doc: dict[str, Any] = json.loads(data)
    return doc


def test_three_appends_make_one_document(store: Store, make_batch: Any) -> None:
    """Three appends land in one document with the right counters, metadata last, valid JSON."""
    for i in (1, 2, 3):
        result = append_batches(store, PREFIX, TZ, [make_batch(i, matches_each=i)], T0 + timedelta(minutes=i))
        assert result.stored == [make_batch(i).batch_id]
    assert store.list(PREFIX) == [KEY]
    doc = _load(store)
    assert list(doc) == ["uploads", "daily_metadata"]
    meta = doc["daily_metadata"]
    assert [u["upload_sequence"] for u in doc["uploads"]] == [1, 2, 3]
    assert (meta["total_uploads_today"], meta["total_fetches_today"], meta["total_matches_today"]) == (3, 30, 60)
    assert meta["first_upload_today"] == "07/10/2025 12:01:00 PM EDT"
    assert meta["last_upload"] == "07/10/2025 12:03:00 PM EDT"
    assert meta["matches_in_this_upload"] == 30
    assert verify(doc, store.head(KEY).metadata) == []  # type: ignore[union-attr]


def test_same_batch_twice_is_stored_once(store: Store, make_batch: Any) -> None:
    """A batch appended again (a retry or a replay) is acknowledged and not stored twice."""
    first = append_batches(store, PREFIX, TZ, [make_batch(1)], T0)
    etag = store.head(KEY).etag  # type: ignore[union-attr]
    again = append_batches(store, PREFIX, TZ, [make_batch(1)], T0)
    assert first.stored == again.already == [make_batch(1).batch_id]
    assert again.stored == [] and again.path == "none"
    assert store.head(KEY).etag == etag  # type: ignore[union-attr]
    mixed = append_batches(store, PREFIX, TZ, [make_batch(2), make_batch(1)], T0)
    assert mixed.stored == [make_batch(2).batch_id] and mixed.already == [make_batch(1).batch_id]
    assert [u["batch_id"] for u in _load(store)["uploads"]] == [make_batch(1).batch_id, make_batch(2).batch_id]


def test_group_commit_writes_pending_batches_in_seq_order(store: Store, make_batch: Any) -> None:
    """Several batches of one day go in one write, ordered by their sequence numbers."""
    result = append_batches(store, PREFIX, TZ, [make_batch(3), make_batch(1), make_batch(2)], T0)
    assert result.path == "new" and result.attempts == 1
    assert [u["batch_id"] for u in _load(store)["uploads"]] == [make_batch(i).batch_id for i in (1, 2, 3)]


def test_batches_of_two_days_are_refused(store: Store, make_batch: Any) -> None:
    """One append is for one day; mixing days is a caller error."""
    with pytest.raises(ValueError):
        append_batches(store, PREFIX, TZ, [make_batch(1), make_batch(2, day=date(2025, 7, 11))], T0)


def test_close_day_marks_closed_and_late_batches_are_kept(store: Store, make_batch: Any) -> None:
    """Closing sets closed/closed_at once; a batch arriving later is still stored, marked late."""
    append_batches(store, PREFIX, TZ, [make_batch(1)], T0)
    closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=13))
    assert closed.path == "rewrite"
    assert close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=14)).path == "none"
    append_batches(store, PREFIX, TZ, [make_batch(2)], T0 + timedelta(hours=15))
    meta = _load(store)["daily_metadata"]
    assert meta["closed"] is True and meta["closed_at"] == "07/11/2025 01:00:00 AM EDT"
    assert meta["late_uploads"] == [make_batch(2).batch_id] and meta["total_uploads_today"] == 2
    assert store.head(KEY).metadata["closed"] == "true"  # type: ignore[union-attr]


def test_close_day_without_uploads_creates_a_closed_empty_document(store: Store) -> None:
    """A day with no uploads still gets a closed document saying zero."""
    assert close_day(store, PREFIX, TZ, DAY, T0).path == "new"
    meta = _load(store)["daily_metadata"]
    assert meta["closed"] is True and meta["total_uploads_today"] == 0


class _WireCounter:
    """Counts the bytes an S3 client sends and receives, from botocore's own events."""

    def __init__(self, store: S3Store) -> None:
        self.sent = self.received = 0
        events = store.client.meta.events
        events.register("before-send.s3", self._on_send)
        events.register("after-call.s3", self._on_response)

    def _on_send(self, request: Any, **_: Any) -> None:
        self.sent += int(request.headers.get("Content-Length", 0) or 0)

    def _on_response(self, http_response: Any, model: Any, **_: Any) -> None:
        if model.name != "HeadObject":  # a HEAD's Content-Length is the object's, not the answer's
            self.received += int(http_response.headers.get("content-length", 0) or 0)


@pytest.mark.slow
def test_large_day_append_moves_batch_bytes_not_day_bytes(store: Store, make_batch: Any, tmp_path: Path) -> None:
    """Past 5 MiB an append copies the body server-side: the bytes moved track the batch, not the day."""
    big = [make_batch(i, pad=60_000) for i in range(1, 12)]  # ~6.6 MiB
    listed = ListedIndex(tmp_path / "ids")
    append_batches(store, PREFIX, TZ, big, T0, listed=listed)
    day_size = store.head(KEY).size  # type: ignore[union-attr]
    assert day_size > SMALL_LIMIT + 1024 * 1024
    store.capabilities()  # probe now, so the count below is the append alone
    wire = _WireCounter(store) if isinstance(store, S3Store) else None

    small = make_batch(12)
    result = append_batches(store, PREFIX, TZ, [small], T0 + timedelta(minutes=5), listed=ListedIndex(tmp_path / "ids"))

    batch_bytes = len(json.dumps(small.fetches))
    assert result.path == "tail" and result.stored == [small.batch_id]
    assert result.bytes_sent < batch_bytes + 4096
    assert result.bytes_received <= 64 * 1024
    if wire is not None:
        assert wire.sent + wire.received < 128 * 1024 < day_size // 40
    closed = close_day(store, PREFIX, TZ, DAY, T0 + timedelta(hours=9))
    assert closed.path == "tail"
    doc = _load(store)
    assert len(doc["uploads"]) == 12 and doc["daily_metadata"]["closed"] is True
    assert verify(doc, store.head(KEY).metadata) == []  # type: ignore[union-attr]


class _PausingStore:
    """Our own Store wrapper: stops before the first write until the test lets it go."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.reached = threading.Event()
        self.go = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _pause(self) -> None:
        if not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(DEADLINE_S)

    def put(self, *args: Any, **kwargs: Any) -> str:
        self._pause()
        return self.inner.put(*args, **kwargs)

    def compose(self, *args: Any, **kwargs: Any) -> str | None:
        self._pause()
        return self.inner.compose(*args, **kwargs)


def test_the_ids_a_day_lists_are_read_once_then_known_after_a_restart_and_a_lost_answer(
    store: Store, make_batch: Any, tmp_path: Path,
) -> None:
    """The tail holds only the digest of the day's batch ids. A process that knows nothing of the
    day reads it whole once; one restarted on the same spool reads nothing; one that kept the ids
    from before a write whose answer it lost (the batch stored, the spool not told) finds them by
    adding that write's batches, reads nothing, and stores each batch once."""
    folder = tmp_path / "ids"
    append_batches(store, PREFIX, TZ, [make_batch(i, pad=20_000) for i in range(1, 6)], T0)  # ~1 MiB
    size = store.head(KEY).size  # type: ignore[union-attr]
    cold = append_batches(store, PREFIX, TZ, [make_batch(6)], T0 + timedelta(minutes=1), listed=ListedIndex(folder))
    assert cold.stored == [make_batch(6).batch_id] and cold.bytes_received >= size
    before_lost = (folder / next(p.name for p in folder.iterdir())).read_bytes()
    warm = append_batches(store, PREFIX, TZ, [make_batch(7), make_batch(6)], T0 + timedelta(minutes=2),
                          listed=ListedIndex(folder))
    assert warm.stored == [make_batch(7).batch_id] and warm.already == [make_batch(6).batch_id]
    assert warm.bytes_received < 2 * size  # its small document is read once for the write, not twice
    for path in folder.iterdir():  # the ids as they were before batch 7's write: its answer was lost
        path.write_bytes(before_lost)
    retried = ListedIndex(folder)
    again = append_batches(store, PREFIX, TZ, [make_batch(7), make_batch(8)], T0 + timedelta(minutes=3),
                           listed=retried)
    assert again.already == [make_batch(7).batch_id] and again.stored == [make_batch(8).batch_id]
    assert retried.bytes_read == 0
    doc = _load(store)
    assert [u["batch_id"] for u in doc["uploads"]] == [make_batch(i).batch_id for i in range(1, 9)]
    assert verify(doc, store.head(KEY).metadata) == []  # type: ignore[union-attr]


def test_a_lost_write_is_found_among_the_batches_due_now_whichever_waited_out_a_backoff() -> None:
    """The write whose answer was lost held the batches due then (d and f; c and e were in
    backoff): matched against the tail's digest among those due now or still spooled, with no
    read (no store)."""
    index = ListedIndex()
    index.remember("k", daily.ListedIds(["a", "b"]))
    meta = {"total_uploads_today": 4, "batch_ids_sha256": daily.ids_digest(["a", "b", "d", "f"])}
    no_store: Any = None
    assert list(index.listed(no_store, "k", DAY, meta, ["b", "c", "d", "e", "f"])) == ["a", "b", "d", "f"]
    unchanged = {**meta, "batch_ids_sha256": daily.ids_digest(["a", "b"])}
    assert list(index.listed(no_store, "k", DAY, unchanged, [])) == ["a", "b"]
    waiting = ListedIndex(spooled=lambda day: ["d", "f"])  # d and f still in backoff: not in this append
    waiting.remember("k", daily.ListedIds(["a", "b"]))
    assert list(waiting.listed(no_store, "k", DAY, meta, ["g"])) == ["a", "b", "d", "f"]
    first = {"total_uploads_today": 1, "batch_ids_sha256": daily.ids_digest(["a"])}  # the day's first write
    assert list(ListedIndex().listed(no_store, "k", DAY, first, ["a", "b"])) == ["a"]


@pytest.mark.parametrize("pad", [0, 60_000], ids=["small-day", "large-day"])
def test_writer_that_lost_a_race_rereads_and_loses_nothing(store_factory: Any, make_batch: Any, pad: int) -> None:
    """A writer whose read went stale before its write is refused, re-reads, and both uploads survive."""
    setup = store_factory()
    append_batches(setup, PREFIX, TZ, [make_batch(i, pad=pad) for i in range(1, 11)], T0)
    slow = _PausingStore(store_factory())
    outcome: dict[str, Any] = {}
    writer = threading.Thread(
        target=lambda: outcome.update(r=append_batches(slow, PREFIX, TZ, [make_batch(20)], T0))  # type: ignore[arg-type]
    )
    writer.start()
    assert slow.reached.wait(DEADLINE_S)
    fast = append_batches(store_factory(), PREFIX, TZ, [make_batch(21)], T0)
    slow.go.set()
    writer.join(DEADLINE_S)
    assert fast.stored == [make_batch(21).batch_id]
    assert outcome["r"].stored == [make_batch(20).batch_id] and outcome["r"].attempts == 2
    ids = [u["batch_id"] for u in _load(setup)["uploads"]]
    assert ids[-2:] == [make_batch(21).batch_id, make_batch(20).batch_id] and len(ids) == 12


def test_two_writers_racing_lose_no_upload(store_factory: Any, make_batch: Any) -> None:
    """Two writers appending to the same day at once end with every batch stored exactly once."""
    start = threading.Barrier(2, timeout=DEADLINE_S)
    errors: list[BaseException] = []

    def writer(first_seq: int) -> None:
        store = store_factory()
        store.capabilities()
        try:
            start.wait()
            for seq in range(first_seq, first_seq + 4):
                append_batches(store, PREFIX, TZ, [make_batch(seq)], T0)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in (1, 101)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLINE_S)
    assert errors == []
    doc = _load(store_factory())
    expected = {make_batch(s).batch_id for s in [*range(1, 5), *range(101, 105)]}
    assert {u["batch_id"] for u in doc["uploads"]} == expected
    assert verify(doc) == []


def test_quarantine_is_uploaded_verbatim_once(store: Store) -> None:
    """Quarantined bytes land under <prefix>/quarantine/ verbatim, with reason and offset; twice is once."""
    item = QuarantineItem(
        name="2025-07-10T16-00-00_000123.bin", raw=b"=== FETCH START: x |\n\xff garbage",
        reason="END without START\nat line 3", offset=123, detected_at="07/10/2025 12:00:00 PM EDT",
        day=DAY,
    )
    key = upload_quarantine(store, PREFIX, item)
    assert key == f"{PREFIX}/quarantine/{item.name}"
    assert upload_quarantine(store, PREFIX, item) == key
    data, info = store.get(key)
    assert data == item.raw
    assert info.metadata["reason"] == "END without START at line 3" and info.metadata["offset"] == "123"
    assert store.list(f"{PREFIX}/quarantine/") == [key]


class _CallCounter:
    """Counts the S3 operations a client makes, by name."""

    def __init__(self, store: S3Store) -> None:
        self.calls: list[str] = []
        store.client.meta.events.register("before-call.s3", self._on_call)

    def _on_call(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


@pytest.mark.parametrize("pad", [0, 60_000], ids=["small-day", "large-day"])
def test_write_cache_skips_rereading_our_own_last_write(store: Store, make_batch: Any, pad: int) -> None:
    """After our own write, the next append needs no HEAD or GET: the cached ETag guards it."""
    cache, listed = WriteCache(), ListedIndex()
    append_batches(store, PREFIX, TZ, [make_batch(i, pad=pad) for i in range(1, 12)], T0, cache, listed=listed)
    store.capabilities()
    counter = _CallCounter(store) if isinstance(store, S3Store) else None
    result = append_batches(store, PREFIX, TZ, [make_batch(12)], T0 + timedelta(minutes=1), cache, listed=listed)
    assert result.stored and result.bytes_received == 0
    if counter is not None:
        assert "HeadObject" not in counter.calls[:1] and "GetObject" not in counter.calls
    doc = _load(store)
    assert doc["daily_metadata"]["total_uploads_today"] == 12
    assert verify(doc) == []


@pytest.mark.parametrize("pad", [0, 60_000], ids=["small-day", "large-day"])
def test_write_cache_notices_another_writer(store_factory: Any, make_batch: Any, pad: int) -> None:
    """A change by another writer after our last write is refused, re-read and kept: nothing is lost."""
    ours, theirs = store_factory(), store_factory()
    cache = WriteCache()
    append_batches(ours, PREFIX, TZ, [make_batch(i, pad=pad) for i in range(1, 12)], T0, cache)
    append_batches(theirs, PREFIX, TZ, [make_batch(50)], T0 + timedelta(minutes=1))
    result = append_batches(ours, PREFIX, TZ, [make_batch(60)], T0 + timedelta(minutes=2), cache)
    assert result.attempts == 2 and result.stored
    doc = _load(ours)
    ids = [u["batch_id"] for u in doc["uploads"]]
    assert make_batch(50).batch_id in ids and make_batch(60).batch_id in ids
    assert verify(doc) == []


def test_append_to_a_day_written_by_the_old_logger(store: Store, make_batch: Any) -> None:
    """A document in the seed's layout (metadata first, pretty-printed) takes an append and is rewritten in ours."""
    seed_doc = {
        "daily_metadata": {"date": DAY.isoformat(), "total_uploads_today": 1, "total_matches_today": 7,
                           "first_upload_today": "07/10/2025 09:00:00 AM EDT"},
        "uploads": [{"upload_sequence": 1, "upload_timestamp": "07/10/2025 09:00:00 AM EDT",
                     "matches_in_upload": 7, "fetches_in_upload": 1,
                     "fetch_data": [{"FETCH_HEADER": {"fetch_id": "old1"}, "FETCH_FOOTER": {"total_matches": 7}}]}],
    }
    store.put(KEY, json.dumps(seed_doc, indent=2).encode(), {})
    result = append_batches(store, PREFIX, TZ, [make_batch(1)], T0, WriteCache())
    assert result.stored == [make_batch(1).batch_id]
    doc = _load(store)
    assert [u["fetches_in_upload"] for u in doc["uploads"]] == [1, 10]
    assert doc["daily_metadata"]["total_uploads_today"] == 2
    assert doc["daily_metadata"]["total_matches_today"] == 7 + 50
    assert list(doc) == ["uploads", "daily_metadata"]
