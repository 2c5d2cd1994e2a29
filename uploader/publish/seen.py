"""What an append reads of a day's document before writing it, as little as it can: nothing when
our own last write is known whole, one GET below 5 MiB, else the tail alone, found by growing
suffix GETs (or one streamed pass where the server ignores suffixes); the whole body where it is
not in our layout. And the old body streamed back, for a server that copies no ranges."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from uploader.errors import PreconditionFailed, StoreUnavailable
from uploader.publish.cache import CachedWrite
from uploader.publish.forms import DayForm
from uploader.publish.plan import SMALL_LIMIT
from uploader.store import ObjectInfo, Store
from uploader.store.capabilities import Capabilities

__all__ = ["FIRST_SUFFIX", "Seen", "old_body", "read_day"]

FIRST_SUFFIX = 64 * 1024
_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class Seen:
    """The day's document, which exists, as one attempt read it: what the write needs of it."""

    etag: str
    whole: bytes | None = None  # the whole body, where it is in memory
    found: tuple[int, bytes] | None = None  # our layout: (bytes before the tail, the tail)
    received: int = 0  # bytes this attempt's reads took

    @property
    def keep(self) -> int:
        """Bytes before the tail, which the new document keeps (none without our layout)."""
        return self.found[0] if self.found is not None else 0


def read_day(
    store: Store, key: str, form: DayForm, caps: Capabilities, known: CachedWrite | None, info: ObjectInfo | None,
) -> Seen | None:
    """What the write needs of the day's document (None: there is none), read as cheaply as it
    can be: nothing when our own last write is known whole, one GET below 5 MiB, else only the
    tail; and the whole body where it is not in our layout, to be parsed. ``info``: its HEAD
    (None without ``known``: there is no document)."""
    if known is None:
        if info is None:
            return None
        size, etag = info.size, info.etag
    else:
        size, etag = known.size, known.etag
    if known is not None and len(known.suffix) >= size:
        return Seen(etag, known.suffix, form.split_tail(known.suffix, size))
    if size < SMALL_LIMIT:
        body, got = store.get(key)
        return Seen(got.etag, body, form.split_tail(body, len(body)), len(body))
    found = form.split_tail(known.suffix, size) if known is not None else None
    if found is not None:
        return Seen(etag, found=found)
    found, whole, etag, received = _read_tail(store, form, caps)
    if found is None and whole is None:  # not our layout: it is parsed whole
        whole, got = store.get(key)
        etag, received = got.etag, received + len(whole)
    return Seen(etag, whole, found, received)


def old_body(store: Store, key: str, keep: int, etag: str) -> Iterator[bytes]:
    """The first ``keep`` bytes of the object, streamed from a GET (bounded memory), if unchanged."""
    with store.stream(key) as (stream, info):
        if info.etag != etag:
            raise PreconditionFailed(f"{key} changed since its tail was read")
        left = keep
        while left:
            chunk = stream.read(min(_STREAM_CHUNK, left))
            if not chunk:
                raise StoreUnavailable(f"{key} ended early while being read", "retry")
            left -= len(chunk)
            yield chunk


def _read_tail(
    store: Store, form: DayForm, caps: Capabilities
) -> tuple[tuple[int, bytes] | None, bytes | None, str, int]:
    """Find the tail marker: growing suffix GETs, or one streamed pass where suffixes are ignored.

    Returns (found (keep, tail) or None, the whole object if it was read whole and is small, etag,
    bytes read).
    """
    if not caps.suffix_range:
        return _scan_for_tail(store, form)
    want = FIRST_SUFFIX
    read = 0
    while True:
        chunk, info = store.get(form.key, suffix=want)
        read += len(chunk)
        found = form.split_tail(chunk, info.size)
        whole = chunk if len(chunk) >= info.size else None
        if found is not None or whole is not None:
            return found, whole if whole is not None and len(whole) < SMALL_LIMIT else None, info.etag, read
        # A long batch_ids list (or a foreign layout) pushed the marker further back.
        want *= 4


def _scan_for_tail(store: Store, form: DayForm) -> tuple[tuple[int, bytes] | None, bytes | None, str, int]:
    """Read the object through once, keeping only what could hold the tail."""
    window = b""
    read = 0
    marker = form.tail_marker
    with store.stream(form.key) as (stream, info):
        while chunk := stream.read(_STREAM_CHUNK):
            read += len(chunk)
            found_at = (window + chunk).rfind(marker)
            # Keep from the last marker on (the tail), else a marker's length (it may straddle).
            window = (window + chunk)[found_at:] if found_at >= 0 else (window + chunk)[-len(marker):]
    found = form.split_tail(window, read)
    return found, None, info.etag, read
