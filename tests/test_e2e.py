"""End to end as real processes: `uploader run` with the simulator, SIGTERM, the lock, replay, verify."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import pytz
from helpers import NY, make_s3_store, spooled_ids, uploader, wait_for, write_config

from uploader import daily
from uploader.config import load_config
from uploader.daily.verifier import verify
from uploader.local.cut import Cutter
from uploader.local.records import Fetch, scan
from uploader.local.spool import Spool
from uploader.store import open_store

REPO = Path(__file__).resolve().parent.parent
SIMULATOR = REPO / "scripts" / "simulate_pipeline.py"



def start_run(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def simulate(config: Path, count: int, ledger: Path, size_kib: float = 2) -> list[dict]:
    subprocess.run([sys.executable, str(SIMULATOR), "--config", str(config), "--rate", "0",
                    "--count", str(count), "--size-kib", str(size_kib), "--ledger", str(ledger)],
                   check=True, timeout=120, capture_output=True)
    return [json.loads(line) for line in ledger.read_text().splitlines()]


def doc_ids(document: dict) -> list[str]:
    return [f["FETCH_HEADER"]["fetch_id"] for u in document["uploads"] for f in u["fetch_data"]]


def file_ids(path: Path) -> list[str]:
    return [i.fetch_id for i in scan(path.read_bytes(), NY, datetime.now(pytz.utc)).items if isinstance(i, Fetch)]


def wait_running(proc: subprocess.Popen, config: Path) -> None:
    """Wait until this process holds the spool lock: its signal handlers are installed by then."""
    lock = load_config(config).spool.dir / "lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip() == f"pid {proc.pid}", timeout=30,
             what="the service to start")


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_35_fetches_make_three_uploads_against_s3(tmp_path, s3_server, bucket):
    """`uploader run` on moto and Ceph RGW: 35 simulated fetches → 3 uploads today, 5 left, counters = footers."""
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    proc = start_run(config)
    try:
        ledger = simulate(config, 35, tmp_path / "ledger.jsonl")
        store = make_s3_store(s3_server, bucket)
        day = datetime.strptime(ledger[0]["day"], "%Y-%m-%d").date()
        key = daily.day_key("logs", day)

        def three_uploads():
            info = store.head(key)
            return info and json.loads(store.get(key)[0])["daily_metadata"]["total_uploads_today"] == 3

        wait_for(three_uploads, timeout=30, what="three uploads")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    document = json.loads(store.get(key)[0])
    assert doc_ids(document) == [r["fetch_id"] for r in ledger[:30]]
    meta = document["daily_metadata"]
    assert meta["total_fetches_today"] == 30
    assert meta["total_matches_today"] == sum(r["matches"] for r in ledger[:30])
    assert file_ids(load_config(config).watch.file) == [r["fetch_id"] for r in ledger[30:]]
    assert verify(document) == []
    assert "Traceback" not in err


def test_second_run_and_replay_refuse_while_running(tmp_path):
    """A second `run`, or a `replay`, refuses in one line while a service holds the spool; status sees it."""
    config = write_config(tmp_path)
    proc = start_run(config)
    try:
        wait_for(lambda: (tmp_path / "data" / "spool" / "lock").exists()
                 and (tmp_path / "data" / "spool" / "lock").read_text().startswith("pid"), what="the lock taken")
        for args in (["run"], ["replay"]):
            res = uploader(*args, "--config", str(config))
            assert res.returncode == 1
            assert "in use by pid" in res.stderr and "Traceback" not in res.stderr
            assert len(res.stderr.strip().splitlines()) == 1
        status = uploader("status", "--json", "--config", str(config))
        assert json.loads(status.stdout)["service_running"] is True
    finally:
        code, err = stop(proc)
    assert code == 0, err


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stop_during_uploads_loses_nothing(tmp_path, s3_server, bucket, how):
    """SIGTERM (exit 0, every fetch in exactly one place) or kill -9 (none lost) while uploading;
    after a restart every fetch is stored exactly once."""
    config = write_config(tmp_path, s3=(s3_server.endpoint, bucket))
    cfg = load_config(config)
    store = make_s3_store(s3_server, bucket)
    proc = start_run(config)
    sim = subprocess.Popen([sys.executable, str(SIMULATOR), "--config", str(config), "--rate", "0",
                            "--count", "400", "--size-kib", "8", "--ledger", str(tmp_path / "ledger.jsonl")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: [k for k in store.list("logs/") if "/all_api_json_log_" in k], timeout=30,
                 what="the first upload")
    finally:
        if how == "SIGKILL":
            proc.kill()
            _, err = proc.communicate(timeout=60)
            code = 0
        else:
            code, err = stop(proc)
    assert sim.wait(timeout=120) == 0
    assert code == 0, err
    ledger = [json.loads(x) for x in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    days = sorted({r["day"] for r in ledger})

    def stored() -> list[str]:
        ids: list[str] = []
        for day in days:
            key = f"logs/all_api_json_log_{day}.json"
            if store.head(key):
                ids += doc_ids(json.loads(store.get(key)[0]))
        return ids

    everything = stored() + spooled_ids(cfg.spool.dir) + file_ids(cfg.watch.file)
    if how == "SIGTERM":
        assert sorted(everything) == sorted(r["fetch_id"] for r in ledger)
    else:
        # Killed between the store's acknowledgement and the spool's removal, a batch is in both
        # places until the restart, whose append then acknowledges it instead of storing it again.
        assert set(everything) == {r["fetch_id"] for r in ledger}
    proc = start_run(config)
    wait_running(proc, config)
    try:
        wait_for(lambda: len(stored()) == 400 - len(file_ids(cfg.watch.file)) and len(file_ids(cfg.watch.file)) < 10,
                 timeout=60, what="the restart to upload the rest")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    final = stored() + file_ids(cfg.watch.file)
    assert sorted(final) == sorted(r["fetch_id"] for r in ledger)
    assert not list((cfg.spool.dir / "batches").glob("*.json"))


def test_replay_and_verify_catch_duplicates_and_tampering(tmp_path):
    """replay uploads the spool once (a replayed batch is not stored twice); verify flags tampering, exit 1."""
    config = write_config(tmp_path)
    cfg = load_config(config)
    ledger = simulate(config, 30, tmp_path / "ledger.jsonl")
    spool = Spool(cfg.spool.dir)
    Cutter(cfg.watch.file, spool, cfg.day.tz, 10).cut()
    backup = tmp_path / "backup"
    shutil.copytree(cfg.spool.dir / "batches", backup)
    dry = uploader("replay", "--dry-run", "--config", str(config))
    assert dry.returncode == 0 and "3 batch(es) pending" in dry.stdout
    res = uploader("replay", "--config", str(config))
    assert res.returncode == 0, res.stderr
    assert "uploaded 3 batch(es), 30 fetches" in res.stdout
    # The same batches replayed again (a restored spool backup) are acknowledged, not doubled.
    for p in backup.iterdir():
        shutil.copy(p, cfg.spool.dir / "batches" / p.name)
    assert uploader("replay", "--config", str(config)).returncode == 0
    day = ledger[0]["day"]
    ok = uploader("verify", day, "--config", str(config))
    assert ok.returncode == 0 and "verify: OK" in ok.stdout, ok.stdout
    store = open_store(cfg.storage)
    key = daily.day_key("logs", datetime.strptime(day, "%Y-%m-%d").date())
    document = json.loads(store.get(key)[0])
    assert doc_ids(document) == [r["fetch_id"] for r in ledger]
    # Tamper: duplicate an upload and inflate a count, writing the object directly.
    document["uploads"].append(dict(document["uploads"][0]))
    document["uploads"][1]["matches_in_upload"] += 7
    store.put(key, json.dumps(document).encode(), {})
    bad = uploader("verify", day, "--config", str(config))
    assert bad.returncode == 1
    assert "stored 2 times" in bad.stdout
    assert "matches_in_upload" in bad.stdout
    assert "Traceback" not in bad.stderr


def test_status_reports_spool_and_today(tmp_path):
    """status --json shows spool depth per day and today's counters; the text form is readable."""
    config = write_config(tmp_path)
    cfg = load_config(config)
    simulate(config, 20, tmp_path / "ledger.jsonl")
    Cutter(cfg.watch.file, Spool(cfg.spool.dir), cfg.day.tz, 10).cut()
    res = uploader("status", "--json", "--config", str(config))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["spool_depth"] == 2 and sum(report["pending_per_day"].values()) == 2
    assert report["service_running"] is False
    zero = {"total_uploads_today": 0, "total_fetches_today": 0, "total_matches_today": 0,
            "last_upload": None, "closed": False}
    assert report["today"] == {"date": report["today"]["date"], **zero}
    text = uploader("status", "--config", str(config))
    assert "2 batch(es) pending" in text.stdout
    env = dict(os.environ, UPLOADER_CONFIG=str(config))
    assert uploader("status", env=env, cwd="/").returncode == 0
