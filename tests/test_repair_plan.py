"""Planning a repair, a pure function: salvaged bucket entries + archived batches -> the document,
and the document streamed from the plan as repair writes it."""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pytz
from helpers import build_batch

from uploader import daily
from uploader.daily.repair_plan import (
    Kept,
    Planned,
    RepairPlan,
    document_pieces,
    entry_line,
    kept_batch,
    kept_entry,
    plan_repair,
)
from uploader.daily.salvage import Salvage, salvaged
from uploader.daily.verifier import verify
from uploader.local.batch import Batch
from uploader.stamps import format_stamp

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
T0 = datetime(2025, 7, 10, 14, 0, tzinfo=pytz.utc)
NOW = datetime(2025, 7, 12, 9, 30, tzinfo=pytz.utc)
B = {seq: build_batch(seq) for seq in range(1, 6)}  # 10 fetches of 5 matches each


def _merged(doc: dict[str, Any], *seqs: int, minutes: int = 0) -> dict[str, Any]:
    return daily.merge_batches(doc, [B[s] for s in seqs], T0 + timedelta(minutes=minutes), TZ).document


@dataclass
class _Bucket:
    """A document's bytes as the bucket holds them, and what salvage read of them."""

    data: bytes
    found: Salvage
    kept: list[Kept]


def _found(doc: dict[str, Any] | bytes, cut: int | None = None) -> _Bucket:
    data = doc if isinstance(doc, bytes) else daily.serialize(doc)
    data = data[:cut] if cut is not None else data
    found = Salvage()
    kept = [kept_entry(s.place, s.value) for s in salvaged(io.BytesIO(data), found) if s.value is not None]
    return _Bucket(data, found, kept)


def _plan(bucket: _Bucket | None, archived: list[Batch], timezone: str = TZ.zone) -> RepairPlan:
    return plan_repair(DAY, timezone, bucket.found if bucket else None, bucket.kept if bucket else [],
                       [kept_batch(b) for b in archived], NOW, TZ)


def _written(plan: RepairPlan, bucket: _Bucket | None) -> bytes:
    """The document's bytes as repair streams them: the bucket's lines read again, the batches' fetches."""
    lines = {s.place: s for s in salvaged(io.BytesIO(bucket.data if bucket else b""), Salvage(), parse=False)}
    by_seq = {b.seq: b for b in B.values()}
    pieces = document_pieces(plan, lambda p: entry_line(p, lines[p.kept.origin].text, lines[p.kept.origin].value),
                             lambda p: by_seq[p.kept.origin].fetch_data)
    return b"".join(pieces) + plan.tail


def _document(plan: RepairPlan, bucket: _Bucket | None) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(_written(plan, bucket))
    assert doc["daily_metadata"] == plan.metadata
    return doc


def _ids(plan: RepairPlan) -> list[str | None]:
    return [p.kept.batch_id for p in plan.entries]


def _bucket_then_late_replay() -> dict[str, Any]:
    """Batches 1 and 4 uploaded, the day closed, then 2 replayed late; 3 and 5 never reached the bucket."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 4)
    doc = daily.close_document(doc, T0 + timedelta(hours=11), TZ)
    doc = _merged(doc, 2, minutes=24 * 60)
    doc["daily_metadata"]["late_uploads"].append("f" * 64)  # names a batch the document does not hold
    return doc


def test_each_batch_goes_in_once_ordered_by_seq_with_unarchived_entries_first() -> None:
    """Bucket entries and archived batches merge once each, by seq, the one the archive lost first."""
    archived = [B[5], B[3], B[4], B[2]]  # batch 1 was pruned from the archive
    bucket = _found(_bucket_then_late_replay())
    plan = _plan(bucket, archived)
    doc = _document(plan, bucket)
    assert _ids(plan) == [e["batch_id"] for e in doc["uploads"]] == [B[s].batch_id for s in (1, 2, 3, 4, 5)]
    assert [e["upload_sequence"] for e in doc["uploads"]] == [1, 2, 3, 4, 5]
    assert (plan.from_bucket, plan.from_archive, plan.duplicates) == (3, 2, 0)
    assert plan.metadata["batch_ids_sha256"] == daily.ids_digest(B[s].batch_id for s in (1, 2, 3, 4, 5))
    assert verify(doc) == []


def test_the_metadata_carries_the_ids_digest_where_the_list_was_and_no_list() -> None:
    """batch_ids_sha256 follows matches_in_this_upload (where batch_ids was); batch_ids is gone."""
    plan = _plan(_found(_bucket_then_late_replay()), [B[3]])
    names = list(plan.metadata)
    assert "batch_ids" not in names
    assert names.index("batch_ids_sha256") == names.index("matches_in_this_upload") + 1
    assert names[-1] == "repaired_at"


def test_unarchived_bucket_entries_keep_the_bucket_order_ahead_of_archived_ones() -> None:
    """Entries the archive no longer has come first in the order the bucket holds them, whatever their seq."""
    doc = _merged(_merged(daily.new_document(DAY, TZ.zone), 4), 2)
    plan = _plan(_found(doc), [B[1], B[3]])
    assert _ids(plan) == [B[s].batch_id for s in (4, 2, 1, 3)]


def test_archived_entries_are_stamped_with_their_cut_time_and_counters_recomputed() -> None:
    """Restored entries carry cut_at as upload_timestamp; totals are summed from the fetches themselves."""
    bucket = _found(_bucket_then_late_replay())
    plan = _plan(bucket, [B[5], B[3], B[4], B[2]])
    doc = _document(plan, bucket)
    meta = plan.metadata
    by_id = {e["batch_id"]: e for e in doc["uploads"]}
    for seq in (3, 5):
        assert by_id[B[seq].batch_id]["upload_timestamp"] == B[seq].cut_at
        assert by_id[B[seq].batch_id]["fetch_data"] == B[seq].fetches
    assert plan.after == {"total_uploads_today": 5, "total_fetches_today": 50, "total_matches_today": 250}
    assert meta["matches_in_this_upload"] == 50
    assert meta["first_upload_today"] == doc["uploads"][0]["upload_timestamp"]
    assert meta["last_upload"] == doc["uploads"][-1]["upload_timestamp"]


def test_closed_state_and_timezone_are_kept_and_repaired_at_is_set() -> None:
    """closed, closed_at, timezone come from the old metadata; repaired_at is now; stale late ids go."""
    old = _bucket_then_late_replay()
    old["daily_metadata"]["timezone"] = "America/Detroit"
    plan = _plan(_found(old), [B[3]], timezone="America/New_York")
    meta = plan.metadata
    assert meta["closed"] is True
    assert meta["closed_at"] == old["daily_metadata"]["closed_at"] == "07/10/2025 09:00:00 PM EDT"
    assert meta["timezone"] == "America/Detroit"
    assert meta["repaired_at"] == format_stamp(NOW, TZ) == "07/12/2025 05:30:00 AM EDT"
    assert meta["late_uploads"] == [B[2].batch_id]


def test_a_sound_document_with_its_archive_is_unchanged() -> None:
    """A document that already holds every archived batch, with right counters, plans as not changed;
    written, its entries would be its own lines, byte for byte."""
    doc = _merged(_merged(daily.new_document(DAY, TZ.zone), 1, 2), 3, minutes=5)
    doc = daily.close_document(doc, NOW, TZ)
    bucket = _found(doc)
    plan = _plan(bucket, [B[1], B[2], B[3]])
    assert plan.changed is False
    assert (plan.from_bucket, plan.from_archive, plan.duplicates, plan.damage) == (3, 0, 0, [])
    counters = {"total_uploads_today": 3, "total_fetches_today": 30, "total_matches_today": 150}
    assert plan.before == plan.after == counters
    written = _written(plan, bucket)
    assert written[:written.index(daily.TAIL_MARKER)] == bucket.data[:bucket.data.index(daily.TAIL_MARKER)]
    assert plan.report() == [
        "uploads kept from the bucket: 3",
        "uploads restored from the local archive: 0",
        "total_uploads_today: 3 -> 3",
        "total_fetches_today: 30 -> 30",
        "total_matches_today: 150 -> 150",
        "closed: True",
    ]


def test_metadata_listing_other_ids_marks_the_plan_changed() -> None:
    """Right counters but a wrong id digest (or list, written before the digest) is a change, said so."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 2)
    meta = doc["daily_metadata"]
    meta.pop("batch_ids", None)
    meta["batch_ids_sha256"] = daily.ids_digest([B[2].batch_id, B[1].batch_id])
    plan = _plan(_found(doc), [B[1], B[2]])
    assert plan.changed is True and plan.ids_differ is True
    assert "batch ids: the old metadata does not list the uploads' batch_ids; listed anew" in plan.report()
    meta["batch_ids_sha256"] = daily.ids_digest([B[1].batch_id, B[2].batch_id])
    assert _plan(_found(doc), [B[1], B[2]]).changed is False
    del meta["batch_ids_sha256"]
    meta["batch_ids"] = [B[1].batch_id, B[2].batch_id]  # the list a document written before holds
    assert _plan(_found(doc), [B[1], B[2]]).changed is False
    meta["batch_ids"] = [B[2].batch_id]
    assert _plan(_found(doc), [B[1], B[2]]).ids_differ is True


def test_wrong_counters_are_recomputed_and_mark_the_plan_changed() -> None:
    """Upload and day counters that disagree with the fetches are corrected, which alone makes a change."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 2)
    doc["uploads"][1].update(matches_in_upload=999, fetches_in_upload=1, upload_sequence=7)
    doc["daily_metadata"]["total_matches_today"] = 1
    bucket = _found(doc)
    plan = _plan(bucket, [B[1], B[2]])
    assert plan.changed is True and plan.damage == []
    uploads = _document(plan, bucket)["uploads"]
    assert uploads[1]["matches_in_upload"] == 50
    assert uploads[1]["fetches_in_upload"] == 10
    assert uploads[1]["upload_sequence"] == 2
    assert plan.before is not None and plan.before["total_matches_today"] == 1
    assert plan.after["total_matches_today"] == 100
    assert "total_matches_today: 1 -> 100" in plan.report()


def test_an_entry_stored_twice_is_kept_once_and_counted_as_duplicate() -> None:
    """A batch_id twice in the bucket, and an old-logger entry (no batch_id) twice, each survive once."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 2)
    old_entry = {"upload_timestamp": "07/10/2025 08:00:00 AM EDT", "matches_in_upload": 5,
                 "fetches_in_upload": 1, "fetch_data": B[3].fetches[:1]}
    doc["uploads"] = [old_entry, copy.deepcopy(old_entry), *doc["uploads"], copy.deepcopy(doc["uploads"][0])]
    bucket = _found(doc)
    plan = _plan(bucket, [B[1], B[2]])
    assert plan.duplicates == 2 and plan.from_bucket == 3
    assert _ids(plan) == [None, B[1].batch_id, B[2].batch_id]
    assert plan.metadata["total_fetches_today"] == 21
    assert plan.metadata["batch_ids_sha256"] == daily.ids_digest([B[1].batch_id, B[2].batch_id])
    assert "uploads stored twice in the bucket, kept once: 2" in plan.report()
    assert verify(_document(plan, bucket)) == []


def test_an_unreadable_footer_keeps_the_entry_s_stated_matches() -> None:
    """When a fetch's total_matches cannot be read, the entry keeps the matches it stated."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1)
    del doc["uploads"][0]["fetch_data"][0]["FETCH_FOOTER"]
    doc["uploads"][0]["matches_in_upload"] = 42
    bucket = _found(doc)
    plan = _plan(bucket, [])
    assert _document(plan, bucket)["uploads"][0]["matches_in_upload"] == 42
    assert plan.metadata["total_matches_today"] == 42


def test_a_truncated_document_is_completed_from_the_archive() -> None:
    """With the bucket's document cut inside its last upload, the lost batch comes back from the archive."""
    doc = daily.close_document(_merged(daily.new_document(DAY, TZ.zone), 1, 2, 3), NOW, TZ)
    data = daily.serialize(doc)
    bucket = _found(doc, cut=data.index(B[3].batch_id.encode()) + 5)
    plan = _plan(bucket, [B[2], B[3]])
    assert _ids(plan) == [B[s].batch_id for s in (1, 2, 3)]
    assert (plan.from_bucket, plan.from_archive) == (2, 1)
    assert plan.changed is True and plan.before is None
    assert plan.metadata["closed"] is False  # the old metadata was lost with the tail
    report = plan.report()
    assert "total_uploads_today: unreadable -> 3" in report
    assert any(line.startswith("damage: line 4: not a complete upload") for line in report)
    assert report[-1] == "closed: False (no old metadata to keep it from)"
    assert verify(_document(plan, bucket)) == []


def test_no_document_in_the_bucket_is_rebuilt_from_the_archive_alone() -> None:
    """Without a document, every archived batch is restored in seq order; the report says so."""
    plan = _plan(None, [B[2], B[1]])
    assert _ids(plan) == [B[1].batch_id, B[2].batch_id]
    assert (plan.from_bucket, plan.from_archive, plan.damage) == (0, 2, ["no document in the bucket"])
    assert plan.metadata["timezone"] == TZ.zone
    assert "total_uploads_today: no document -> 2" in plan.report()
    assert verify(_document(plan, None)) == []


def test_an_empty_plan_writes_an_empty_document() -> None:
    """A document with no complete entry and no archive rebuilds as the empty document (§5.2)."""
    bucket = _found(b'{"uploads": [\n{"upload_seq')
    plan = _plan(bucket, [])
    assert plan.entries == [] and plan.changed is True
    assert _written(plan, bucket) == daily.serialize({"uploads": [], "daily_metadata": plan.metadata})


def test_entry_lines_are_kept_as_stored_spliced_or_re_encoded_as_needed() -> None:
    """An entry whose numbers stand is its stored line; one whose sequence alone moves gets only that
    spliced in; a corrected count re-encodes it; a repeated sequence key is never spliced."""
    line = b'{"upload_sequence":3,"batch_id":"b","upload_timestamp":"t","matches_in_upload":5,' \
           b'"fetches_in_upload":1,"fetch_data":[{"FETCH_FOOTER": {"total_matches": 5}, "x": "\\u00e9"}]}'
    kept = kept_entry(7, json.loads(line))
    assert entry_line(Planned(kept, 3), line, None) is line
    assert entry_line(Planned(kept, 12), line, None) == line.replace(b":3,", b":12,", 1)
    wrong = kept_entry(7, dict(json.loads(line), matches_in_upload=6))
    rewritten = entry_line(Planned(wrong, 3), line, None)
    assert json.loads(rewritten) == dict(json.loads(line), matches_in_upload=5)
    assert b'"x":"\xc3\xa9"' in rewritten  # encoded as an append encodes (compact, UTF-8)
    twice = line[:-1] + b',"upload_sequence":3}'
    assert json.loads(entry_line(Planned(kept_entry(7, json.loads(twice)), 4), twice, None))["upload_sequence"] == 4


def test_planning_does_not_modify_what_was_salvaged() -> None:
    """plan_repair leaves the salvaged metadata and damage as it found them."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 2, 1)
    doc["uploads"][0]["upload_sequence"] = 9
    bucket = _found(doc)
    before = copy.deepcopy(bucket.found)
    _plan(bucket, [B[1], B[2], B[3]])
    assert bucket.found == before
