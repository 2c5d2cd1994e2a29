"""Shared fixtures: one moto S3 server on loopback per session, a fresh bucket per test, and a
``store`` fixture that runs a test body once per backend (directory, s3)."""

from __future__ import annotations

import hashlib
import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from uploader.spool import Batch
from uploader.store import Store
from uploader.store.directory import DirectoryStore
from uploader.store.s3 import S3Store

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep the developer's own AWS setup out of the tests.
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}
UNSET_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """URL of a moto S3 server on a free 127.0.0.1 port, with fake credentials in the env."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_ENV.items():
            mp.setenv(name, value)
        for name in UNSET_ENV:
            mp.delenv(name, raising=False)
        # One access-log line per request would drown real failures in the captured output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_admin(moto_url: str) -> Any:
    """A plain boto3 client on the moto server, for test set-up and inspection only."""
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_admin.create_bucket(Bucket=name)
    return name


def make_s3_store(moto_url: str, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint_url=moto_url,
        region="us-east-1",
        addressing_style="path",
        max_attempts=2,
        probe_prefix="logs/.uploader-check",
    )


@pytest.fixture(params=["directory", "s3"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A function making fresh Store instances on one shared bucket, once per backend."""
    if request.param == "directory":
        return lambda: DirectoryStore(tmp_path / "bucket")
    moto_url = request.getfixturevalue("moto_url")
    name = request.getfixturevalue("bucket")
    return lambda: make_s3_store(moto_url, name)


@pytest.fixture
def store(store_factory: Any) -> Store:
    """A Store on an empty bucket, once per backend."""
    made: Store = store_factory()
    return made


def build_batch(
    seq: int,
    day: date = date(2025, 7, 10),
    fetches: int = 10,
    matches_each: int = 5,
    pad: int = 0,
    batch_id: str | None = None,
) -> Batch:
    """A batch of ``fetches`` realistic fetches; ``pad`` bytes of filler per fetch make it big."""
    fetch_list = [
        {
            "FETCH_HEADER": {"fetch_id": f"f-{seq}-{i}", "timestamp": "07/10/2025 04:15:00 PM EDT"},
            "RAW_API_DATA": {"events": [{"id": i, "odds": 1.5}], "filler": "x" * pad},
            "FETCH_FOOTER": {"total_matches": matches_each},
        }
        for i in range(fetches)
    ]
    return Batch(
        batch_id=batch_id or hashlib.sha256(f"{day}-{seq}".encode()).hexdigest(),
        seq=seq,
        day=day,
        cut_at="07/10/2025 04:15:00 PM EDT",
        fetches=fetch_list,
        matches=matches_each * fetches,
        fetch_ids=[f"f-{seq}-{i}" for i in range(fetches)],
    )


@pytest.fixture
def make_batch() -> Any:
    """The :func:`build_batch` factory."""
    return build_batch


@pytest.fixture
def unused_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
