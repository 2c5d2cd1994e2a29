"""Shared fixtures: the real S3 servers (moto and Ceph RGW, each started once per session on
loopback), a fresh bucket per test, and ``store`` / ``s3_server`` fixtures that run one test body
against every backend and server.

Ceph RGW and promtool (which checks the shipped alert rules) need Debian's packages
(``scripts/test.sh`` installs them where it can use apt-get). Where one is missing, the tests that
need it are skipped with one loud banner at the end; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from s3servers import CephRGW, MotoServer, S3Server, ServerUnavailable, ceph_missing, client_env
from uploader.spool import Batch
from uploader.store import Store
from uploader.store.directory import DirectoryStore
from uploader.store.s3 import S3Store

SERVERS = ("moto", "ceph")
# What was skipped for want of a system package -> why; said in one banner at the end of the run.
_skipped: dict[str, str] = {}
_SKIP_MEANS = {
    "Ceph RGW": "nothing here was proven on the server Linode runs",
    "promtool": "scripts/uploader-alerts.yml was neither checked nor unit-tested",
}


def _missing(what: str, why: str) -> None:
    """Skip the test for want of ``what``: loudly, and as a failure under CI=true."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true: {why}", pytrace=False)
    _skipped.setdefault(what, why)
    pytest.skip(f"{what} not available: {why}")


@pytest.fixture(scope="session", autouse=True)
def fake_credentials() -> Iterator[None]:
    """The fake keys both servers accept, and nothing of the developer's own AWS setup."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        for name, value in client_env({}).items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server, its own process on a free 127.0.0.1 port."""
    launcher = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield launcher.start()
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def ceph_server() -> Iterator[S3Server]:
    """A private Ceph cluster with radosgw on free 127.0.0.1 ports (what Linode runs)."""
    why = ceph_missing()
    if why:
        _missing("Ceph RGW", why)
    launcher = CephRGW()
    try:
        server = launcher.start()
    except ServerUnavailable as exc:
        pytest.fail(f"Ceph RGW did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        launcher.stop()


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of Prometheus' promtool (Debian package prometheus)."""
    path = shutil.which("promtool")
    if path is None:
        _missing("promtool", "promtool not on PATH; install the Debian package prometheus (scripts/test.sh does)")
    assert path is not None
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        bar = "!" * 78
        terminalreporter.write_line(bar, red=True, bold=True)
        for what, why in _skipped.items():
            for line in (f"{what} tests were SKIPPED: {_SKIP_MEANS[what]}.", why):
                terminalreporter.write_line(line, red=True, bold=True)
        terminalreporter.write_line(bar, red=True, bold=True)


@pytest.fixture(params=SERVERS)
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server in turn: moto, then Ceph RGW."""
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    return server


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test, on the test's server."""
    return s3_server.new_bucket()


def make_s3_store(server: S3Server | str, bucket: str, **kw: Any) -> S3Store:
    """The production S3 store on a test server (or any endpoint URL), as the tests configure it."""
    endpoint = server.endpoint if isinstance(server, S3Server) else server
    options: dict[str, Any] = {"region": "us-east-1", "addressing_style": "path", "max_attempts": 2,
                               "prefix": "logs"}
    options.update(kw)
    return S3Store(bucket, endpoint_url=endpoint, **options)


@pytest.fixture(params=["directory", *SERVERS])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A function making fresh Store instances on one shared bucket, once per backend and server."""
    if request.param == "directory":
        return lambda: DirectoryStore(tmp_path / "bucket")
    server: S3Server = request.getfixturevalue(f"{request.param}_server")
    name = server.new_bucket()
    return lambda: make_s3_store(server, name)


@pytest.fixture
def store(store_factory: Callable[[], Store]) -> Store:
    """A Store on an empty bucket, once per backend and server."""
    return store_factory()


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
    return Batch.of(
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
