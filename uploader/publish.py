"""Appending batches to a day's document, closing days and uploading quarantine, on any Store.

Every write is ``Store.compose``: the document's first bytes kept (server-side when the day is
past 5 MiB and the server copies ranges) followed by streamed pieces. An append's pieces are the
new upload entries, each one's fetches copied from its spool file as they were encoded at the
cut (never parsed or re-encoded), then the new tail. So the bytes on the wire depend on the
batches, not on the size of the day, and a group commit of any size runs in bounded memory.
Below 5 MiB (S3 copies no smaller part) the old body is read and sent again; a server that copies
no ranges gets the old body streamed from a GET into the write. Conditions (If-Match, or
If-None-Match for a new day) guard every write; a lost race (PreconditionFailed) re-reads and
retries, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from . import daily
from .errors import CapabilityLost, PreconditionFailed, StoreUnavailable
from .spool import Batch, BatchHeader, QuarantineItem, SpooledBatch
from .store import MIN_PART_SIZE, Capabilities, Store

__all__ = [
    "FIRST_SUFFIX",
    "MAX_ATTEMPTS",
    "SMALL_LIMIT",
    "AppendResult",
    "WriteCache",
    "append_batches",
    "close_day",
    "quarantine_key",
    "upload_quarantine",
]

log = logging.getLogger(__name__)

# Below this a document is rewritten whole: a multipart copy part must be at least 5 MiB.
SMALL_LIMIT = MIN_PART_SIZE
FIRST_SUFFIX = 64 * 1024
MAX_ATTEMPTS = 8
_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class AppendResult:
    """What one append (or close) did to one day's document.

    ``path`` is "new" (created), "rewrite" (the old body sent again), "tail" (server-side
    append) or "none" (nothing to write: every batch was already there, or the day already
    closed). ``etag`` is None where the server did not say.
    """

    day: date
    key: str
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    path: str = "none"
    etag: str | None = None
    attempts: int = 1
    bytes_sent: int = 0
    bytes_received: int = 0
    counters: dict[str, str] = field(default_factory=dict)  # the document's user metadata now


@dataclass
class _Edit:
    """One change, expressed both on a tail (the usual way) and on a whole parsed document (for
    a day first written in another layout, e.g. by the old logger)."""

    on_tail: Callable[[bytes], daily.TailEdit]
    on_document: Callable[[dict[str, Any]], daily.MergeResult | None]
    fetch_data: Callable[[BatchHeader], bytes] = lambda header: b""


def append_batches(
    store: Store,
    prefix: str,
    tz: pytz.BaseTzInfo,
    batches: Sequence[Batch | SpooledBatch],
    now: datetime,
    cache: WriteCache | None = None,
    on_streamed: Callable[[BatchHeader], None] = lambda header: None,
) -> AppendResult:
    """Append all ``batches`` (one day, any order) to that day's document in one write.

    Spooled batches are read one at a time while the write streams (their headers first);
    ``on_streamed`` hears of each as it goes (progress).
    Batches whose batch_id the document already lists are acknowledged, not appended again.
    Raises PreconditionFailed if other writers keep winning, StoreUnavailable / StoreRejected
    from the store, SpoolError for an unreadable batch; in every failure nothing was half-written.
    """
    if not batches:
        raise ValueError("append_batches needs at least one batch")
    sources: dict[str, Batch | SpooledBatch] = {}
    headers: dict[str, BatchHeader] = {}
    for b in batches:
        header = b.header if isinstance(b, Batch) else b.header()
        if header.batch_id not in headers or header.seq < headers[header.batch_id].seq:
            headers[header.batch_id], sources[header.batch_id] = header, b
    days = {h.day for h in headers.values()}
    if len(days) != 1:
        raise ValueError(f"append_batches takes one day at a time, got {sorted(days)}")
    unique = sorted(headers.values(), key=lambda h: h.seq)

    def fetch_data(header: BatchHeader) -> bytes:
        source = sources[header.batch_id]
        data = source.fetch_data if isinstance(source, Batch) else source.fetch_data()
        on_streamed(header)
        return data

    def on_document(doc: dict[str, Any]) -> daily.MergeResult:
        loaded = [s if isinstance(s, Batch) else s.load() for s in (sources[h.batch_id] for h in unique)]
        return daily.merge_batches(doc, loaded, now, tz)

    edit = _Edit(lambda tail: daily.append_to_tail(tail, unique, now, tz), on_document, fetch_data)
    result = _apply(store, prefix, tz, days.pop(), edit, cache)
    # The caller logs the operator-facing "upload" line; this is the store-level detail.
    log.debug(
        "publish.appended day=%s stored=%d already=%d path=%s attempts=%d sent=%d received=%d",
        result.day, len(result.stored), len(result.already), result.path, result.attempts,
        result.bytes_sent, result.bytes_received,
    )
    return result


def close_day(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, now: datetime, cache: WriteCache | None = None
) -> AppendResult:
    """Mark ``day`` closed (creating an empty closed document if it has none); idempotent."""

    def on_document(doc: dict[str, Any]) -> daily.MergeResult | None:
        if doc["daily_metadata"].get("closed"):
            return None
        return daily.MergeResult(daily.close_document(doc, now, tz))

    result = _apply(store, prefix, tz, day, _Edit(lambda tail: daily.close_tail(tail, now, tz), on_document), cache)
    log.info("publish.closed day=%s path=%s attempts=%d", day, result.path, result.attempts)
    return result


@dataclass(frozen=True)
class _Known:
    """The ETag, size and last bytes (the whole body when small) of an object we wrote."""

    etag: str
    size: int
    suffix: bytes


class WriteCache:
    """What this process last wrote to each day's document, so the next append skips HEAD + GET.

    Only used where the server honours conditional writes and said the ETag of our write: the
    next write still carries that ETag, so a change by anyone else is refused, the entry dropped,
    and the object re-read.
    """

    def __init__(self, max_entries: int = 4) -> None:
        self._entries: dict[str, _Known] = {}
        self._max = max_entries

    def get(self, key: str) -> _Known | None:
        return self._entries.get(key)

    def put(self, key: str, known: _Known) -> None:
        self._entries.pop(key, None)
        self._entries[key] = known
        while len(self._entries) > self._max:
            self._entries.pop(next(iter(self._entries)))

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)


class _Counted:
    """Pieces on their way to the store: counts them, and keeps the whole body while it is small
    (else just the last piece, the tail) for the write cache."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self._pieces = pieces
        self.sent = 0
        self.kept: list[bytes] | None = []
        self.last = b""

    def __iter__(self) -> Iterator[bytes]:
        for piece in self._pieces:
            self.sent += len(piece)
            self.last = piece
            if self.kept is not None:
                self.kept.append(piece)
                if self.sent >= SMALL_LIMIT:
                    self.kept = None  # too big to hold: the tail (last piece) is what the cache needs
            yield piece


def _apply(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, edit: _Edit, cache: WriteCache | None
) -> AppendResult:
    key = daily.day_key(prefix, day)
    received = 0
    lost: CapabilityLost | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        # Asked on every attempt: a refused feature (CapabilityLost below) changes the path.
        caps = store.capabilities()
        use_cache = cache is not None and caps.conditional_put
        known = cache.get(key) if cache is not None and use_cache else None
        try:
            if known is None:
                info = store.head(key)
                if info is None:
                    te = edit.on_tail(daily.new_tail(day, tz.zone))
                    body = _Counted(itertools.chain([daily.HEAD], te.pieces(edit.fetch_data)))
                    etag = store.compose(key, 0, body, daily.user_metadata(te.metadata), if_none_match=True)
                    _remember(cache if use_cache else None, key, etag, body, 0)
                    return _done(day, key, te, "new", etag, attempt, body.sent, received, started)
                size, etag = info.size, info.etag
            else:
                size, etag = known.size, known.etag
            whole = known.suffix if known is not None and len(known.suffix) >= size else None
            found: tuple[int, bytes] | None = None
            if whole is not None:
                found = daily.split_tail(whole, size)
            elif size < SMALL_LIMIT:
                whole, got = store.get(key)
                etag, received = got.etag, received + len(whole)
                found = daily.split_tail(whole, len(whole))
            else:
                if known is not None:
                    found = daily.split_tail(known.suffix, size)
                if found is None:
                    found, whole, etag, n = _read_tail(store, key, caps)
                    received += n
            if found is None:
                if whole is None:
                    whole, got = store.get(key)
                    etag, received = got.etag, received + len(whole)
                return _rewrite_parsed(store, key, day, edit, whole, etag, attempt, received, started)
            keep, tail = found
            te = edit.on_tail(tail)
            if not te.changed:
                return AppendResult(day, key, [], te.already, "none", etag, attempt, 0, received,
                                    daily.user_metadata(te.metadata))
            meta = daily.user_metadata(te.metadata)
            if whole is not None:
                head: Iterable[bytes] = [whole[:keep]]
                path, server_keep = "rewrite", 0
            elif keep >= SMALL_LIMIT and caps.server_side_append:
                head, path, server_keep = [], "tail", keep
            else:
                # No range copies here: stream the old body from a GET into the new object.
                head, path, server_keep = _old_body(store, key, keep, etag), "rewrite", 0
            body = _Counted(itertools.chain(head, te.pieces(edit.fetch_data)))
            new_etag = store.compose(key, server_keep, body, meta, if_match=etag)
            _remember(cache if use_cache else None, key, new_etag, body, server_keep)
            return _done(day, key, te, path, new_etag, attempt, body.sent, received, started)
        except PreconditionFailed:
            lost = None
            if cache is not None:
                cache.drop(key)
            log.info("publish.conflict key=%s attempt=%d; re-reading", key, attempt)
        except CapabilityLost as exc:
            # Nothing was written; the store no longer uses the refused feature.
            if cache is not None:
                cache.drop(key)
            log.info("publish.fallback key=%s attempt=%d reason=%s", key, attempt, exc.message)
            lost = exc
    if lost is not None:
        raise lost  # the server kept refusing features, each time one more (never expected)
    raise PreconditionFailed(
        f"{key} kept changing during {MAX_ATTEMPTS} attempts to write it",
        "another writer is active on this day; stop it (one uploader per bucket prefix) and retry",
    )


def _rewrite_parsed(
    store: Store, key: str, day: date, edit: _Edit, whole: bytes, etag: str, attempt: int, received: int,
    started: float,
) -> AppendResult:
    """A document not in our layout (e.g. the old logger's): merge parsed, write ours."""
    parsed = daily.parse(whole)
    merged = edit.on_document(parsed)
    if merged is None or (not merged.stored and merged.already):
        already = merged.already if merged else []
        return AppendResult(day, key, [], already, "none", etag, attempt, 0, received,
                            daily.user_metadata(parsed["daily_metadata"]))
    body = daily.serialize(merged.document)
    meta = daily.user_metadata(merged.document["daily_metadata"])
    new_etag = store.compose(key, 0, [body], meta, if_match=etag)
    return _done(day, key, merged, "rewrite", new_etag, attempt, len(body), received, started)


def _remember(cache: WriteCache | None, key: str, etag: str | None, body: _Counted, keep: int) -> None:
    """Cache what we just wrote, if the server told us its ETag (else the next append re-reads)."""
    if cache is None:
        return
    if etag is None:
        cache.drop(key)
        return
    size = keep + body.sent
    suffix = b"".join(body.kept) if body.kept is not None and not keep else body.last
    cache.put(key, _Known(etag, size, suffix))


def _old_body(store: Store, key: str, keep: int, etag: str) -> Iterator[bytes]:
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


def _done(
    day: date,
    key: str,
    change: daily.MergeResult | daily.TailEdit,
    path: str,
    etag: str | None,
    attempt: int,
    sent: int,
    received: int,
    started: float,
) -> AppendResult:
    log.debug("publish.written key=%s path=%s bytes=%d ms=%d", key, path, sent,
              int((time.monotonic() - started) * 1000))
    meta = change.metadata if isinstance(change, daily.TailEdit) else change.document["daily_metadata"]
    return AppendResult(day, key, list(change.stored), list(change.already), path, etag, attempt, sent, received,
                        daily.user_metadata(meta))


def _read_tail(
    store: Store, key: str, caps: Capabilities
) -> tuple[tuple[int, bytes] | None, bytes | None, str, int]:
    """Find the tail marker: growing suffix GETs, or one streamed pass where suffixes are ignored.

    Returns (found (keep, tail) or None, the whole object if it was read whole and is small, etag,
    bytes read).
    """
    if not caps.suffix_range:
        return _scan_for_tail(store, key)
    want = FIRST_SUFFIX
    read = 0
    while True:
        chunk, info = store.get(key, suffix=want)
        read += len(chunk)
        found = daily.split_tail(chunk, info.size)
        whole = chunk if len(chunk) >= info.size else None
        if found is not None or whole is not None:
            return found, whole if whole is not None and len(whole) < SMALL_LIMIT else None, info.etag, read
        # A long batch_ids list (or a foreign layout) pushed the marker further back.
        want *= 4


def _scan_for_tail(store: Store, key: str) -> tuple[tuple[int, bytes] | None, bytes | None, str, int]:
    """Read the object through once, keeping only what could hold the tail."""
    window = b""
    read = 0
    with store.stream(key) as (stream, info):
        while chunk := stream.read(_STREAM_CHUNK):
            read += len(chunk)
            found_at = (window + chunk).rfind(daily.TAIL_MARKER)
            # Keep from the last marker on (the tail), else a marker's length (it may straddle).
            window = (window + chunk)[found_at:] if found_at >= 0 else (window + chunk)[-len(daily.TAIL_MARKER):]
    found = daily.split_tail(window, read)
    return found, None, info.etag, read


def quarantine_key(prefix: str, name: str) -> str:
    """Where a quarantined record lives in the bucket."""
    return f"{prefix.strip('/')}/quarantine/{name}"


def upload_quarantine(store: Store, prefix: str, item: QuarantineItem) -> str:
    """Store the quarantined bytes verbatim; return the key. Uploading twice stores it once."""
    key = quarantine_key(prefix, item.name)
    meta = {
        "reason": _header_safe(item.reason),
        "offset": str(item.offset),
        "detected-at": _header_safe(item.detected_at),
        "day": item.day.isoformat() if item.day else "",
    }
    caps = store.capabilities()
    existing = None if caps.conditional_put else store.head(key)
    if existing is None:
        try:
            store.put(key, item.raw, meta, if_none_match=caps.conditional_put)
            log.info("publish.quarantined key=%s bytes=%d offset=%d", key, len(item.raw), item.offset)
            return key
        except PreconditionFailed:
            existing = store.head(key)
    if existing is not None and existing.size == len(item.raw):
        log.info("publish.quarantine_already key=%s", key)
        return key
    # Same name, different bytes: keep both rather than overwrite evidence.
    digest = hashlib.sha256(item.raw).hexdigest()[:12]
    other = f"{key}-{digest}"
    store.put(other, item.raw, meta)
    log.warning("publish.quarantine_renamed key=%s reason=name_taken", other)
    return other


def _header_safe(text: str, limit: int = 512) -> str:
    # x-amz-meta-* values travel as HTTP headers: ASCII only, one line.
    flat = " ".join(text.split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")[:limit]
