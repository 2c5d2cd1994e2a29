"""The real S3 servers the tests, the chaos run and the benchmarks talk to, all on 127.0.0.1.

- ``MotoServer``: moto's server mode in its own process (an imitation of AWS S3).
- ``CephRGW``: a private single-host Ceph cluster (one mon, one memstore OSD) with radosgw,
  the server Linode Object Storage runs, from Debian's packages (``radosgw ceph-mon ceph-osd``;
  ``scripts/test.sh`` installs them when missing). Its beast frontend listens on plain http and,
  for the TLS tests, on https with a certificate for 127.0.0.1 signed by a CA the rig makes
  with the ``openssl`` command line (``https_endpoint``, ``ca_path``).

Both give an ``S3Server``: endpoint, the (obviously fake) keys it accepts, and a way to make
fresh buckets. Every port is picked free at start, so a run never collides with another
cluster on the machine. Ceph's data lives in RAM and is thrown away at stop; a cluster whose
owner died without stopping it is reaped by the next start.

    python tests/rig/s3servers.py ceph      # start one by hand; prints the endpoint; Ctrl-C stops it
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from .ports import free_port
except ImportError:  # run as a script: tests/rig is on the path
    from ports import free_port  # type: ignore[no-redef]

__all__ = [
    "ACCESS_KEY",
    "SECRET_KEY",
    "CEPH_PACKAGES",
    "CephRGW",
    "MotoServer",
    "S3Server",
    "ServerUnavailable",
    "ceph_missing",
    "client_env",
    "free_port",
]

log = logging.getLogger(__name__)

# Fake keys, the same for every server: moto accepts anything, Ceph gets a user with exactly these.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
# The one key of Ceph's test KMS: a fake key id and an obviously fake key (32 bytes of "k").
KMS_KEY_ID = "uploader-test-kms-key"
_KMS_KEY = "a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s="
CEPH_PACKAGES = ("radosgw", "ceph-mon", "ceph-osd", "openssl")
_CEPH_BINARIES = ("ceph", "ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "radosgw", "radosgw-admin", "openssl")
_CEPH_HOME = Path(tempfile.gettempdir()) / "uploader-test-ceph"
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


class ServerUnavailable(RuntimeError):
    """Raised when a test server cannot be started here; the message says why."""


def client_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose boto3 chain yields the fake keys and nothing of the developer's own."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _UNSET}
    env.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    })
    return env


def ceph_missing() -> str | None:
    """Why a Ceph cluster cannot start here (a missing program), or None if it can."""
    missing = [b for b in _CEPH_BINARIES if shutil.which(b) is None]
    if missing:
        return (f"Ceph programs not installed ({', '.join(missing)}); scripts/test.sh installs the Debian "
                f"packages {' '.join(CEPH_PACKAGES)} when it can use apt-get")
    return None


@dataclass
class S3Server:
    """A running S3 server: what a client needs to reach it."""

    name: str  # "moto" or "ceph"
    endpoint: str
    host: str
    port: int
    https_endpoint: str | None = None  # the same server over TLS (Ceph only)
    ca_path: Path | None = None  # PEM of the private CA that signed https_endpoint's certificate
    # Runs `radosgw-admin ARGS...` on the cluster and returns its output (Ceph only): users, keys.
    radosgw_admin: Callable[..., str] | None = field(default=None, repr=False)
    _admin: Any = field(default=None, repr=False)

    def client(self, https: bool = False) -> Any:
        """A plain boto3 client on this server (set-up and inspection only, never the code under
        test); ``https``: on its https endpoint (Ceph RGW answers SSE requests only there)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.https_endpoint if https else self.endpoint, region_name="us-east-1",
            verify=str(self.ca_path) if https else None,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", retries={"max_attempts": 5}),
        )

    @property
    def admin(self) -> Any:
        if self._admin is None:
            self._admin = self.client()
        return self._admin

    def new_bucket(self, prefix: str = "test") -> str:
        """Create a fresh, empty bucket and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.admin.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``, sorted."""
        pages = self.admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _wait(condition: Any, timeout: float, what: str, alive: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if alive is not None and not alive():
            raise ServerUnavailable(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)  # polling interval of a deadline wait


def _answers_tls(url: str, ca_path: Path) -> bool:
    """Whether ``url`` answers over TLS, its certificate verified against ``ca_path`` (any HTTP
    status will do: an anonymous request is refused, but only once the handshake succeeded)."""
    context = ssl.create_default_context(cafile=str(ca_path))
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _answers(url: str, expect: bytes) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return expect in r.read()
    except urllib.error.HTTPError as exc:
        return expect in exc.read()
    except OSError:
        return False


class MotoServer:
    """moto's S3 server as its own process on a free loopback port."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: S3Server | None = None

    def start(self, timeout: float = 60.0) -> S3Server:
        port = free_port()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=out, env=client_env(), start_new_session=True)
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        endpoint = f"http://127.0.0.1:{port}"
        proc = self.proc
        _wait(lambda: _answers(endpoint + "/", b"ListAllMyBucketsResult"), timeout, "moto's S3 server",
              alive=lambda: proc.poll() is None)
        self.server = S3Server("moto", endpoint, "127.0.0.1", port)
        return self.server

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_CEPH_CONF = """\
[global]
fsid = {fsid}
mon host = [v2:127.0.0.1:{mon_v2},v1:127.0.0.1:{mon_v1}]
mon initial members = a
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = {base}/$cluster.$name.keyring
run dir = {base}/run
admin socket = {base}/run/$cluster-$name.asok
pid file = {base}/run/$cluster-$name.pid
log file = {base}/log/$cluster-$name.log
crash dir = {base}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
mon data = {base}/mon/$cluster-$id

[osd]
osd data = {base}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = {memstore_bytes}
# The data is thrown away at stop: no need to write RAM out on shutdown.
osd fast shutdown = true
osd crush update on start = true

[client]
# With auth none, radosgw and radosgw-admin must not ask for a secure mon session.
ms mon client mode = crc

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port} ssl_endpoint=127.0.0.1:{rgw_ssl_port} ssl_certificate={base}/tls/server.pem ssl_private_key={base}/tls/server.key
rgw data = {base}/rgw
rgw thread pool size = 32
rgw enable usage log = false
# Appends copy the day server-side; reclaim the replaced objects' space soon (memstore is RAM):
# under the benchmarks' write flood every second of delay holds another copy of a large day.
rgw gc obj min wait = 5
rgw gc processor period = 5
# SSE-KMS (aws:kms) through Ceph's built-in test key store, so the encryption header path is
# exercised without a Vault; SSE-C needs no setup, but like every SSE only over https.
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = {kms_key_id}={kms_key}
"""


class CephRGW:
    """A throwaway Ceph cluster with radosgw on loopback; ``start`` returns its ``S3Server``.

    About 10 s to start on 2 cores and ~200 MiB of RAM plus what is stored (memstore).
    """

    def __init__(self, memstore_bytes: int = 2 << 30, home: Path = _CEPH_HOME) -> None:
        self.memstore_bytes = memstore_bytes
        self.home = home
        self.base: Path | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.server: S3Server | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> S3Server:
        why = ceph_missing()
        if why:
            raise ServerUnavailable(why)
        _reap_orphans(self.home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self.home))
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> S3Server:
        assert self.base is not None
        base = self.base
        deadline = time.monotonic() + timeout
        for sub in ("run", "log", "crash", "mon/ceph-a", "osd/ceph-0", "rgw", "tls"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        ca_path = self._make_certificates(base / "tls")
        rgw_port, rgw_ssl_port = free_port(), free_port()
        ports = {"mon_v2": free_port(), "mon_v1": free_port(), "rgw_port": rgw_port, "rgw_ssl_port": rgw_ssl_port}
        fsid = str(uuid.uuid4())
        conf = base / "ceph.conf"
        conf.write_text(_CEPH_CONF.format(fsid=fsid, base=base, memstore_bytes=self.memstore_bytes,
                                          kms_key_id=KMS_KEY_ID, kms_key=_KMS_KEY, **ports))
        mon_addr = f"[v2:127.0.0.1:{ports['mon_v2']},v1:127.0.0.1:{ports['mon_v1']}]"
        self._run("ceph-authtool", "--create-keyring", str(base / "mon.keyring"), "--gen-key", "-n", "mon.",
                  "--cap", "mon", "allow *")
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a", mon_addr, str(base / "monmap"))
        self._run("ceph-mon", "-c", str(conf), "--mkfs", "-i", "a", "--monmap", str(base / "monmap"),
                  "--keyring", str(base / "mon.keyring"))
        self._daemon("mon", "ceph-mon", "-i", "a")
        osd_uuid = str(uuid.uuid4())
        # `ceph osd new` also waits for the mon to form its quorum.
        osd_id = self._run("ceph", "-c", str(conf), "--connect-timeout", "60", "osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise ServerUnavailable(f"expected osd id 0 from `ceph osd new`, got {osd_id!r}")
        self._run("ceph-osd", "-c", str(conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("osd", "ceph-osd", "-i", "0")
        # radosgw creates its pools once the OSD is up; the user can be created meanwhile.
        self._daemon("rgw", "radosgw", "-n", "client.rgw")
        self._run("radosgw-admin", "-c", str(conf), "-n", "client.admin", "user", "create", "--uid", "tests",
                  "--display-name", "uploader tests", "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
                  timeout=max(1.0, deadline - time.monotonic()))
        endpoint = f"http://127.0.0.1:{rgw_port}"
        server = S3Server("ceph", endpoint, "127.0.0.1", rgw_port,
                          https_endpoint=f"https://127.0.0.1:{rgw_ssl_port}", ca_path=ca_path,
                          radosgw_admin=lambda *args: self._run("radosgw-admin", "-c", str(conf), "-n",
                                                                "client.admin", *args))

        def signed_list_works() -> bool:
            try:
                server.admin.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not up yet, whatever the reason
                return False

        def alive() -> bool:
            return all(p.poll() is None for p in self.procs.values())

        _wait(signed_list_works, max(1.0, deadline - time.monotonic()), "radosgw to answer signed requests",
              alive=alive)
        _wait(lambda: _answers_tls(f"https://127.0.0.1:{rgw_ssl_port}/", ca_path),
              max(1.0, deadline - time.monotonic()), "radosgw's https endpoint", alive=alive)
        self.server = server
        return server

    def stop(self) -> None:
        """Kill the daemons and delete the cluster (its data was only in RAM anyway)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                _kill_group(proc.pid)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _make_certificates(self, folder: Path) -> Path:
        """A private CA and a server certificate for 127.0.0.1 (an IP SAN) signed by it, made with
        the openssl command line (EC P-256: quick to make); returns the CA's PEM path."""
        ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr",
                                                           "server.pem"))
        ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        self._run("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "7",
                  "-subj", "/CN=uploader tests CA", "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self._run("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
        extensions = folder / "server.ext"
        extensions.write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n"
                              "keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n"
                              "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid,issuer\n")
        self._run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                  "-CAcreateserial", "-out", str(cert), "-days", "7", "-extfile", str(extensions))
        return ca

    def _run(self, *cmd: str, timeout: float = 60.0) -> str:
        assert self.base is not None
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ServerUnavailable(f"`{' '.join(cmd[:3])} ...` took longer than {timeout:.0f}s "
                                    f"(logs: {self.base / 'log'})") from None
        if r.returncode != 0:
            raise ServerUnavailable(f"`{' '.join(cmd[:3])} ...` failed with {r.returncode}: "
                                    f"{(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    def _daemon(self, name: str, binary: str, *args: str) -> None:
        assert self.base is not None
        with open(self.base / "log" / f"{name}.out", "ab") as out:
            proc = subprocess.Popen([binary, "-f", "-c", str(self.base / "ceph.conf"), *args],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        self.procs[name] = proc
        (self.base / "run" / f"{name}.spid").write_text(str(proc.pid))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _reap_orphans(home: Path) -> None:
    """Kill the daemons of clusters whose owner died without stopping them, and delete them."""
    if not home.is_dir():
        return
    for base in home.iterdir():
        # The owner's pid starts the folder's name (mkdtemp's prefix), so a cluster another
        # process (a pytest-xdist worker) is starting this very moment is never taken for dead.
        try:
            owner = int(base.name.split("-", 1)[0])
        except ValueError:
            owner = 0
        if owner and _alive(owner):
            continue
        conf = str(base / "ceph.conf")
        for spid in (base / "run").glob("*.spid"):
            try:
                pid = int(spid.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if conf in cmdline:  # still ours, not a recycled pid
                _kill_group(pid)
        shutil.rmtree(base, ignore_errors=True)
        log.info("reaped an orphaned test cluster in %s", base)


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "ceph"
    launcher: CephRGW | MotoServer = CephRGW() if kind == "ceph" else MotoServer()
    started = time.monotonic()
    server = launcher.start()
    print(json.dumps({"server": server.name, "endpoint": server.endpoint, "access_key": ACCESS_KEY,
                      "https_endpoint": server.https_endpoint, "ca_path": str(server.ca_path or ""),
                      "seconds": round(time.monotonic() - started, 1)}), flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        launcher.stop()
    return 0


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main(sys.argv[1:]))
