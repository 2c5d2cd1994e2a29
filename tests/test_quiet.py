"""A quiet service costs the box nothing: `uploader run` on an existing file, after writes, then quiet.

This is the state operators are in for most of every day. The CPU figure comes from /proc
(utime + stime of every thread), so a busy loop cannot pass and a slow machine cannot fail.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import pytz
from helpers import NY, cpu_seconds, proc_state, wait_for, wakeups, write_config

from uploader import daily
from uploader.config import load_config
from uploader.fetchlog import FetchWriter
from uploader.store import open_store

QUIET_S = 10.0
MAX_SHARE = 0.02  # of one core, over the quiet window
# Per thread, over the quiet window: one retry tick (every 30 s) wakes a thread a few times; a
# thread that polls (a loop with a timeout of a second or less) wakes ten times or more.
MAX_WAKEUPS = 8
# The shipped retry timing: the quiet window then holds what an operator's service does when idle.
QUIET_SPOOL = {"retry_interval_s": 30, "max_backoff_s": 600}


@pytest.fixture(params=["directory", "moto", "ceph"])
def config(request: pytest.FixtureRequest, tmp_path: Path, unused_port: int) -> Path:
    """A config on the directory backend, moto or Ceph RGW, with /metrics served (as shipped)."""
    metrics = {"listen": f"127.0.0.1:{unused_port}"}
    if request.param == "directory":
        return write_config(tmp_path, spool=QUIET_SPOOL, metrics=metrics)
    server = request.getfixturevalue(f"{request.param}_server")
    return write_config(tmp_path, s3=(server.endpoint, server.new_bucket()), spool=QUIET_SPOOL, metrics=metrics)


def test_a_quiet_service_on_an_existing_file_uses_no_cpu(config: Path, tmp_path: Path) -> None:
    """Five records already in the file at start, 20 written while it runs (two uploads, five left
    waiting in the file), then ten seconds of quiet cost under 2% of a core, wake no thread more
    than a retry tick does, and add no thread or file descriptor; five more afterwards make the
    third upload."""
    cfg = load_config(config)
    cfg.watch.file.parent.mkdir(parents=True)
    writer = FetchWriter(cfg.watch.file, "America/New_York")
    for i in range(5):
        writer.append({"games": ["pre"] * 40}, total_matches=1, fetch_id=f"pre{i}")
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        lock = cfg.spool.dir / "lock"
        wait_for(lambda: lock.exists() and lock.read_text().strip() == f"pid {proc.pid}", timeout=30,
                 what="the service to start")
        for i in range(20):
            writer.append({"games": ["x"] * 40}, total_matches=2, fetch_id=f"w{i}")
        store = open_store(cfg.storage)
        key = daily.day_key(cfg.storage.prefix, datetime.now(pytz.utc).astimezone(NY).date())

        def uploaded() -> bool:
            info = store.head(key)
            return info is not None and info.metadata.get("total-uploads") == "2"

        wait_for(uploaded, timeout=60, what="two uploads in the day document")
        # The last upload's bookkeeping (archive, status.json) follows its write by a moment.
        wait_for(lambda: not list((cfg.spool.dir / "batches").glob("*.json")), what="the spool emptied")

        held = proc_state(proc.pid)
        before, woken = cpu_seconds(proc.pid), wakeups(proc.pid)
        time.sleep(QUIET_S)  # the measurement window itself: nothing is written meanwhile
        used = cpu_seconds(proc.pid) - before
        busiest = max((n - woken.get(tid, 0), tid) for tid, n in wakeups(proc.pid).items())
        assert proc.poll() is None, "uploader run exited during the quiet window"
        assert used < MAX_SHARE * QUIET_S, (
            f"a quiet `uploader run` used {used:.2f} s of CPU in {QUIET_S:.0f} s "
            f"({100 * used / QUIET_S:.0f}% of a core); py-spy dump --pid shows where")
        assert busiest[0] <= MAX_WAKEUPS, (
            f"thread {busiest[1]} of a quiet `uploader run` woke {busiest[0]} times in {QUIET_S:.0f} s: "
            "a polling loop (py-spy dump --pid shows which)")
        after = proc_state(proc.pid)
        assert (after.fds, after.threads) == (held.fds, held.threads)
        # Quiet, and still watching: the five records left in the file are cut with the next five.
        for i in range(5):
            writer.append({"games": ["y"] * 40}, total_matches=3, fetch_id=f"late{i}")
        wait_for(lambda: store.head(key).metadata.get("total-uploads") == "3", timeout=30,  # type: ignore[union-attr]
                 what="a third upload after the quiet spell")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()[-2000:]
