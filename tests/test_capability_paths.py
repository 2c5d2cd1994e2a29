"""Every outcome of every capability, end to end: the probe's finding, then appends that land.

Each case puts ``tests/rig/faultproxy.py`` between the production S3 store and a real server (moto
and Ceph RGW) so the server seems to honour a feature, ignore it, or answer it with an error.
Whatever the probe finds, a new day, a small-day rewrite, a day past 5 MiB and its close-out all
land exactly once, on the path the findings allow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import build_batch, make_s3_store, write_config
from rig.faultproxy import FaultProxy, Request, Rule, blank_complete_etag
from rig.s3servers import S3Server

from uploader import daily
from uploader.daily.verifier import verify
from uploader.local.spool import Spool
from uploader.publish import SMALL_LIMIT, append_batches, close_day
from uploader.store.memo import CapabilityMemo, memo_path

TZ = pytz.timezone("America/New_York")
DAY = date(2025, 7, 10)
T0 = datetime(2025, 7, 10, 16, 0, 0, tzinfo=pytz.utc)
KEY = daily.day_key("logs", DAY)
REPO = Path(__file__).resolve().parent.parent


def _with(header: str) -> Callable[[Request], bool]:
    return lambda r: header in r.headers


def _conditional(r: Request) -> bool:
    return "if-match" in r.headers or "if-none-match" in r.headers


NOT_IMPLEMENTED = (501, "NotImplemented")
# name: (rules, what the probe must find; None = whatever the server itself honours)
CASES: dict[str, tuple[Callable[[], list[Rule]], dict[str, Any]]] = {
    "as-is": (list, {}),
    "conditional-put-error": (
        lambda: [Rule(op="PutObject", when=_conditional, answer=NOT_IMPLEMENTED)],
        {"conditional_put": False, "etag_forms": ()}),
    "conditional-put-ignored": (
        lambda: [Rule(op="PutObject", drop_headers=("if-match", "if-none-match"))],
        {"conditional_put": False}),
    "range-copy-error": (
        lambda: [Rule(op="UploadPartCopy", answer=NOT_IMPLEMENTED)],
        {"range_copy": False, "copy_source_if_match": False}),
    "range-copy-ignored": (
        lambda: [Rule(op="UploadPartCopy", drop_headers=("x-amz-copy-source-range",))],
        {"range_copy": False}),
    "copy-if-match-honoured": (
        lambda: [Rule(op="UploadPartCopy", enforce_if_match=True)],
        {"range_copy": True, "copy_source_if_match": True}),
    "copy-if-match-error": (
        lambda: [Rule(op="UploadPartCopy", when=_with("x-amz-copy-source-if-match"), answer=(400, "InvalidArgument"))],
        {"range_copy": True, "copy_source_if_match": False}),
    "complete-if-match-honoured": (
        lambda: [Rule(op="CompleteMultipartUpload", enforce_if_match=True)],
        {"complete_if_match": True}),
    "complete-if-match-error": (
        lambda: [Rule(op="CompleteMultipartUpload", when=_with("if-match"), answer=NOT_IMPLEMENTED)],
        {"complete_if_match": False}),
    "complete-etag-missing": (
        lambda: [Rule(op="CompleteMultipartUpload", edit_response=blank_complete_etag)],
        {"complete_etag": False}),
    "suffix-range-error": (
        lambda: [Rule(op="GetObject", when=_with("range"), answer=(400, "InvalidArgument"))],
        {"suffix_range": False}),
    "suffix-range-ignored": (
        lambda: [Rule(op="GetObject", drop_headers=("range",))],
        {"suffix_range": False}),
    "multipart-error": (
        lambda: [Rule(op="CreateMultipartUpload", answer=NOT_IMPLEMENTED)],
        {"multipart": False, "range_copy": False, "complete_if_match": False, "complete_etag": False}),
    "nothing-optional": (
        lambda: [Rule(op="PutObject", when=_conditional, answer=NOT_IMPLEMENTED),
                 Rule(op="GetObject", when=_with("range"), answer=NOT_IMPLEMENTED),
                 Rule(op="CreateMultipartUpload", answer=NOT_IMPLEMENTED)],
        {"conditional_put": False, "multipart": False, "range_copy": False, "copy_source_if_match": False,
         "complete_if_match": False, "suffix_range": False, "complete_etag": False}),
}


@pytest.fixture
def proxied(s3_server: S3Server, bucket: str) -> Iterator[tuple[FaultProxy, S3Server, str]]:
    """A fault proxy in front of the test's server and bucket."""
    with FaultProxy((s3_server.host, s3_server.port)) as proxy:
        yield proxy, s3_server, bucket


def _document(server: S3Server, bucket: str) -> dict[str, Any]:
    """The day's document read straight from the server, around the proxy."""
    doc: dict[str, Any] = json.loads(server.admin.get_object(Bucket=bucket, Key=KEY)["Body"].read())
    return doc


def _appends_land(store: Any, server: S3Server, bucket: str, server_side: bool) -> None:
    """New day, small rewrite, growth past 5 MiB, one more append and the close: all exactly once."""
    first = append_batches(store, "logs", TZ, [build_batch(1)], T0)
    second = append_batches(store, "logs", TZ, [build_batch(2)], T0 + timedelta(minutes=1))
    assert (first.path, second.path) == ("new", "rewrite")
    grown = append_batches(store, "logs", TZ, [build_batch(i, pad=60_000) for i in range(3, 13)],
                           T0 + timedelta(minutes=2))
    assert grown.path == "rewrite" and store.head(KEY).size > SMALL_LIMIT
    last = append_batches(store, "logs", TZ, [build_batch(13), build_batch(2)], T0 + timedelta(minutes=3))
    assert last.path == ("tail" if server_side else "rewrite")
    assert last.stored == [build_batch(13).batch_id] and last.already == [build_batch(2).batch_id]
    assert close_day(store, "logs", TZ, DAY, T0 + timedelta(hours=9)).path == ("tail" if server_side else "rewrite")
    doc = _document(server, bucket)
    assert [u["batch_id"] for u in doc["uploads"]] == [build_batch(i).batch_id for i in range(1, 14)]
    assert doc["daily_metadata"]["closed"] is True
    assert verify(doc) == []
    assert server.keys(bucket) == [KEY]
    assert not server.admin.list_multipart_uploads(Bucket=bucket).get("Uploads")


@pytest.mark.parametrize("case", list(CASES))
def test_every_capability_outcome_still_lands_every_upload(
    proxied: tuple[FaultProxy, S3Server, str], case: str
) -> None:
    """Whatever a feature's outcome (honoured, ignored, answered with an error), the probe records
    it and every append lands exactly once on the path the findings allow."""
    proxy, server, bucket = proxied
    rules, expected = CASES[case]
    proxy.rules[:] = rules()
    store = make_s3_store(proxy.url, bucket)
    caps = store.capabilities()
    assert {name: getattr(caps, name) for name in expected} == expected
    assert caps.conclusive
    for name, value in expected.items():
        if value is False:
            assert caps.notes[name], f"no reason recorded for {name}"
    if proxy.rules:
        assert any(rule.hits for rule in proxy.rules), "the case never touched the server's answers"
    _appends_land(store, server, bucket, caps.server_side_append)


@pytest.mark.parametrize(
    ("refused", "feature", "pad"),
    [("UploadPartCopy", "range_copy", 60_000), ("CompleteMultipartUpload", "multipart", 60_000),
     ("PutObject", "conditional_put", 0)],
    ids=["copy-on-a-large-day", "complete-on-a-large-day", "conditional-put-on-a-small-day"],
)
def test_a_feature_refused_after_the_probe_costs_a_request_not_the_upload(
    tmp_path: Path, proxied: tuple[FaultProxy, S3Server, str], refused: str, feature: str, pad: int
) -> None:
    """A server that stops honouring a feature the probe found: the append falls back at once,
    lands, and the feature stays off (remembered) with the server's answer as the reason."""
    proxy, server, bucket = proxied
    memo = CapabilityMemo(memo_path(tmp_path))
    store = make_s3_store(proxy.url, bucket, memo=memo)
    append_batches(store, "logs", TZ, [build_batch(i, pad=pad) for i in range(1, 11)], T0)
    assert getattr(store.capabilities(), feature)
    when = _conditional if refused == "PutObject" else None
    proxy.rules[:] = [Rule(op=refused, when=when, answer=NOT_IMPLEMENTED)]
    result = append_batches(store, "logs", TZ, [build_batch(11)], T0 + timedelta(minutes=1))
    assert result.stored == [build_batch(11).batch_id] and result.attempts == 2
    assert proxy.rules[0].hits == 1
    caps = store.capabilities()
    assert not getattr(caps, feature) and "NotImplemented" in caps.notes[feature] and not caps.conclusive
    assert memo.load(f"{proxy.url} {bucket}", caps.probed_at) == caps
    doc = _document(server, bucket)
    assert len(doc["uploads"]) == 11 and verify(doc) == []


def test_a_restarted_process_sends_no_probe_request(tmp_path: Path, proxied: tuple[FaultProxy, S3Server, str]) -> None:
    """`uploader check` probes and remembers; a later `uploader replay` (a new process) uploads
    without a single request under the probe prefix."""
    proxy, _, bucket = proxied
    config = write_config(tmp_path, s3=(proxy.url, bucket))
    env = dict(os.environ)
    check = subprocess.run([sys.executable, "-m", "uploader.cli", "check", "--config", str(config)],
                           capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    probed = [r for r in proxy.requests if ".uploader-check/probe-" in r.path]
    assert probed
    spool = Spool(tmp_path / "data" / "spool")
    for seq in (1, 2):
        spool.commit([spool.stage_batch(build_batch(seq, day=DAY))])
    before = len(proxy.requests)
    replay = subprocess.run([sys.executable, "-m", "uploader.cli", "replay", "--config", str(config)],
                            capture_output=True, text=True, timeout=120, env=env, cwd=REPO, check=False)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    later = proxy.requests[before:]
    assert any(r.key == KEY for r in later)
    assert not [r for r in later if ".uploader-check" in r.path]
