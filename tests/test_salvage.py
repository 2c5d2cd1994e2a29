"""Salvaging a damaged day document: every complete upload line kept, no partial one, damage reported."""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from typing import Any

import pytz

from uploader import daily
from uploader.daily.salvage import salvage
from uploader.local.batch import Batch

TZ = pytz.timezone("America/New_York")
DAY = date(2026, 11, 1)
NOW = datetime(2026, 11, 1, 16, 0, tzinfo=pytz.utc)


def _batch(seq: int, fetches: int = 3) -> Batch:
    """A batch whose fetches hold non-ASCII text, so a cut can split a multi-byte character."""
    bodies = [
        {"FETCH_HEADER": {"fetch_id": f"f{seq}-{i}"},
         "RAW_API_DATA": {"team": "Atlético Nacional", "odds": 1.5},
         "FETCH_FOOTER": {"total_matches": seq + i}}
        for i in range(fetches)
    ]
    matches = sum(seq + i for i in range(fetches))
    return Batch.of(f"{seq:032x}", seq, DAY, "11/01/2026 11:00:00 AM EST", bodies, matches)


def _document(uploads: int = 4) -> dict[str, Any]:
    batches = [_batch(s) for s in range(1, uploads + 1)]
    doc = daily.merge_batches(daily.new_document(DAY, TZ.zone), batches, NOW, TZ)
    return daily.close_document(doc.document, NOW, TZ)


def _ends(data: bytes, doc: dict[str, Any]) -> list[int]:
    """Where each upload's one-line JSON object ends in the document's bytes (§5.2 layout)."""
    ends = []
    for entry in doc["uploads"]:
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        ends.append(data.index(line) + len(line))
    return ends


def test_a_sound_document_is_salvaged_whole_and_intact() -> None:
    """An undamaged document gives back every upload, its metadata, and no damage."""
    doc = _document()
    found = salvage(io.BytesIO(daily.serialize(doc)))
    assert found.entries == doc["uploads"]
    assert found.meta == doc["daily_metadata"]
    assert found.damage == [] and found.intact


def test_an_empty_document_is_intact_with_no_uploads() -> None:
    """A document with no upload yet salvages to no entries and its metadata, undamaged."""
    doc = daily.new_document(DAY, TZ.zone)
    found = salvage(io.BytesIO(daily.serialize(doc)))
    assert (found.entries, found.meta, found.damage) == ([], doc["daily_metadata"], [])


def test_truncated_anywhere_keeps_exactly_the_uploads_that_ended_before_the_cut() -> None:
    """Cut at every byte, salvage keeps each upload whose whole line precedes the cut, no partial one."""
    doc = _document()
    data = daily.serialize(doc)
    ends = _ends(data, doc)
    for cut in range(len(data)):
        found = salvage(io.BytesIO(data[:cut]))
        expected = [entry for entry, end in zip(doc["uploads"], ends) if end <= cut]
        assert found.entries == expected, f"cut at byte {cut}"
        whole = cut >= len(data) - 1  # only the final newline missing
        assert found.meta == (doc["daily_metadata"] if whole else None), f"cut at byte {cut}"
        assert bool(found.damage) != whole and found.intact == whole, f"cut at byte {cut}"


def test_truncated_document_reports_the_partial_line_and_the_missing_metadata() -> None:
    """A cut inside upload 3 names line 4 as not a complete upload and says the metadata is missing."""
    doc = _document()
    data = daily.serialize(doc)
    cut = _ends(data, doc)[2] - 10
    found = salvage(io.BytesIO(data[:cut]))
    assert [e["batch_id"] for e in found.entries] == [f"{s:032x}" for s in (1, 2)]
    assert found.damage[0].startswith("line 4: not a complete upload")
    assert found.damage[-1] == "daily_metadata missing (document cut short)"


def test_garbage_appended_after_the_document_loses_nothing() -> None:
    """Garbage after a complete document is reported as damage; every upload and the metadata are kept."""
    doc = _document()
    found = salvage(io.BytesIO(daily.serialize(doc) + b"\x00\xffnot json at all\n{\"half\": "))
    assert found.entries == doc["uploads"]
    assert found.meta == doc["daily_metadata"]
    assert len(found.damage) == 2 and not found.intact


def test_garbage_appended_to_a_truncated_document_does_not_complete_the_partial_line() -> None:
    """An upload line cut short and continued by other bytes stays damaged; the uploads before it are kept."""
    doc = _document()
    data = daily.serialize(doc)
    cut = _ends(data, doc)[1] - 1  # upload 2 without its closing brace
    found = salvage(io.BytesIO(data[:cut] + b"\"x\":1}\n"))
    assert found.entries == doc["uploads"][:1]
    assert found.meta is None and len(found.damage) == 2


def test_one_damaged_upload_line_costs_only_that_upload() -> None:
    """Overwriting bytes inside upload 2's line drops that upload alone, named by its line number."""
    doc = _document()
    data = bytearray(daily.serialize(doc))
    start = _ends(bytes(data), doc)[0] + 2  # after upload 1's ",\n"
    data[start + 20:start + 24] = b"\xff#{["
    found = salvage(io.BytesIO(bytes(data)))
    assert found.entries == [doc["uploads"][i] for i in (0, 2, 3)]
    assert found.meta == doc["daily_metadata"]
    assert len(found.damage) == 1 and found.damage[0].startswith("line 3: not a complete upload")


def test_a_line_split_in_two_drops_only_that_upload() -> None:
    """A newline written into upload 3's line damages both halves and keeps every other upload."""
    doc = _document()
    data = daily.serialize(doc)
    middle = _ends(data, doc)[2] - 30
    found = salvage(io.BytesIO(data[:middle] + b"\n" + data[middle:]))
    assert found.entries == [doc["uploads"][i] for i in (0, 1, 3)]
    assert found.meta == doc["daily_metadata"]
    assert [d.split(":")[0] for d in found.damage] == ["line 4", "line 5"]


def test_a_valid_json_line_that_is_not_an_upload_is_not_kept() -> None:
    """A line that parses but is not an upload entry (no fetch_data list) is damage, not an entry."""
    doc = _document(2)
    data = daily.serialize(doc).replace(b"\n", b"\n{\"fetch_data\": 7},\n", 1)
    found = salvage(io.BytesIO(data))
    assert found.entries == doc["uploads"]
    assert found.damage == ["line 2: not a complete upload (18 bytes)"]


def test_damaged_metadata_line_keeps_the_uploads_and_reports_it() -> None:
    """A metadata line that does not parse leaves meta unread and says so once; uploads are all kept."""
    doc = _document()
    data = daily.serialize(doc).replace(b'"closed": true', b'"closed": tru', 1)
    found = salvage(io.BytesIO(data))
    assert found.entries == doc["uploads"]
    assert found.meta is None
    assert len(found.damage) == 1 and found.damage[0].endswith("daily_metadata unreadable")


def test_another_layout_is_parsed_up_to_the_first_damage() -> None:
    """A pretty-printed, metadata-first document cut inside upload 3 yields its metadata, uploads 1-2."""
    doc = _document()
    old_layout = {"daily_metadata": doc["daily_metadata"], "uploads": doc["uploads"]}
    pretty = json.dumps(old_layout, indent=2).encode()
    cut = pretty.index(b'"batch_id": "' + f"{3:032x}".encode())
    found = salvage(io.BytesIO(pretty[:cut]))
    assert found.meta == doc["daily_metadata"]
    assert found.entries == doc["uploads"][:2]
    assert len(found.damage) == 1 and found.damage[0].startswith("stops parsing")
