"""A short chaos run (tests/rig/chaos.py) on moto and on Ceph RGW: SIGKILLs and S3 faults lose and
double nothing."""

from __future__ import annotations

import pytest
from helpers import SERVERS
from rig import chaos


@pytest.mark.slow
@pytest.mark.parametrize("server", SERVERS)
def test_short_chaos_run_loses_and_doubles_nothing(tmp_path, server, request):
    """20 s of random SIGKILLs and every S3 fault kind, with days growing past 5 MiB (server-side
    appends): each fetch stored exactly once, in its day."""
    summary = chaos.run(duration=20, seed=3, kill_interval=1.6, rate=15, fault_rate=0.3,
                        down_every=10, fetch_kib=32, workdir=tmp_path, server=request.getfixturevalue(f"{server}_server"))
    print(summary.line())
    assert summary.problems == [], summary.problems[:20]
    assert (summary.lost, summary.doubled, summary.wrong_day) == (0, 0, 0)
    assert summary.kills >= 8
    assert all(summary.faults[kind] > 0 for kind in chaos.FAULT_KINDS), summary.faults
    assert summary.fetches > 200 and summary.uploaded + summary.left_in_file == summary.fetches
