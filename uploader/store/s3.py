"""The S3 backend (AWS, Ceph RGW / Linode, MinIO) through boto3; botocore's errors end here.

Every botocore error becomes the uploader's own at one boundary (``_translate``, through
``s3_errors``). The client is built lazily from plain values; credentials come only from boto3's
default chain. Which optional features the server honours is found by ``s3_probe`` on first
use and remembered (in the spool's memo when given, for a day). A request that uses a feature and gets an answer
other than a yes, a precondition failure or a passing fault stops the store using that feature
(``CapabilityLost``), so the caller retries on the fallback path instead of failing the upload.
Writing an object as kept bytes copied server-side plus new ones is ``s3_compose``'s; the
bucket-wide operations (versioning, lifecycle rules, leftovers) are ``s3_bucket``'s.
"""

from __future__ import annotations

import builtins
import io
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.httpsession import get_cert_path

from uploader.config import DEFAULT_PREFIX
from uploader.errors import (
    CapabilityLost,
    EncryptionRefused,
    ObjectNotFound,
    PreconditionFailed,
    StoreRejected,
)
from uploader.s3_config import Encryption, SseMode
from uploader.store import ObjectInfo, normalize_etag, probe_prefix, s3_bucket, s3_compose
from uploader.store.capabilities import COPY_PART_SIZE, MAX_OBJECT_SIZE, MAX_PARTS, Capabilities
from uploader.store.lifecycle import BucketLifecycle
from uploader.store.memo import CapabilityMemo
from uploader.store.s3_encryption import EncryptingClient, applied, mismatch, refusal_hint
from uploader.store.s3_errors import (
    CREDENTIALS_REFUSED,
    botocore_error,
    certificate_error,
    client_error,
    error_code,
    permission_for,
    refuses_feature,
)
from uploader.store.s3_probe import Prober

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

# Parsing botocore's service models costs ~0.2 s per session; share the loader (a read-only cache)
# but give every store its own session, so credentials still come fresh from the default chain.
_LOADER_LOCK = threading.Lock()
_LOADER: Any = None


def _new_session(profile: str | None = None) -> boto3.session.Session:
    global _LOADER
    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.loaders.create_loader()
        core = botocore.session.get_session()
        core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core, profile_name=profile)


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
        prefix: str = DEFAULT_PREFIX,
        memo: CapabilityMemo | None = None,
        spill_dir: Path | None = None,
        ca_bundle: str | None = None,
        encryption: Encryption = Encryption(),
        profile: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.profile = profile  # a named profile of boto3's files for this store's keys; None: the chain's default
        self.endpoint_url = endpoint_url
        self.ca_bundle = ca_bundle  # a PEM file of trusted CAs; None: the system's (never unverified)
        self.prefix = prefix.strip("/")
        self.probe_prefix = probe_prefix(prefix)
        self.memo = memo
        self.spill_dir = spill_dir  # where a body too big for memory waits for its PUT
        # S3's limits as s3_compose applies them; the tests lower them to run the same code on
        # small objects.
        self.copy_part_size = COPY_PART_SIZE
        self.max_parts = MAX_PARTS
        self.max_object_size = MAX_OBJECT_SIZE
        self.encryption = encryption
        self._sse = EncryptingClient(encryption)
        # Findings hold for one encryption: the probe writes with it (and checks it was applied).
        sse = f" sse={encryption.mode.value}" if encryption.mode else ""
        self._where = f"{endpoint_url or 'aws'} {bucket}{sse}"
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
        self._connect_timeout_s = connect_timeout_s
        self._client: Any = None
        self._caps: Capabilities | None = None
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket} at {self.endpoint_url or 'AWS'}"

    def preflight(self) -> None:
        """A TLS handshake with an https endpoint, verified as boto3 will verify it (the
        ca_bundle, else botocore's bundle): an untrusted certificate stops the start in one line;
        a refused or silent endpoint does not (it may be down for a while). AWS is not checked."""
        url = urlsplit(self.endpoint_url or "")
        if url.scheme != "https" or not url.hostname:
            return
        context = ssl.create_default_context(cafile=get_cert_path(self.ca_bundle or True))
        try:
            with socket.create_connection((url.hostname, url.port or 443), timeout=self._connect_timeout_s) as raw, \
                    context.wrap_socket(raw, server_hostname=url.hostname):
                pass
        except ssl.SSLCertVerificationError as exc:
            raise certificate_error("start", self.endpoint_url, str(exc.verify_message or exc.reason)) from None
        except OSError as exc:
            log.info("store.preflight_unreachable where=%s error=%s (uploads retry until it answers)",
                     self.describe(), exc.strerror or type(exc).__name__)

    @property
    def client(self) -> Any:
        """The boto3 S3 client, built on first use (tests hook its events to count bytes)."""
        with self._lock:
            if self._client is None:
                self._client = self._sse.install(_new_session(self.profile).client(
                    "s3", endpoint_url=self.endpoint_url, config=self._boto_config, verify=self.ca_bundle))
            return self._client

    # -- the Store protocol --------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._translate("HEAD", key):
                r = self._read(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFound:
            return None
        return _info(key, r, int(r["ContentLength"]))

    def get(
        self, key: str, suffix: int | None = None, *, span: tuple[int, int] | None = None
    ) -> tuple[bytes, ObjectInfo]:
        if span is not None and (suffix is not None or span[1] <= span[0]):
            raise ValueError(f"get: a suffix or a span of at least one byte, not {suffix=} {span=}")
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if suffix is not None:
            args["Range"] = f"bytes=-{max(suffix, 1)}"
        elif span is not None:
            args["Range"] = f"bytes={span[0]}-{span[1] - 1}"
        # A server refusing ranges is one without suffix reads (the form the probe tries).
        with self._translate("GET", key, feature=None if suffix is None and span is None else "suffix_range"):
            r = self._read(lambda: self.client.get_object(**args))
            body: bytes = r["Body"].read()
        size = len(body)
        content_range = r.get("ContentRange")
        if content_range and "/" in content_range:
            size = int(content_range.rsplit("/", 1)[1])
        elif suffix is not None:
            # The server ignored the Range header and sent everything: keep only what was asked.
            body = body[-suffix:] if suffix else b""
        elif span is not None:
            body = body[span[0]:span[1]]  # the same
        return body, _info(key, r, size)

    @contextmanager
    def stream(self, key: str) -> Iterator[tuple[BinaryIO, ObjectInfo]]:
        with self._translate("GET", key):
            r = self._read(lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        info = _info(key, r, int(r["ContentLength"]))
        body = r["Body"]
        try:
            yield io.BufferedReader(_Reading(body, lambda: self._translate("GET", key)), 1 << 16), info
        finally:
            body.close()

    def put(
        self,
        key: str,
        body: bytes,
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str:
        return self._put(key, body, metadata, if_match, if_none_match)

    def _put(
        self, key: str, body: bytes | BinaryIO, metadata: dict[str, str], if_match: str | None, if_none_match: bool
    ) -> str:
        args: dict[str, Any] = {
            "Bucket": self.bucket, "Key": key, "Body": body, "Metadata": metadata,
            "ContentType": s3_compose.content_type(key),
        }
        self._check_encryption(key)
        conditional = if_match is not None or if_none_match
        if conditional and not self.capabilities().conditional_put:
            # The server would ignore (or refuse) the condition: check it just before the write.
            self._check_by_head(key, if_match, if_none_match)
        elif conditional:
            if if_match is not None:
                args["IfMatch"] = self._etag_arg(if_match)
            if if_none_match:
                args["IfNoneMatch"] = "*"
        sent_condition = "IfMatch" in args or "IfNoneMatch" in args
        with self._translate("PUT", key, feature="conditional_put" if sent_condition else None):
            r = self.client.put_object(**args)
        return normalize_etag(r["ETag"])

    def compose(
        self,
        key: str,
        keep: int,
        pieces: Iterable[bytes],
        metadata: dict[str, str],
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        source: str | None = None,
        start: int = 0,
    ) -> str | None:
        return s3_compose.compose(self, key, keep, pieces, metadata, if_match=if_match, if_none_match=if_none_match,
                                  source=source, start=start)

    def _check_encryption(self, key: str) -> None:
        """Refuse every write while the server is known not to apply the configured encryption:
        data asked to be encrypted at rest is never stored otherwise (it waits in the spool)."""
        if self.encryption.mode is None:
            return
        problem = self.capabilities().encryption_problem
        if problem:
            raise StoreRejected(
                f"PUT s3://{self.bucket}/{key}: the server does not apply the configured encryption, "
                f"{self.encryption.describe()} (the probe object was {problem})",
                "use a server or bucket that supports it, or change storage.s3's encryption settings "
                "(the batches wait in the spool)",
            )

    def _read(self, request: Callable[[], Any]) -> Any:
        """A GET or HEAD; with SSE-C, again without the key if the server refuses it (400): AWS
        does for an object stored before SSE-C was configured. A second refusal is the first's."""
        try:
            return request()
        except ClientError as exc:
            if self.encryption.mode is not SseMode.CUSTOMER or error_code(exc)[1] != 400:
                raise
            try:
                with self._sse.plain_reads():
                    return request()
            except ClientError:
                raise exc from None

    def _check_by_head(self, key: str, if_match: str | None, if_none_match: bool) -> None:
        info = self.head(key)
        if if_none_match and info is not None:
            raise PreconditionFailed(f"{key} exists already (checked by HEAD)")
        if if_match is not None and (info is None or info.etag != normalize_etag(if_match)):
            raise PreconditionFailed(f"{key} changed since it was read (checked by HEAD)")

    def delete(self, key: str) -> None:
        with self._translate("DELETE", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> list[str]:
        return sorted(key for key, _ in self._list(prefix))

    def versioning(self) -> str:
        return s3_bucket.versioning(self)

    def remove_leftovers(
        self, older_than_s: float = 0.0, uploads: bool = True, *, writer_started: bool = False
    ) -> builtins.list[str]:
        return s3_bucket.remove_leftovers(self, older_than_s, uploads, writer_started=writer_started)

    def lifecycle(self) -> BucketLifecycle:
        """The bucket's lifecycle rules as the server gives them (S3 only: not in the Store protocol)."""
        return s3_bucket.lifecycle(self)

    def set_lifecycle(self, config: BucketLifecycle) -> None:
        """Replace the bucket's whole lifecycle configuration (no rules: remove it)."""
        s3_bucket.set_lifecycle(self, config)

    def capabilities(self, refresh: bool = False) -> Capabilities:
        now = time.time()
        with self._probe_lock:  # one probe at a time; the others wait for its findings
            with self._lock:
                caps = self._caps
            if caps is not None and caps.fresh(now) and not refresh:
                return caps
            if not refresh and self.memo is not None:
                remembered = self.memo.load(self._where, now)
                if remembered is not None:
                    log.debug("store.capabilities_remembered where=%s", self.describe())
                    self._remember(remembered, save=False)
                    return remembered
            return self._probe()

    # -- capabilities --------------------------------------------------------------------------

    def _probe(self) -> Capabilities:
        # The probe repeats a faulted request itself, on fresh objects (see s3_probe).
        once = self._boto_config.merge(BotoConfig(retries={"mode": "standard", "total_max_attempts": 1}))
        client = self._sse.install(
            _new_session(self.profile).client("s3", endpoint_url=self.endpoint_url, config=once, verify=self.ca_bundle))
        caps = Prober(client, self.client, self.bucket, self.probe_prefix, self._translate,
                      lambda answer: mismatch(self.encryption, answer)).run()
        self._remember(caps, save=True)
        found = {k: v for k, v in caps.to_json().items() if k not in ("notes", "probed_at", "conclusive", "min_copy")}
        log.info("store.probed where=%s conclusive=%s %s", self.describe(), caps.conclusive,
                 " ".join(f"{k}={v}" for k, v in found.items()))
        return caps

    def _remember(self, caps: Capabilities, *, save: bool) -> None:
        with self._lock:
            self._caps = caps
        if save and self.memo is not None:
            self.memo.save(self._where, caps)

    def _lose(self, feature: str, answer: str) -> None:
        """Stop using ``feature`` after the server refused it; re-probed within the hour."""
        with self._lock:
            caps = self._caps
        if caps is None or not getattr(caps, feature):
            return
        self._remember(caps.without(feature, f"refused later: {answer}", time.time()), save=True)
        log.warning("store.capability_lost where=%s capability=%s answer=%s action=use-fallback",
                    self.describe(), feature, answer)

    # -- helpers -------------------------------------------------------------------------------

    def _list(self, prefix: str) -> builtins.list[tuple[str, float]]:
        """(key, last-modified POSIX time) of every object under ``prefix``."""
        out: builtins.list[tuple[str, float]] = []
        with self._translate("LIST", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out.extend((obj["Key"], obj["LastModified"].timestamp()) for obj in page.get("Contents", []))
        return out

    def _etag_arg(self, etag: str) -> str:
        """The ETag in the spelling the server's conditions accept (Ceph RGW: unquoted only)."""
        quoted = normalize_etag(etag)
        forms = self.capabilities().etag_forms
        if "quoted" not in forms and "unquoted" in forms:
            return quoted.strip('"')
        return quoted

    def _abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload that failed (s3_compose); a refusal here is only logged."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            # Harmless leftover (a lifecycle rule cleans it); the original error matters more.
            log.warning("store.abort_failed error=%s", client_error(
                exc, f"AbortMultipartUpload s3://{self.bucket}/{key}", self.bucket, self.endpoint_url,
                permission_for("AbortMultipartUpload")))
        except BotoCoreError as exc:
            log.warning("store.abort_failed key=%s error=%s", key, type(exc).__name__)

    @contextmanager
    def _translate(self, op: str, key: str, feature: str | None = None) -> Iterator[None]:
        """Turn every botocore error into the uploader's own, saying what to fix.

        ``feature``: the optional capability this request relies on; an answer that refuses it
        (rather than a passing fault or a problem with credentials or bucket) becomes
        CapabilityLost, and the store stops using the feature.
        """
        where = f"{op} s3://{self.bucket}/{key}"
        try:
            yield
        except ClientError as exc:
            code, status = error_code(exc)
            if code in CREDENTIALS_REFUSED:
                self._forget_credentials(code)
            if feature is not None and refuses_feature(code, status):
                answer = f"{code} (HTTP {status})"
                self._lose(feature, answer)
                raise CapabilityLost(
                    f"{where}: the server refused {feature.replace('_', ' ')} ({answer})",
                    "nothing to do: the upload is retried on the fallback path",
                ) from exc
            error = client_error(exc, where, self.bucket, self.endpoint_url, permission_for(op))
            if self.encryption.mode is not None and status == 400 and type(error) is StoreRejected:
                error = EncryptionRefused(error.message, refusal_hint(self.encryption))
            raise error from exc
        except BotoCoreError as exc:
            if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
                self._forget_credentials(type(exc).__name__)
            raise botocore_error(exc, where, self.endpoint_url) from exc

    def _forget_credentials(self, answer: str) -> None:
        """Drop the client, so that the next request resolves boto3's credential chain afresh:
        keys replaced in the credentials file, a profile or its credential_process are picked up
        without a restart (environment variables cannot change under a running process)."""
        with self._lock:
            self._client = None
        log.info("store.credentials_refused where=%s answer=%s action=read-credentials-again-next-try",
                 self.describe(), answer)

class _Reading(io.RawIOBase):
    """A GET's body as a file whose read errors are the store's own (StoreUnavailable)."""

    def __init__(self, body: Any, translate: Callable[[], AbstractContextManager[None]]) -> None:
        super().__init__()
        self._body = body
        self._translate = translate

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._translate():
            data: bytes = self._body.read(None if size is None or size < 0 else size)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _info(key: str, answer: dict[str, Any], size: int) -> ObjectInfo:
    """What a HEAD's or GET's answer says about the object."""
    return ObjectInfo(key, size, normalize_etag(answer["ETag"]), dict(answer.get("Metadata", {})), applied(answer))
