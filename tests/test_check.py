"""`uploader check` as an operator runs it, on moto and Ceph RGW: a report when the store works,
one plain line when not, probe leftovers removed, findings remembered for the next run."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from rig.s3servers import S3Server

from uploader.commands.check import run_check
from uploader.config import load_config
from uploader.local.spool import Spool
from uploader.store.memo import CapabilityMemo, memo_path

ROOT = Path(__file__).resolve().parent.parent


def _write_config(tmp_path: Path, endpoint: str, bucket: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        "[storage]\n"
        'backend = "s3"\n'
        'prefix = "logs"\n'
        "[storage.s3]\n"
        f'bucket = "{bucket}"\n'
        f'endpoint_url = "{endpoint}"\n'
        'region = "us-east-1"\n'
        'addressing_style = "path"\n'
        "max_attempts = 1\n"
        "connect_timeout_s = 2\n",
        encoding="utf-8",
    )
    return path


def _run_check(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uploader.cli", "check", "--config", str(config)],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )


def _failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, proc.stdout
    return failed[0]


@pytest.fixture
def wrong_pair(s3_server: S3Server) -> Iterator[dict[str, str]]:
    """A key id the server knows, with a secret that does not belong to it.

    Ceph RGW checks every signature (its test user's key id is the usual fake one); moto does
    only once told to, and then only for keys made through its IAM.
    """
    if s3_server.name == "ceph":
        yield {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        return
    iam = boto3.client("iam", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    # A fresh name each time: moto keeps its users for the session, and id() of a client is
    # reused once the last one is freed, which made two tests meet on one name.
    name = f"uploader-{uuid.uuid4().hex[:12]}"
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name, PolicyName="s3",
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}',
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    # moto checks credentials only after this many requests; 0 means from now on.
    requests.post(f"{s3_server.endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    finally:
        requests.post(f"{s3_server.endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


def test_check_reports_capabilities_against_a_good_server(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Against a working server, check round-trips a probe, prints the capability table, leaves no
    probe object behind, remembers the findings for `run`, and exits 0."""
    config = _write_config(tmp_path, s3_server.endpoint, bucket)
    proc = _run_check(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "put probe object     ok" in proc.stdout and "delete probe object  ok" in proc.stdout
    assert "conditional PUT (If-None-Match / If-Match)  yes" in proc.stdout
    assert "UploadPartCopy with CopySourceRange         yes" in proc.stdout
    assert "CompleteMultipartUpload with If-Match       no (a stale If-Match accepted)" in proc.stdout
    assert proc.stdout.rstrip().endswith("OK: the store is usable")
    assert s3_server.keys(bucket) == []
    assert not s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
    remembered = CapabilityMemo(memo_path(load_config(config).spool.dir)).load(
        f"{s3_server.endpoint} {bucket}", time.time())
    assert remembered is not None and remembered.range_copy and remembered.conclusive


def test_check_removes_what_interrupted_probes_left(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A killed probe's objects and a killed append's unfinished upload are listed and removed."""
    left = "logs/.uploader-check/probe-0123456789abcdef-1-src"
    s3_server.admin.put_object(Bucket=bucket, Key=left, Body=b"left behind")
    upload = s3_server.admin.create_multipart_upload(Bucket=bucket, Key="logs/all_api_json_log_2025-07-09.json")["UploadId"]
    s3_server.admin.put_object(Bucket=bucket, Key="logs/all_api_json_log_2025-07-10.json", Body=b"{}")
    proc = _run_check(_write_config(tmp_path, s3_server.endpoint, bucket))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "removed 2 leftover(s) of interrupted probes and appends" in proc.stdout and left in proc.stdout
    assert s3_server.keys(bucket) == ["logs/all_api_json_log_2025-07-10.json"]
    uploads = s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert upload not in [u["UploadId"] for u in uploads]


def test_check_beside_a_running_service_leaves_young_leftovers_alone(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """While `uploader run` holds the spool, a young multipart upload may be its append in
    flight: check leaves it (and young probe objects) alone."""
    config = _write_config(tmp_path, s3_server.endpoint, bucket)
    upload = s3_server.admin.create_multipart_upload(Bucket=bucket, Key="logs/all_api_json_log_2025-07-10.json")
    with Spool(load_config(config).spool.dir).locked("uploader run"):
        proc = _run_check(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "leftover" not in proc.stdout
    uploads = s3_server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert upload["UploadId"] in [u["UploadId"] for u in uploads]


def test_check_with_a_wrong_secret_says_the_secret_is_wrong(
    tmp_path: Path, s3_server: S3Server, bucket: str, wrong_pair: dict[str, str]
) -> None:
    """A known key id with the wrong secret gets one line naming the mismatch and where credentials go."""
    proc = _run_check(_write_config(tmp_path, s3_server.endpoint, bucket), **wrong_pair)
    line = _failure_line(proc)
    assert "secret key does not match" in line and "AWS_SECRET_ACCESS_KEY" in line
    assert "not-the-secret" not in proc.stdout + proc.stderr


def test_check_with_an_unknown_key_says_the_key_is_unknown(
    tmp_path: Path, s3_server: S3Server, bucket: str, wrong_pair: dict[str, str]
) -> None:
    """A key id the server does not know gets one line saying so."""
    proc = _run_check(_write_config(tmp_path, s3_server.endpoint, bucket),
                      AWS_ACCESS_KEY_ID="AKIA" + "UNKNOWN000000000")  # split: no key shape in the repo
    line = _failure_line(proc)
    assert "access key id is not known" in line and "AWS_ACCESS_KEY_ID" in line


def test_check_with_a_missing_bucket_names_the_bucket(tmp_path: Path, s3_server: S3Server) -> None:
    """A bucket that does not exist gets one line naming it and the config key to fix."""
    line = _failure_line(_run_check(_write_config(tmp_path, s3_server.endpoint, "no-such-bucket-anywhere")))
    assert "'no-such-bucket-anywhere' does not exist" in line and "storage.s3.bucket" in line


def test_check_with_a_closed_port_says_the_endpoint_is_unreachable(tmp_path: Path, unused_port: int) -> None:
    """An endpoint nobody listens on gets one line saying it cannot be reached and what to check."""
    line = _failure_line(_run_check(_write_config(tmp_path, f"http://127.0.0.1:{unused_port}", "some-bucket")))
    assert f"cannot reach the S3 endpoint http://127.0.0.1:{unused_port}" in line
    assert "storage.s3.endpoint_url" in line


def test_check_on_the_directory_backend_reports_ok(tmp_path: Path) -> None:
    """The embedded directory bucket passes check and leaves no probe behind."""
    config = tmp_path / "config.toml"
    config.write_text('[storage]\nbackend = "directory"\nprefix = "logs"\n', encoding="utf-8")
    out = io.StringIO()
    assert run_check(load_config(config), lambda line: print(line, file=out)) == 0
    assert "OK: the store is usable" in out.getvalue()
    assert not (tmp_path / "data" / "bucket" / "logs").exists()


def test_check_fix_on_the_command_line_installs_the_lifecycle_rules(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    """`uploader check --fix` installs our abort rule (no retention configured) and exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "uploader.cli", "check", "--fix", "--config",
         str(_write_config(tmp_path, s3_server.endpoint, bucket))],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bucket lifecycle: our rules installed" in proc.stdout
    rules = s3_server.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["ID"] for r in rules] == ["all-api-uploader-abort-incomplete-multipart:logs"]
