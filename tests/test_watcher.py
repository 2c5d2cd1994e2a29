"""The watcher: cuts at batch_size as records arrive, copes with the file coming and going."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import pytz
from helpers import NY, record, spooled_ids, wait_for

from uploader.fetchlog import FetchWriter
from uploader.local.cut import Cutter
from uploader.local.records import Fetch, scan
from uploader.local.spool import Spool
from uploader.local.watcher import Watcher

T0 = pytz.utc.localize(datetime(2025, 7, 10, 20, 0))


@pytest.fixture
def watched(tmp_path):
    spool = Spool(tmp_path / "spool")
    cutter = Cutter(tmp_path / "data" / "all_api.json", spool, NY, 10)
    cuts = []
    watcher = Watcher(cutter, on_cut=cuts.append)
    watcher.start()
    yield watcher, spool, cuts
    watcher.stop()


def file_ids(path: Path) -> list[str]:
    return [i.fetch_id for i in scan(path.read_bytes(), NY, T0).items if isinstance(i, Fetch)]


def test_cuts_when_the_tenth_record_completes(watched):
    """Nine records wait in the file; the tenth triggers a cut of all ten."""
    watcher, spool, cuts = watched
    writer = FetchWriter(watcher.path)
    for i in range(9):
        writer.append({"i": i}, 1, fetch_id=f"a{i}")
    # Nine complete records are not a batch: the watcher must have looked and left them.
    wait_for(lambda: watcher._tail.ends == 9, what="the watcher to count 9 END lines")
    assert spool.pending_batches() == []
    writer.append({"i": 9}, 1, fetch_id="a9")
    wait_for(lambda: spool.pending_batches(), what="a spooled batch")
    assert spooled_ids(spool.root) == [f"a{i}" for i in range(10)]
    # A batch is visible once its cut commits; the file's rewrite follows a moment later.
    wait_for(lambda: watcher.path.read_bytes() == b"", what="the cut records removed from the file")
    # on_cut runs just after the cut commits, so it may trail the spool file by a moment.
    wait_for(lambda: len(cuts) == 1, what="the on_cut callback")
    assert len(cuts[0].batches) == 1


def test_file_created_deleted_truncated_and_replaced(watched):
    """Deleting, truncating or replacing the file resets the watcher's offset; later records still cut."""
    watcher, spool, _ = watched
    path = watcher.path
    writer = FetchWriter(path)
    for i in range(5):
        writer.append({}, 0, fetch_id=f"gone{i}")
    wait_for(lambda: watcher._tail.ends == 5, what="5 records seen")
    path.unlink()
    wait_for(lambda: watcher._tail.inode is None, what="the deletion noticed")
    for i in range(4):
        writer.append({}, 0, fetch_id=f"t{i}")
    wait_for(lambda: watcher._tail.ends == 4, what="the recreated file read")
    os.truncate(path, 0)
    writer.append({}, 0, fetch_id="after-truncate")
    wait_for(lambda: watcher._tail.ends == 1 and watcher._tail.offset == path.stat().st_size,
             what="the truncation noticed")
    replacement = path.with_name("new.json")
    replacement.write_bytes(b"".join(record(f"r{i}", T0) for i in range(12)))
    os.replace(replacement, path)
    wait_for(lambda: spool.pending_batches(), what="the replaced file cut")
    assert spooled_ids(spool.root) == [f"r{i}" for i in range(10)]
    wait_for(lambda: file_ids(path) == ["r10", "r11"], what="the cut records removed from the file")


def test_request_cut_closes_a_short_day(watched):
    """A close-out request cuts fewer than batch_size records of the closed day."""
    watcher, spool, _ = watched
    writer = FetchWriter(watcher.path)
    for i in range(3):
        writer.append({}, 2, fetch_id=f"c{i}", now=T0)
    outcomes = watcher.request_cut(close_through=T0.astimezone(NY).date()).result(timeout=10)
    assert [b.fetch_count for o in outcomes for b in o.batches] == [3]
    assert spooled_ids(spool.root) == ["c0", "c1", "c2"]


@pytest.mark.slow
def test_writer_process_and_watcher_concurrently(watched):
    """Two writer processes append flat out while the watcher cuts: every record lands exactly once."""
    watcher, spool, _ = watched
    n = 600
    procs = [
        subprocess.Popen([sys.executable, str(Path(__file__).parent / "rig" / "writer_child.py"), str(watcher.path), str(n), p])
        for p in ("p", "q")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    expected = sorted(f"{p}{i:05d}" for p in ("p", "q") for i in range(n))
    # 1200 records cut in tens: all of them end up spooled, none left over.
    wait_for(lambda: len(spooled_ids(spool.root)) == len(expected), timeout=30, what="all records spooled")
    got = spooled_ids(spool.root) + file_ids(watcher.path)
    assert sorted(got) == expected
    batches = [e.load() for e in spool.pending_batches()]
    assert all(b.fetch_count == 10 for b in batches)
    assert sum(b.matches for b in batches) == 2 * sum(i % 5 for i in range(n))
