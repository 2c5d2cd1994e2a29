"""The day document as pure functions: naming, merge, close, bytes layout, tail edits, verify."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pytest
import pytz

from uploader import daily
from uploader.daily.verifier import verify
from uploader.local.batch import Batch

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
NOON = datetime(2025, 7, 10, 16, 0, 0, tzinfo=pytz.utc)
LATER = datetime(2025, 7, 10, 20, 15, 0, tzinfo=pytz.utc)


def _doc(make_batch: Any, *seqs: int) -> dict[str, Any]:
    doc = daily.new_document(DAY, TZ.zone)
    return daily.merge_batches(doc, [make_batch(s) for s in seqs], NOON, TZ).document


def test_day_key_names_the_day_under_the_prefix() -> None:
    """The key is <prefix>/all_api_json_log_YYYY-MM-DD.json."""
    assert daily.day_key("all_api_rotating_logs/", DAY) == "all_api_rotating_logs/all_api_json_log_2025-07-10.json"


def test_merge_appends_in_seq_order_with_counters(make_batch: Any) -> None:
    """Batches are appended in seq order and the counters add up."""
    doc = daily.new_document(DAY, TZ.zone)
    result = daily.merge_batches(doc, [make_batch(2, matches_each=3), make_batch(1)], NOON, TZ)
    ups = result.document["uploads"]
    meta = result.document["daily_metadata"]
    assert [u["upload_sequence"] for u in ups] == [1, 2]
    assert [u["batch_id"] for u in ups] == [make_batch(1).batch_id, make_batch(2).batch_id]
    assert set(ups[0]) == {
        "upload_sequence", "batch_id", "upload_timestamp", "matches_in_upload", "fetches_in_upload", "fetch_data",
    }
    assert ups[0]["upload_timestamp"] == "07/10/2025 12:00:00 PM EDT"
    assert meta["total_uploads_today"] == 2
    assert meta["total_fetches_today"] == 20
    assert meta["total_matches_today"] == 50 + 30
    assert meta["matches_in_this_upload"] == 30
    assert meta["first_upload_today"] == meta["last_upload"] == "07/10/2025 12:00:00 PM EDT"
    assert "batch_ids" not in meta and meta["batch_ids_sha256"] == daily.ids_digest(u["batch_id"] for u in ups)
    assert result.stored == [u["batch_id"] for u in ups] and result.already == []


def test_merge_acknowledges_listed_batch_without_appending(make_batch: Any) -> None:
    """A batch whose id is already listed is reported as already there and not stored again."""
    doc = _doc(make_batch, 1)
    result = daily.merge_batches(doc, [make_batch(1), make_batch(2)], LATER, TZ)
    assert result.already == [make_batch(1).batch_id]
    assert result.stored == [make_batch(2).batch_id]
    assert result.document["daily_metadata"]["total_uploads_today"] == 2
    assert result.document["daily_metadata"]["first_upload_today"] == "07/10/2025 12:00:00 PM EDT"
    assert result.document["daily_metadata"]["last_upload"] == "07/10/2025 04:15:00 PM EDT"


def test_merge_refuses_a_batch_of_another_day(make_batch: Any) -> None:
    """A batch for another day is a programming error, not silently filed under the wrong day."""
    with pytest.raises(ValueError):
        daily.merge_batches(daily.new_document(DAY, TZ.zone), [make_batch(1, day=date(2025, 7, 11))], NOON, TZ)


def test_serialize_puts_metadata_last_and_parses(make_batch: Any) -> None:
    """The bytes parse as JSON, end with daily_metadata, and round-trip exactly."""
    doc = _doc(make_batch, 1, 2, 3)
    data = daily.serialize(doc)
    assert json.loads(data) == doc
    assert list(json.loads(data)) == ["uploads", "daily_metadata"]
    assert data.endswith(b"}\n") and data.count(daily.TAIL_MARKER) == 1
    assert daily.serialize(daily.parse(data)) == data


def test_empty_document_serializes_and_parses() -> None:
    """A document with no uploads is valid JSON with the same layout."""
    data = daily.serialize(daily.new_document(DAY, TZ.zone))
    assert json.loads(data)["uploads"] == []
    assert daily.split_tail(data, len(data)) is not None


def test_marker_inside_fetch_data_does_not_confuse_split(make_batch: Any) -> None:
    """Fetch text containing the marker's words cannot fake the tail: JSON escapes the newline."""
    batch = make_batch(1)
    batch.fetches[0]["RAW_API_DATA"]["note"] = '\n],\n"daily_metadata": {}'
    doc = daily.merge_batches(daily.new_document(DAY, TZ.zone), [batch], NOON, TZ).document
    data = daily.serialize(doc)
    keep, tail = daily.split_tail(data, len(data)) or (0, b"")
    assert daily.parse_tail(tail) == doc["daily_metadata"]
    assert data[:keep] + tail == data and keep > data.index(b"note")


@pytest.mark.parametrize("existing", [0, 1, 3])
def test_tail_append_matches_whole_document_merge(make_batch: Any, existing: int) -> None:
    """Appending through the tail gives byte-for-byte the document a full merge gives."""
    doc = _doc(make_batch, *range(1, existing + 1))
    data = daily.serialize(doc)
    new = [make_batch(9), make_batch(1)]  # one new, one maybe already there
    suffix = data[-200:] if len(data) > 200 else data
    found = daily.split_tail(suffix, len(data))
    if found is None:
        found = daily.split_tail(data, len(data))
    assert found is not None
    keep, tail = found
    edit = daily.append_to_tail(tail, [b.header for b in new], LATER, TZ, _listed(doc))
    expected = daily.merge_batches(doc, new, LATER, TZ)
    assert data[:keep] + _written(edit, new) == daily.serialize(expected.document)
    assert edit.stored == expected.stored and edit.already == expected.already


def _listed(doc: dict[str, Any]) -> Callable[[dict[str, Any]], daily.ListedIds]:
    """What the ListedIndex gives an append: the entries' ids, checked against the tail's digest."""
    def ids(meta: dict[str, Any]) -> daily.ListedIds:
        listed = daily.listed_in_entries(doc["uploads"])
        assert listed.matches(meta)
        return listed
    return ids


def test_tail_without_its_ids_list_takes_them_from_the_caller_and_an_old_list_is_converted(make_batch: Any) -> None:
    """A tail written before batch_ids_sha256 lists its ids itself: the caller is not asked, and
    the new tail holds their digest instead of the list."""
    doc = _doc(make_batch, 1, 2)
    old_meta = {**doc["daily_metadata"], "batch_ids": [make_batch(1).batch_id, make_batch(2).batch_id]}
    del old_meta["batch_ids_sha256"]
    data = daily.serialize({**doc, "daily_metadata": old_meta})
    _, tail = daily.split_tail(data, len(data)) or (0, b"")
    edit = daily.append_to_tail(tail, [make_batch(2).header, make_batch(3).header], LATER, TZ,
                                lambda meta: pytest.fail("asked for ids the tail lists"))
    assert edit.already == [make_batch(2).batch_id] and edit.stored == [make_batch(3).batch_id]
    assert "batch_ids" not in edit.metadata
    assert edit.metadata["batch_ids_sha256"] == daily.ids_digest(make_batch(s).batch_id for s in (1, 2, 3))
    assert list(edit.listed or []) == [make_batch(s).batch_id for s in (1, 2, 3)]


def _written(edit: daily.TailEdit, batches: list[Any]) -> bytes:
    """What an append streams: each entry's head, the batch's fetch_data as spooled, the tail."""
    by_id = {b.batch_id: b for b in batches}
    return b"".join(edit.pieces(lambda header: by_id[header.batch_id].fetch_data))


def test_streamed_entries_are_the_bytes_json_would_write(make_batch: Any) -> None:
    """An entry built from a header and spooled fetch_data equals json.dumps of the entry, for any
    text the fetches hold (unicode, escapes, quotes)."""
    fetches = make_batch(3).fetches
    fetches[0]["RAW_API_DATA"]["name"] = 'Müller "Dö" \\ \u2028 \n 🏟'
    batch = Batch.of("b" * 32, 3, make_batch(3).day, "cut", fetches, 15, [f"f-3-{i}" for i in range(10)])
    stamp = "07/10/2025 04:15:00 PM EDT"
    entry = daily.upload_entry(batch, 7, stamp)
    streamed = daily.entry_head(batch.header, 7, stamp) + batch.fetch_data + b"}"
    assert streamed == json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode()
    assert b"\n" not in streamed


def test_split_tail_asks_for_more_when_marker_not_in_suffix(make_batch: Any) -> None:
    """A suffix that does not reach the marker yields None, so the caller reads more."""
    data = daily.serialize(_doc(make_batch, 1))
    assert daily.split_tail(data[-5:], len(data)) is None


def test_tail_append_of_listed_batches_writes_nothing(make_batch: Any) -> None:
    """When every batch is already listed, the tail edit has no bytes to write."""
    data = daily.serialize(_doc(make_batch, 1, 2))
    _, tail = daily.split_tail(data, len(data)) or (0, b"")
    edit = daily.append_to_tail(tail, [make_batch(2).header], LATER, TZ, _listed(_doc(make_batch, 1, 2)))
    assert not edit.changed and edit.entries == [] and edit.already == [make_batch(2).batch_id]


def test_close_sets_closed_once_and_late_uploads_are_recorded(make_batch: Any) -> None:
    """Closing sets closed/closed_at once; a batch arriving afterwards is stored and listed as late."""
    closed = daily.close_document(_doc(make_batch, 1), NOON, TZ)
    again = daily.close_document(closed, LATER, TZ)
    assert again["daily_metadata"]["closed"] is True
    assert again["daily_metadata"]["closed_at"] == "07/10/2025 12:00:00 PM EDT"
    late = daily.merge_batches(again, [make_batch(2)], LATER, TZ).document
    assert late["daily_metadata"]["late_uploads"] == [make_batch(2).batch_id]
    assert late["daily_metadata"]["total_uploads_today"] == 2


def test_close_tail_matches_close_document(make_batch: Any) -> None:
    """Closing through the tail gives the same bytes as closing the parsed document."""
    doc = _doc(make_batch, 1)
    data = daily.serialize(doc)
    keep, tail = daily.split_tail(data, len(data)) or (0, b"")
    edit = daily.close_tail(tail, NOON, TZ)
    assert data[:keep] + _written(edit, []) == daily.serialize(daily.close_document(doc, NOON, TZ))
    assert not daily.close_tail(edit.tail, LATER, TZ).changed


def test_user_metadata_is_small_and_reads_back(make_batch: Any) -> None:
    """The x-amz-meta set carries the counters (not the id list) and parses back to numbers."""
    meta = _doc(make_batch, 1, 2)["daily_metadata"]
    user = daily.user_metadata(meta)
    assert all(isinstance(v, str) and v.isascii() for v in user.values())
    assert "batch_ids" not in user
    back = daily.counters_from_user_metadata(user)
    assert back["total_uploads_today"] == 2 and back["total_fetches_today"] == 20
    assert back["total_matches_today"] == 100 and back["closed"] is False


def test_verify_accepts_a_sound_document(make_batch: Any) -> None:
    """A document written by these functions has no problems."""
    doc = _doc(make_batch, 1, 2, 3)
    assert verify(doc, daily.user_metadata(doc["daily_metadata"])) == []


def test_verify_lists_duplicates_and_count_mismatches(make_batch: Any) -> None:
    """Duplicate batch ids, duplicate fetch ids and wrong totals are each reported."""
    doc = _doc(make_batch, 1, 2)
    doc["uploads"].append(dict(doc["uploads"][0], upload_sequence=3))
    doc["daily_metadata"]["total_matches_today"] = 7
    problems = verify(doc)
    text = "\n".join(problems)
    assert f"batch_id {make_batch(1).batch_id} is stored 2 times" in text
    assert "fetch_id f-1-0 is stored 2 times" in text
    assert "total_uploads_today is 2, the uploads add up to 3" in text
    assert "total_matches_today is 7" in text
