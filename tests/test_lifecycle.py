"""Bucket lifecycle rules: ours built, merged and compared on values (store/lifecycle.py), and
`uploader check [--fix]` on moto and Ceph RGW: installed beside a foreign rule, reported, left
alone by a second run, trimmed when retention is unset, never written by a plain check."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import write_config
from rig.s3servers import S3Server

from uploader.commands.check import run_check
from uploader.config import load_config
from uploader.errors import ExitCode
from uploader.store.lifecycle import (
    ID_PREFIX,
    MAX_ID_LENGTH,
    BucketLifecycle,
    RuleState,
    compare,
    desired_rules,
    merge,
    owned_ids,
)

ROOT = Path(__file__).resolve().parent.parent
ABORT, DAYS, QUARANTINE = (f"{ID_PREFIX}{kind}:logs" for kind in
                           ("abort-incomplete-multipart", "expire-day-documents", "expire-quarantine"))
# Someone else's rules, in forms both servers accept: a tag filter and a noncurrent-version expiry.
FOREIGN = [
    {"ID": "team-tagged", "Status": "Enabled",
     "Filter": {"And": {"Prefix": "other/", "Tags": [{"Key": "keep", "Value": "no"}]}}, "Expiration": {"Days": 9}},
    {"ID": "team-noncurrent", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
     "NoncurrentVersionExpiration": {"NoncurrentDays": 7}},
]


def _foreign(rule_id: str = "team-old", prefix: str = "old/") -> dict[str, Any]:
    return {"ID": rule_id, "Status": "Enabled", "Filter": {"Prefix": prefix}, "Expiration": {"Days": 3}}


# -- the pure part -------------------------------------------------------------------------------


def test_without_retention_only_the_abort_rule_is_wanted() -> None:
    """Unset retention asks for one rule: abort multipart uploads a day old under the prefix."""
    assert desired_rules("logs", None) == ({
        "ID": ABORT, "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
    },)


def test_retention_adds_expiry_of_day_documents_and_quarantine() -> None:
    """A retention expires day documents and quarantined spans, each filtered to its own key prefix."""
    rules = {r["ID"]: r for r in desired_rules("logs", 30)}
    assert set(rules) == {ABORT, DAYS, QUARANTINE}
    assert rules[DAYS]["Filter"] == {"Prefix": "logs/all_api_json_log_"}
    assert rules[QUARANTINE]["Filter"] == {"Prefix": "logs/quarantine/"}
    assert rules[DAYS]["Expiration"] == rules[QUARANTINE]["Expiration"] == {"Days": 30}


def test_rule_ids_stay_within_255_characters_and_unique_per_prefix() -> None:
    """IDs of a very long prefix are shortened to Ceph RGW's limit and still differ between prefixes."""
    a, b = "p" * 400 + "/a", "p" * 400 + "/b"
    ids = owned_ids(a) | owned_ids(b)
    assert len(ids) == 6 and all(len(i) <= MAX_ID_LENGTH and i.startswith(ID_PREFIX) for i in ids)


def test_merge_keeps_other_rules_as_given_and_replaces_ours() -> None:
    """Other rules come back as the very same dicts in their order; a stale rule of ours is replaced."""
    stale = {"ID": DAYS, "Status": "Enabled", "Filter": {"Prefix": "logs/all_api_json_log_"},
             "Expiration": {"Days": 5}}
    bucket = BucketLifecycle((FOREIGN[0], stale, FOREIGN[1]), "all_storage_classes_128K")
    merged = merge(bucket, "logs", 30)
    assert merged.rules[:2] == tuple(FOREIGN) and merged.rules[0] is FOREIGN[0]
    assert merged.rules[2:] == desired_rules("logs", 30)
    assert merged.transition_default_minimum_object_size == "all_storage_classes_128K"
    assert merge(merged, "logs", 30) == merged


def test_another_prefixs_rules_are_not_ours() -> None:
    """Rules another uploader installed for its own prefix count as other rules and survive a merge."""
    theirs = desired_rules("elsewhere", 10)
    merged = merge(BucketLifecycle(theirs), "logs", None)
    assert merged.rules == theirs + desired_rules("logs", None)
    assert compare(merged, "logs", None).other_rules == 3


def test_compare_tells_present_missing_differs_and_unwanted() -> None:
    """Each of our rules is found as written, absent, different, or there though no longer asked for."""
    abort, days, _ = desired_rules("logs", 30)
    differs = {**days, "Expiration": {"Days": 99}}
    found = compare(BucketLifecycle((abort, differs, _foreign())), "logs", 30)
    assert [(f.rule_id, f.state) for f in found.findings] == [
        (ABORT, RuleState.PRESENT), (DAYS, RuleState.DIFFERS), (QUARANTINE, RuleState.MISSING)]
    assert found.other_rules == 1 and found.changed
    unwanted = compare(BucketLifecycle((abort, days)), "logs", None)
    assert [(f.rule_id, f.state) for f in unwanted.findings] == [(ABORT, RuleState.PRESENT),
                                                                  (DAYS, RuleState.UNWANTED)]
    assert unwanted.changed


def test_the_legacy_prefix_form_of_our_rule_counts_as_present() -> None:
    """A rule of ours given back with the top-level Prefix instead of Filter is the same rule."""
    (abort,) = desired_rules("logs", None)
    legacy = {k: v for k, v in abort.items() if k != "Filter"} | {"Prefix": "logs/"}
    found = compare(BucketLifecycle((legacy,)), "logs", None)
    assert [f.state for f in found.findings] == [RuleState.PRESENT] and not found.changed


def test_nothing_to_change_when_the_bucket_holds_exactly_ours() -> None:
    """A bucket holding our rules as configured, and others, needs no write."""
    bucket = BucketLifecycle((*FOREIGN, *desired_rules("logs", 30)))
    assert not compare(bucket, "logs", 30).changed


# -- on the servers ------------------------------------------------------------------------------


def _config(tmp_path: Path, server: S3Server, bucket: str, retention_days: int | None) -> Path:
    storage: dict[str, Any] = {"retention_days": retention_days} if retention_days is not None else {}
    return write_config(tmp_path, s3=(server.endpoint, bucket), storage=storage)


def _check(config: Path, fix: bool) -> tuple[ExitCode, str]:
    out = io.StringIO()
    code = run_check(load_config(config), lambda line: print(line, file=out), fix=fix)
    return code, out.getvalue()


def _rules(server: S3Server, bucket: str) -> list[dict[str, Any]] | None:
    """The bucket's rules as the server gives them, sorted by ID; None when it has no configuration."""
    try:
        rules = server.admin.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchLifecycleConfiguration"
        return None
    return sorted(rules, key=lambda r: str(r.get("ID")))


def _state(report: str, rule_id: str) -> str | None:
    """The state the report gives one of our rules (None: not listed)."""
    for line in report.splitlines():
        words = line.split()
        if words and words[0] == rule_id:
            return " ".join(words[1:3]) if words[1] == "not" else words[1]
    return None


def _by_id(rules: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {str(r["ID"]): r for r in rules or []}


def _with_foreign_rules(server: S3Server, bucket: str) -> dict[str, dict[str, Any]]:
    server.admin.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": FOREIGN})
    return _by_id(_rules(server, bucket))  # as this server gives them back (Ceph reshapes And)


def test_fix_installs_our_rules_beside_foreign_ones(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """`check --fix` installs our three rules, keeps the foreign rules exactly as the server held
    them, and reports ours present and the others' count."""
    before = _with_foreign_rules(s3_server, bucket)
    code, report = _check(_config(tmp_path, s3_server, bucket, 30), fix=True)
    assert code == ExitCode.OK, report
    after = _by_id(_rules(s3_server, bucket))
    assert {k: after[k] for k in before} == before
    assert set(after) == set(before) | {ABORT, DAYS, QUARANTINE}
    assert {rid: after[rid] for rid in (ABORT, DAYS, QUARANTINE)} == _by_id(list(desired_rules("logs", 30)))
    assert [_state(report, rid) for rid in (ABORT, DAYS, QUARANTINE)] == ["present"] * 3
    assert "other rules on the bucket: 2 (left as they are)" in report
    assert report.rstrip().endswith("OK: the store is usable")


def test_a_second_fix_changes_nothing(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """Run again with the same config, `check --fix` writes nothing and the rules stay as they were."""
    _with_foreign_rules(s3_server, bucket)
    config = _config(tmp_path, s3_server, bucket, 30)
    assert _check(config, fix=True)[0] == ExitCode.OK
    installed = _rules(s3_server, bucket)
    code, report = _check(config, fix=True)
    assert code == ExitCode.OK, report
    assert "our rules are already as configured; nothing written" in report
    assert _rules(s3_server, bucket) == installed


def test_unset_retention_removes_only_our_expiry_rules(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """With retention_days unset, `check --fix` removes our two expiry rules, keeping our abort rule
    and every foreign rule."""
    before = _with_foreign_rules(s3_server, bucket)
    assert _check(_config(tmp_path / "a", s3_server, bucket, 30), fix=True)[0] == ExitCode.OK
    code, report = _check(_config(tmp_path / "b", s3_server, bucket, None), fix=True)
    assert code == ExitCode.OK, report
    after = _by_id(_rules(s3_server, bucket))
    assert set(after) == set(before) | {ABORT}
    assert {k: after[k] for k in before} == before
    assert _state(report, DAYS) is None and _state(report, ABORT) == "present"


def test_check_without_fix_reports_and_writes_nothing(tmp_path: Path, s3_server: S3Server, bucket: str) -> None:
    """A plain `check` reports our rules missing and the foreign ones counted, and leaves the
    configuration as it was; on a bucket without one it creates none."""
    before = _rules(s3_server, bucket)
    assert before is None
    config = _config(tmp_path, s3_server, bucket, 30)
    code, report = _check(config, fix=False)
    assert code == ExitCode.OK, report
    assert _state(report, ABORT) == "missing" and "`uploader check --fix` installs ours" in report
    assert _rules(s3_server, bucket) is None
    foreign = _with_foreign_rules(s3_server, bucket)
    code, report = _check(config, fix=False)
    assert code == ExitCode.OK and "other rules on the bucket: 2" in report
    assert _by_id(_rules(s3_server, bucket)) == foreign


def test_fix_refused_names_the_permission(tmp_path: Path, ceph_server: S3Server) -> None:
    """Where a bucket policy denies s3:PutLifecycleConfiguration, `check --fix` exits 1 with one line
    naming that permission (Ceph RGW only: moto does not enforce bucket policies)."""
    bucket = ceph_server.new_bucket()
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*",
                                                    "Action": "s3:PutLifecycleConfiguration",
                                                    "Resource": f"arn:aws:s3:::{bucket}"}]}
    ceph_server.admin.put_bucket_policy(Bucket=bucket, Policy=json.dumps(deny))
    proc = subprocess.run(
        [sys.executable, "-m", "uploader.cli", "check", "--fix", "--config",
         str(_config(tmp_path, ceph_server, bucket, 30))],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "s3:PutLifecycleConfiguration" in failed[0], proc.stdout
    assert _rules(ceph_server, bucket) is None


@pytest.mark.parametrize("fix", [False, True])
def test_the_directory_backend_says_lifecycle_does_not_apply(tmp_path: Path, fix: bool) -> None:
    """On the directory backend, check (with or without --fix) says in one line that lifecycle does not apply."""
    code, report = _check(write_config(tmp_path), fix=fix)
    assert code == ExitCode.OK
    assert [line for line in report.splitlines() if "lifecycle" in line] == [
        "bucket lifecycle: does not apply to the directory backend (nothing expires there)"]
