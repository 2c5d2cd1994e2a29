"""Encryption at rest: SSE-C, SSE-KMS and SSE-S3, each against a server that applies it and one
that does not (docs/DESIGN.md §5.9).

What the servers really do (probed by the store, proven here): Ceph RGW applies SSE-C and SSE-KMS
(its test KMS, set up by the rig) but only over https, and stores an object sent with SSE-S3
(``AES256``) unencrypted, saying nothing; moto applies SSE-S3 and SSE-KMS and ignores SSE-C. A
server that does not apply what is configured gets no write at all: the batches wait in the spool.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import make_s3_store, read_day, uploader, write_config
from rig import chaos
from rig.s3servers import KMS_KEY_ID, S3Server

from uploader import daily
from uploader.config import load_config
from uploader.errors import ConfigError, StoreRejected
from uploader.s3_config import CustomerKey, Encryption, SseMode
from uploader.store.s3 import S3Store

# Obviously fake 256-bit keys.
KEY = b"uploader-test-sse-c-key-32-bytes"
OTHER_KEY = b"uploader-test-OTHER-key-32-bytes"
DOC = "logs/all_api_json_log_2025-07-10.json"
BIG = 6 << 20  # past 5 MiB: the next append copies the body server-side (UploadPartCopy)


def sse_c(key: bytes = KEY) -> Encryption:
    return Encryption(SseMode.CUSTOMER, customer_key=CustomerKey(Path("/test/sse-c.key"), key))


def https_store(server: S3Server, bucket: str, encryption: Encryption) -> S3Store:
    assert server.https_endpoint and server.ca_path
    return make_s3_store(str(server.https_endpoint), bucket, ca_bundle=str(server.ca_path), encryption=encryption)



def key_file(folder: Path, data: bytes = KEY, mode: int = 0o600) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sse-c.key"
    path.write_bytes(data)
    path.chmod(mode)
    return path


# -- configuration -------------------------------------------------------------------------------


def test_the_key_file_holds_raw_bytes_or_base64(tmp_path: Path) -> None:
    raw = write_config(tmp_path / "raw", storage__s3={"sse_customer_key_file": str(key_file(tmp_path / "raw"))})
    b64 = write_config(tmp_path / "b64", storage__s3={
        "sse_customer_key_file": str(key_file(tmp_path / "b64", base64.b64encode(KEY) + b"\n"))})
    for path in (raw, b64):
        encryption = load_config(path).storage.s3.encryption
        assert encryption.mode is SseMode.CUSTOMER and encryption.customer_key is not None
        assert encryption.customer_key.key == KEY
        assert KEY.decode() not in repr(load_config(path))


@pytest.mark.parametrize(("data", "mode", "says"), [
    (KEY, 0o640, "chmod 600"),
    (KEY, 0o604, "chmod 600"),
    (KEY[:31], 0o600, "256-bit key"),
    (base64.b64encode(KEY[:24]), 0o600, "256-bit key"),
])
def test_a_key_file_open_to_others_or_of_the_wrong_size_is_refused(
    tmp_path: Path, data: bytes, mode: int, says: str,
) -> None:
    """Refused at start, naming the key and what to do; the key itself is never echoed."""
    config = write_config(tmp_path, storage__s3={"sse_customer_key_file": str(key_file(tmp_path, data, mode))})
    proc = uploader("status", "--config", str(config))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "storage.s3.sse_customer_key_file" in lines[0] and says in lines[0], lines
    assert data.decode("latin-1") not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("s3", "key", "says"), [
    ({"server_side_encryption": "aes256"}, "server_side_encryption", '"AES256"'),
    ({"kms_key": "k"}, "kms_key", "aws:kms"),
    ({"server_side_encryption": "AES256", "sse_customer_key_file": "missing.key"}, "sse_customer_key_file",
     "one of the two"),
    ({"sse_customer_key_file": "missing.key"}, "sse_customer_key_file", "cannot read"),
    ({"sse_customer_key": "dXBsb2FkZXItdGVzdC1zc2UtYy1rZXktMzItYnl0ZXM="}, "sse_customer_key", "file of its own"),
])
def test_bad_encryption_settings_are_refused_naming_the_key(
    tmp_path: Path, s3: dict[str, str], key: str, says: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, storage__s3=s3))
    assert caught.value.field == f"storage.s3.{key}" and says in str(caught.value)
    assert "dXBsb2Fk" not in str(caught.value)


# -- what each server applies --------------------------------------------------------------------


def test_sse_c_on_ceph_rgw_every_append_path_and_read(ceph_server: S3Server) -> None:
    """Over https, SSE-C on every path: a new day, a server-side append (UploadPartCopy of the
    encrypted body), suffix reads and streams; the object is unreadable without the key."""
    bucket = ceph_server.new_bucket()
    store = https_store(ceph_server, bucket, sse_c())
    caps = store.capabilities()
    assert caps.encryption_problem == "" and caps.server_side_append, caps
    etag = store.put(DOC, b"x" * BIG, {"m": "1"}, if_none_match=True)
    store.compose(DOC, 5 << 20, [b"tail"], {"m": "2"}, if_match=etag)
    body, info = store.get(DOC, suffix=6)
    assert (body, info.size, info.encryption) == (b"xxtail", (5 << 20) + 4, "SSE-C")
    with store.stream(DOC) as (stream, _):
        assert stream.read() == b"x" * (5 << 20) + b"tail"
    plain = ceph_server.client(https=True)
    with pytest.raises(Exception, match="InvalidArgument|Bad Request|400"):
        plain.get_object(Bucket=bucket, Key=DOC)
    got = plain.get_object(Bucket=bucket, Key=DOC, SSECustomerAlgorithm="AES256", SSECustomerKey=KEY)
    assert got["Body"].read()[-4:] == b"tail"


def test_another_sse_c_key_reads_nothing_and_says_which_setting(ceph_server: S3Server) -> None:
    bucket = ceph_server.new_bucket()
    https_store(ceph_server, bucket, sse_c()).put(DOC, b"{}", {})
    other = https_store(ceph_server, bucket, sse_c(OTHER_KEY))
    with pytest.raises(StoreRejected) as caught:
        other.get(DOC)
    text = str(caught.value)
    assert "sse_customer_key_file" in text and OTHER_KEY.decode() not in text and KEY.decode() not in text


def test_sse_kms_on_ceph_rgw(ceph_server: S3Server) -> None:
    """SSE-KMS with a key id through Ceph's test KMS: applied on a new day and a server-side append."""
    bucket = ceph_server.new_bucket()
    store = https_store(ceph_server, bucket, Encryption(SseMode.KMS, kms_key=KMS_KEY_ID))
    etag = store.put(DOC, b"x" * BIG, {}, if_none_match=True)
    store.compose(DOC, 5 << 20, [b"tail"], {}, if_match=etag)
    head = ceph_server.client(https=True).head_object(Bucket=bucket, Key=DOC)
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY_ID)


def test_sse_s3_on_moto(moto_server: S3Server) -> None:
    bucket = moto_server.new_bucket()
    store = make_s3_store(moto_server, bucket, encryption=Encryption(SseMode.S3))
    etag = store.put(DOC, b"x" * BIG, {}, if_none_match=True)
    store.compose(DOC, 5 << 20, [b"tail"], {}, if_match=etag)
    assert store.head(DOC).encryption == "AES256"  # type: ignore[union-attr]
    assert moto_server.client().head_object(Bucket=bucket, Key=DOC)["ServerSideEncryption"] == "AES256"


@pytest.mark.parametrize(("server", "encryption", "https"), [
    ("ceph", Encryption(SseMode.S3), True),  # RGW 16 stores it unencrypted, without a word
    ("moto", sse_c(), False),  # moto ignores SSE-C
])
def test_a_server_that_does_not_apply_the_encryption_gets_no_write(
    request: pytest.FixtureRequest, server: str, encryption: Encryption, https: bool,
) -> None:
    s3: S3Server = request.getfixturevalue(f"{server}_server")
    bucket = s3.new_bucket()
    store = https_store(s3, bucket, encryption) if https else make_s3_store(s3, bucket, encryption=encryption)
    assert store.capabilities().encryption_problem == "stored unencrypted"
    with pytest.raises(StoreRejected, match="does not apply the configured encryption"):
        store.put(DOC, b"{}", {}, if_none_match=True)
    with pytest.raises(StoreRejected, match="does not apply the configured encryption"):
        store.compose(DOC, 0, [b"x" * BIG, b"y"], {}, if_none_match=True)
    assert s3.keys(bucket, "logs/") == []  # the probe's objects removed, nothing else written


def test_ceph_rgw_refuses_sse_over_plain_http_in_one_line_naming_the_setting(ceph_server: S3Server) -> None:
    bucket = ceph_server.new_bucket()
    with pytest.raises(StoreRejected) as caught:
        make_s3_store(ceph_server, bucket, encryption=sse_c()).capabilities()
    assert "sse_customer_key_file" in str(caught.value) and "https" in str(caught.value)


# -- a running service, killed again and again ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("server", "encryption", "compression"), [
    ("ceph", {"sse_customer_key": KEY}, "gzip"),  # Linode locked down: https, SSE-C, gzip days
    ("ceph", {"server_side_encryption": "aws:kms", "kms_key": KMS_KEY_ID}, "none"),
], ids=["ceph-sse-c-gzip", "ceph-sse-kms"])
def test_encrypted_days_under_kill_9_chaos_then_verify_and_export(
    tmp_path: Path, request: pytest.FixtureRequest, server: str, encryption: dict[str, Any], compression: str,
) -> None:
    """SIGKILLs and S3 faults with encryption on (over https, as Ceph RGW requires): every fetch
    stored once, in documents encrypted as configured, that `uploader verify --all`, `check` and
    `export` read back (with the key for SSE-C). Which append paths a run takes depends on where
    the kills fall; tests/test_encryption.py's store tests take each path deterministically."""
    s3: S3Server = request.getfixturevalue(f"{server}_server")
    summary = chaos.run(duration=10, seed=5, kill_interval=1.2, rate=15, fault_rate=0.3, down_every=8,
                        fetch_kib=32, span_hours=1, workdir=tmp_path / "chaos", server=s3,
                        encryption=encryption, https=True, compression=compression)
    print(summary.line())
    assert summary.problems == [], summary.problems[:20]
    assert (summary.lost, summary.doubled, summary.wrong_day) == (0, 0, 0)
    assert summary.kills >= 4 and summary.fetches > 100

    bucket = summary.bucket
    expected = "SSE-C" if "sse_customer_key" in encryption else encryption["server_side_encryption"]
    settings = {k: v for k, v in encryption.items() if k != "sse_customer_key"}
    get_args: dict[str, Any] = {}
    if "sse_customer_key" in encryption:
        settings["sse_customer_key_file"] = str(key_file(tmp_path / "read"))
        get_args = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY}
    settings["ca_bundle"] = str(s3.ca_path)
    config = write_config(tmp_path / "read", s3=(str(s3.https_endpoint), bucket), storage={"prefix": chaos.PREFIX},
                          day={"timezone": chaos.TZ}, storage__s3=settings)
    client = s3.client(https=True)
    days = [k for k in s3.keys(bucket, chaos.PREFIX + "/") if daily.day_of_key(chaos.PREFIX, k)]
    assert days
    for key in days:
        assert _applied(client.head_object(Bucket=bucket, Key=key, **get_args)) == expected, key

    verified = uploader("verify", "--all", "--config", str(config))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    check = uploader("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"day documents: {len(days)} {expected}" in check.stdout, check.stdout

    key = days[-1]
    day = daily.day_of_key(chaos.PREFIX, key)
    assert day is not None and key.endswith(".json.gz" if compression == "gzip" else ".json")
    exported = uploader("export", day.isoformat(), "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    stored = read_day(client, bucket, key, **get_args)
    ids = [daily.fetch_id_of(json.loads(line)) for line in exported.stdout.splitlines() if line.strip()]
    assert sorted(ids) == sorted(stored.fetch_ids.elements())
    if "sse_customer_key" in encryption:
        assert base64.b64encode(KEY).decode() not in (tmp_path / "chaos" / "service.log").read_text()


def _applied(head: dict[str, Any]) -> str:
    return "SSE-C" if head.get("SSECustomerAlgorithm") else str(head.get("ServerSideEncryption") or "")


def test_no_key_in_any_log_line_at_debug(tmp_path: Path, ceph_server: S3Server) -> None:
    """`uploader check --log-level DEBUG` with SSE-C: neither the key nor its base64 in any output."""
    bucket = ceph_server.new_bucket()
    config = write_config(tmp_path, s3=(str(ceph_server.https_endpoint), bucket), storage__s3={
        "ca_bundle": str(ceph_server.ca_path), "sse_customer_key_file": str(key_file(tmp_path / "k"))})
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "uploader.cli", "--log-level", "DEBUG", "check", "--config",
                           str(config)], capture_output=True, text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "encryption at rest: SSE-C" in proc.stdout
    for secret in (KEY.decode(), base64.b64encode(KEY).decode()):
        assert secret not in proc.stdout + proc.stderr
