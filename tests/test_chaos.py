"""A short chaos run (scripts/chaos.py): SIGKILLs and S3 faults lose and double nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import chaos


@pytest.mark.slow
def test_short_chaos_run_loses_and_doubles_nothing(tmp_path):
    """60 s of random SIGKILLs and every S3 fault kind: each fetch stored exactly once, in its day."""
    summary = chaos.run(duration=60, seed=3, kill_interval=2.5, rate=15, fault_rate=0.3,
                        down_every=10, workdir=tmp_path)
    print(summary.line())
    assert summary.problems == [], summary.problems[:20]
    assert (summary.lost, summary.doubled, summary.wrong_day) == (0, 0, 0)
    assert summary.kills >= 15
    assert all(summary.faults[kind] > 0 for kind in chaos.FAULT_KINDS), summary.faults
    assert summary.fetches > 200 and summary.uploaded + summary.left_in_file == summary.fetches
