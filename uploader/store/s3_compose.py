"""Composing an S3 object (part of the S3 backend): kept bytes copied server-side, new bytes streamed.

``compose`` writes ``key`` as ``keep`` bytes of an object already in the bucket (the key itself, or
``source``), its first ones or those from ``start`` on, followed by streamed pieces. Small writes
are one PUT; larger ones are one multipart upload: the kept bytes by UploadPartCopy, in equal
ranges of at most the store's ``copy_part_size`` (a copy answers only when it is done, so each
must finish well within the read timeout, and S3 copies at most 5 GiB per part), then the pieces
in PART_SIZE parts (none if there are no new bytes). Every part is in the one upload, so
``CompleteMultipartUpload`` stays the one guarded commit; any failure aborts the upload, and a
process killed mid-way leaves an unfinished upload that ``S3Store.remove_leftovers`` removes,
never a changed object.

S3's limits are the store's attributes (``copy_part_size``, ``max_parts``, ``max_object_size``),
so the tests run this same code on small objects with the limits lowered. The copy takes at most
half of the parts (the copy parts grow to fit), the new bytes the rest; an object that would pass
``max_object_size`` (S3: 5 TiB) is refused before the part that would pass it is sent.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from uploader.errors import StoreRejected
from uploader.store import normalize_etag
from uploader.store.capabilities import MAX_PART_SIZE, MIN_COPY_PART_SIZE, MIN_PART_SIZE, PART_SIZE
from uploader.store.s3_probe import part_entry

if TYPE_CHECKING:
    from uploader.store.s3 import S3Store

__all__ = ["compose", "content_type", "copy_ranges"]

log = logging.getLogger(__name__)


def content_type(key: str) -> str:
    """The Content-Type of an object we write: a gzip day is a gzip file (never Content-Encoding:
    clients would inflate it in transit, DESIGN §5.10)."""
    if key.endswith(".json.gz"):
        return "application/gzip"
    return "application/json" if key.endswith(".json") else "application/octet-stream"


def compose(
    store: S3Store, key: str, keep: int, pieces: Iterable[bytes], metadata: dict[str, str], *,
    if_match: str | None, if_none_match: bool, source: str | None, start: int = 0,
) -> str | None:
    """``Store.compose`` on S3: see the protocol for the contract."""
    if keep and keep < MIN_PART_SIZE:
        raise ValueError(f"keep={keep}: S3 cannot copy a part smaller than {MIN_PART_SIZE} bytes")
    caps = store.capabilities()
    parts = _in_parts(pieces, PART_SIZE)
    first = next(parts)
    if not keep:
        second = next(parts, None)
        if second is None:  # it all fits one request
            return store._put(key, first, metadata, if_match, if_none_match)
        parts = itertools.chain([second], parts)
        del second  # held by the chain until sent, not by this frame for the whole write
        if not caps.multipart:
            return _put_spilled(store, key, itertools.chain([first], parts), metadata, if_match, if_none_match)
    # A day at the limit is refused before anything is copied (most appends are one part).
    _refuse_past_limit(store, key, keep + len(first))
    parts = itertools.chain([first], parts)
    del first
    return _multipart(store, key, keep, source, start, parts, metadata, if_match, if_none_match)


def copy_ranges(keep: int, part_size: int, max_parts: int) -> list[tuple[int, int]]:
    """The (first, last) byte ranges, inclusive, whose copies make the first ``keep`` bytes.

    As few as parts of ``part_size`` (kept within MIN_COPY_PART_SIZE..MAX_PART_SIZE) allow, and
    no more than half of ``max_parts`` (the parts grow instead), equal to a byte: so each is at
    least half a part and never below S3's smallest part. ValueError if even MAX_PART_SIZE parts
    cannot fit.
    """
    if not keep:
        return []
    size = max(min(part_size, MAX_PART_SIZE), MIN_COPY_PART_SIZE)
    size = max(size, -(-keep // max(max_parts // 2, 1)))
    if size > MAX_PART_SIZE:
        raise ValueError(f"keep={keep}: more than {max(max_parts // 2, 1)} copy parts of {MAX_PART_SIZE} bytes")
    count = -(-keep // size)
    base, extra = divmod(keep, count)
    ranges: list[tuple[int, int]] = []
    start = 0
    for number in range(count):
        length = base + (1 if number < extra else 0)
        ranges.append((start, start + length - 1))
        start += length
    return ranges


def _multipart(
    store: S3Store, key: str, keep: int, source: str | None, start: int, parts: Iterator[bytes],
    metadata: dict[str, str], if_match: str | None, if_none_match: bool,
) -> str | None:
    """One multipart upload: the copy parts (``keep`` bytes of the source from ``start`` on), then
    the new parts, then the one guarded Complete."""
    caps = store.capabilities()
    ranges = [(start + first, start + last)
              for first, last in copy_ranges(keep, store.copy_part_size, store.max_parts)]
    store._check_encryption(key)
    with store._translate("CreateMultipartUpload", key, feature="multipart"):
        upload_id = store.client.create_multipart_upload(
            Bucket=store.bucket, Key=key, Metadata=metadata, ContentType=content_type(key)
        )["UploadId"]
    # The condition is on ``key``: a copy of another object cannot carry it.
    guard = if_match if caps.copy_source_if_match and source is None else None
    try:
        done = _copy_parts(store, key, upload_id, source or key, ranges, guard)
        done += _upload_parts(store, key, upload_id, parts, len(done) + 1, keep)
        r = _complete(store, key, upload_id, done, if_match if caps.complete_if_match else None, if_match,
                      if_none_match)
    except BaseException:
        store._abort(key, upload_id)
        raise
    log.debug("store.composed key=%s copied=%d from=%d copy_parts=%d parts=%d", key, keep, start, len(ranges),
              len(done))
    # Ceph RGW answers with an empty ETag: say "unknown" rather than HEAD for one, which
    # could be another writer's object.
    return normalize_etag(r["ETag"]) if caps.complete_etag and r.get("ETag") else None


def _copy_parts(
    store: S3Store, key: str, upload_id: str, source: str, ranges: list[tuple[int, int]], guard: str | None,
) -> list[dict[str, Any]]:
    """Parts 1.. of the upload, each an UploadPartCopy of one range (first, last byte) of ``source``."""
    done: list[dict[str, Any]] = []
    for number, (first, last) in enumerate(ranges, start=1):
        copy: dict[str, Any] = {
            "Bucket": store.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
            "CopySource": {"Bucket": store.bucket, "Key": source}, "CopySourceRange": f"bytes={first}-{last}",
        }
        if guard is not None:
            copy["CopySourceIfMatch"] = store._etag_arg(guard)
        with store._translate("UploadPartCopy", key, feature="range_copy" if guard is None else "copy_source_if_match"):
            done.append(part_entry(number, store.client.upload_part_copy(**copy)["CopyPartResult"]))
    return done


def _upload_parts(
    store: S3Store, key: str, upload_id: str, parts: Iterator[bytes], number: int, keep: int,
) -> list[dict[str, Any]]:
    """The new bytes as parts ``number``.., one part in memory at a time; none when there are no new
    bytes (a copy alone, e.g. a gzip day's padding dropped)."""
    done: list[dict[str, Any]] = []
    size = keep
    for body in parts:
        if not body:
            continue  # only ever the one empty part of no bytes at all: the copy parts make the object
        size += len(body)
        _refuse_past_limit(store, key, size)
        if number > store.max_parts:
            raise ValueError(f"{key}: more than {store.max_parts} parts (S3's most): send less per write")
        with store._translate("UploadPart", key, feature="multipart"):
            done.append(part_entry(number, store.client.upload_part(
                Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)))
        number += 1
        del body  # not held while the next part is joined
    return done


def _complete(
    store: S3Store, key: str, upload_id: str, done: list[dict[str, Any]], guard: str | None, if_match: str | None,
    if_none_match: bool,
) -> Any:
    """CompleteMultipartUpload with If-Match ``guard`` where the server honours it, else with the
    conditions checked just before."""
    complete: dict[str, Any] = {
        "Bucket": store.bucket, "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": done},
    }
    if guard is not None:
        complete["IfMatch"] = store._etag_arg(guard)
    else:
        # The server cannot refuse a stale complete: check just before, and rely on the
        # single-writer lock for the remaining window.
        store._check_by_head(key, if_match, if_none_match)
    with store._translate("CompleteMultipartUpload", key,
                          feature="complete_if_match" if "IfMatch" in complete else "multipart"):
        return store.client.complete_multipart_upload(**complete)


def _refuse_past_limit(store: S3Store, key: str, size: int) -> None:
    """A permanent error, before the request that would make the object pass S3's largest size."""
    if size > store.max_object_size:
        raise StoreRejected(
            f"write s3://{store.bucket}/{key}: {size} bytes or more would pass the largest object "
            f"S3 stores ({_in_units(store.max_object_size)}); nothing was written",
            "this day's document takes no more uploads: its batches wait in the spool; log less per day "
            "(the limits are in docs/DESIGN.md, 'Fixed limits')",
        )


def _in_units(size: int) -> str:
    """A size in the largest binary unit that divides it (5 TiB, 12 MiB), else in bytes."""
    for unit, name in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _put_spilled(
    store: S3Store, key: str, parts: Iterator[bytes], metadata: dict[str, str], if_match: str | None,
    if_none_match: bool,
) -> str:
    """One PUT of a body too big for memory, for a server without multipart uploads."""
    with tempfile.TemporaryFile(dir=store.spill_dir) as spill:
        for part in parts:
            spill.write(part)
        spill.seek(0)
        return store._put(key, spill, metadata, if_match, if_none_match)


def _in_parts(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The pieces joined into parts of at least ``size`` bytes; the last may be smaller, and is
    empty only when there are no bytes at all (an empty object is still one part)."""
    buffer: list[bytes] = []
    held = 0
    yielded = False
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            joined, buffer, held, yielded = b"".join(buffer), [], 0, True
            yield joined  # the pieces already let go: one part in memory, not two
            del joined
    if held or not yielded:
        yield b"".join(buffer)
