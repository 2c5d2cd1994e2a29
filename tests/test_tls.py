"""TLS to a server with a private CA: Ceph RGW's https endpoint (a certificate for 127.0.0.1
signed by a CA the rig makes), trusted through ``storage.s3.ca_bundle`` and refused without it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import make_s3_store, spooled_ids, stored_days, uploader, wait_for, write_config
from rig.s3servers import S3Server

from uploader.config import load_config
from uploader.errors import StoreRejected
from uploader.fetchlog import FetchWriter
from uploader.store import Store
from uploader.store.capabilities import MIN_PART_SIZE
from uploader.store.s3 import S3Store

KEY = "logs/all_api_json_log_2025-07-10.json"
FETCHES = 30  # three batches of the default batch_size


@pytest.fixture
def tls_bucket(ceph_server: S3Server) -> str:
    """A fresh bucket on the suite's Ceph RGW (made over plain http; used over https)."""
    assert ceph_server.https_endpoint and ceph_server.ca_path
    return ceph_server.new_bucket("tls")


@pytest.fixture
def tls_store(ceph_server: S3Server, tls_bucket: str) -> S3Store:
    """The production S3 store on Ceph RGW's https endpoint, trusting the rig's CA."""
    return make_s3_store(str(ceph_server.https_endpoint), tls_bucket, ca_bundle=str(ceph_server.ca_path))



def https_config(tmp_path: Path, server: S3Server, bucket: str, **s3: Any) -> Path:
    return write_config(tmp_path, s3=(str(server.https_endpoint), bucket), storage__s3=s3)


def not_trusted_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "not trusted" in line and "storage.s3.ca_bundle" in line]


def test_store_contract_basics_over_https(tls_store: Store) -> None:
    """put, head, get (whole and suffix), compose, list and delete work over https with the CA."""
    body = b"a" * MIN_PART_SIZE + b"OLD-TAIL"
    etag = tls_store.put(KEY, body, {"v": "1"})
    info = tls_store.head(KEY)
    assert info is not None and (info.size, info.etag, info.metadata) == (len(body), etag, {"v": "1"})
    assert tls_store.get(KEY)[0] == body and tls_store.get(KEY, suffix=8)[0] == b"OLD-TAIL"
    tls_store.compose(KEY, MIN_PART_SIZE, [b"NEW-", b"TAIL!"], {"v": "2"}, if_match=etag)
    data, info = tls_store.get(KEY)
    assert data == b"a" * MIN_PART_SIZE + b"NEW-TAIL!" and info.metadata == {"v": "2"}
    tls_store.put("logs/quarantine/q1", b"x", {})
    assert tls_store.list("logs/") == [KEY, "logs/quarantine/q1"]
    tls_store.delete(KEY)
    assert tls_store.head(KEY) is None and tls_store.list("logs/") == ["logs/quarantine/q1"]


def test_without_the_ca_a_request_is_rejected_naming_ca_bundle(ceph_server: S3Server, tls_bucket: str) -> None:
    """Without ca_bundle the untrusted certificate is a permanent StoreRejected (never retried as a
    passing fault) whose one line names storage.s3.ca_bundle."""
    store = make_s3_store(str(ceph_server.https_endpoint), tls_bucket)
    with pytest.raises(StoreRejected) as caught:
        store.put(KEY, b"x", {})
    assert len(str(caught.value).splitlines()) == 1
    assert not_trusted_lines(str(caught.value))


def test_run_over_https_stores_every_fetch_once(tmp_path: Path, ceph_server: S3Server, tls_bucket: str) -> None:
    """`uploader run` over https with ca_bundle stores every fetch written exactly once."""
    config = https_config(tmp_path, ceph_server, tls_bucket, ca_bundle=str(ceph_server.ca_path))
    cfg = load_config(config)
    cfg.watch.file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        writer = FetchWriter(cfg.watch.file, cfg.day.timezone)
        written = [writer.append({"games": [i]}, total_matches=i % 4) for i in range(FETCHES)]

        def all_stored() -> bool:
            return sum(d.fetches for d in stored_days(ceph_server.admin, tls_bucket, "logs")) == FETCHES

        wait_for(all_stored, timeout=90, what=f"{FETCHES} fetches in the day documents over https")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    days = list(stored_days(ceph_server.admin, tls_bucket, "logs"))
    assert all(d.problems == [] for d in days), [d.problems for d in days]
    stored = sum((d.fetch_ids for d in days), start=Counter[str]())
    assert stored == dict.fromkeys(written, 1)
    assert spooled_ids(cfg.spool.dir) == [] and "Traceback" not in err


def test_check_without_the_ca_fails_in_one_line_naming_ca_bundle(
    tmp_path: Path, ceph_server: S3Server, tls_bucket: str,
) -> None:
    """`uploader check` on the https endpoint without ca_bundle exits 1 with one line saying the
    certificate is not trusted and naming storage.s3.ca_bundle, no traceback."""
    proc = uploader("check", "--config", str(https_config(tmp_path, ceph_server, tls_bucket)))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(not_trusted_lines(proc.stdout + proc.stderr)) == 1, proc.stdout + proc.stderr
    with_ca = https_config(tmp_path, ceph_server, tls_bucket, ca_bundle=str(ceph_server.ca_path))
    proc = uploader("check", "--config", str(with_ca))
    assert proc.returncode == 0 and "OK: the store is usable" in proc.stdout, proc.stdout + proc.stderr


def test_run_without_the_ca_stops_at_start_in_one_line_and_keeps_fetches(
    tmp_path: Path, ceph_server: S3Server, tls_bucket: str,
) -> None:
    """`uploader run` without ca_bundle refuses to start: exit 1, one line saying the certificate
    is not trusted and naming storage.s3.ca_bundle, no traceback; the fetches already written stay
    in the local file, untouched."""
    config = https_config(tmp_path, ceph_server, tls_bucket)
    cfg = load_config(config)
    cfg.watch.file.parent.mkdir(parents=True, exist_ok=True)
    writer = FetchWriter(cfg.watch.file, cfg.day.timezone)
    for i in range(10):
        writer.append({"games": [i]}, total_matches=1)
    before = cfg.watch.file.read_bytes()
    proc = uploader("run", "--config", str(config))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(not_trusted_lines(proc.stderr)) == 1, proc.stderr
    assert cfg.watch.file.read_bytes() == before and spooled_ids(cfg.spool.dir) == []


@pytest.mark.parametrize("problem", ["missing", "folder", "not PEM"])
def test_bad_ca_bundle_is_refused_at_start_naming_the_key(tmp_path: Path, problem: str) -> None:
    """A ca_bundle that is missing, a folder or not a PEM certificate stops `check` and `run` at
    start: exit 2, one line naming storage.s3.ca_bundle, no traceback."""
    bundle = {"missing": tmp_path / "nope.pem", "folder": tmp_path, "not PEM": tmp_path / "key.pem"}[problem]
    if problem == "not PEM":
        bundle.write_text("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
                          "-----END PRIVATE KEY-----\n")
    config = write_config(tmp_path / "cfg", s3=("https://127.0.0.1:9", "b"), storage__s3={"ca_bundle": str(bundle)})
    for command in ("check", "run"):
        proc = uploader(command, "--config", str(config))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "storage.s3.ca_bundle" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
