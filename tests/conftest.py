"""Shared fixtures: the real S3 servers (moto and Ceph RGW, each started once per session on
loopback), a fresh bucket per test, and ``store`` / ``s3_server`` fixtures that run one test body
against every backend and server.

Ceph RGW and promtool (which checks the shipped alert rules) need Debian's packages
(``scripts/test.sh`` installs them where it can use apt-get). Where one is missing, the tests that
need it are skipped with one loud banner at the end; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import SERVERS, build_batch, store_factory_for
from rig.s3servers import (
    CephRGW,
    MotoServer,
    S3Server,
    ServerUnavailable,
    ceph_missing,
    client_env,
    free_port,
)

from uploader.store import Store

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
    pytest.skip(f"{what} not available: {why}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note each skip for want of a system package, from its report: under pytest-xdist the
    workers skip and this process (the controller) prints the banner."""
    if report.skipped and isinstance(report.longrepr, tuple):
        found = re.match(rf"Skipped: ({'|'.join(map(re.escape, _SKIP_MEANS))}) not available: (.*)", report.longrepr[2])
        if found:
            _skipped.setdefault(found[1], found[2])


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


@pytest.fixture(params=["directory", *SERVERS])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A function making fresh Store instances on one shared bucket, once per backend and server."""
    return store_factory_for(request, tmp_path)


@pytest.fixture
def store(store_factory: Callable[[], Store]) -> Store:
    """A Store on an empty bucket, once per backend and server."""
    return store_factory()


@pytest.fixture
def make_batch() -> Any:
    """The :func:`build_batch` factory."""
    return build_batch


@pytest.fixture
def unused_port() -> int:
    """A loopback port with nothing listening on it (nor taken by another worker meanwhile)."""
    return free_port()
