"""A closed gzip day's padding dropped (DESIGN §5.10): its object rewritten as its content members.

The padding (``gzip_form.pad``, 5 MiB of empty members) lets every append of a growing day keep
S3's smallest copied part; once the day is closed, appends are rare (late uploads take the
ordinary paths), and the padding would cost 5 MiB a day for ever. So closing a gzip day rewrites
its object from ``PAD_SIZE`` on, the same document byte for byte once inflated:

- where the content is at least the store's smallest copy and the server copies ranges, in one
  multipart upload whose parts copy that range of the object itself (nothing is sent);
- else the content is read (ranged GETs of at most a part each) and written back.

Either way the write is conditional on the ETag read (If-Match, or the store's HEAD check where
the server ignores it), so a change made meanwhile is never overwritten, and it is one commit
(a Complete or a PUT): the day is padded or not, never half. It is idempotent: a close killed
before its trim leaves the day closed and padded, and the next close trims it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from uploader.daily import gzip_form
from uploader.errors import CapabilityLost, ObjectNotFound, PreconditionFailed, StoreUnavailable
from uploader.publish.cache import CountedBody, WriteCache
from uploader.store import PART_SIZE, ObjectInfo, Store

if TYPE_CHECKING:
    from uploader.publish import AppendResult

__all__ = ["drop_padding"]

log = logging.getLogger(__name__)


def drop_padding(store: Store, closed: AppendResult, cache: WriteCache | None = None) -> AppendResult:
    """After ``closed`` (a close of one day), that day's gzip object without its padding, if it
    had any; ``closed`` with the new ETag and the bytes the trim moved.

    An unpadded gzip day costs one ranged GET of 32 KiB, a plain day nothing. A feature the
    server refuses meanwhile is retried at once on its fallback. Raises PreconditionFailed if the
    object changed while being trimmed, and the store's errors: nothing was written then, and
    closing again finishes it.
    """
    if not closed.key.endswith(gzip_form.SUFFIX):
        return closed
    try:
        return _drop(store, closed, cache)
    except CapabilityLost as exc:
        # Nothing was written; the store no longer uses the refused feature.
        log.info("publish.fallback key=%s reason=%s", closed.key, exc.message)
        return _drop(store, closed, cache)


def _drop(store: Store, closed: AppendResult, cache: WriteCache | None) -> AppendResult:
    if not store.capabilities().suffix_range:
        # A server that reads no ranges (the probe tries the suffix form) starts days unpadded;
        # one padded before the server changed its mind keeps its padding.
        return closed
    try:
        first, info = store.get(closed.key, span=(0, gzip_form.PAD_MEMBER_SIZE))
    except ObjectNotFound:
        return closed  # removed meanwhile: nothing to trim
    if info.size <= gzip_form.PAD_SIZE or not gzip_form.opens_with_padding(first):
        return closed
    seam, now = store.get(closed.key, span=gzip_form.PAD_SEAM)
    _unchanged(info, now)
    if not gzip_form.padding_ends(seam):
        # Not padding as this version writes it: left as it is (still a valid gzip day).
        log.warning("publish.padding_kept key=%s reason=the padding does not end at %d bytes",
                    closed.key, gzip_form.PAD_SIZE)
        return closed
    etag, body = _write(store, info)
    if cache is not None:
        cache.drop(closed.key)  # the close's own write, now replaced
    sent = body.sent if body is not None else 0
    log.info("publish.padding_dropped key=%s way=%s bytes=%d from=%d", closed.key,
             "rewrite" if body is not None else "copy", info.size - gzip_form.PAD_SIZE, info.size)
    return replace(closed, etag=etag, bytes_sent=closed.bytes_sent + sent,
                   bytes_received=closed.bytes_received + len(first) + len(seam) + sent)


def _write(store: Store, info: ObjectInfo) -> tuple[str | None, CountedBody | None]:
    """The object written again from PAD_SIZE on, if it is still ``info``: its new ETag, and what
    the client read and sent again (None: the server copied it)."""
    content = info.size - gzip_form.PAD_SIZE
    caps = store.capabilities()
    if caps.multipart and caps.range_copy and content >= caps.min_copy:
        etag = store.compose(info.key, content, [], info.metadata, if_match=info.etag, start=gzip_form.PAD_SIZE)
        return etag, None
    body = CountedBody(_content(store, info))
    return store.compose(info.key, 0, body, info.metadata, if_match=info.etag), body


def _content(store: Store, info: ObjectInfo) -> Iterator[bytes]:
    """The object's bytes from PAD_SIZE on, a part at a time, as long as it is still ``info``."""
    start = gzip_form.PAD_SIZE
    while start < info.size:
        data, now = store.get(info.key, span=(start, min(start + PART_SIZE, info.size)))
        _unchanged(info, now)
        if not data:
            raise StoreUnavailable(f"{info.key} ended early while being read", "retry")
        start += len(data)
        yield data


def _unchanged(info: ObjectInfo, now: ObjectInfo) -> None:
    if now.etag != info.etag or now.size != info.size:
        raise PreconditionFailed(f"{info.key} changed while its padding was being dropped")
