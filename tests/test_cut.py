"""The cut: batches of one day at most batch_size, exact bytes removed in place, quarantine."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytz
from helpers import NY, record, spooled

from uploader.local.cut import Cutter
from uploader.local.journal import Journal
from uploader.local.plan import cut_budget, plan_cut
from uploader.local.quarantine import Quarantine
from uploader.local.records import scan
from uploader.local.spool import Spool

DAY1 = pytz.utc.localize(datetime(2025, 7, 10, 20, 0))
DAY2 = DAY1 + timedelta(days=1)


def make_cutter(tmp_path, batch_size=10):
    spool = Spool(tmp_path / "spool")
    return Cutter(tmp_path / "all_api.json", spool, NY, batch_size, clock=lambda: DAY1), spool


def write(path, *chunks: bytes) -> None:
    with open(path, "ab") as f:
        for c in chunks:
            f.write(c)


def test_25_records_make_two_batches_and_leave_five(tmp_path):
    """25 records → two spooled batches of 10; the last 5 stay byte for byte, same inode."""
    cutter, spool = make_cutter(tmp_path)
    recs = [record(f"f{i:02d}", DAY1 + timedelta(seconds=i), matches=i) for i in range(25)]
    write(cutter.path, *recs)
    inode = cutter.path.stat().st_ino
    outcome = cutter.cut()
    assert [b.fetch_count for b in outcome.batches] == [10, 10]
    assert cutter.path.read_bytes() == b"".join(recs[20:])
    assert cutter.path.stat().st_ino == inode
    batches = spooled(spool)
    assert [b.fetch_ids for b in batches] == [[f"f{i:02d}" for i in range(k, k + 10)] for k in (0, 10)]
    assert [b.matches for b in batches] == [sum(range(10)), sum(range(10, 20))]
    assert batches[0].seq < batches[1].seq
    assert Journal(spool.root).read() is None


def test_unfinished_tail_is_kept(tmp_path):
    """A half-written record after the 10th stays in the file untouched."""
    cutter, _ = make_cutter(tmp_path)
    recs = [record(f"f{i}", DAY1) for i in range(10)]
    partial = record("late", DAY1)[:57]
    write(cutter.path, *recs, partial)
    outcome = cutter.cut()
    assert len(outcome.batches) == 1
    assert cutter.path.read_bytes() == partial


def test_two_days_never_share_a_batch(tmp_path):
    """Records of two days (service down across midnight) are cut into separate batches."""
    cutter, spool = make_cutter(tmp_path)
    recs = [record(f"a{i}", DAY1) for i in range(7)] + [record(f"b{i}", DAY2) for i in range(12)]
    write(cutter.path, *recs)
    cutter.cut()
    batches = spooled(spool)
    assert [(b.day, b.fetch_count) for b in batches] == [(date(2025, 7, 10), 7), (date(2025, 7, 11), 10)]
    assert cutter.path.read_bytes() == b"".join(recs[17:])


def test_close_through_cuts_a_short_batch(tmp_path):
    """Close-out cuts the previous day's records even when fewer than batch_size."""
    cutter, spool = make_cutter(tmp_path)
    write(cutter.path, *[record(f"a{i}", DAY1) for i in range(3)])
    assert cutter.cut().batches == []
    assert cutter.cut(close_through=date(2025, 7, 9)).batches == []
    outcome = cutter.cut(close_through=date(2025, 7, 10))
    assert [b.fetch_count for b in outcome.batches] == [3]
    assert cutter.path.read_bytes() == b""


def test_malformed_records_are_quarantined_verbatim(tmp_path):
    """Malformed spans go to the spool's quarantine byte for byte and count in no batch."""
    cutter, spool = make_cutter(tmp_path, batch_size=2)
    garbage = b"not a record\n"
    bad = record("bad", DAY1).replace(b'"total_matches": 3', b'"total_matches": -3')
    write(cutter.path, garbage, record("a", DAY1), bad, record("b", DAY1), record("c", DAY1))
    outcome = cutter.cut()
    assert [b.fetch_ids for b in outcome.batches] == [["a", "b"]]
    assert sorted(q.raw for q in outcome.quarantined) == sorted([garbage, bad])
    saved = {item.raw: item for item, _ in Quarantine(spool).pending()}
    assert set(saved) == {garbage, bad}
    assert saved[garbage].offset == 0 and "garbage" in saved[garbage].reason
    assert cutter.path.read_bytes() == record("c", DAY1)
    for _, path in Quarantine(spool).pending():
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_leading_garbage_is_cut_without_waiting_for_a_batch(tmp_path):
    """Garbage in front of the first record is quarantined even before a batch is complete."""
    cutter, _ = make_cutter(tmp_path)
    write(cutter.path, b"oops\n", record("a", DAY1))
    outcome = cutter.cut()
    assert [q.raw for q in outcome.quarantined] == [b"oops\n"]
    assert cutter.path.read_bytes() == record("a", DAY1)


def test_same_bytes_give_the_same_batch_id(tmp_path):
    """batch_id is a digest of the records' bytes, so a re-cut of the same bytes is recognisable."""
    recs = b"".join(record(f"f{i}", DAY1) for i in range(10))
    plans = [plan_cut(scan(recs, NY, DAY1).items, 10) for _ in range(2)]
    a, b = make_cutter(tmp_path / "a")[0], make_cutter(tmp_path / "b")[0]
    for c in (a, b):
        c.path.parent.mkdir(parents=True, exist_ok=True)
        write(c.path, recs)
    assert a.cut().batches[0].batch_id == b.cut().batches[0].batch_id
    assert plans[0] == plans[1]


def test_large_backlog_is_cut_in_bounded_steps(tmp_path):
    """A backlog bigger than one cut may take is cut over several calls, every record once."""
    cutter, spool = make_cutter(tmp_path)
    cutter.max_cut_bytes = 4096
    recs = [record(f"f{i:03d}", DAY1, raw={"pad": "x" * 300}) for i in range(95)]
    write(cutter.path, *recs)
    rounds = 0
    while True:
        outcome = cutter.cut()
        rounds += 1
        if not outcome.more:
            break
    assert rounds > 2
    ids = [i for b in spooled(spool) for i in b.fetch_ids]
    assert ids == [f"f{i:03d}" for i in range(90)]
    assert cutter.path.read_bytes() == b"".join(recs[90:])


def test_one_cut_takes_every_complete_batch_a_window_at_a_time(tmp_path):
    """A backlog many windows long goes in one cut (what a cut leaves behind it copies twice, so
    that stays small), every record once, quarantined offsets counted from the file's start."""
    cutter, spool = make_cutter(tmp_path)
    cutter.window_bytes = 4096
    recs = [record(f"f{i:03d}", DAY1, raw={"pad": "x" * 300}) for i in range(95)]
    write(cutter.path, *recs[:50], b"junk between records\n", *recs[50:])
    outcome = cutter.cut()
    assert not outcome.more and outcome.records_left == 5
    assert [b.fetch_count for b in outcome.batches] == [10] * 9
    assert [i for b in spooled(spool) for i in b.fetch_ids] == [f"f{i:03d}" for i in range(90)]
    assert [q.offset for q in outcome.quarantined] == [len(b"".join(recs[:50]))]
    assert cutter.path.read_bytes() == b"".join(recs[90:])


def test_a_cut_holds_a_bounded_number_of_batches(tmp_path):
    """A backlog of many small records goes in cuts of at most max_cut_batches (memory holds a
    header per batch until the cut commits), every record once."""
    cutter, spool = make_cutter(tmp_path)
    cutter.window_bytes, cutter.max_cut_batches = 1024, 3
    write(cutter.path, *[record(f"f{i:03d}", DAY1) for i in range(95)])
    counts = []
    while True:
        outcome = cutter.cut()
        counts.append(len(outcome.batches))
        if not outcome.more:
            break
    assert max(counts) <= 3 + 1 and sum(counts) == 9  # a window may end past the limit
    assert [i for b in spooled(spool) for i in b.fetch_ids] == [f"f{i:03d}" for i in range(90)]


def test_a_cut_takes_at_most_half_the_free_disk_and_at_least_a_window():
    """Until it commits a cut's batches are on disk twice, so the free space bounds it."""
    mib = 1 << 20
    assert cut_budget(100 * mib, limit=4096 * mib, window=8 * mib) == 50 * mib
    assert cut_budget(10 << 40, limit=4096 * mib, window=8 * mib) == 4096 * mib
    assert cut_budget(2 * mib, limit=4096 * mib, window=8 * mib) == 8 * mib
    assert cut_budget(2 * mib, limit=4096, window=8 * mib) == 4096


def test_spool_sequence_survives_restart(tmp_path):
    """Sequence numbers keep growing across a new Spool on the same folder."""
    cutter, spool = make_cutter(tmp_path, batch_size=1)
    write(cutter.path, record("a", DAY1))
    first = cutter.cut().batches[0].seq
    spool.remove(spool.pending_batches())
    again = Spool(tmp_path / "spool")
    assert again.allocate_seqs(1)[0] > first


def test_cut_abandoned_when_file_changes_before_the_lock(tmp_path):
    """If the file is rewritten between the unlocked scan and the lock, nothing is cut or spooled."""
    cutter, spool = make_cutter(tmp_path)
    write(cutter.path, *[record(f"a{i}", DAY1) for i in range(10)])
    replacement = b"".join(record(f"z{i}", DAY1) for i in range(3))
    real_sync = spool.sync_names

    def replace_then_sync() -> None:
        real_sync()
        cutter.path.write_bytes(replacement)  # an operator rewrote the file meanwhile

    spool.sync_names = replace_then_sync  # type: ignore[method-assign]
    outcome = cutter.cut()
    assert outcome.batches == [] and outcome.removed == 0
    assert spooled(spool) == []
    assert not list(spool.batches_dir.glob("*.pending"))
    assert cutter.path.read_bytes() == replacement


def records(n: int, prefix: str = "r") -> bytes:
    return b"".join(record(f"{prefix}{i:02d}", DAY1 + timedelta(seconds=i)) for i in range(n))


def _after_journal(cutter: Cutter, act: Any) -> Cutter:
    """Run ``act`` (as another process would) between the cut's journal and its lock."""
    real = cutter.journal.write

    def wrapper(journal: Any) -> None:
        real(journal)
        act()

    cutter.journal.write = wrapper  # type: ignore[method-assign]
    return cutter


def test_a_file_replaced_before_the_lock_is_not_written_and_its_cut_records_are_kept(tmp_path: Path) -> None:
    """If the pipeline's file is replaced between journal and lock, the new file is left byte for
    byte and the records cut from the old one stay in the spool, once."""
    path = tmp_path / "all_api.json"
    path.write_bytes(records(12))
    spool = Spool(tmp_path / "spool")
    fresh = records(3, "new")

    def replace() -> None:
        (tmp_path / "next.json").write_bytes(fresh)
        os.replace(tmp_path / "next.json", path)

    _after_journal(Cutter(path, spool, NY, 10), replace).cut()
    assert path.read_bytes() == fresh
    assert [b.fetch_ids for b in spooled(spool)] == [[f"r{i:02d}" for i in range(10)]]
    assert Journal(spool.root).read() is None and not list(spool.batches_dir.glob("*.pending"))


def test_a_burst_before_the_lock_is_journaled_again_and_loses_nothing(tmp_path: Path) -> None:
    """When more than a cut's worth is appended between journal and lock, the cut journals the
    new size and goes ahead: the planned batch is spooled and the burst stays, byte for byte."""
    path = tmp_path / "all_api.json"
    first = records(10)
    path.write_bytes(first)
    spool = Spool(tmp_path / "spool")
    burst = records(15, "x")
    bursts = iter([burst])
    outcome = _after_journal(Cutter(path, spool, NY, 10), lambda: open(path, "ab").write(next(bursts, b""))).cut()
    assert [b.fetch_ids for b in outcome.batches] == [[f"r{i:02d}" for i in range(10)]]
    assert path.read_bytes() == burst and Journal(spool.root).read() is None


def test_a_writer_bursting_faster_than_the_journal_still_gets_its_cut(tmp_path: Path) -> None:
    """A burst after every journal write: after the last try the cut journals under the lock
    (the one slow path) and still removes exactly the planned bytes."""
    path = tmp_path / "all_api.json"
    path.write_bytes(records(10))
    spool = Spool(tmp_path / "spool")
    bursts = iter([records(15, f"{tag}") for tag in ("x", "y", "z")])
    outcome = _after_journal(Cutter(path, spool, NY, 10), lambda: open(path, "ab").write(next(bursts, b""))).cut()
    assert [b.fetch_ids for b in outcome.batches] == [[f"r{i:02d}" for i in range(10)]]
    assert path.read_bytes() == records(15, "x") + records(15, "y") + records(15, "z")


def test_a_pretty_printed_record_is_spooled_on_one_line_with_its_values_intact(tmp_path: Path) -> None:
    """Records are spooled from their own bytes, not re-encoded: newlines between tokens become
    spaces (one upload per line in the day), and every value, escapes included, is unchanged."""
    import json

    doc = {"FETCH_HEADER": {"fetch_id": "p0"}, "RAW_API_DATA": {"s": 'tab\there "q" \\ \u2028 é', "n": [1, 2.5e-7]},
           "FETCH_FOOTER": {"total_matches": 3}}
    pretty = json.dumps(doc, indent=4, ensure_ascii=True).replace("\n", "\r\n").encode()
    stamp = "07/10/2025 04:00:00 PM EDT"
    body = b"=== FETCH START: p0 | " + stamp.encode() + b" ===\n" + pretty + b"\n=== FETCH END: p0 | " + stamp.encode() + b" ===\n"
    path = tmp_path / "all_api.json"
    path.write_bytes(body * 1)
    spool = Spool(tmp_path / "spool")
    Cutter(path, spool, NY, 1).cut()
    [batch] = spooled(spool)
    assert b"\n" not in batch.fetch_data and b"\r" not in batch.fetch_data
    assert json.loads(batch.fetch_data) == [doc]


def test_nan_and_infinity_are_quarantined_not_stored() -> None:
    """Python's json reads NaN and Infinity, JSON does not: such a record is malformed, so no
    strict reader of the day ever meets it."""
    from uploader.local.records import Malformed

    stamp = "07/10/2025 04:00:00 PM EDT"
    rec = (f"=== FETCH START: n | {stamp} ===\n" '{"RAW_API_DATA": {"odds": NaN}, "FETCH_FOOTER": {"total_matches": 1}}\n'
           f"=== FETCH END: n | {stamp} ===\n").encode()
    [item] = scan(rec, NY, DAY1).items
    assert isinstance(item, Malformed) and "NaN is not JSON" in item.reason


def test_a_quarantine_file_whose_note_is_broken_still_goes_out(tmp_path: Path) -> None:
    """A .bin whose .json note is missing or corrupt (a crash, a hand edit) is shipped with a
    reason saying so, instead of stopping every pass of the upload worker."""
    from uploader.local.batch import QuarantineItem
    from uploader.local.spool import Spool

    spool = Spool(tmp_path / "spool")
    items = [QuarantineItem(f"00000000000{i}-0-abc", b"junk %d" % i, "garbage between records", 0,
                            "07/10/2025 12:00:00 PM EDT", None) for i in (1, 2)]
    spool.commit(spool.stage([], items))
    (spool.quarantine_dir / f"{items[0].name}.json").write_bytes(b"{not json")
    (spool.quarantine_dir / f"{items[1].name}.json").unlink()
    pending = Quarantine(spool).pending()
    assert [i.raw for i, _ in pending] == [b"junk 1", b"junk 2"]
    assert all(i.reason.startswith("note unreadable") for i, _ in pending)
    for _, path in pending:
        Quarantine(spool).mark_sent(path)
    assert Quarantine(spool).pending() == []
    assert sorted(p.name for p in spool.sent_dir.glob("*.bin")) == [f"{i.name}.bin" for i in items]
