"""Planning a repair, a pure function: salvaged bucket entries + archived batches -> the document."""

from __future__ import annotations

import copy
import io
from datetime import date, datetime, timedelta
from typing import Any

import pytz
from helpers import build_batch

from uploader import daily
from uploader.daily.repair_plan import RepairPlan, plan_repair
from uploader.daily.salvage import Salvage, salvage
from uploader.local.batch import Batch
from uploader.stamps import format_stamp

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
T0 = datetime(2025, 7, 10, 14, 0, tzinfo=pytz.utc)
NOW = datetime(2025, 7, 12, 9, 30, tzinfo=pytz.utc)
B = {seq: build_batch(seq) for seq in range(1, 6)}  # 10 fetches of 5 matches each


def _merged(doc: dict[str, Any], *seqs: int, minutes: int = 0) -> dict[str, Any]:
    return daily.merge_batches(doc, [B[s] for s in seqs], T0 + timedelta(minutes=minutes), TZ).document


def _found(doc: dict[str, Any], cut: int | None = None) -> Salvage:
    data = daily.serialize(doc)
    return salvage(io.BytesIO(data[:cut] if cut is not None else data))


def _plan(found: Salvage | None, archived: list[Batch], timezone: str = TZ.zone) -> RepairPlan:
    return plan_repair(DAY, timezone, found, archived, NOW, TZ)


def _ids(plan: RepairPlan) -> list[str | None]:
    return [e.get("batch_id") for e in plan.document["uploads"]]


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
    plan = _plan(_found(_bucket_then_late_replay()), archived)
    assert _ids(plan) == [B[s].batch_id for s in (1, 2, 3, 4, 5)]
    assert [e["upload_sequence"] for e in plan.document["uploads"]] == [1, 2, 3, 4, 5]
    assert (plan.from_bucket, plan.from_archive, plan.duplicates) == (3, 2, 0)
    assert plan.document["daily_metadata"]["batch_ids"] == _ids(plan)


def test_unarchived_bucket_entries_keep_the_bucket_order_ahead_of_archived_ones() -> None:
    """Entries the archive no longer has come first in the order the bucket holds them, whatever their seq."""
    doc = _merged(_merged(daily.new_document(DAY, TZ.zone), 4), 2)
    plan = _plan(_found(doc), [B[1], B[3]])
    assert _ids(plan) == [B[s].batch_id for s in (4, 2, 1, 3)]


def test_archived_entries_are_stamped_with_their_cut_time_and_counters_recomputed() -> None:
    """Restored entries carry cut_at as upload_timestamp; totals are summed from the fetches themselves."""
    plan = _plan(_found(_bucket_then_late_replay()), [B[5], B[3], B[4], B[2]])
    meta = plan.document["daily_metadata"]
    by_id = {e["batch_id"]: e for e in plan.document["uploads"]}
    for seq in (3, 5):
        assert by_id[B[seq].batch_id]["upload_timestamp"] == B[seq].cut_at
        assert by_id[B[seq].batch_id]["fetch_data"] == B[seq].fetches
    assert plan.after == {"total_uploads_today": 5, "total_fetches_today": 50, "total_matches_today": 250}
    assert meta["matches_in_this_upload"] == 50
    assert meta["first_upload_today"] == plan.document["uploads"][0]["upload_timestamp"]
    assert meta["last_upload"] == plan.document["uploads"][-1]["upload_timestamp"]


def test_closed_state_and_timezone_are_kept_and_repaired_at_is_set() -> None:
    """closed, closed_at, timezone come from the old metadata; repaired_at is now; stale late ids go."""
    old = _bucket_then_late_replay()
    old["daily_metadata"]["timezone"] = "America/Detroit"
    plan = _plan(_found(old), [B[3]], timezone="America/New_York")
    meta = plan.document["daily_metadata"]
    assert meta["closed"] is True
    assert meta["closed_at"] == old["daily_metadata"]["closed_at"] == "07/10/2025 09:00:00 PM EDT"
    assert meta["timezone"] == "America/Detroit"
    assert meta["repaired_at"] == format_stamp(NOW, TZ) == "07/12/2025 05:30:00 AM EDT"
    assert meta["late_uploads"] == [B[2].batch_id]


def test_a_sound_document_with_its_archive_is_unchanged() -> None:
    """A document that already holds every archived batch, with right counters, plans as not changed."""
    doc = _merged(_merged(daily.new_document(DAY, TZ.zone), 1, 2), 3, minutes=5)
    doc = daily.close_document(doc, NOW, TZ)
    plan = _plan(_found(doc), [B[1], B[2], B[3]])
    assert plan.changed is False
    assert (plan.from_bucket, plan.from_archive, plan.duplicates, plan.damage) == (3, 0, 0, [])
    counters = {"total_uploads_today": 3, "total_fetches_today": 30, "total_matches_today": 150}
    assert plan.before == plan.after == counters
    assert plan.document["uploads"] == doc["uploads"]
    assert plan.report() == [
        "uploads kept from the bucket: 3",
        "uploads restored from the local archive: 0",
        "total_uploads_today: 3 -> 3",
        "total_fetches_today: 30 -> 30",
        "total_matches_today: 150 -> 150",
        "closed: True",
    ]


def test_wrong_counters_are_recomputed_and_mark_the_plan_changed() -> None:
    """Upload and day counters that disagree with the fetches are corrected, which alone makes a change."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 2)
    doc["uploads"][1].update(matches_in_upload=999, fetches_in_upload=1, upload_sequence=7)
    doc["daily_metadata"]["total_matches_today"] = 1
    plan = _plan(_found(doc), [B[1], B[2]])
    assert plan.changed is True and plan.damage == []
    assert plan.document["uploads"][1]["matches_in_upload"] == 50
    assert plan.document["uploads"][1]["fetches_in_upload"] == 10
    assert plan.document["uploads"][1]["upload_sequence"] == 2
    assert plan.before is not None and plan.before["total_matches_today"] == 1
    assert plan.after["total_matches_today"] == 100
    assert "total_matches_today: 1 -> 100" in plan.report()


def test_an_entry_stored_twice_is_kept_once_and_counted_as_duplicate() -> None:
    """A batch_id twice in the bucket, and an old-logger entry (no batch_id) twice, each survive once."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1, 2)
    old_entry = {"upload_timestamp": "07/10/2025 08:00:00 AM EDT", "matches_in_upload": 5,
                 "fetches_in_upload": 1, "fetch_data": B[3].fetches[:1]}
    doc["uploads"] = [old_entry, copy.deepcopy(old_entry), *doc["uploads"], copy.deepcopy(doc["uploads"][0])]
    plan = _plan(_found(doc), [B[1], B[2]])
    assert plan.duplicates == 2 and plan.from_bucket == 3
    assert _ids(plan) == [None, B[1].batch_id, B[2].batch_id]
    assert plan.document["daily_metadata"]["total_fetches_today"] == 21
    assert "uploads stored twice in the bucket, kept once: 2" in plan.report()


def test_an_unreadable_footer_keeps_the_entry_s_stated_matches() -> None:
    """When a fetch's total_matches cannot be read, the entry keeps the matches it stated."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 1)
    del doc["uploads"][0]["fetch_data"][0]["FETCH_FOOTER"]
    doc["uploads"][0]["matches_in_upload"] = 42
    plan = _plan(_found(doc), [])
    assert plan.document["uploads"][0]["matches_in_upload"] == 42
    assert plan.document["daily_metadata"]["total_matches_today"] == 42


def test_a_truncated_document_is_completed_from_the_archive() -> None:
    """With the bucket's document cut inside its last upload, the lost batch comes back from the archive."""
    doc = daily.close_document(_merged(daily.new_document(DAY, TZ.zone), 1, 2, 3), NOW, TZ)
    data = daily.serialize(doc)
    plan = _plan(_found(doc, cut=data.index(B[3].batch_id.encode()) + 5), [B[2], B[3]])
    assert _ids(plan) == [B[s].batch_id for s in (1, 2, 3)]
    assert (plan.from_bucket, plan.from_archive) == (2, 1)
    assert plan.changed is True and plan.before is None
    assert plan.document["daily_metadata"]["closed"] is False  # the old metadata was lost with the tail
    report = plan.report()
    assert "total_uploads_today: unreadable -> 3" in report
    assert any(line.startswith("damage: line 4: not a complete upload") for line in report)
    assert report[-1] == "closed: False (no old metadata to keep it from)"


def test_no_document_in_the_bucket_is_rebuilt_from_the_archive_alone() -> None:
    """Without a document, every archived batch is restored in seq order; the report says so."""
    plan = _plan(None, [B[2], B[1]])
    assert _ids(plan) == [B[1].batch_id, B[2].batch_id]
    assert (plan.from_bucket, plan.from_archive, plan.damage) == (0, 2, ["no document in the bucket"])
    assert plan.document["daily_metadata"]["timezone"] == TZ.zone
    assert "total_uploads_today: no document -> 2" in plan.report()


def test_planning_does_not_modify_what_was_salvaged() -> None:
    """plan_repair leaves the salvaged entries and metadata as it found them."""
    doc = _merged(daily.new_document(DAY, TZ.zone), 2, 1)
    doc["uploads"][0]["upload_sequence"] = 9
    found = _found(doc)
    before = copy.deepcopy(found)
    _plan(found, [B[1], B[2], B[3]])
    assert found == before
