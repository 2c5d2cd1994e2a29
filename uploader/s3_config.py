"""The `[storage.s3]` settings: the endpoint, its TLS trust, and encryption at rest.

Validated here at start, so a bad value exits 2 naming its key before anything runs: the CA
bundle is loaded as TLS will load it, and an SSE-C key file is read and checked like a secret
(its mode, its length), its bytes kept out of every repr and message.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from uploader.errors import ConfigError

__all__ = ["CREDENTIALS_HINT", "CustomerKey", "Encryption", "S3Config", "SseMode", "is_loopback_url", "s3_config"]

CREDENTIALS_HINT = (
    "remove it and give credentials through the environment "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or an AWS profile (AWS_PROFILE, ~/.aws/credentials)"
)
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")
_KEY_HINT = "make one with `openssl rand 32 > FILE` (or `openssl rand -base64 32 > FILE`), then `chmod 600 FILE`"


class SseMode(StrEnum):
    """Server-side encryption, as the S3 headers name it (SSE-C has no such name: ours)."""

    S3 = "AES256"
    KMS = "aws:kms"
    CUSTOMER = "SSE-C"


@dataclass(frozen=True)
class CustomerKey:
    """A 256-bit SSE-C key and the file it came from; its bytes never appear in a repr."""

    path: Path
    key: bytes = field(repr=False)

    @property
    def md5(self) -> str:
        """The key's MD5, base64: what the server echoes (x-amz-...-customer-key-MD5); not secret."""
        return base64.b64encode(hashlib.md5(self.key).digest()).decode()


@dataclass(frozen=True)
class Encryption:
    """The encryption every write asks for; ``mode`` None: the bucket's default, if any."""

    mode: SseMode | None = None
    kms_key: str | None = None
    customer_key: CustomerKey | None = None

    def describe(self) -> str:
        if self.mode is None:
            return "none requested"
        if self.mode is SseMode.CUSTOMER:
            return "SSE-C (the key in storage.s3.sse_customer_key_file)"
        if self.mode is SseMode.KMS:
            return f"SSE-KMS ({self.kms_key or 'the KMS default key'})"
        return "SSE-S3 (AES256)"


@dataclass(frozen=True)
class S3Config:
    bucket: str = "sports-json-logs-all"
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    # None means "decide by endpoint": when_required for any non-AWS endpoint (Ceph RGW rejects
    # boto3's default checksums with XAmzContentSHA256Mismatch), when_supported for AWS.
    request_checksum_calculation: str | None = None
    response_checksum_validation: str | None = None
    allow_insecure_http: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 3
    # A named profile of boto3's shared files (~/.aws/credentials, ~/.aws/config) whose keys this
    # store uses: two destinations at two providers need two key pairs. None: boto3's chain.
    profile: str | None = None
    # A PEM file of the CA(s) that sign the endpoint's certificate (a private CA), else the
    # system's trust store. Verification is never switched off.
    ca_bundle: Path | None = None
    # Encryption at rest: SSE-S3 ("AES256") or SSE-KMS ("aws:kms", optionally with its key), or
    # SSE-C with the customer key read from its file at start (never from this file).
    server_side_encryption: str | None = None
    kms_key: str | None = None
    sse_customer_key_file: Path | None = None
    customer_key: CustomerKey | None = field(default=None, repr=False, compare=False)

    @property
    def encryption(self) -> Encryption:
        """What every write asks the server to apply (and every read of SSE-C must present)."""
        if self.customer_key is not None:
            return Encryption(SseMode.CUSTOMER, customer_key=self.customer_key)
        if self.server_side_encryption is not None:
            return Encryption(SseMode(self.server_side_encryption), kms_key=self.kms_key)
        return Encryption()

    @property
    def is_aws(self) -> bool:
        if not self.endpoint_url:
            return True
        host = urlsplit(self.endpoint_url).hostname or ""
        return host == "amazonaws.com" or host.endswith(".amazonaws.com")

    @property
    def checksum_mode(self) -> tuple[str, str]:
        """(request_checksum_calculation, response_checksum_validation) after endpoint defaults."""
        default = "when_supported" if self.is_aws else "when_required"
        return (
            self.request_checksum_calculation or default,
            self.response_checksum_validation or default,
        )


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def s3_config(v: dict[str, Any], required: bool, resolve: Callable[[str], Path]) -> S3Config:
    if required and not v["bucket"]:
        raise ConfigError("storage.s3.bucket", "must not be empty when backend is s3")
    url = v["endpoint_url"]
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("storage.s3.endpoint_url", f"not an http(s) URL: {url!r}")
        if parts.username or parts.password:
            raise ConfigError("storage.s3.endpoint_url", "holds credentials", CREDENTIALS_HINT)
        if parts.scheme == "http" and not is_loopback_url(url) and not v["allow_insecure_http"]:
            raise ConfigError(
                "storage.s3.endpoint_url",
                f"plain http to a non-loopback host ({parts.hostname}) would send data unencrypted",
                "use https, or set storage.s3.allow_insecure_http = true if you really mean it",
            )
    if v["addressing_style"] not in ("auto", "path", "virtual"):
        raise ConfigError("storage.s3.addressing_style", f"got {v['addressing_style']!r}", 'use "auto", "path" or "virtual"')
    for key in ("request_checksum_calculation", "response_checksum_validation"):
        if v[key] is not None and v[key] not in ("when_supported", "when_required"):
            raise ConfigError(f"storage.s3.{key}", f"got {v[key]!r}", 'use "when_supported" or "when_required"')
    for key in ("connect_timeout_s", "read_timeout_s"):
        if v[key] <= 0:
            raise ConfigError(f"storage.s3.{key}", f"must be greater than 0, got {v[key]}")
    if v["max_attempts"] < 1:
        raise ConfigError("storage.s3.max_attempts", f"must be at least 1, got {v['max_attempts']}")
    return S3Config(
        bucket=v["bucket"],
        endpoint_url=url,
        region=v["region"],
        addressing_style=v["addressing_style"],
        request_checksum_calculation=v["request_checksum_calculation"],
        response_checksum_validation=v["response_checksum_validation"],
        allow_insecure_http=v["allow_insecure_http"],
        connect_timeout_s=float(v["connect_timeout_s"]),
        read_timeout_s=float(v["read_timeout_s"]),
        max_attempts=v["max_attempts"],
        profile=v["profile"] or None,
        ca_bundle=_check_ca_bundle(resolve(v["ca_bundle"])) if v["ca_bundle"] is not None else None,
        **_encryption(v, resolve),
    )


def _check_ca_bundle(path: Path) -> Path:
    """Refuse a storage.s3.ca_bundle that TLS could not use: checked the way the connection will
    load it (OpenSSL's ``load_verify_locations``), so a bad file names the key at start instead
    of failing every upload later."""
    key, hint = "storage.s3.ca_bundle", "give the PEM file of the CA that signs the endpoint's certificate"
    if path.is_dir():
        raise ConfigError(key, f"{path} is a folder, not a PEM file", hint)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}", hint) from None
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError):
        raise ConfigError(key, f"{path} holds no PEM certificate", hint + " (-----BEGIN CERTIFICATE-----)") from None
    return path


def _encryption(v: dict[str, Any], resolve: Callable[[str], Path]) -> dict[str, Any]:
    """The encryption settings, checked together: one kind at a time, the key file read now."""
    sse, kms_key, key_file = v["server_side_encryption"], v["kms_key"], v["sse_customer_key_file"]
    if sse is not None and sse not in (SseMode.S3, SseMode.KMS):
        raise ConfigError("storage.s3.server_side_encryption", f"got {sse!r}",
                          'use "AES256" (SSE-S3) or "aws:kms" (SSE-KMS); for SSE-C set storage.s3.sse_customer_key_file')
    if kms_key is not None and sse != SseMode.KMS:
        raise ConfigError("storage.s3.kms_key", "only applies to SSE-KMS",
                          'set storage.s3.server_side_encryption = "aws:kms", or remove kms_key')
    if key_file is not None and sse is not None:
        raise ConfigError("storage.s3.sse_customer_key_file", "SSE-C cannot be combined with server_side_encryption",
                          "keep one of the two")
    out: dict[str, Any] = {"server_side_encryption": sse, "kms_key": kms_key}
    if key_file is not None:
        path = resolve(key_file)
        out["sse_customer_key_file"] = path
        out["customer_key"] = CustomerKey(path, _read_customer_key(path))
    return out


def _read_customer_key(path: Path) -> bytes:
    """The 32 bytes of an SSE-C key file: raw, or base64 text. Refused, never echoed, when the
    file is missing, readable or writable by others, or not a 256-bit key."""
    name = "storage.s3.sse_customer_key_file"
    try:
        with path.open("rb") as f:
            info = os.fstat(f.fileno())
            data = f.read(1024)
    except OSError as exc:
        raise ConfigError(name, f"cannot read {path}: {exc.strerror or exc}", _KEY_HINT) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(name, f"{path} is not a regular file", _KEY_HINT)
    if info.st_mode & 0o077:
        raise ConfigError(name, f"{path} is open to other users (mode {stat.filemode(info.st_mode)})",
                          f"chmod 600 {path}: it holds the key to every day document")
    if info.st_uid not in (os.getuid(), 0):
        raise ConfigError(name, f"{path} belongs to another user (uid {info.st_uid})",
                          "chown it to the user that runs the uploader, mode 600")
    # 32 bytes are the key itself, unless they are base64 text (of a shorter key, then refused).
    if len(data) == 32 and not _BASE64_TEXT.fullmatch(data):
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(name, f"{path} does not hold a 256-bit key (32 bytes, or their base64)", _KEY_HINT)
    return key
