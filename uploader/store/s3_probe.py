"""Probing an S3 server for the optional features appends use (part of the S3 backend).

Each feature is tried for real, the case that must succeed and the case that must be refused,
on throwaway objects under the probe prefix that are removed afterwards. Only a clear yes
counts: any other answer (an error code, a 4xx, a 501, a header the server ignored, an answer
of an odd shape) records the feature as missing with what the server said, and the append
takes that feature's fallback. Each feature's requests stand alone, so one refusal never
spoils another finding (Ceph RGW, for one, refuses to complete a multipart upload with fewer
parts than were uploaded).

Only what would stop any upload stops a probe: credentials, a missing bucket, an unreachable
endpoint. The first, plain PUT tells; it is translated like any other request. Feature requests
go through a client that never retries by itself: a retried request whose first answer was lost
can look like a refusal (a create-if-absent that did create, then "already exists"). Instead a
passing fault (5xx, a reset, a timeout) repeats the feature's probe on fresh objects; if it
persists, the feature counts as missing for now and the findings are marked unsure, which makes
them expire within the hour instead of the day. After a few connection failures in a row the
server is taken to be gone: the probe stops, saves nothing and raises StoreUnavailable, as any
request to an unreachable endpoint does (the upload is retried later, probing again), rather
than send uploads down slow paths for an hour on findings an outage made up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from uploader.errors import ObjectNotFound, StoreError, StoreUnavailable
from uploader.store import normalize_etag
from uploader.store.capabilities import Capabilities
from uploader.store.s3_errors import PRECONDITION, error_code

__all__ = ["Prober", "STALE_ETAG", "part_entry"]

log = logging.getLogger(__name__)

STALE_ETAG = '"00000000000000000000000000000000"'
_BODY = bytes(range(48, 58)) * 10  # 100 bytes, every range of it distinguishable
_TRIES = 3
_GONE_AFTER = 3  # connection failures in a row


class _Unsure(Exception):
    """A passing fault (5xx, reset, timeout) kept a request from giving an answer."""

    def __init__(self, what: str, connection: bool) -> None:
        super().__init__(what)
        self.connection = connection


@dataclass(frozen=True)
class _Answer:
    """What the server said to one request: accepted, refused (412), or an error."""

    value: Any = None
    refused: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.refused and not self.error

    def __str__(self) -> str:
        return "refused (412)" if self.refused else self.error or "accepted"


@dataclass(frozen=True)
class _Finding:
    honoured: bool
    note: str = ""  # what the server answered, when not honoured


class Prober:
    """One probe of one bucket; ``run`` returns the findings. Not reusable."""

    def __init__(
        self,
        client: Any,
        tidy_client: Any,
        bucket: str,
        prefix: str,
        translate: Callable[[str, str], AbstractContextManager[None]],
        encryption_mismatch: Callable[[dict[str, Any]], str | None] = lambda answer: None,
    ) -> None:
        """``client`` must not retry by itself; ``tidy_client`` (the store's own) serves the
        idempotent requests: the first PUT, its HEAD and the clean-up. ``encryption_mismatch``
        says how a HEAD's answer differs from the encryption asked for (None: it does not)."""
        self.c = client
        self.tidy = tidy_client
        self.bucket = bucket
        self.base = f"{prefix.strip('/')}/probe-{uuid.uuid4().hex[:16]}"
        self.translate = translate
        self.encryption_mismatch = encryption_mismatch
        self._keys: set[str] = set()
        self._uploads: dict[str, str] = {}  # upload id -> key, until completed or aborted
        self._serial = 0
        self._unsure = False
        self._cut_short = ""
        self._connection_failures = 0

    def run(self) -> Capabilities:
        src = self._key("src")
        with self.translate("probe PUT", src):
            etag = normalize_etag(self.tidy.put_object(Bucket=self.bucket, Key=src, Body=_BODY)["ETag"])
        self._keys.add(src)
        try:
            with self.translate("HEAD", src):
                encryption_problem = self.encryption_mismatch(self.tidy.head_object(Bucket=self.bucket, Key=src)) or ""
            if encryption_problem:
                log.warning("store.probe_encryption_not_applied answer=%s", encryption_problem)
            forms: list[str] = []
            conditional = self._feature("conditional_put", lambda: self._conditional_put(src, etag, forms))
            tag = etag.strip('"') if forms == ["unquoted"] else etag
            multipart = self._feature("multipart", self._multipart)
            range_copy = self._feature("range_copy", lambda: self._range_copy(src))
            findings = {
                "conditional_put": conditional,
                "multipart": multipart,
                "range_copy": range_copy,
                "copy_source_if_match": (
                    self._feature("copy_source_if_match", lambda: self._copy_source_if_match(src, tag))
                    if range_copy.honoured else _Finding(False, "not tried: no range copy")
                ),
                "complete_if_match": self._feature("complete_if_match", lambda: self._complete_if_match(forms)),
                "suffix_range": self._feature("suffix_range", lambda: self._suffix_range(src)),
                "complete_etag": self._feature("complete_etag", self._complete_etag),
            }
        finally:
            self._clean_up()
        if self._cut_short:
            raise StoreUnavailable(
                f"cannot reach the S3 endpoint {self.c.meta.endpoint_url} while probing it ({self._cut_short})",
                "check storage.s3.endpoint_url, that the server is up, and the network",
            )
        return Capabilities(
            etag_forms=tuple(forms) if conditional.honoured else (),
            encryption_problem=encryption_problem,
            probed_at=time.time(),
            conclusive=not self._unsure,
            notes={name: f.note for name, f in findings.items() if not f.honoured},
            **{name: f.honoured for name, f in findings.items()},
        )

    # -- one feature each ----------------------------------------------------------------------

    def _conditional_put(self, src: str, etag: str, forms: list[str]) -> _Finding:
        put = self.c.put_object
        existing = self._ask(lambda: put(Bucket=self.bucket, Key=src, Body=_BODY, IfNoneMatch="*"))
        if not existing.refused:
            return _Finding(False, f"If-None-Match: * on an existing key {existing}")
        new = self._key("new")
        created = self._ask(lambda: put(Bucket=self.bucket, Key=new, Body=_BODY, IfNoneMatch="*"))
        self._keys.add(new)
        if not created.ok:
            return _Finding(False, f"If-None-Match: * on a new key {created}")
        stale = self._ask(lambda: put(Bucket=self.bucket, Key=src, Body=_BODY, IfMatch=STALE_ETAG))
        if not stale.refused:
            return _Finding(False, f"If-Match with a stale ETag {stale}")
        forms.clear()
        for form, value in (("quoted", etag), ("unquoted", etag.strip('"'))):
            # Rewriting the same bytes keeps the ETag, so each form is tried on the same object.
            if self._ask(lambda v=value: put(Bucket=self.bucket, Key=src, Body=_BODY, IfMatch=v)).ok:  # type: ignore[misc]
                forms.append(form)
        if not forms:
            return _Finding(False, "If-Match with the current ETag refused, quoted and unquoted")
        return _Finding(True)

    def _multipart(self) -> _Finding:
        # One small part: proves create, part and complete without sending 5 MiB a day; a server
        # stricter about part sizes is caught on its first refusal (CapabilityLost).
        key = self._key("parts")
        done = self._complete_one(key, None)
        if not done.ok:
            return _Finding(False, f"a one-part multipart upload {done}")
        got = self._ask(lambda: self.c.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        if not got.ok or got.value != b"probe":
            return _Finding(False, f"the completed object is not its part ({got})")
        return _Finding(True)

    def _range_copy(self, src: str) -> _Finding:
        dst = self._key("copy")
        upload = self._create(dst)
        if isinstance(upload, _Answer):
            return _Finding(False, f"CreateMultipartUpload {upload}")
        part = self._ask(lambda: self.c.upload_part_copy(
            Bucket=self.bucket, Key=dst, UploadId=upload, PartNumber=1,
            CopySource={"Bucket": self.bucket, "Key": src}, CopySourceRange="bytes=2-9"))
        if not part.ok:
            return _Finding(False, f"UploadPartCopy {part}")
        done = self._complete(dst, upload, [part_entry(1, part.value["CopyPartResult"])])
        if not done.ok:
            return _Finding(False, f"completing a copied part {done}")
        got = self._ask(lambda: self.c.get_object(Bucket=self.bucket, Key=dst)["Body"].read())
        if not got.ok:
            return _Finding(False, f"reading the copy {got}")
        if got.value != _BODY[2:10]:
            return _Finding(False, f"copied {len(got.value)} bytes, not the 8 of the range asked for")
        return _Finding(True)

    def _copy_source_if_match(self, src: str, etag: str) -> _Finding:
        dst = self._key("copyif")
        upload = self._create(dst)
        if isinstance(upload, _Answer):
            return _Finding(False, f"CreateMultipartUpload {upload}")

        def copy(number: int, if_match: str) -> _Answer:
            return self._ask(lambda: self.c.upload_part_copy(
                Bucket=self.bucket, Key=dst, UploadId=upload, PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": src}, CopySourceRange="bytes=2-9",
                CopySourceIfMatch=if_match))

        stale = copy(1, STALE_ETAG)
        if not stale.refused:
            return _Finding(False, f"a stale CopySourceIfMatch {stale}")
        current = copy(2, etag)
        if not current.ok:
            return _Finding(False, f"the current CopySourceIfMatch {current}")
        return _Finding(True)

    def _complete_if_match(self, forms: list[str]) -> _Finding:
        key = self._key("cim")
        put = self._ask(lambda: self.c.put_object(Bucket=self.bucket, Key=key, Body=_BODY))
        self._keys.add(key)
        if not put.ok:
            return _Finding(False, f"PUT {put}")
        etag = normalize_etag(put.value["ETag"])
        stale = self._complete_one(key, STALE_ETAG)
        if not stale.refused:
            return _Finding(False, f"a stale If-Match {stale}")
        current = self._complete_one(key, etag.strip('"') if forms == ["unquoted"] else etag)
        if not current.ok:
            return _Finding(False, f"the current If-Match {current}")
        return _Finding(True)

    def _suffix_range(self, src: str) -> _Finding:
        def get() -> tuple[bytes, str]:
            r = self.c.get_object(Bucket=self.bucket, Key=src, Range="bytes=-7")
            return r["Body"].read(), str(r.get("ContentRange") or "")

        got = self._ask(get)
        if not got.ok:
            return _Finding(False, f"GET with Range: bytes=-7 {got}")
        data, content_range = got.value
        if data != _BODY[-7:] or not content_range.endswith(f"/{len(_BODY)}"):
            return _Finding(False, f"Range ignored: {len(data)} bytes back, Content-Range {content_range or 'missing'}")
        return _Finding(True)

    def _complete_etag(self) -> _Finding:
        key = self._key("etag")
        done = self._complete_one(key, None)
        if not done.ok:
            return _Finding(False, f"CompleteMultipartUpload {done}")
        answered = str(done.value.get("ETag") or "")
        if not answered.strip('"'):
            return _Finding(False, "the answer's ETag is empty")
        head = self._ask(lambda: self.c.head_object(Bucket=self.bucket, Key=key))
        if not head.ok:
            return _Finding(False, f"HEAD after complete {head}")
        if normalize_etag(head.value["ETag"]) != normalize_etag(answered):
            return _Finding(False, f"the answer's ETag {answered} is not the object's {head.value['ETag']}")
        return _Finding(True)

    # -- requests ------------------------------------------------------------------------------

    def _feature(self, name: str, attempt: Callable[[], _Finding]) -> _Finding:
        """Run one feature's probe, again on fresh objects after a passing fault."""
        if self._cut_short:
            return _Finding(False, f"not tried: {self._cut_short}")
        why = ""
        for _ in range(_TRIES):
            try:
                finding = attempt()
            except _Unsure as exc:
                why = str(exc)
                self._connection_failures = self._connection_failures + 1 if exc.connection else 0
                if self._connection_failures >= _GONE_AFTER:
                    # The server seems gone: asking more would only wait out timeouts.
                    self._cut_short = why
                    break
                continue
            self._connection_failures = 0
            if not finding.honoured:
                log.info("store.probe_missing capability=%s answer=%s", name, finding.note)
            return finding
        self._unsure = True
        log.info("store.probe_unsure capability=%s error=%s", name, why)
        return _Finding(False, f"no clear answer ({why})")

    def _ask(self, call: Callable[[], Any]) -> _Answer:
        try:
            return _Answer(value=call())
        except ClientError as exc:
            code, status = error_code(exc)
            if code in PRECONDITION or status == 412:
                return _Answer(refused=True)
            if status >= 500 and status != 501:
                raise _Unsure(f"{code} (HTTP {status})", connection=False) from exc
            return _Answer(error=f"answered {code} (HTTP {status})")
        except BotoCoreError as exc:
            raise _Unsure(type(exc).__name__, connection=True) from exc

    def _key(self, what: str) -> str:
        self._serial += 1
        return f"{self.base}-{self._serial}-{what}"

    def _create(self, key: str) -> str | _Answer:
        """A new multipart upload's id (remembered for clean-up), or the refusal."""
        created = self._ask(lambda: self.c.create_multipart_upload(Bucket=self.bucket, Key=key))
        if not created.ok:
            return created
        upload: str = created.value["UploadId"]
        self._uploads[upload] = key
        return upload

    def _complete(self, key: str, upload: str, parts: list[dict[str, Any]], if_match: str | None = None) -> _Answer:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload,
                                "MultipartUpload": {"Parts": parts}}
        if if_match is not None:
            args["IfMatch"] = if_match
        done = self._ask(lambda: self.c.complete_multipart_upload(**args))
        if done.ok:
            self._uploads.pop(upload, None)
            self._keys.add(key)
        return done

    def _complete_one(self, key: str, if_match: str | None) -> _Answer:
        """A one-part multipart upload to ``key``, completed with ``if_match`` if given."""
        upload = self._create(key)
        if isinstance(upload, _Answer):
            return upload
        part = self._ask(lambda: self.c.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"probe"))
        if not part.ok:
            return part
        return self._complete(key, upload, [part_entry(1, part.value)], if_match)

    def _clean_up(self) -> None:
        """Abort the probe's unfinished uploads and delete its objects. What is left is said in one
        line per kind, naming what to fix (a permission missing refuses every one of them alike);
        the next clean-up removes it (the service's, at start and daily, or `uploader check`)."""
        removals = [("uploads", "AbortMultipartUpload", key,
                     partial(self.tidy.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload))
                    for upload, key in self._uploads.items()]
        removals += [("objects", "DELETE", key, partial(self.tidy.delete_object, Bucket=self.bucket, Key=key))
                     for key in sorted(self._keys)]
        left: dict[str, list[StoreError]] = {}
        for kind, op, key, remove in removals:
            try:
                with self.translate(f"probe {op}", key):
                    remove()
            except ObjectNotFound:
                pass  # gone already
            except StoreError as exc:
                left.setdefault(kind, []).append(exc)
        for kind, errors in left.items():
            log.warning("store.probe_cleanup_failed %s=%d error=%s (left under %s/ for the next clean-up)",
                        kind, len(errors), errors[0], self.base.rsplit("/", 1)[0])


def part_entry(number: int, result: dict[str, Any]) -> dict[str, Any]:
    """A CompleteMultipartUpload part entry, carrying any checksum the server gave for it."""
    part = {"PartNumber": number, "ETag": result["ETag"]}
    part.update({k: v for k, v in result.items() if k.startswith("Checksum") and k != "ChecksumType"})
    return part

