"""Short chaos runs (tests/rig/chaos.py) on moto and on Ceph RGW: SIGKILLs and S3 faults lose and
double nothing, with one stream and one store, and with two streams each mirrored to both."""

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


@pytest.mark.slow
def test_two_streams_two_destinations_chaos_loses_and_doubles_nothing(tmp_path, ceph_server, moto_server):
    """12 s of random SIGKILLs of one service running two streams, each shipping to Ceph RGW and
    to moto, each store behind its own fault proxy with its own outages: every fetch of each
    stream stored exactly once, in its day, in each of the two stores."""
    summary = chaos.run(duration=12, seed=5, kill_interval=1.2, rate=12, fault_rate=0.3, down_every=5,
                        workdir=tmp_path, server=ceph_server, mirror=moto_server, streams=2)
    print(summary.line())
    assert summary.problems == [], summary.problems[:20]
    assert set(summary.pairs) == {"s1/ceph", "s1/moto", "s2/ceph", "s2/moto"}
    for label, pair in summary.pairs.items():
        assert (pair.lost, pair.doubled, pair.wrong_day) == (0, 0, 0), label
        assert pair.fetches > 100 and pair.uploaded + pair.left_in_file == pair.fetches, label
    assert summary.kills >= 6
    assert all(summary.faults[kind] > 0 for kind in chaos.FAULT_KINDS), summary.proxy_faults
    assert all(counts["down"] > 0 for counts in summary.proxy_faults.values()), summary.proxy_faults
