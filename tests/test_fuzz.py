"""Fuzzing the pure core: the parser accounts for every byte, the cut plan keeps its promises."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
import pytz
from helpers import NY, record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uploader.local.plan import plan_cut
from uploader.local.records import Fetch, Malformed, ScanResult, scan

CORPUS = Path(__file__).parent / "corpus"
SEEN_AT = datetime(2025, 7, 10, 16, 0, tzinfo=pytz.utc)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_tiles(buf: bytes, result: ScanResult, base: int = 0) -> None:
    """Items cover [base, base + consumed) back to back; the rest of ``buf`` is the unfinished tail."""
    assert 0 <= result.consumed <= len(buf)
    pos = base
    for item in result.items:
        assert item.start == pos, (item, pos)
        assert item.end > item.start
        pos = item.end
    assert pos == base + result.consumed
    if result.items:
        assert buf[result.consumed - 1:result.consumed] == b"\n"  # items end on a line end


def when(i: int) -> datetime:
    return SEEN_AT + timedelta(minutes=7 * i)


# A segment of a hostile file: whole records, cut-off records, garbage, bad markers, bad bytes.
segments = st.one_of(
    st.integers(0, 10_000).map(lambda i: record(f"id{i}", when(i), matches=i % 50)),
    st.tuples(st.integers(0, 999), st.integers(1, 400)).map(lambda t: record(f"t{t[0]}", when(t[0]))[: t[1]]),
    st.binary(max_size=200),
    st.text(max_size=80).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([
        b"=== FETCH START: a | 07/10/2025 04:15:00 PM EDT ===\n",
        b"=== FETCH END: a | 07/10/2025 04:15:00 PM EDT ===\n",
        b"=== FETCH END: b | nonsense ===\n",
        b"=== FETCH START: \xff\xfe | 07/10/2025 04:15:00 PM EDT ===\n",
        b'{"FETCH_FOOTER": {"total_matches": -1}}\n',
        b'{"FETCH_FOOTER": {"total_matches": "7"}}\n',
        b"\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc\n",
        b"\x00\r\n\r\n",
        b"=== FETCH ",
        b"\n",
    ]),
    st.integers(1, 70_000).map(lambda n: b"x" * n + b"\n"),  # huge lines
)


@FUZZ
@given(st.binary(max_size=4096), st.integers(0, 1 << 40))
def test_scan_accounts_for_every_byte_of_arbitrary_input(buf, base):
    """Arbitrary bytes never raise out of scan, and items tile the consumed prefix exactly."""
    assert_tiles(buf, scan(buf, NY, SEEN_AT, base=base), base)


@FUZZ
@given(st.lists(segments, max_size=12))
def test_scan_accounts_for_every_byte_of_hostile_files(parts):
    """Records mixed with truncations, garbage, huge lines and invalid UTF-8 are tiled exactly."""
    buf = b"".join(parts)
    result = scan(buf, NY, SEEN_AT)
    assert_tiles(buf, result)
    # The unfinished tail holds no complete record: scanned alone, it yields no fetch.
    tail = scan(buf[result.consumed:], NY, SEEN_AT)
    assert not any(isinstance(i, Fetch) for i in tail.items)


@FUZZ
@given(st.lists(st.integers(0, 10_000), max_size=15), st.integers(0, 400))
def test_whole_records_are_found_and_a_cut_off_last_one_is_left_alone(ids, cut):
    """Whole records parse as fetches in order; a partly written last record stays in the tail."""
    whole = [record(f"id{i}", when(i), matches=i % 50) for i in ids]
    full = record("last", when(1))
    partial = full[: min(cut, len(full) - 1)]
    buf = b"".join(whole) + partial
    result = scan(buf, NY, SEEN_AT)
    assert [i.fetch_id for i in result.items if isinstance(i, Fetch)] == [f"id{i}" for i in ids]
    assert all(isinstance(i, Fetch) for i in result.items)
    assert result.consumed == len(buf) - len(partial)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.bin")), ids=lambda p: p.name)
def test_corpus_files_are_tiled_and_keep_their_good_records(path):
    """Each tricky file in tests/corpus scans without error, tiled, and finds its good records."""
    buf = path.read_bytes()
    result = scan(buf, NY, SEEN_AT)
    assert_tiles(buf, result)
    good = sorted(i.fetch_id for i in result.items if isinstance(i, Fetch))
    assert good == sorted(g for g in good if g.startswith("good"))  # nothing bad passes as good
    assert len(good) == int(path.stem.rsplit("-", 1)[1]), good


# -- plan_cut ---------------------------------------------------------------------------------

DAYS = [date(2025, 7, 9), date(2025, 7, 10), date(2025, 7, 11)]
item_specs = st.lists(
    st.tuples(st.sampled_from(["fetch", "fetch", "fetch", "bad"]), st.integers(0, 2), st.integers(1, 5000)),
    max_size=60,
)


def build_items(specs):
    items, pos = [], 0
    for n, (kind, day, size) in enumerate(specs):
        if kind == "bad":
            items.append(Malformed(pos, pos + size, "fuzz"))
        else:
            items.append(Fetch(pos, pos + size, f"f{n}", SEEN_AT, DAYS[day], 1, {}, "marker"))
        pos += size
    return items


@FUZZ
@given(item_specs, st.integers(1, 12), st.sampled_from([None, *DAYS]), st.sampled_from([1 << 26, 1, 4000, 20_000]))
def test_plan_cut_keeps_days_apart_and_cuts_exactly_what_it_plans(specs, batch_size, close_through, max_bytes):
    """No batch mixes days or exceeds batch_size; each item is cut once; length covers exactly the cut items."""
    items = build_items(specs)
    plan = plan_cut(items, batch_size, close_through, max_bytes)
    batched = [f for b in plan.batches for f in b.fetches]
    for b in plan.batches:
        assert 1 <= len(b.fetches) <= batch_size
        assert {f.day for f in b.fetches} == {b.day}
    assert len({f.fetch_id for f in batched}) == len(batched)
    cut_ids = {id(i) for i in [*batched, *plan.quarantined]}
    assert len(cut_ids) == len(batched) + len(plan.quarantined)
    # The cut is a prefix: exactly the items that end within ``length``, fetches in file order.
    assert cut_ids == {id(i) for i in items if i.end <= plan.length}
    assert plan.length == 0 or any(i.end == plan.length for i in items)
    assert batched == [i for i in items if isinstance(i, Fetch) and i.end <= plan.length]
    assert plan.records_left == sum(1 for i in items if isinstance(i, Fetch) and i.start >= plan.length)
    # A short batch is closed only by a change of day or by close-out.
    later = [i for i in items if isinstance(i, Fetch)]
    for b in plan.batches:
        if len(b.fetches) < batch_size:
            nxt = later.index(b.fetches[-1]) + 1
            changed = nxt < len(later) and later[nxt].day != b.day
            assert changed or (close_through is not None and b.day <= close_through)
