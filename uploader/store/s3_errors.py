"""What an S3 server's error answers mean, as the uploader's own errors: the one translation.

The store (``s3.py``) and its probe (``s3_probe.py``) read answers through these, so they cannot
read a refusal differently: the code of a ClientError, the codes that say "condition not met",
"no such key", "try again", "who is asking", and the error (with what to fix) each becomes.
"""

from __future__ import annotations

import ssl

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from uploader.errors import (
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)

__all__ = ["CREDENTIALS_REFUSED", "IDENTITY", "PRECONDITION", "botocore_error", "certificate_error", "client_error", "error_code", "permission_for", "refuses_feature"]

# "412" stands for an answer with no code in its body (a HEAD, or a server that sends none).
PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


def error_code(exc: ClientError) -> tuple[str, int]:
    """(the error code, or the HTTP status as text when the answer has none; the HTTP status)."""
    err = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(err.get("Code", "") or status), status


NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchUpload"}
TRANSIENT = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "500", "502", "503",
    "504", "Throttling", "ThrottlingException",
}
# The server refused the keys themselves: unknown, wrong secret, or an expired session token.
CREDENTIALS_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                       "TokenRefreshRequired"}
# Answers about who is asking or where, not about a feature: they stop any upload alike.
IDENTITY = CREDENTIALS_REFUSED | {"NoSuchBucket", "XAmzContentSHA256Mismatch", "RequestTimeTooSkewed"}
CREDENTIALS_HINT = (
    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials) "
    "are the pair issued for this endpoint; keys replaced in ~/.aws/credentials or a profile are "
    "read again at the next try, without a restart"
)


def client_error(
    exc: ClientError, where: str, bucket: str, endpoint_url: str | None, permission: str | None = None,
) -> StoreError:
    """The uploader's error for an S3 error answer to the request ``where``, with what to fix;
    ``permission``: the one the request needs, named when it is denied."""
    code, status = error_code(exc)
    if code in PRECONDITION or status == 412:
        return PreconditionFailed(f"{where}: the object changed since it was read ({code})")
    if code in NOT_FOUND:
        return ObjectNotFound(f"{where}: no such key")
    if code in TRANSIENT or (status >= 500 and status != 501):
        return StoreUnavailable(f"{where}: server busy or failing ({code})", "retry later")
    rejected: dict[str, tuple[str, str]] = {
        "InvalidAccessKeyId": ("the access key id is not known to the server", CREDENTIALS_HINT),
        "SignatureDoesNotMatch": ("the secret key does not match the access key", CREDENTIALS_HINT),
        "ExpiredToken": ("the session token has expired", CREDENTIALS_HINT),
        "AccessDenied": (
            "access denied",
            f"grant the key the actions docs/least-privilege.md lists, on bucket {bucket}",
        ),
        "NoSuchBucket": (
            f"bucket {bucket!r} does not exist at {endpoint_url or 'AWS'}",
            "create the bucket or fix storage.s3.bucket / storage.s3.endpoint_url",
        ),
        "XAmzContentSHA256Mismatch": (
            "the server rejected boto3's request checksums",
            'set storage.s3.request_checksum_calculation = "when_required"',
        ),
        "RequestTimeTooSkewed": ("this machine's clock is too far off the server's", "sync the clock (NTP)"),
        "403": ("access denied (HTTP 403)", CREDENTIALS_HINT + ", and that the key may use this bucket"),
    }
    if permission is not None and code in ("AccessDenied", "403"):
        note = _PERMISSION_NOTES.get(permission)
        hint = f"grant the key {permission} on bucket {bucket}" + (f" ({note})" if note else "")
        rejected[code] = ("access denied", hint)
    # An answer we have no words for: the server's own say what is wrong (RGW's are specific).
    said = str(exc.response.get("Error", {}).get("Message") or "").strip().rstrip(".")
    refused = f"refused with {code} (HTTP {status})" + (f": {said}" if said else "")
    reason, hint = rejected.get(code, (refused, "check the bucket settings and permissions"))
    return StoreRejected(f"{where}: {reason} ({code})", hint)


# A read of an object that does not exist is answered 403, not 404, by AWS and Ceph RGW alike when
# the caller may not list the bucket: a denied read can lack either action, and its answer cannot
# say which.
_READ = "s3:GetObject and s3:ListBucket"
_PERMISSION_NOTES = {_READ: "without s3:ListBucket an object that does not exist is refused, not reported missing"}
# The IAM action each request needs (docs/least-privilege.md): named when the server denies it.
_PERMISSIONS = {
    "HEAD": _READ,
    "GET": _READ,
    "PUT": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "UploadPartCopy": "s3:GetObject and s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DELETE": "s3:DeleteObject",
    "LIST": "s3:ListBucket",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    # S3 has one permission for writing and for removing the configuration.
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
}


def permission_for(op: str) -> str | None:
    """The IAM action the request ``op`` needs, as the docs' policy grants it; the probe's
    requests (``"probe PUT"``) need what the same request does elsewhere."""
    return _PERMISSIONS.get(op.removeprefix("probe "))


CA_BUNDLE_HINT = (
    "if the server's certificate comes from a private CA, set storage.s3.ca_bundle to that CA's PEM file; "
    "otherwise fix the certificate on the server (expired, or not for this host)"
)


def botocore_error(exc: BotoCoreError, where: str, endpoint_url: str | None) -> StoreError:
    """The uploader's error for a botocore failure that is not an answer from the server.

    A certificate that fails verification is permanent (StoreRejected): retrying cannot make the
    server trusted. botocore raises it as ``SSLError`` (a ConnectionError) around urllib3's error
    around ``ssl.SSLCertVerificationError``.
    """
    untrusted = _certificate_failure(exc)
    if untrusted is not None:
        return certificate_error(where, endpoint_url, untrusted)
    if isinstance(exc, ProfileNotFound):
        return StoreRejected(f"{where}: the AWS profile {exc.kwargs.get('profile')!r} is not in ~/.aws/credentials or "
                             "~/.aws/config", "add the profile there, or fix the s3 table's profile")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StoreRejected(
            f"no usable S3 credentials found for {where}",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (~/.aws/credentials)",
        )
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return StoreUnavailable(
            f"cannot reach the S3 endpoint {endpoint_url or 'AWS'} ({type(exc).__name__})",
            "check storage.s3.endpoint_url, that the server is up, and the network",
        )
    return StoreRejected(f"{where} failed: {type(exc).__name__}", "see the log for details")


def certificate_error(where: str, endpoint_url: str | None, reason: str) -> StoreRejected:
    """The one line for a server certificate that failed verification: no retry can fix it."""
    return StoreRejected(f"{where}: the server's TLS certificate at {endpoint_url or 'AWS'} is not trusted ({reason})",
                         CA_BUNDLE_HINT)


def _certificate_failure(exc: BaseException) -> str | None:
    """Why the server's certificate failed verification, if that is what ``exc`` comes down to;
    else None. Follows botocore's ``error`` field, the arguments and the cause chain."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < 32:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            return str(err.verify_message or err.reason or "certificate verify failed")
        kwargs = getattr(err, "kwargs", None)
        inner = [kwargs.get("error") if isinstance(kwargs, dict) else None, err.__cause__, err.__context__, *err.args]
        todo.extend(e for e in inner if isinstance(e, BaseException))
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "certificate verify failed"
    return None


def refuses_feature(code: str, status: int) -> bool:
    """Whether an error answer to a request using an optional feature is a refusal of the feature.

    Not: a precondition that failed (the feature working), a missing key, a passing fault, or
    who-is-asking errors, which every request would get alike. Nor a 403: a permission denied
    (a bucket policy, an IAM policy) refuses the request whatever its headers, and falling back
    would hide it for an hour behind a slower path that the same policy refuses too.
    """
    if code in PRECONDITION or status == 412 or code in NOT_FOUND or code in IDENTITY or status == 403:
        return False
    if code in TRANSIENT or (status >= 500 and status != 501):
        return False
    return status != 401
