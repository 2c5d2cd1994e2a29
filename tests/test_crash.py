"""Crash safety of the cut: SIGKILL at every step, restart, every record in exactly one batch."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytz
from helpers import NY, record, spooled_ids

from uploader.local.cut import Cutter
from uploader.local.journal import Journal
from uploader.local.records import Fetch, scan
from uploader.local.spool import Spool

CHILD = Path(__file__).parent / "rig" / "crash_child.py"
T0 = pytz.utc.localize(datetime(2025, 7, 10, 20, 0))
STEPS = ["after-first-stage", "after-journal", "mid-shift", "before-truncate", "after-truncate",
         "after-commit", "before-clear",
         # A record appended between the journal and the lock moves with the kept bytes.
         "append-then-mid-shift", "append-then-before-truncate", "append-then-after-truncate",
         "append-then-before-clear"]


def run_child(path: Path, spool: Path, step: str) -> int:
    return subprocess.run([sys.executable, str(CHILD), str(path), str(spool), step], timeout=60).returncode


def ids_in_file(path: Path) -> list[str]:
    return [i.fetch_id for i in scan(path.read_bytes(), NY, T0).items if isinstance(i, Fetch)]


@pytest.mark.parametrize("step", STEPS)
def test_sigkill_at_each_step_loses_and_doubles_nothing(tmp_path, step):
    """Killed at any step of the cut, with appends after the crash, a restart leaves every record once."""
    path, spool_dir = tmp_path / "all_api.json", tmp_path / "spool"
    first = [record(f"a{i:02d}", T0 + timedelta(seconds=i), raw={"pad": "y" * 200}) for i in range(23)]
    path.write_bytes(b"".join(first) + b"=== FETCH START: unfinished | x ===\n{\n")
    inode = path.stat().st_ino
    assert run_child(path, spool_dir, step) == -signal.SIGKILL
    # The pipeline keeps writing while the uploader is down: finish the torn record, add more.
    with open(path, "ab") as f:
        if b"FETCH END: unfinished" not in path.read_bytes():
            f.write(b'"FETCH_FOOTER": {"total_matches": 1}}\n=== FETCH END: unfinished | x ===\n')
        later = [record(f"b{i:02d}", T0 + timedelta(minutes=5, seconds=i)) for i in range(8)]
        f.write(b"".join(later))
    assert run_child(path, spool_dir, "none") == 0
    spool = Spool(spool_dir)
    Cutter(path, spool, NY, 10).cut(close_through=T0.astimezone(NY).date())
    expected = [f"a{i:02d}" for i in range(23)] + ["unfinished"] + [f"b{i:02d}" for i in range(8)]
    if step.startswith("append-then-"):
        expected.append("window")
    got = spooled_ids(spool_dir) + ids_in_file(path)
    assert sorted(got) == sorted(expected), f"lost {set(expected) - set(got)}, doubled {[i for i in got if got.count(i) > 1]}"
    assert path.stat().st_ino == inode
    assert Journal(spool.root).read() is None
    assert not list((spool_dir / "batches").glob("*.pending"))
