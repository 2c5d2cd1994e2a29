"""The fault proxy in front of real S3 servers (moto and Ceph RGW): faults, modes, the request log, rules."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from rig.faultproxy import FaultProxy, Request, Rule, Traffic, blank_complete_etag
from rig.s3servers import ACCESS_KEY, SECRET_KEY, S3Server

SOURCE_KEY = "dir/ä b+c.txt"  # needs URL-encoding in paths and in x-amz-copy-source
STALE = '"0123456789abcdef0123456789abcdef"'
PRECONDITION = (412, "PreconditionFailed")


@pytest.fixture(params=["moto", "ceph"])
def server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server in turn (conftest's session servers)."""
    made: S3Server = request.getfixturevalue(f"{request.param}_server")
    return made


@pytest.fixture
def proxy(server: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy in front of ``server``, no faults, no rules."""
    with FaultProxy((server.host, server.port)) as p:
        yield p


@pytest.fixture
def moto_proxy(moto_server: S3Server) -> Iterator[FaultProxy]:
    """A fault proxy in front of moto (for the fault tests, where the server does not matter)."""
    with FaultProxy((moto_server.host, moto_server.port)) as p:
        yield p


def via(proxy: FaultProxy, read_timeout: float = 30.0) -> Any:
    """A boto3 client that talks to the proxy, path-style, without retries."""
    return boto3.client(
        "s3", endpoint_url=proxy.url, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", retries={"total_max_attempts": 1},
                      connect_timeout=5, read_timeout=read_timeout),
    )


def error_of(call: Any) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"]


def single_part_upload(s3: Any, bucket: str, key: str, body: bytes) -> tuple[str, list[dict[str, Any]]]:
    """An open multipart upload of ``key`` with one part holding ``body``: (upload id, parts)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)["ETag"]
    return upload_id, [{"PartNumber": 1, "ETag": etag}]


# -- rules, on every server ------------------------------------------------------------------


def test_answer_rule_gives_the_client_that_error(proxy: FaultProxy, server: S3Server) -> None:
    """An answer rule replies with its status and S3 error code and never reaches the server."""
    bucket = server.new_bucket()
    first = Rule(op="PutObject", when=lambda r: r.key == "a", answer=(501, "NotImplemented"))
    second = Rule(op="PutObject", answer=(400, "InvalidArgument"))
    proxy.rules = [first, second]
    s3 = via(proxy)
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="a", Body=b"x")) == (501, "NotImplemented")
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="b", Body=b"x")) == (400, "InvalidArgument")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert (first.hits, second.hits) == (1, 1)


def test_dropping_if_match_lets_a_stale_put_through(proxy: FaultProxy, server: S3Server) -> None:
    """The server refuses a stale If-Match PUT; with If-Match dropped (and re-signed) it stores it."""
    bucket = server.new_bucket()
    server.admin.put_object(Bucket=bucket, Key="k", Body=b"old")
    s3 = via(proxy)
    assert error_of(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfMatch=STALE)) == PRECONDITION
    rule = Rule(op="PutObject", drop_headers=("If-Match",))
    proxy.rules = [rule]
    s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfMatch=STALE)
    assert server.admin.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"
    assert rule.hits == 1
    assert proxy.requests[-1].headers["if-match"] == STALE  # the log keeps what the client sent


def test_dropping_range_returns_the_whole_object(proxy: FaultProxy, server: S3Server) -> None:
    """With Range dropped a ranged GET answers 200 with the whole object."""
    bucket = server.new_bucket()
    server.admin.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=b"0123456789")
    s3 = via(proxy)
    assert s3.get_object(Bucket=bucket, Key=SOURCE_KEY, Range="bytes=-3")["Body"].read() == b"789"
    proxy.rules = [Rule(op="GetObject", drop_headers=("range",))]
    got = s3.get_object(Bucket=bucket, Key=SOURCE_KEY, Range="bytes=-3")
    assert got["Body"].read() == b"0123456789"
    assert "ContentRange" not in got


def test_dropping_copy_source_range_copies_the_whole_source(proxy: FaultProxy, server: S3Server) -> None:
    """With x-amz-copy-source-range dropped, UploadPartCopy copies the whole source object."""
    bucket = server.new_bucket()
    server.admin.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=b"0123456789")
    proxy.rules = [Rule(op="UploadPartCopy", drop_headers=("x-amz-copy-source-range",))]
    s3 = via(proxy)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3.upload_part_copy(Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1,
                               CopySource={"Bucket": bucket, "Key": SOURCE_KEY}, CopySourceRange="bytes=0-3")
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert server.admin.get_object(Bucket=bucket, Key="m")["Body"].read() == b"0123456789"


def test_blank_complete_etag_empties_the_answers_etag(proxy: FaultProxy, server: S3Server) -> None:
    """blank_complete_etag makes CompleteMultipartUpload answer <ETag></ETag>; the object is whole."""
    bucket = server.new_bucket()
    proxy.rules = [Rule(op="CompleteMultipartUpload", edit_response=blank_complete_etag)]
    s3 = via(proxy)
    upload_id, parts = single_part_upload(s3, bucket, "m", b"abc")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    assert done.get("ETag", "") == ""
    assert done["Key"] == "m"
    assert server.admin.head_object(Bucket=bucket, Key="m")["ETag"].strip('"') != ""


def test_enforce_if_match_on_complete(proxy: FaultProxy, server: S3Server) -> None:
    """Complete with a stale or missing-object If-Match gets 412; with the current ETag it completes."""
    bucket = server.new_bucket()
    etag = server.admin.put_object(Bucket=bucket, Key="m", Body=b"old")["ETag"]
    rule = Rule(enforce_if_match=True)
    proxy.rules = [rule]
    s3 = via(proxy)
    upload_id, parts = single_part_upload(s3, bucket, "m", b"new")
    complete = {"Bucket": bucket, "Key": "m", "UploadId": upload_id, "MultipartUpload": {"Parts": parts}}
    assert error_of(lambda: s3.complete_multipart_upload(IfMatch=STALE, **complete)) == PRECONDITION
    s3.complete_multipart_upload(IfMatch=etag, **complete)
    assert server.admin.get_object(Bucket=bucket, Key="m")["Body"].read() == b"new"
    upload_id, parts = single_part_upload(s3, bucket, "missing", b"x")
    assert error_of(lambda: s3.complete_multipart_upload(
        Bucket=bucket, Key="missing", UploadId=upload_id, IfMatch=etag,
        MultipartUpload={"Parts": parts})) == PRECONDITION
    assert rule.hits == 3


def test_enforce_if_match_on_upload_part_copy(proxy: FaultProxy, server: S3Server) -> None:
    """UploadPartCopy with a stale CopySourceIfMatch gets 412; with the source's ETag it copies."""
    bucket = server.new_bucket()
    etag = server.admin.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=b"source")["ETag"]
    rule = Rule(op="UploadPartCopy", enforce_if_match=True)
    proxy.rules = [rule]
    s3 = via(proxy)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    copy = {"Bucket": bucket, "Key": "m", "UploadId": upload_id, "PartNumber": 1,
            "CopySource": {"Bucket": bucket, "Key": SOURCE_KEY}}
    assert error_of(lambda: s3.upload_part_copy(CopySourceIfMatch=STALE, **copy)) == PRECONDITION
    part = s3.upload_part_copy(CopySourceIfMatch=etag, **copy)
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert server.admin.get_object(Bucket=bucket, Key="m")["Body"].read() == b"source"
    # A source given as "/bucket/key" (boto3 sends a string as is, URL-encoded) is found too.
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m2")["UploadId"]
    copy.update(Key="m2", UploadId=upload_id, CopySource=f"/{bucket}/{SOURCE_KEY}")
    assert error_of(lambda: s3.upload_part_copy(CopySourceIfMatch=STALE, **copy)) == PRECONDITION
    assert s3.upload_part_copy(CopySourceIfMatch=etag, **copy)["CopyPartResult"]["ETag"]
    s3.abort_multipart_upload(Bucket=bucket, Key="m2", UploadId=upload_id)
    assert rule.hits == 4


# -- the request log -------------------------------------------------------------------------


def test_operations_are_named_from_real_requests(proxy: FaultProxy, server: S3Server) -> None:
    """Each boto3 call's request is logged with its S3 operation, bucket and decoded key."""
    s3 = via(proxy)
    bucket = f"ops-{time.monotonic_ns():x}"
    s3.list_buckets()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=SOURCE_KEY, Body=b"hello")
    s3.get_object(Bucket=bucket, Key=SOURCE_KEY)["Body"].read()
    s3.head_object(Bucket=bucket, Key=SOURCE_KEY)
    s3.list_objects_v2(Bucket=bucket)
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": SOURCE_KEY})
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload_id, PartNumber=1, Body=b"p1")
    s3.list_multipart_uploads(Bucket=bucket)
    s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload_id, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    other = s3.create_multipart_upload(Bucket=bucket, Key="n")["UploadId"]
    s3.upload_part_copy(Bucket=bucket, Key="n", UploadId=other, PartNumber=1,
                        CopySource={"Bucket": bucket, "Key": SOURCE_KEY})
    s3.abort_multipart_upload(Bucket=bucket, Key="n", UploadId=other)
    s3.delete_object(Bucket=bucket, Key="copy")
    s3.get_bucket_location(Bucket=bucket)
    log = proxy.requests
    assert [r.operation for r in log] == [
        "ListBuckets", "CreateBucket", "PutObject", "GetObject", "HeadObject", "ListObjectsV2", "CopyObject",
        "CreateMultipartUpload", "UploadPart", "ListMultipartUploads", "CompleteMultipartUpload",
        "CreateMultipartUpload", "UploadPartCopy", "AbortMultipartUpload", "DeleteObject", "Other"]
    put = log[2]
    assert (put.method, put.bucket, put.key, put.body) == ("PUT", bucket, SOURCE_KEY, b"hello")
    assert put.headers["content-length"] == "5" and "authorization" in put.headers
    assert log[8].query["partNumber"] == "1" and log[8].query["uploadId"] == upload_id
    assert log[0].bucket == "" and log[1].key == ""


# -- faults (the server does not matter: moto) -----------------------------------------------


def test_forced_modes_then_pass(moto_proxy: FaultProxy, moto_server: S3Server) -> None:
    """Each forced mode fails every request its way and is counted; back in pass requests work."""
    bucket = moto_server.new_bucket()
    s3 = via(moto_proxy, read_timeout=1.0)
    moto_proxy.mode = "reset"
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        s3.head_bucket(Bucket=bucket)
    moto_proxy.mode = "stall"
    with pytest.raises(ReadTimeoutError):
        s3.head_bucket(Bucket=bucket)
    moto_proxy.mode = "http503"
    assert error_of(lambda: s3.list_objects_v2(Bucket=bucket)) == (503, "SlowDown")
    moto_proxy.mode = "http500"
    assert error_of(lambda: s3.list_objects_v2(Bucket=bucket)) == (500, "InternalError")
    moto_proxy.mode = "pass"
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    counts = moto_proxy.counts
    assert {k: counts[k] for k in ("reset", "stall", "http503", "http500", "passed")} == dict.fromkeys(
        ("reset", "stall", "http503", "http500", "passed"), 1)
    with pytest.raises(ValueError, match="mode must be one of"):
        moto_proxy.mode = "down"


def test_random_faults_hit_every_kind_before_and_after_the_server(moto_server: S3Server) -> None:
    """At a fault rate with a seed every kind shows up, some after the server stored the PUT."""
    bucket = moto_server.new_bucket()
    with FaultProxy((moto_server.host, moto_server.port), seed=5, fault_rate=0.5) as proxy:
        s3 = via(proxy, read_timeout=1.0)
        failed: list[str] = []
        deadline = time.monotonic() + 60
        i = 0
        while not all(proxy.counts[k] for k in proxy.kinds):
            assert time.monotonic() < deadline, f"not every kind within 60 s: {proxy.counts}"
            key = f"k{i}"
            i += 1
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=b"x")
            except (ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError):
                failed.append(key)
        stored = set(moto_server.keys(bucket))
    assert proxy.counts["passed"] > 0
    assert sum(proxy.counts[k] for k in (*proxy.kinds, "passed")) == len(proxy.requests) == i
    assert any(k in stored for k in failed) and any(k not in stored for k in failed)


def test_down_refuses_connections_until_up(moto_proxy: FaultProxy, moto_server: S3Server) -> None:
    """go_down closes the port (connection refused); come_up serves again on the same port."""
    bucket = moto_server.new_bucket()
    s3 = via(moto_proxy)
    port = moto_proxy.port
    moto_proxy.go_down()
    assert moto_proxy.is_down
    with pytest.raises(EndpointConnectionError):
        s3.head_bucket(Bucket=bucket)
    moto_proxy.come_up()
    s3.head_bucket(Bucket=bucket)
    assert (moto_proxy.port, moto_proxy.counts["down"], moto_proxy.counts["passed"]) == (port, 1, 1)


def raw_request(proxy: FaultProxy, method: str, url: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send a (presigned) request through ``proxy`` on a plain socket, a body after a 100
    Continue: (every byte sent, every byte received)."""
    expect = "Expect: 100-continue\r\n" if body else ""
    head = (f"{method} {url.removeprefix(proxy.url)} HTTP/1.1\r\nHost: {proxy.url.removeprefix('http://')}\r\n"
            f"Content-Length: {len(body)}\r\n{expect}\r\n").encode()
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head)
        got = sock.recv(25) if body else b""  # b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        got += b"".join(iter(lambda: sock.recv(65536), b""))
    return head + body, got


def test_traffic_counts_requests_and_bytes_by_method(moto_proxy: FaultProxy, moto_server: S3Server) -> None:
    """``traffic`` counts each method's requests and the bytes exactly as the client sent and got
    them (a 100 Continue included); ``reset_traffic`` starts it again."""
    bucket = moto_server.new_bucket()
    s3 = via(moto_proxy)
    s3.list_objects_v2(Bucket=bucket)
    assert moto_proxy.traffic().requests == 1
    moto_proxy.reset_traffic()
    assert moto_proxy.traffic() == Traffic()
    params = {"Bucket": bucket, "Key": "k"}
    put = raw_request(moto_proxy, "PUT", s3.generate_presigned_url("put_object", Params=params), b"x" * 100_000)
    get = raw_request(moto_proxy, "GET", s3.generate_presigned_url("get_object", Params=params))
    assert put[1].startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200") and get[1].endswith(b"x" * 100_000)
    assert moto_proxy.traffic("PUT") == Traffic(1, len(put[0]), len(put[1]))
    assert moto_proxy.traffic("GET") == Traffic(1, len(get[0]), len(get[1]))
    assert moto_proxy.traffic() == Traffic(2, len(put[0]) + len(get[0]), len(put[1]) + len(get[1]))


def test_rule_takes_exactly_one_action() -> None:
    """A Rule with no action or with two is refused."""
    with pytest.raises(ValueError, match="exactly one"):
        Rule(op="PutObject")
    with pytest.raises(ValueError, match="exactly one"):
        Rule(answer=(501, "NotImplemented"), drop_headers=("range",))


def test_operation_of_unusual_requests() -> None:
    """Requests outside the listed operations are "Other"; ?x-id and encoded keys do not confuse it."""
    assert Request("GET", "/b/k?acl", {}).operation == "Other"
    assert Request("HEAD", "/b", {}).operation == "Other"
    assert Request("POST", "/b?delete", {}).operation == "Other"
    assert Request("GET", "/b/k?versionId=3&x-id=GetObject", {}).operation == "GetObject"
    assert Request("GET", "/b/a%2Fb%20c", {}).key == "a/b c"
