"""Keys rotated under a running service, on Ceph RGW: picked up without a restart, nothing lost.

The service reads its keys from a credentials file (boto3's chain, as an operator's
~/.aws/credentials). A second key is created for the user, written into the file, and the first
key removed, while fetches keep being written; the next refused request makes the store read the
chain again, and every fetch lands in the day document exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from helpers import NY, read_day, wait_for, write_config
from rig.s3servers import S3Server, client_env

from uploader import daily
from uploader.config import load_config
from uploader.fetchlog import FetchWriter

# Obviously fake keys: the test creates them on its own throwaway cluster.
FIRST = ("ROTATETESTKEYONE0001", "rotate-test-secret-one-not-a-real-key-000")
SECOND = ("ROTATETESTKEYTWO0002", "rotate-test-secret-two-not-a-real-key-000")


def _credentials(path: Path, key: tuple[str, str]) -> None:
    """Write ``key`` as the default profile, replacing the file in one rename (as editors do)."""
    tmp = path.with_suffix(".new")
    tmp.write_text(f"[default]\naws_access_key_id = {key[0]}\naws_secret_access_key = {key[1]}\n")
    os.replace(tmp, path)


def _client(server: S3Server, key: tuple[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1],
                        config=BotoConfig(s3={"addressing_style": "path"}))


def test_keys_replaced_in_the_credentials_file_are_used_without_a_restart(
    ceph_server: S3Server, tmp_path: Path,
) -> None:
    """With fetches written throughout, a second key written into the credentials file and the
    first key removed: the running service stores every fetch exactly once, no restart."""
    radosgw_admin = ceph_server.radosgw_admin
    assert radosgw_admin is not None
    uid = f"rotate-{uuid.uuid4().hex[:8]}"
    radosgw_admin("user", "create", "--uid", uid, "--display-name", "rotation test",
                  "--access-key", FIRST[0], "--secret-key", FIRST[1])
    bucket = f"rotate-{uuid.uuid4().hex[:8]}"
    _client(ceph_server, FIRST).create_bucket(Bucket=bucket)
    creds = tmp_path / "credentials"
    _credentials(creds, FIRST)
    config = write_config(tmp_path, s3=(ceph_server.endpoint, bucket), spool={"retry_interval_s": 1, "max_backoff_s": 2})
    cfg = load_config(config)
    cfg.watch.file.parent.mkdir(parents=True, exist_ok=True)
    env = client_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(creds)
    log_path = tmp_path / "run.log"
    writer = FetchWriter(cfg.watch.file, "America/New_York")
    written: list[str] = []
    stop_writing = threading.Event()

    def write() -> None:
        while not stop_writing.wait(0.05):  # a pace of ~20 fetches/s, not a synchronisation
            written.append(writer.append({"games": ["r"] * 20}, total_matches=1))

    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "uploader.cli", "run", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    pace = threading.Thread(target=write, daemon=True)
    try:
        pace.start()
        day_key = daily.day_key(cfg.storage.prefix, datetime.now(NY).date())
        reader = _client(ceph_server, FIRST)
        wait_for(lambda: _uploads(reader, bucket, day_key) >= 2, timeout=60, what="uploads with the first key")
        radosgw_admin("key", "create", "--uid", uid, "--key-type", "s3",
                      "--access-key", SECOND[0], "--secret-key", SECOND[1])
        _credentials(creds, SECOND)
        radosgw_admin("key", "rm", "--uid", uid, "--key-type", "s3", "--access-key", FIRST[0])
        reader = _client(ceph_server, SECOND)
        rotated_at = _uploads(reader, bucket, day_key)
        wait_for(lambda: _uploads(reader, bucket, day_key) >= rotated_at + 3, timeout=90,
                 what="uploads with the second key, no restart")
        stop_writing.set()
        pace.join()
        wait_for(lambda: _fetches(reader, bucket, day_key) >= len(written) - len(written) % 10, timeout=60,
                 what="every complete batch stored")
    finally:
        stop_writing.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log_path.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "credentials_refused" in text, "the first key was never refused: the test did not rotate anything"
    day = read_day(reader, bucket, day_key)
    assert day.problems == []
    stored = day.fetch_ids
    assert max(stored.values()) == 1, "a fetch was stored twice"
    assert set(stored) == set(written[:len(stored)]) and len(stored) == len(written) - len(written) % 10


def _head(client: Any, bucket: str, key: str) -> dict[str, str] | None:
    try:
        return dict(client.head_object(Bucket=bucket, Key=key)["Metadata"])
    except client.exceptions.ClientError:
        return None


def _uploads(client: Any, bucket: str, key: str) -> int:
    meta = _head(client, bucket, key)
    return int(meta.get("total-uploads", 0)) if meta else 0


def _fetches(client: Any, bucket: str, key: str) -> int:
    meta = _head(client, bucket, key)
    return int(meta.get("total-fetches", 0)) if meta else 0
