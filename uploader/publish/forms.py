"""Which form a day's document is stored in (plain JSON or gzip, DESIGN §5.10), and what each
form means for an append: where its tail starts, and how the new bytes are encoded.

A day keeps the form it was started in: the configured compression decides only for a day that
has no document yet, so changing the setting never leaves one day in two objects.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from uploader import daily
from uploader.config import Compression
from uploader.daily import gzip_form
from uploader.errors import EncryptionRefused, PreconditionFailed
from uploader.local.batch import BatchHeader
from uploader.publish.cache import WriteCache
from uploader.store import ObjectInfo, Store

__all__ = ["DayForm", "day_document_key", "ensure_pad", "find_form", "head_day", "pad_key"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayForm:
    """One day's document in one form: its key (``name``: the stream's document name pattern,
    ``daily.DEFAULT_NAME`` unless it names its own), and the form's bytes."""

    prefix: str
    day: date
    compression: Compression
    name: str = daily.DEFAULT_NAME

    @property
    def key(self) -> str:
        return daily.day_key(self.prefix, self.day, gzip=self.gzip, name=self.name)

    @property
    def gzip(self) -> bool:
        return self.compression is Compression.GZIP

    @property
    def tail_marker(self) -> bytes:
        """Bytes that start the stored tail (a scan keeps from their last occurrence on)."""
        return gzip_form.TAIL_SIGNATURE if self.gzip else daily.TAIL_MARKER

    def split_tail(self, suffix: bytes, object_size: int) -> tuple[int, bytes] | None:
        """(stored bytes before the tail, the tail as plain bytes), or None: read more."""
        split = gzip_form.split_tail if self.gzip else daily.split_tail
        return split(suffix, object_size)

    def plain(self, stored: bytes) -> bytes:
        """A whole stored document as JSON bytes."""
        return gzip_form.decompress(stored) if self.gzip and gzip_form.is_gzip(stored) else stored

    def reencoded(self, document: bytes) -> bytes:
        """A whole document (serialized in our layout) as this form stores it."""
        if not self.gzip:
            return document
        found = daily.split_tail(document, len(document))
        assert found is not None  # serialize writes our layout
        keep, tail = found
        return b"".join(gzip_form.compress_member([document[:keep]])) + gzip_form.tail_member(tail)

    def new_bytes(
        self, opening: Iterable[bytes], change: daily.TailEdit, fetch_data: Callable[[BatchHeader], bytes]
    ) -> Iterator[bytes]:
        """What follows the kept bytes: ``opening`` (a new document's head), the new entries and
        the new tail; in gzip, one member for the entries and the tail member, compressed as
        the batches stream."""
        if not self.gzip:
            yield from opening
            yield from change.pieces(fetch_data)
            return
        yield from gzip_form.compress_member(itertools.chain(opening, change.entry_pieces(fetch_data)))
        yield gzip_form.tail_member(change.tail)


def find_form(
    store: Store, prefix: str, day: date, compression: Compression, cache: WriteCache | None,
    name: str = daily.DEFAULT_NAME,
) -> tuple[DayForm, ObjectInfo | None]:
    """The form ``day``'s document (named by ``name``) is in, and its HEAD (None: our cache knows
    it, or it has no document yet, and then it takes the configured ``compression``)."""
    other = Compression.NONE if compression is Compression.GZIP else Compression.GZIP
    forms = [DayForm(prefix, day, compression, name), DayForm(prefix, day, other, name)]
    for form in forms:
        if cache is not None and cache.get(form.key) is not None:
            return form, None
    for form in forms:
        info = store.head(form.key)
        if info is not None:
            return form, info
    return forms[0], None


def head_day(store: Store, prefix: str, day: date, name: str = daily.DEFAULT_NAME) -> ObjectInfo | None:
    """The HEAD of ``day``'s document, whichever form it is in; None if it has none."""
    return find_form(store, prefix, day, Compression.NONE, None, name)[1]


def day_document_key(store: Store, prefix: str, day: date, name: str = daily.DEFAULT_NAME) -> str:
    """The key ``day``'s document is stored under, plain or gzip (the plain one if it has none)."""
    return find_form(store, prefix, day, Compression.NONE, None, name)[0].key


def pad_key(prefix: str) -> str:
    return f"{prefix.strip('/')}/{gzip_form.PAD_NAME}"


def ensure_pad(store: Store, prefix: str) -> str:
    """The key of the padding object a new gzip day copies, written first if it is missing (once
    per bucket prefix: 5 MiB, never sent again)."""
    key = pad_key(prefix)
    conditions: dict[str, Any] = {}
    try:
        info = store.head(key)
    except EncryptionRefused:
        info = None  # written under another SSE-C key, so no copy of it could be read: replaced
    else:
        if info is not None and info.size == gzip_form.PAD_SIZE:
            return key
        conditions = {"if_match": info.etag} if info is not None else {"if_none_match": True}
    try:
        store.put(key, gzip_form.pad(), {"purpose": "uploader-gzip-padding"}, **conditions)
        log.info("publish.pad_written key=%s bytes=%d", key, gzip_form.PAD_SIZE)
    except PreconditionFailed:
        pass  # written meanwhile: checked again by the next new day
    return key
