"""Bucket-wide operations of the S3 backend: versioning, lifecycle rules, and the leftovers of
killed probes and appends. ``S3Store`` delegates to these; errors pass through its ``_translate``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from uploader.errors import ObjectNotFound
from uploader.store.lifecycle import BucketLifecycle
from uploader.store.s3_errors import IDENTITY, client_error, error_code, permission_for

if TYPE_CHECKING:
    from uploader.store.s3 import S3Store

__all__ = ["lifecycle", "remove_leftovers", "set_lifecycle", "versioning"]


def versioning(store: S3Store) -> str:
    """The bucket's versioning: "enabled", "suspended", "off", or why it is unknown."""
    where = f"GetBucketVersioning s3://{store.bucket}"
    with store._translate("GetBucketVersioning", ""):
        try:
            status = store.client.get_bucket_versioning(Bucket=store.bucket).get("Status")
        except ClientError as exc:
            code, http = error_code(exc)
            if code in IDENTITY or http in (401, 403) and code != "AccessDenied":
                raise client_error(exc, where, store.bucket, store.endpoint_url) from exc
            # A server that cannot say (not implemented, not allowed) is no reason to stop.
            fix = f"; grant the key {permission_for('GetBucketVersioning')} on bucket {store.bucket}" \
                if code == "AccessDenied" else ""
            return f"unknown (the server answered {code}, HTTP {http}{fix})"
    return {"Enabled": "enabled", "Suspended": "suspended"}.get(str(status), "off")


def remove_leftovers(
    store: S3Store, older_than_s: float = 0.0, uploads: bool = True, *, writer_started: bool = False
) -> list[str]:
    """``Store.remove_leftovers`` on S3: old probe objects, and unfinished multipart uploads under
    the prefix (every one when ``writer_started``, except a probe's younger than ``older_than_s``)."""
    cutoff = datetime.now(UTC).timestamp() - older_than_s
    removed: list[str] = []
    for key, modified in store._list(store.probe_prefix + "/"):
        if modified <= cutoff:
            store.delete(key)
            removed.append(key)
    if not uploads:
        return removed
    prefix = store.prefix + "/"
    with store._translate("ListMultipartUploads", prefix):
        pages = store.client.get_paginator("list_multipart_uploads").paginate(Bucket=store.bucket, Prefix=prefix)
        unfinished = [u for page in pages for u in page.get("Uploads", [])]
    for u in unfinished:
        # Not every server dates uploads truly (moto says 2010): the age is a second guard, the
        # caller being the prefix's only writer (or it not running) is the first. A probe's
        # upload may be a running `uploader check`'s, so only its age can tell.
        dead = writer_started and not u["Key"].startswith(store.probe_prefix + "/")
        if dead or u["Initiated"].timestamp() <= cutoff:
            try:
                # Not _abort: a refusal (a permission missing) is this clean-up's failure to report.
                with store._translate("AbortMultipartUpload", u["Key"]):
                    store.client.abort_multipart_upload(Bucket=store.bucket, Key=u["Key"], UploadId=u["UploadId"])
            except ObjectNotFound:
                continue  # completed or aborted meanwhile
            removed.append(f"{u['Key']} (unfinished multipart upload)")
    return removed


def lifecycle(store: S3Store) -> BucketLifecycle:
    """The bucket's lifecycle rules as the server gives them; none configured: no rules."""
    with store._translate("GetBucketLifecycleConfiguration", ""):
        try:
            r = store.client.get_bucket_lifecycle_configuration(Bucket=store.bucket)
        except ClientError as exc:
            if error_code(exc)[0] == "NoSuchLifecycleConfiguration":
                return BucketLifecycle()
            raise
    return BucketLifecycle(tuple(r.get("Rules", [])), r.get("TransitionDefaultMinimumObjectSize"))


def set_lifecycle(store: S3Store, config: BucketLifecycle) -> None:
    """Replace the bucket's whole lifecycle configuration (no rules: remove it)."""
    op = "PutBucketLifecycleConfiguration" if config.rules else "DeleteBucketLifecycle"
    with store._translate(op, ""):
        if not config.rules:
            store.client.delete_bucket_lifecycle(Bucket=store.bucket)
            return
        args: dict[str, Any] = {"Bucket": store.bucket, "LifecycleConfiguration": {"Rules": list(config.rules)}}
        if config.transition_default_minimum_object_size:
            args["TransitionDefaultMinimumObjectSize"] = config.transition_default_minimum_object_size
        store.client.put_bucket_lifecycle_configuration(**args)
