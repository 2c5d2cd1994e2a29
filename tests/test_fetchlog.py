"""The bookended format: parsing, malformed input, time zones, and the pipeline's writer."""

from __future__ import annotations

import json
from datetime import date, datetime

import pytest
import pytz
from helpers import NY, record

from uploader.fetchlog import FetchWriter
from uploader.local.records import Fetch, Malformed, count_end_markers, scan

NOW = pytz.utc.localize(datetime(2025, 7, 10, 20, 15))


def test_writer_round_trip(tmp_path):
    """What FetchWriter appends parses back to the same fetch, id, day and match count."""
    path = tmp_path / "all_api.json"
    writer = FetchWriter(path, "America/New_York")
    ids = [writer.append({"n": i, "text": "é"}, total_matches=i, now=NOW) for i in range(3)]
    result = scan(path.read_bytes(), NY, NOW)
    assert result.consumed == path.stat().st_size
    assert [f.fetch_id for f in result.items] == ids
    assert [f.matches for f in result.items] == [0, 1, 2]
    assert all(isinstance(f, Fetch) and f.day == date(2025, 7, 10) for f in result.items)
    assert result.items[1].document["RAW_API_DATA"] == {"n": 1, "text": "é"}
    assert result.items[0].document["FETCH_HEADER"]["timestamp"] == "07/10/2025 04:15:00 PM EDT"


def test_writer_refuses_bad_match_count(tmp_path):
    """The writer refuses a negative or non-integer total_matches instead of writing a bad record."""
    writer = FetchWriter(tmp_path / "f.json")
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError):
            writer.append({}, total_matches=bad)
    assert not (tmp_path / "f.json").exists()


def _body(footer: object) -> str:
    return json.dumps({"FETCH_HEADER": {}, "RAW_API_DATA": {}, "FETCH_FOOTER": footer})


GOOD_START = b"=== FETCH START: a1 | 07/10/2025 04:15:00 PM EDT ===\n"
GOOD_END = b"\n=== FETCH END: a1 | 07/10/2025 04:15:00 PM EDT ===\n"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"=== FETCH END: a1 | 07/10/2025 04:15:00 PM EDT ===\n", "FETCH END without FETCH START"),
        (GOOD_START + _body({"total_matches": 1}).encode() + GOOD_END.replace(b"a1", b"b2"), "fetch ids differ"),
        (GOOD_START + b"{not json" + GOOD_END, "JSON does not parse"),
        (GOOD_START + b"[1, 2]" + GOOD_END, "JSON body is not an object"),
        (GOOD_START + json.dumps({"RAW_API_DATA": {}}).encode() + GOOD_END, "no FETCH_FOOTER"),
        (GOOD_START + _body({"total_matches": -1}).encode() + GOOD_END, "not a non-negative integer"),
        (GOOD_START + _body({"total_matches": "5"}).encode() + GOOD_END, "not a non-negative integer"),
        (GOOD_START + _body({"total_matches": 2.0}).encode() + GOOD_END, "not a non-negative integer"),
        (GOOD_START + _body({}).encode() + GOOD_END, "not a non-negative integer"),
        (b"hello there\nmore garbage\n", "garbage between records"),
        (GOOD_START + b'{"x": "\xff\xfe"}' + GOOD_END, "not UTF-8"),
        (GOOD_START + b"{}\n" + GOOD_START, "FETCH START without FETCH END"),
        (b"=== FETCH START: no-time ===\n{}\n=== FETCH END: no-time ===\n", "marker line is not"),
    ],
)
def test_malformed_records_are_reported_with_reason(raw, reason):
    """Each malformed case of the contract comes out as a Malformed span with its reason, never dropped."""
    good = record("zz", NOW)
    buf = good + raw + good
    result = scan(buf, NY, NOW)
    bad = [i for i in result.items if isinstance(i, Malformed)]
    assert bad, "the malformed input was not reported"
    assert reason in bad[0].reason
    assert bad[0].start == len(good)
    # Every byte is accounted for exactly once: items tile [0, consumed) and the rest is tail.
    pos = 0
    for item in result.items:
        assert item.start == pos
        pos = item.end
    assert pos == result.consumed
    assert isinstance(result.items[0], Fetch)


def test_unfinished_tail_is_left_alone():
    """Bytes after the last complete record (a write in progress) are not consumed."""
    good = record("a", NOW)
    for cut in (1, 10, len(good) // 2, len(good) - 1):
        buf = good + good[:cut]
        result = scan(buf, NY, NOW)
        assert result.consumed == len(good)
        assert len(result.items) == 1 and isinstance(result.items[0], Fetch)


def test_record_split_across_two_scans():
    """A record whose bytes arrive in two reads is found once the second part is scanned."""
    one, two = record("a", NOW), record("b", NOW)
    buf = one + two
    split = len(one) + len(two) // 3
    first = scan(buf[:split], NY, NOW)
    assert [i.fetch_id for i in first.items] == ["a"]
    second = scan(buf[first.consumed:], NY, NOW, base=first.consumed)
    assert [i.fetch_id for i in second.items] == ["b"]
    assert second.items[0].start == len(one) and second.items[0].end == len(buf)


@pytest.mark.parametrize("mib", [1, 3])
def test_large_raw_api_data(mib):
    """Records with megabytes of RAW_API_DATA parse, byte spans exact."""
    raw = {"blob": "x" * (mib << 20), "rows": list(range(1000))}
    buf = record("big", NOW, raw=raw) + record("small", NOW)
    result = scan(buf, NY, NOW)
    assert [i.fetch_id for i in result.items] == ["big", "small"]
    assert result.items[0].document["RAW_API_DATA"]["blob"] == raw["blob"]


def test_fall_back_hour_is_told_apart_by_abbreviation():
    """01:30 AM EDT and 01:30 AM EST on the fall-back day are different instants, an hour apart."""
    recs = [
        f"=== FETCH START: {fid} | 11/02/2025 01:30:00 AM {abbr} ===\n{_body({'total_matches': 1})}\n"
        f"=== FETCH END: {fid} | 11/02/2025 01:30:00 AM {abbr} ===\n".encode()
        for fid, abbr in (("edt", "EDT"), ("est", "EST"))
    ]
    edt, est = scan(b"".join(recs), NY, NOW).items
    assert edt.instant == pytz.utc.localize(datetime(2025, 11, 2, 5, 30))
    assert est.instant == pytz.utc.localize(datetime(2025, 11, 2, 6, 30))
    assert edt.day == est.day == date(2025, 11, 2)


def test_spring_forward_and_day_boundaries():
    """Stamps around spring-forward and midnight land on the right instants and days."""
    def one(stamp: str) -> Fetch:
        raw = (f"=== FETCH START: x | {stamp} ===\n{_body({'total_matches': 0})}\n"
               f"=== FETCH END: x | {stamp} ===\n").encode()
        (item,) = scan(raw, NY, NOW).items
        assert isinstance(item, Fetch)
        return item

    before = one("03/09/2025 01:59:59 AM EST")
    after = one("03/09/2025 03:00:00 AM EDT")
    assert (after.instant - before.instant).total_seconds() == 1
    late = one("03/08/2025 11:59:59 PM EST")
    assert late.day == date(2025, 3, 8)
    assert one("03/09/2025 12:00:00 AM EST").day == date(2025, 3, 9)


def test_time_fallbacks_header_then_first_seen():
    """An unreadable marker time falls back to FETCH_HEADER.timestamp, then to when it was first seen."""
    body_with_header = json.dumps({"FETCH_HEADER": {"timestamp": "01/02/2025 10:00:00 AM EST"},
                                   "FETCH_FOOTER": {"total_matches": 1}})
    raw = (f"=== FETCH START: h | garbled ===\n{body_with_header}\n=== FETCH END: h | garbled ===\n"
           f"=== FETCH START: s | 07/10/2025 04:15:00 PM PST ===\n{_body({'total_matches': 1})}\n"
           f"=== FETCH END: s | 07/10/2025 04:15:00 PM PST ===\n").encode()
    header, seen = scan(raw, NY, NOW).items
    assert header.time_source == "header" and header.day == date(2025, 1, 2)
    assert seen.time_source == "first_seen" and seen.instant == NOW


def test_count_end_markers_only_counts_line_starts():
    """END markers are counted at line starts only, including at the very start of a chunk."""
    two = record("a", NOW) + record("b", NOW)
    assert count_end_markers(two, at_line_start=True) == 2
    inline = b'{"note": "=== FETCH END: fake"}\n'
    assert count_end_markers(inline, at_line_start=True) == 0
    tail = two[two.index(b"=== FETCH END"):]
    assert count_end_markers(tail, at_line_start=True) == 2
    assert count_end_markers(tail, at_line_start=False) == 1
