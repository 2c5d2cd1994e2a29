"""The bucket lifecycle rules this uploader owns: built from prefix and retention, merged with
the bucket's other rules, compared with what is installed. Pure: values in, values out.

A bucket has one lifecycle configuration, replaced whole by every write, so installing ours
means: read the rules, keep every rule that is not ours exactly as the server gave it, replace
ours, write the lot. A rule is ours when its ID is one this prefix's uploader makes (each ID
names the prefix: two uploaders on one bucket keep each other's rules, and IDs stay unique,
which Ceph RGW insists on). Rules are dicts in boto3's shape (``ID``, ``Status``, ``Filter``, ...).

The day documents' rule filters on ``<prefix>/`` and the part of the stream's document name
before ``{date}`` (``all_api_json_log_`` for the seed's name); its ID does not depend on the name,
so a rule installed before document names existed stays ours, and is brought up to date.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "DEFAULT_DOCUMENT_NAME",
    "ID_PREFIX",
    "MAX_ID_LENGTH",
    "BucketLifecycle",
    "Comparison",
    "Finding",
    "RuleState",
    "compare",
    "desired_rules",
    "describe",
    "merge",
    "owned_ids",
]

ID_PREFIX = "all-api-uploader-"
MAX_ID_LENGTH = 255  # Ceph RGW refuses a longer ID (InvalidArgument); AWS documents the same limit
ABORT_AFTER_DAYS = 1  # an append's multipart upload lives seconds; a day old, it is dead

DEFAULT_DOCUMENT_NAME = "all_api_json_log_{date}.json"  # daily.DEFAULT_NAME, the seed's
_DATE = "{date}"  # daily.DATE_FIELD

_ABORT = "abort-incomplete-multipart"
_DAYS = "expire-day-documents"
_QUARANTINE = "expire-quarantine"
_KINDS = (_ABORT, _DAYS, _QUARANTINE)


@dataclass(frozen=True)
class BucketLifecycle:
    """A bucket's lifecycle configuration as read: its rules (in the server's order and shape)
    and the one bucket-wide setting AWS keeps beside them (None when the server gave none)."""

    rules: tuple[dict[str, Any], ...] = ()
    transition_default_minimum_object_size: str | None = None


class RuleState(Enum):
    PRESENT = "present"  # installed as we would write it
    MISSING = "missing"  # not on the bucket
    DIFFERS = "differs"  # on the bucket under our ID, with other content
    UNWANTED = "not wanted"  # ours on the bucket, but the config no longer asks for it


@dataclass(frozen=True)
class Finding:
    """One of our rules: its ID, what it does, and how the bucket holds it."""

    rule_id: str
    summary: str
    state: RuleState


@dataclass(frozen=True)
class Comparison:
    """Our rules against a bucket's: one finding per rule of ours (wanted or on the bucket),
    and how many rules are someone else's."""

    findings: tuple[Finding, ...]
    other_rules: int
    changed: bool  # whether installing ours would change the bucket


def rule_id(kind: str, prefix: str) -> str:
    """Our rule ID for ``kind`` on ``prefix``: readable, unique per prefix, at most 255 characters
    (a prefix too long for that is shortened and a digest of the whole of it appended)."""
    text = f"{ID_PREFIX}{kind}:{prefix}"
    if len(text) <= MAX_ID_LENGTH:
        return text
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:16]
    return f"{text[:MAX_ID_LENGTH - 17]}~{digest}"


def owned_ids(prefix: str) -> frozenset[str]:
    """Every ID our rules for ``prefix`` can have, wanted now or not."""
    return frozenset(rule_id(kind, prefix) for kind in _KINDS)


def desired_rules(
    prefix: str, retention_days: int | None, document_name: str = DEFAULT_DOCUMENT_NAME
) -> tuple[dict[str, Any], ...]:
    """The rules the config asks for: always abort multipart uploads left unfinished for a day
    under the prefix; with a retention, expire day documents (the keys ``document_name`` starts,
    up to its ``{date}``) and quarantined spans that old.

    Written as ``Filter: {Prefix: ...}``, the form moto and Ceph RGW both accept and give back
    unchanged (RGW turns an empty Filter into the legacy ``Prefix``).
    """
    under = {_ABORT: "", _DAYS: document_name.partition(_DATE)[0], _QUARANTINE: "quarantine/"}

    def rule(kind: str, action: dict[str, Any]) -> dict[str, Any]:
        return {"ID": rule_id(kind, prefix), "Filter": {"Prefix": f"{prefix}/{under[kind]}"},
                "Status": "Enabled", **action}

    rules = [rule(_ABORT, {"AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_AFTER_DAYS}})]
    if retention_days is not None:
        rules.append(rule(_DAYS, {"Expiration": {"Days": retention_days}}))
        rules.append(rule(_QUARANTINE, {"Expiration": {"Days": retention_days}}))
    return tuple(rules)


def describe(rule: dict[str, Any]) -> str:
    """What a rule does, in a few words (for the report)."""
    prefix = _prefix_of(rule)
    where = f"{prefix}*" if prefix else "every object"
    parts = []
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"].get("DaysAfterInitiation")
        parts.append(f"abort unfinished multipart uploads under {where} after {_days(days)}")
    expiration = rule.get("Expiration") or {}
    if "Days" in expiration:
        parts.append(f"expire {where} after {_days(expiration['Days'])}")
    if not parts:
        parts.append(f"other actions on {where}")
    text = "; ".join(parts)
    return text if rule.get("Status") == "Enabled" else f"{text} (disabled)"


def compare(
    bucket: BucketLifecycle, prefix: str, retention_days: int | None, document_name: str = DEFAULT_DOCUMENT_NAME
) -> Comparison:
    """Which of our rules the bucket holds as we would write them, holds otherwise, lacks, or
    holds though the config no longer wants them; and how many rules are not ours."""
    owned = owned_ids(prefix)
    wanted = desired_rules(prefix, retention_days, document_name)
    installed: dict[str, dict[str, Any]] = {}
    for rule in bucket.rules:
        if rule.get("ID") in owned:
            installed.setdefault(str(rule["ID"]), rule)
    findings = []
    for rule in wanted:
        have = installed.pop(rule["ID"], None)
        state = RuleState.MISSING if have is None else \
            RuleState.PRESENT if _canonical(have) == _canonical(rule) else RuleState.DIFFERS
        findings.append(Finding(rule["ID"], describe(rule), state))
    findings.extend(Finding(rid, describe(rule), RuleState.UNWANTED) for rid, rule in sorted(installed.items()))
    ours_on_bucket = sum(1 for rule in bucket.rules if rule.get("ID") in owned)
    changed = any(f.state is not RuleState.PRESENT for f in findings) or ours_on_bucket != len(wanted)
    return Comparison(tuple(findings), len(bucket.rules) - ours_on_bucket, changed)


def merge(
    bucket: BucketLifecycle, prefix: str, retention_days: int | None, document_name: str = DEFAULT_DOCUMENT_NAME
) -> BucketLifecycle:
    """The bucket's configuration with our rules replaced by the wanted ones: every other rule
    kept as the server gave it (same dict, same order), ours after them."""
    owned = owned_ids(prefix)
    others = tuple(rule for rule in bucket.rules if rule.get("ID") not in owned)
    return BucketLifecycle(others + desired_rules(prefix, retention_days, document_name),
                           bucket.transition_default_minimum_object_size)


def _prefix_of(rule: dict[str, Any]) -> str | None:
    """The key prefix a rule filters on (the ``Filter`` form or the legacy top-level one)."""
    filt = rule.get("Filter")
    if isinstance(filt, dict):
        if "Prefix" in filt:
            return str(filt["Prefix"])
        if isinstance(filt.get("And"), dict) and "Prefix" in filt["And"]:
            return str(filt["And"]["Prefix"])
        return None
    return str(rule["Prefix"]) if "Prefix" in rule else None


def _canonical(rule: dict[str, Any]) -> dict[str, Any]:
    """A rule with the legacy top-level ``Prefix`` spelled as ``Filter: {Prefix}``, so the two
    forms of one rule compare equal."""
    out = dict(rule)
    if "Filter" not in out and "Prefix" in out:
        out["Filter"] = {"Prefix": out.pop("Prefix")}
    return out


def _days(n: Any) -> str:
    return "1 day" if n == 1 else f"{n} days"
