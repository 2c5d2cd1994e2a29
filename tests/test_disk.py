"""Disk trouble: when the spool cannot be written the local file is untouched, and the cut resumes later."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytz
from helpers import record, wait_for, write_config

LIMIT = 1024  # bytes: more than the small state files, less than one batch of ten fetches


# `uploader run` whose files may not grow past LIMIT (EFBIG instead of SIGXFSZ); soft limit only,
# so the test can raise it again from outside with prlimit.
LIMITED_RUN = f"""
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.argv = ["uploader", *sys.argv[1:]]
runpy.run_module("uploader.cli", run_name="__main__")
"""


def test_spool_write_failure_leaves_the_file_alone_and_the_cut_resumes(tmp_path: Path) -> None:
    """A spool write failing with EFBIG leaves the local file byte for byte, logs once with a hint,
    leaves no debris in the spool, and the same records are cut and uploaded once space is back."""
    config = write_config(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    local = data / "all_api.json"
    local.touch()
    log = tmp_path / "run.log"
    now = datetime.now(pytz.utc)
    recs = [record(f"disk{i:02d}", now - timedelta(seconds=60 - i)) for i in range(25)]
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", LIMITED_RUN, "run", "--config", str(config)],
                                stdout=out, stderr=out)
    try:
        wait_for(lambda: b"service_started" in log.read_bytes(), timeout=30, what="service start")
        with open(local, "ab") as f:
            f.writelines(recs[:24])
        before = local.read_bytes()
        wait_for(lambda: b"watch_error" in log.read_bytes(), timeout=30, what="the spool write error")
        # A second attempt (the pipeline appends again) fails the same way, without a second line.
        with open(local, "ab") as f:
            f.write(recs[24])
        wait_for(lambda: len(local.read_bytes()) > len(before), what="the append")
        after_first = local.read_bytes()
        proc_log = log.read_text()
        errors = [line for line in proc_log.splitlines() if "watch_error" in line]
        assert len(errors) == 1, errors
        assert "left untouched" in errors[0] and "free disk space" in errors[0]
        assert "Traceback" not in proc_log
        assert after_first == before + recs[24]  # nothing cut, nothing rewritten
        spool = data / "spool"
        debris = [p.name for d in ("batches", "quarantine") for p in (spool / d).iterdir() if p.is_file()]
        assert debris == []
        assert not (spool / "journal.json").exists()

        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, resource.getrlimit(resource.RLIMIT_FSIZE))
        with open(local, "ab") as f:  # any file event makes the watcher try again
            f.write(b"")
        os.utime(local)
        bucket = data / "bucket" / "logs"

        def uploaded_ids() -> list[str]:
            ids = []
            for doc in bucket.glob("all_api_json_log_*.json"):
                ids += [f["FETCH_HEADER"]["fetch_id"] for u in json.loads(doc.read_bytes())["uploads"]
                        for f in u["fetch_data"]]
            return ids

        wait_for(lambda: len(uploaded_ids()) == 20, timeout=30, what="two batches uploaded")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert sorted(uploaded_ids()) == [f"disk{i:02d}" for i in range(20)]
    assert local.read_bytes() == b"".join(recs[20:])


def test_recovery_removes_half_written_temp_files(tmp_path: Path) -> None:
    """Temp files a crash left mid-write in the spool are removed on the next start, like staged ones."""
    from uploader.local.cut import Cutter
    from uploader.local.spool import Spool

    spool = Spool(tmp_path / "spool")
    debris = spool.batches_dir / ".000000000007-2025-07-10-abc.json.pending.tmp"
    debris.write_bytes(b'{"half')
    (tmp_path / "all_api.json").write_bytes(b"")
    Cutter(tmp_path / "all_api.json", spool, pytz.timezone("America/New_York"), 10).recover()
    assert not debris.exists()
