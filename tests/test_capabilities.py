"""Capability findings: how long they are trusted, the memo in the spool, and that a start with a
remembered finding sends no probe request."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import pytz
from helpers import make_s3_store
from rig.s3servers import S3Server

from uploader.store.capabilities import FULL_CAPABILITIES, MAX_AGE_S, UNSURE_MAX_AGE_S, Capabilities
from uploader.store.memo import CapabilityMemo, memo_path

T = 1_800_000_000.0
FOUND = Capabilities(
    conditional_put=True, etag_forms=("unquoted",), multipart=True, range_copy=True, copy_source_if_match=False,
    complete_if_match=False, suffix_range=True, complete_etag=False, probed_at=T,
    notes={"copy_source_if_match": "a stale CopySourceIfMatch accepted", "complete_if_match": "x",
           "complete_etag": "the answer's ETag is empty"},
)


def test_findings_are_trusted_for_a_day_and_unsure_ones_for_an_hour() -> None:
    """A conclusive probe is fresh for 24 h, an unsure one for 1 h; the directory's never expire."""
    assert FOUND.fresh(T + MAX_AGE_S - 1) and not FOUND.fresh(T + MAX_AGE_S)
    unsure = Capabilities(**{**FOUND.to_json(), "etag_forms": ("unquoted",), "conclusive": False})
    assert unsure.fresh(T + UNSURE_MAX_AGE_S - 1) and not unsure.fresh(T + UNSURE_MAX_AGE_S)
    assert FULL_CAPABILITIES.fresh(T * 2)


def test_a_refused_feature_is_dropped_for_an_hour_from_when_it_was_refused() -> None:
    """``without`` turns one feature off, says why, and is re-checked an hour after the refusal."""
    later = T + 20 * 3600
    lost = FOUND.without("range_copy", "refused later: NotImplemented (HTTP 501)", later)
    assert not lost.range_copy and not lost.server_side_append and lost.conditional_put
    assert lost.notes["range_copy"] == "refused later: NotImplemented (HTTP 501)"
    assert lost.fresh(later + UNSURE_MAX_AGE_S - 1) and not lost.fresh(later + UNSURE_MAX_AGE_S)
    with pytest.raises(ValueError):
        FOUND.without("teleport", "?", later)


def test_report_rows_say_what_the_server_answered() -> None:
    """Each missing capability's row carries the server's answer; the ETag forms have their own row."""
    rows = dict(FOUND.rows())
    assert rows["conditional PUT (If-None-Match / If-Match)"] == "yes"
    assert rows["If-Match ETag forms accepted"] == "unquoted"
    assert rows["ETag in CompleteMultipartUpload answer"] == "no (the answer's ETag is empty)"


def test_memo_round_trips_per_server_and_bucket(tmp_path: Path) -> None:
    """Findings saved for one endpoint and bucket come back equal, for that pair only, in a 0600 file."""
    memo = CapabilityMemo(memo_path(tmp_path / "spool"))
    memo.save("http://a:1 b", FOUND)
    memo.save("http://a:1 other", FULL_CAPABILITIES)
    again = CapabilityMemo(memo_path(tmp_path / "spool")).load("http://a:1 b", T + 60)
    assert again == FOUND and again is not None and again.notes == FOUND.notes
    assert memo.load("http://a:2 b", T + 60) is None
    assert memo.load("http://a:1 b", T + MAX_AGE_S) is None
    assert stat.S_IMODE(memo.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(memo.path.parent.stat().st_mode) == 0o700


def test_an_unreadable_memo_costs_a_probe_not_a_failure(tmp_path: Path, caplog: Any) -> None:
    """A memo that is not JSON (or of the wrong shape) is ignored, said once, and rewritten."""
    path = memo_path(tmp_path)
    path.write_text("{not json")
    memo = CapabilityMemo(path)
    assert memo.load("x", T) is None
    assert "capabilities_unreadable" in caplog.text
    path.write_text(json.dumps({"x": {"conditional_put": "maybe", "surprise": 1}}))
    assert memo.load("x", T) is None
    memo.save("x", FOUND)
    assert memo.load("x", T) == FOUND


def _requests_made(store: Any) -> list[str]:
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


def test_a_start_with_remembered_findings_sends_no_probe(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """The first store probes and saves; a second one (a new process) gets the findings with no request."""
    memo = CapabilityMemo(memo_path(tmp_path))
    first = make_s3_store(s3_server, bucket, memo=memo)
    probed = first.capabilities()
    assert probed.probed_at > 0 and memo.path.exists()
    second = make_s3_store(s3_server, bucket, memo=CapabilityMemo(memo_path(tmp_path)))
    calls = _requests_made(second)
    assert second.capabilities() == probed
    assert calls == []
    refreshed = second.capabilities(refresh=True)
    assert calls and refreshed.probed_at > probed.probed_at


def test_the_writer_tidies_only_old_leftovers(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Uploader.tidy aborts multipart uploads and removes probe objects only once they are an hour
    old; moto dates every upload 2010-11-10, so there even a fresh one counts as abandoned."""
    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.publish.uploader import Uploader

    admin = s3_server.admin
    upload = admin.create_multipart_upload(Bucket=bucket, Key="logs/all_api_json_log_2025-07-10.json")["UploadId"]
    admin.put_object(Bucket=bucket, Key="logs/.uploader-check/probe-young-1-src", Body=b"x")
    spool = Spool(tmp_path / "spool")
    Uploader(spool, make_s3_store(s3_server, bucket), "logs", pytz.utc, StatusFile(tmp_path / "status.json"), 60).tidy()
    left = [u["UploadId"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert (upload in left) == (s3_server.name == "ceph")
    assert s3_server.keys(bucket) == ["logs/.uploader-check/probe-young-1-src"]


def test_a_starting_writer_aborts_dead_appends_at_once(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Just after taking the lock, the writer aborts every unfinished upload of a document,
    however young: it can only be a killed predecessor's, and on Ceph RGW each holds a copy of
    the day until aborted (a chaos run filled the OSD with them). A young probe upload may be a
    running `uploader check`'s: kept."""
    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.publish.uploader import Uploader

    admin = s3_server.admin
    dead = admin.create_multipart_upload(Bucket=bucket, Key="logs/all_api_json_log_2025-07-10.json")["UploadId"]
    probing = admin.create_multipart_upload(Bucket=bucket, Key="logs/.uploader-check/probe-young-2-mp")["UploadId"]
    uploader = Uploader(Spool(tmp_path / "spool"), make_s3_store(s3_server, bucket), "logs", pytz.utc,
                        StatusFile(tmp_path / "status.json"), 60)
    assert uploader.tidy(writer_started=True)
    left = [u["UploadId"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    assert dead not in left
    assert (probing in left) == (s3_server.name == "ceph")  # moto dates every upload 2010


def test_passing_faults_never_make_a_wrong_finding(s3_server: S3Server, bucket: str) -> None:
    """Probing through a proxy that faults 15% of requests (5xx, or a reset before or after the
    server acted): each probe raises StoreUnavailable, or is unsure, or finds exactly what the
    server honours; a conclusive probe is never wrong, an unsure one errs only towards "missing"."""
    from rig.faultproxy import FaultProxy
    from test_store_contract import OBSERVED

    from uploader.errors import StoreUnavailable

    truth = OBSERVED[s3_server.name]
    outcomes = {"unavailable": 0, "unsure": 0, "conclusive": 0}
    kinds = ("http500", "http503", "reset")
    with FaultProxy((s3_server.host, s3_server.port), seed=11, fault_rate=0.15, kinds=kinds) as proxy:
        store = make_s3_store(proxy.url, bucket, max_attempts=1)
        for _ in range(10):
            try:
                caps = store.capabilities(refresh=True)
            except StoreUnavailable:
                outcomes["unavailable"] += 1
                continue
            found = {name: getattr(caps, name) for name in truth}
            if caps.conclusive:
                outcomes["conclusive"] += 1
                assert found == truth
            else:
                outcomes["unsure"] += 1
                # Unsure findings may only err towards "missing" (the safe path), never invent a yes.
                assert all(truth[name] or not value for name, value in found.items() if name != "etag_forms")
        assert all(proxy.counts[kind] for kind in kinds), proxy.counts
    assert outcomes["conclusive"] >= 1, outcomes
