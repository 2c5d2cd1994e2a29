"""The S3 backend (AWS, Ceph RGW / Linode, MinIO) through boto3; the only place botocore errors exist.

The client is built lazily from plain values; credentials come only from boto3's default chain.
Capabilities are probed for real on first use (both the case that must succeed and the case that
must be refused) and remembered for the life of the instance.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..errors import (
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from . import MIN_PART_SIZE, Capabilities, ObjectInfo, normalize_etag

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
_TRANSIENT = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503",
    "504", "Throttling", "ThrottlingException",
}
_CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials) "
    "are the pair issued for this endpoint"
)
_STALE_ETAG = '"00000000000000000000000000000000"'

# Parsing botocore's service models costs ~0.2 s per session; share the loader (a read-only cache)
# but give every store its own session, so credentials still come fresh from the default chain.
_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _new_session() -> boto3.session.Session:
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.loaders.create_loader()
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


def _code(exc: ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(err.get("Code", "") or status), status


class S3Store:
    """A Store on one S3 bucket; see :class:`uploader.store.Store` for each method's contract."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str = "auto",
        request_checksum_calculation: str = "when_required",
        response_checksum_validation: str = "when_required",
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 3,
        probe_prefix: str = ".uploader-check",
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.probe_prefix = probe_prefix.strip("/")
        self._boto_config = BotoConfig(
            region_name=region,
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"mode": "standard", "max_attempts": max_attempts},
            s3={"addressing_style": addressing_style},
            request_checksum_calculation=request_checksum_calculation,
            response_checksum_validation=response_checksum_validation,
            user_agent_extra="all-api-uploader",
        )
        self._client: Any = None
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, built on first use (tests hook its events to count bytes)."""
        with self._lock:
            if self._client is None:
                self._client = _new_session().client("s3", endpoint_url=self.endpoint_url, config=self._boto_config)
            return self._client

    # -- the Store protocol --------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._translate("HEAD", key):
                r = self.client.head_object(Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(r["ContentLength"]), normalize_etag(r["ETag"]), dict(r.get("Metadata", {})))

    def get(self, key: str, suffix: int | None = None) -> tuple[bytes, ObjectInfo]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if suffix is not None:
            args["Range"] = f"bytes=-{max(suffix, 1)}"
        with self._translate("GET", key):
            r = self.client.get_object(**args)
            body: bytes = r["Body"].read()
        size = len(body)
        content_range = r.get("ContentRange")
        if content_range and "/" in content_range:
            size = int(content_range.rsplit("/", 1)[1])
        elif suffix is not None:
            # The server ignored the Range header and sent everything: keep only what was asked.
            body = body[-suffix:] if suffix else b""
        return body, ObjectInfo(key, size, normalize_etag(r["ETag"]), dict(r.get("Metadata", {})))

    def put(
        self,
        key: str,
        body: bytes,
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        args: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "Body": body, "Metadata": metadata,
            "ContentType": "application/json" if key.endswith(".json") else "application/octet-stream",
        }
        if if_match is not None:
            args["IfMatch"] = self._etag_arg(if_match)
        if if_none_match:
            args["IfNoneMatch"] = "*"
        with self._translate("PUT", key):
            r = self.client.put_object(**args)
        return normalize_etag(r["ETag"])

    def replace_tail(
        self, key: str, keep: int, data: bytes, metadata: dict[str, str], *, if_match: str
    ) -> str:
        if keep < MIN_PART_SIZE:
            raise ValueError(f"keep={keep}: S3 cannot copy a part smaller than {MIN_PART_SIZE} bytes")
        caps = self.capabilities()
        with self._translate("CreateMultipartUpload", key):
            upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, Metadata=metadata, ContentType="application/json"
            )["UploadId"]
        try:
            copy: dict[str, Any] = {
                "Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": 1,
                "CopySource": {"Bucket": self.bucket, "Key": key},
                "CopySourceRange": f"bytes=0-{keep - 1}",
            }
            if caps.copy_source_if_match:
                copy["CopySourceIfMatch"] = self._etag_arg(if_match)
            with self._translate("UploadPartCopy", key):
                p1 = self.client.upload_part_copy(**copy)["CopyPartResult"]
                p2 = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=data
                )
            complete: dict[str, Any] = {
                "Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                "MultipartUpload": {"Parts": [_part(1, p1), _part(2, p2)]},
            }
            if caps.complete_if_match:
                complete["IfMatch"] = self._etag_arg(if_match)
            else:
                # The server cannot refuse a stale complete: check just before, and rely on the
                # single-writer lock for the remaining window.
                info = self.head(key)
                if info is None or info.etag != normalize_etag(if_match):
                    raise PreconditionFailed(f"{key} changed since it was read (checked by HEAD)")
            with self._translate("CompleteMultipartUpload", key):
                r = self.client.complete_multipart_upload(**complete)
        except BaseException:
            self._abort(key, upload_id)
            raise
        if r.get("ETag"):
            return normalize_etag(r["ETag"])
        info = self.head(key)
        if info is None:
            raise StoreUnavailable(f"{key} vanished right after it was written", "retry")
        return info.etag

    def delete(self, key: str) -> None:
        with self._translate("DELETE", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        with self._translate("LIST", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def capabilities(self) -> Capabilities:
        with self._lock:
            caps = self._caps
        if caps is None:
            caps = self.probe()
        return caps

    # -- probes --------------------------------------------------------------------------------

    def probe(self) -> Capabilities:
        """Probe every capability now (both outcomes each), remember and return the findings."""
        base = f"{self.probe_prefix}/probe-{uuid.uuid4().hex}"
        a, b, c = f"{base}-a", f"{base}-b", f"{base}-c"
        c3 = self.client
        body = bytes(range(48, 58)) * 10
        try:
            with self._translate("probe", base):
                etag = normalize_etag(c3.put_object(Bucket=self.bucket, Key=a, Body=body)["ETag"])
                put = c3.put_object
                inm_refused = self._try(lambda: put(Bucket=self.bucket, Key=a, Body=body, IfNoneMatch="*")) == "refused"
                inm_ok = self._try(lambda: put(Bucket=self.bucket, Key=b, Body=body, IfNoneMatch="*")) == "ok"
                im_refused = self._try(lambda: put(Bucket=self.bucket, Key=a, Body=body, IfMatch=_STALE_ETAG)) == "refused"
                forms = []
                for form, value in (("quoted", etag), ("unquoted", etag.strip('"'))):
                    if self._try(functools.partial(put, Bucket=self.bucket, Key=a, Body=body, IfMatch=value)) == "ok":
                        forms.append(form)
                etag = self._etag_of(a)
                conditional_put = inm_refused and inm_ok and im_refused and bool(forms)
                tag = etag if "quoted" in forms or not forms else etag.strip('"')

                r = c3.get_object(Bucket=self.bucket, Key=a, Range="bytes=-7")
                suffix_range = r["Body"].read() == body[-7:] and bool(r.get("ContentRange"))

                range_copy, copy_if_match, complete_etag = self._probe_range_copy(a, c, body, tag)
                complete_if_match = self._probe_complete_if_match(a, tag)
        finally:
            for key in (a, b, c):
                try:
                    self.delete(key)
                except StoreError:
                    log.warning("store.probe_cleanup_failed key=%s", key)
        caps = Capabilities(
            conditional_put=conditional_put,
            etag_forms=tuple(forms),
            range_copy=range_copy,
            copy_source_if_match=copy_if_match,
            complete_if_match=complete_if_match,
            suffix_range=suffix_range,
            complete_etag=complete_etag,
        )
        log.info("store.probed where=%s %s", self.describe(),
                 " ".join(f"{k}={v}" for k, v in vars(caps).items()))
        with self._lock:
            self._caps = caps
        return caps

    def _probe_range_copy(self, src: str, dst: str, body: bytes, etag: str) -> tuple[bool, bool, bool]:
        c3 = self.client
        upload_id = c3.create_multipart_upload(Bucket=self.bucket, Key=dst)["UploadId"]
        try:
            args = {
                "Bucket": self.bucket, "Key": dst, "UploadId": upload_id,
                "CopySource": {"Bucket": self.bucket, "Key": src}, "CopySourceRange": "bytes=2-9",
            }
            part: dict[str, Any] = {}
            ok = self._try(lambda: part.update(c3.upload_part_copy(PartNumber=1, **args)["CopyPartResult"]))
            stale = self._try(lambda: c3.upload_part_copy(PartNumber=2, CopySourceIfMatch=_STALE_ETAG, **args))
            right = self._try(lambda: c3.upload_part_copy(PartNumber=3, CopySourceIfMatch=etag, **args))
            if ok != "ok":
                return False, False, False
            r = c3.complete_multipart_upload(
                Bucket=self.bucket, Key=dst, UploadId=upload_id,
                MultipartUpload={"Parts": [_part(1, part)]},
            )
        except BaseException:
            self._abort(dst, upload_id)
            raise
        copied = c3.get_object(Bucket=self.bucket, Key=dst)["Body"].read()
        return copied == body[2:10], stale == "refused" and right == "ok", bool(r.get("ETag"))

    def _probe_complete_if_match(self, key: str, etag: str) -> bool:
        def attempt(if_match: str) -> str:
            c3 = self.client
            upload_id = c3.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
            outcome = "unsupported"
            try:
                p = c3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"probe")
                outcome = self._try(lambda: c3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, IfMatch=if_match,
                    MultipartUpload={"Parts": [_part(1, p)]},
                ))
                return outcome
            finally:
                if outcome != "ok":
                    self._abort(key, upload_id)

        if attempt(_STALE_ETAG) != "refused":
            return False
        return attempt(etag) == "ok"

    def _try(self, call: Callable[[], Any]) -> str:
        """Run one probe request: "ok", "refused" (a precondition failed) or "unsupported"."""
        try:
            call()
            return "ok"
        except ClientError as exc:
            code, status = _code(exc)
            if code in _PRECONDITION or status == 412:
                return "refused"
            if status in (401, 403) or code == "NoSuchBucket" or status >= 500:
                raise  # not an answer about the capability: let _translate diagnose it
            log.info("store.probe_unsupported code=%s status=%d", code, status)
            return "unsupported"

    def _etag_of(self, key: str) -> str:
        info = self.head(key)
        if info is None:
            raise StoreUnavailable(f"probe object {key} vanished", "retry")
        return info.etag

    # -- helpers -------------------------------------------------------------------------------

    def _etag_arg(self, etag: str) -> str:
        quoted = normalize_etag(etag)
        caps = self._caps
        if caps is not None and "quoted" not in caps.etag_forms and "unquoted" in caps.etag_forms:
            return quoted.strip('"')
        return quoted

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (ClientError, BotoCoreError) as exc:
            # Harmless leftover (a lifecycle rule cleans it); the original error matters more.
            log.warning("store.abort_failed key=%s error=%s", key, type(exc).__name__)

    @contextmanager
    def _translate(self, op: str, key: str) -> Iterator[None]:
        """Turn every botocore error into the uploader's own, saying what to fix."""
        where = f"{op} s3://{self.bucket}/{key}"
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, where) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StoreRejected(
                f"no usable S3 credentials found for {where}",
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (~/.aws/credentials)",
            ) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise StoreUnavailable(
                f"cannot reach the S3 endpoint {self.endpoint_url or 'AWS'} ({type(exc).__name__})",
                "check storage.s3.endpoint_url, that the server is up, and the network",
            ) from exc
        except BotoCoreError as exc:
            raise StoreRejected(f"{where} failed: {type(exc).__name__}", "see the log for details") from exc

    def _client_error(self, exc: ClientError, where: str) -> StoreError:
        code, status = _code(exc)
        if code in _PRECONDITION or status == 412:
            return PreconditionFailed(f"{where}: the object changed since it was read ({code})")
        if code in _NOT_FOUND:
            return ObjectNotFound(f"{where}: no such key")
        if code in _TRANSIENT or status >= 500:
            return StoreUnavailable(f"{where}: server busy or failing ({code})", "retry later")
        rejected: dict[str, tuple[str, str]] = {
            "InvalidAccessKeyId": ("the access key id is not known to the server", _CREDENTIALS_HINT),
            "SignatureDoesNotMatch": ("the secret key does not match the access key", _CREDENTIALS_HINT),
            "AccessDenied": (
                "access denied",
                f"grant the key s3:GetObject, s3:PutObject, s3:DeleteObject and s3:ListBucket on bucket {self.bucket}",
            ),
            "NoSuchBucket": (
                f"bucket {self.bucket!r} does not exist at {self.endpoint_url or 'AWS'}",
                "create the bucket or fix storage.s3.bucket / storage.s3.endpoint_url",
            ),
            "XAmzContentSHA256Mismatch": (
                "the server rejected boto3's request checksums",
                'set storage.s3.request_checksum_calculation = "when_required"',
            ),
            "RequestTimeTooSkewed": ("this machine's clock is too far off the server's", "sync the clock (NTP)"),
            "403": ("access denied (HTTP 403)", _CREDENTIALS_HINT + ", and that the key may use this bucket"),
        }
        reason, hint = rejected.get(code, (f"refused with {code} (HTTP {status})", "check the bucket settings and permissions"))
        return StoreRejected(f"{where}: {reason} ({code})", hint)


def _part(number: int, result: dict[str, Any]) -> dict[str, Any]:
    """A CompleteMultipartUpload part entry, carrying any checksum the server gave for it."""
    part = {"PartNumber": number, "ETag": result["ETag"]}
    part.update({k: v for k, v in result.items() if k.startswith("Checksum") and k != "ChecksumType"})
    return part
