"""Appending batches to a day's document, closing days and uploading quarantine, on any Store.

Small documents (< 5 MiB) are read whole and written back with If-Match (or If-None-Match for a
new day) when the server honours it. Larger ones are appended to server-side: a suffix GET reads
only the tail, and ``Store.replace_tail`` keeps the body on the server, so the bytes on the wire
per append depend on the batch, not on the size of the day. A lost race (PreconditionFailed)
re-reads and retries, a bounded number of times.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from . import daily
from .errors import CapabilityLost, PreconditionFailed
from .spool import Batch, QuarantineItem
from .store import MIN_PART_SIZE, Store

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


@dataclass(frozen=True)
class AppendResult:
    """What one append (or close) did to one day's document.

    ``path`` is "new" (created), "rewrite" (whole GET + PUT), "tail" (server-side append) or
    "none" (nothing to write: every batch was already there, or the day already closed).
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


@dataclass
class _Edit:
    """One change, expressed both on a whole document and on a tail (daily.py does the work)."""

    on_document: Callable[[dict[str, Any]], daily.MergeResult | None]
    on_tail: Callable[[bytes], daily.TailEdit]


def append_batches(
    store: Store,
    prefix: str,
    tz: pytz.BaseTzInfo,
    batches: list[Batch],
    now: datetime,
    cache: WriteCache | None = None,
) -> AppendResult:
    """Append all ``batches`` (one day, any order) to that day's document in one write.

    Batches whose batch_id the document already lists are acknowledged, not appended again.
    Raises PreconditionFailed if other writers keep winning, and StoreUnavailable /
    StoreRejected from the store; in every failure case nothing was half-written.
    """
    if not batches:
        raise ValueError("append_batches needs at least one batch")
    days = {b.day for b in batches}
    if len(days) != 1:
        raise ValueError(f"append_batches takes one day at a time, got {sorted(days)}")
    unique = list({b.batch_id: b for b in sorted(batches, key=lambda b: b.seq)}.values())

    def on_document(doc: dict[str, Any]) -> daily.MergeResult:
        return daily.merge_batches(doc, unique, now, tz)

    def on_tail(tail: bytes) -> daily.TailEdit:
        return daily.append_to_tail(tail, unique, now, tz)

    result = _apply(store, prefix, tz, days.pop(), _Edit(on_document, on_tail), cache)
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

    def on_tail(tail: bytes) -> daily.TailEdit:
        return daily.close_tail(tail, now, tz)

    result = _apply(store, prefix, tz, day, _Edit(on_document, on_tail), cache)
    log.info("publish.closed day=%s path=%s attempts=%d", day, result.path, result.attempts)
    return result


@dataclass(frozen=True)
class _Known:
    """The ETag, size and last bytes (the whole body when small) of an object we wrote."""

    etag: str
    size: int
    suffix: bytes


def _tail_only(etag: str, size: int, written: bytes) -> _Known:
    """What to remember of a write: the whole body while small, else just the tail's bytes.

    Past SMALL_LIMIT the next append needs only the tail, so holding the uploads just sent
    (up to a whole group commit) would only cost memory.
    """
    if size < SMALL_LIMIT:
        return _Known(etag, size, written)
    found = daily.split_tail(written, size)
    if found is None:  # pragma: no cover - we just wrote it in our own layout
        return _Known(etag, size, written)
    return _Known(etag, size, written[len(written) - (size - found[0]):])


class WriteCache:
    """What this process last wrote to each day's document, so the next append skips HEAD + GET.

    Only used where the server honours conditional writes: the write still carries the cached
    ETag, so a change by anyone else is refused, the entry dropped, and the object re-read.
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


def _apply(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, edit: _Edit, cache: WriteCache | None
) -> AppendResult:
    key = daily.day_key(prefix, day)
    sent = received = 0
    lost: CapabilityLost | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        # Asked on every attempt: a refused feature (CapabilityLost below) changes the path.
        caps = store.capabilities()
        remember = cache.put if cache is not None and caps.conditional_put else _forget
        known = cache.get(key) if cache is not None and caps.conditional_put else None
        try:
            if known is None:
                info = store.head(key)
                if info is None:
                    merged = edit.on_document(daily.new_document(day, tz.zone))
                    if merged is None:  # pragma: no cover - a new document always changes
                        return AppendResult(day, key, attempts=attempt)
                    body = daily.serialize(merged.document)
                    meta = daily.user_metadata(merged.document["daily_metadata"])
                    etag = store.put(key, body, meta, if_none_match=caps.conditional_put)
                    remember(key, _Known(etag, len(body), body))
                    return _done(day, key, merged, "new", etag, attempt, sent + len(body), received, started)
                size, etag = info.size, info.etag
            else:
                size, etag = known.size, known.etag

            whole = known.suffix if known is not None and len(known.suffix) >= size else None
            found: tuple[int, bytes] | None = None
            if size >= SMALL_LIMIT and caps.server_side_append:
                if known is not None:
                    found = daily.split_tail(known.suffix, size)
                if found is None:
                    found, whole, etag, n = _read_tail(store, key)
                    received += n
                if found is not None and found[0] < SMALL_LIMIT:
                    found = None  # the body is too small for a copy part: rewrite it whole
            server_side = found is not None
            if whole is None and not server_side:
                whole, got = store.get(key)
                etag = got.etag
                received += len(whole)
            if whole is not None and not server_side:
                found = daily.split_tail(whole, len(whole))
            if found is not None:
                # Our layout: edit only the tail bytes, never parse or re-encode the whole day.
                keep, tail = found
                te = edit.on_tail(tail)
                if not te.data:
                    return AppendResult(day, key, [], te.already, "none", etag, attempt, sent, received)
                meta = daily.user_metadata(te.metadata)
                if server_side or whole is None:
                    new_etag = store.replace_tail(key, keep, te.data, meta, if_match=etag)
                    sent += len(te.data)
                    if caps.complete_etag:
                        remember(key, _tail_only(new_etag, keep + len(te.data), te.data))
                    return _done(day, key, te, "tail", new_etag, attempt, sent, received, started)
                # Below 5 MiB S3 has no way to keep the body server-side: PUT it whole.
                body = whole[:keep] + te.data
                new_etag = store.put(key, body, meta, if_match=etag if caps.conditional_put else None)
                remember(key, _tail_only(new_etag, len(body), body))
                return _done(day, key, te, "rewrite", new_etag, attempt, sent + len(body), received, started)
            assert whole is not None  # not server-side, so the whole object was read above
            # Not our layout (e.g. a day first written by the old logger): merge the parsed document.
            merged = edit.on_document(daily.parse(whole))
            if merged is None or (not merged.stored and merged.already):
                already = merged.already if merged else []
                return AppendResult(day, key, [], already, "none", etag, attempt, sent, received)
            body = daily.serialize(merged.document)
            meta = daily.user_metadata(merged.document["daily_metadata"])
            new_etag = store.put(key, body, meta, if_match=etag if caps.conditional_put else None)
            remember(key, _tail_only(new_etag, len(body), body))
            return _done(day, key, merged, "rewrite", new_etag, attempt, sent + len(body), received, started)
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


def _forget(key: str, known: _Known) -> None:
    """The write cache's ``put`` where there is no cache (or no ETag guard to trust it with)."""


def _done(
    day: date,
    key: str,
    change: daily.MergeResult | daily.TailEdit,
    path: str,
    etag: str,
    attempt: int,
    sent: int,
    received: int,
    started: float,
) -> AppendResult:
    log.debug("publish.written key=%s path=%s bytes=%d ms=%d", key, path, sent,
              int((time.monotonic() - started) * 1000))
    return AppendResult(day, key, list(change.stored), list(change.already), path, etag, attempt, sent, received)


def _read_tail(store: Store, key: str) -> tuple[tuple[int, bytes] | None, bytes | None, str, int]:
    """Read growing suffixes until the tail marker shows up.

    Returns (found (keep, tail) or None, the whole object if a suffix covered it, etag, bytes read).
    """
    want = FIRST_SUFFIX
    read = 0
    while True:
        chunk, info = store.get(key, suffix=want)
        read += len(chunk)
        found = daily.split_tail(chunk, info.size)
        whole = chunk if len(chunk) >= info.size else None
        if found is not None or whole is not None:
            return found, whole, info.etag, read
        # A long batch_ids list (or a foreign layout) pushed the marker further back.
        want *= 4


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
