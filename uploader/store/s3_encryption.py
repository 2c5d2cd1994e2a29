"""Encryption at rest on S3 (part of the S3 backend): the headers each request carries, and
whether the server's answer shows the object encrypted as configured.

The parameters are added to a boto3 client's requests through botocore's
``before-parameter-build`` event, ahead of botocore's own SSE-C handlers (which base64 the key
and add its MD5), so every request of the store and of its probe carries them without a call
site knowing: SSE-S3 / SSE-KMS on the writes that create an object (PUT, CreateMultipartUpload);
SSE-C on those, on every part, on both sides of a part copy, and on every GET and HEAD.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from uploader.s3_config import Encryption, SseMode

__all__ = ["EncryptingClient", "applied", "mismatch", "refusal_hint", "request_params"]

_CREATES = ("PutObject", "CreateMultipartUpload")
_READS = ("GetObject", "HeadObject")
_CUSTOMER_KEYED = (*_CREATES, "UploadPart", "UploadPartCopy", *_READS)


def request_params(encryption: Encryption, operation: str) -> dict[str, Any]:
    """The encryption parameters the S3 request ``operation`` must carry (boto3's names)."""
    if encryption.mode is SseMode.CUSTOMER:
        assert encryption.customer_key is not None
        if operation not in _CUSTOMER_KEYED:
            return {}
        key = encryption.customer_key.key
        params = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        if operation == "UploadPartCopy":  # the source is ours too, so it has the same key
            params |= {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}
        return params
    if encryption.mode is None or operation not in _CREATES:
        return {}
    params = {"ServerSideEncryption": encryption.mode.value}
    if encryption.kms_key:
        params["SSEKMSKeyId"] = encryption.kms_key
    return params


def applied(answer: Mapping[str, Any]) -> str:
    """The encryption an answer (PUT, HEAD, GET) says its object has: "SSE-C", "AES256",
    "aws:kms", or "" for none said."""
    if answer.get("SSECustomerAlgorithm"):
        return SseMode.CUSTOMER.value
    return str(answer.get("ServerSideEncryption") or "")


def mismatch(encryption: Encryption, answer: Mapping[str, Any]) -> str | None:
    """How the object an answer describes differs from the configured encryption; None if it
    does not (or nothing is configured: the bucket's default then decides)."""
    if encryption.mode is None:
        return None
    got = applied(answer)
    if got != encryption.mode.value:
        return f"stored {'with ' + got if got else 'unencrypted'}"
    if encryption.mode is SseMode.CUSTOMER:
        assert encryption.customer_key is not None
        md5 = answer.get("SSECustomerKeyMD5")
        if md5 and md5 != encryption.customer_key.md5:
            return "encrypted with another customer key"
    elif encryption.kms_key:
        key_id = str(answer.get("SSEKMSKeyId") or "")
        if key_id and not key_id.endswith(encryption.kms_key):  # AWS answers with the key's ARN
            return f"encrypted with KMS key {key_id}"
    return None


def refusal_hint(encryption: Encryption) -> str:
    """What to check when a server answers a request carrying encryption with a 400."""
    setting = "sse_customer_key_file" if encryption.mode is SseMode.CUSTOMER else "server_side_encryption"
    hint = (f"check storage.s3.{setting}: the server refused the request's encryption headers "
            "(Ceph RGW takes them only over https")
    if encryption.mode is SseMode.CUSTOMER:
        return hint + "; an SSE-C object reads only with the key it was written with)"
    return hint + "; SSE-KMS needs a KMS the server is set up with)"


class EncryptingClient:
    """Adds the configured encryption to the requests of boto3 S3 clients (``install``)."""

    def __init__(self, encryption: Encryption) -> None:
        self.encryption = encryption
        self._plain = threading.local()

    def install(self, client: Any) -> Any:
        if self.encryption.mode is not None:
            for operation in _CUSTOMER_KEYED:
                client.meta.events.register_first(f"before-parameter-build.s3.{operation}", self._add)
        return client

    @contextmanager
    def plain_reads(self) -> Iterator[None]:
        """GETs and HEADs in this thread without the SSE-C key: for an object stored before SSE-C
        was configured, which AWS refuses to read with one."""
        self._plain.on = True
        try:
            yield
        finally:
            self._plain.on = False

    def _add(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in _READS and getattr(self._plain, "on", False):
            return
        for name, value in request_params(self.encryption, model.name).items():
            params.setdefault(name, value)
