"""Appending batches to a day's document and closing days, on any Store.

Every write is ``Store.compose``: the document's first bytes kept (server-side when the day is
past 5 MiB and the server copies ranges) followed by streamed pieces. An append's pieces are the
new upload entries, each one's fetches copied from its spool file as they were encoded at the
cut (never parsed or re-encoded), then the new tail. So the bytes on the wire depend on the
batches, not on the size of the day, and a group commit of any size runs in bounded memory.
Below 5 MiB (S3 copies no smaller part) the old body is read and sent again; a server that copies
no ranges gets the old body streamed from a GET into the write. Conditions (If-Match, or
If-None-Match for a new day) guard every write; a lost race (PreconditionFailed) re-reads and
retries, a bounded number of times.

Which path a write takes is ``plan.choose_plan``, a pure function of what was read of the
document and of what the server honours; ``_apply`` reads, asks it, and carries the plan out.
Our own last write per day is kept in a ``cache.WriteCache``; quarantined spans go to the bucket
through ``publish.quarantine``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from uploader import daily
from uploader.config import Compression
from uploader.daily import gzip_form
from uploader.errors import CapabilityLost, PreconditionFailed, StoreUnavailable
from uploader.local.batch import Batch, BatchHeader
from uploader.local.spool import SpooledBatch
from uploader.publish.cache import CachedWrite, CountedBody, WriteCache
from uploader.publish.forms import DayForm, ensure_pad, find_form
from uploader.publish.plan import (
    SMALL_LIMIT,
    AppendPath,
    Body,
    DocumentState,
    Layout,
    WritePlan,
    choose_plan,
)
from uploader.store import ObjectInfo, Store
from uploader.store.capabilities import Capabilities

__all__ = [
    "FIRST_SUFFIX",
    "MAX_ATTEMPTS",
    "SMALL_LIMIT",
    "AppendPath",
    "AppendResult",
    "append_batches",
    "close_day",
]

log = logging.getLogger(__name__)

FIRST_SUFFIX = 64 * 1024
MAX_ATTEMPTS = 8
_STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class AppendResult:
    """What one append (or close) did to one day's document.

    ``path`` says how it was written (``choose_plan``); ``etag`` is None where the server did
    not say; ``capabilities`` are the server's, as the write was planned with them.
    """

    day: date
    key: str
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    path: AppendPath = AppendPath.NONE
    etag: str | None = None
    attempts: int = 1
    bytes_sent: int = 0
    bytes_received: int = 0
    counters: dict[str, str] = field(default_factory=dict)  # the document's user metadata now
    capabilities: Capabilities | None = None


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
    compression: Compression = Compression.NONE,
) -> AppendResult:
    """Append all ``batches`` (one day, any order) to that day's document in one write.

    Spooled batches are read one at a time while the write streams (their headers first);
    ``on_streamed`` hears of each as it goes (progress).
    Batches whose batch_id the document already lists are acknowledged, not appended again.
    A new day is stored as ``compression`` says; a day that exists keeps its form.
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
    result = _apply(store, prefix, tz, days.pop(), edit, cache, compression)
    # The caller logs the operator-facing "upload" line; this is the store-level detail.
    log.debug(
        "publish.appended day=%s stored=%d already=%d path=%s attempts=%d sent=%d received=%d",
        result.day, len(result.stored), len(result.already), result.path, result.attempts,
        result.bytes_sent, result.bytes_received,
    )
    return result


def close_day(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, now: datetime, cache: WriteCache | None = None,
    compression: Compression = Compression.NONE,
) -> AppendResult:
    """Mark ``day`` closed (creating an empty closed document if it has none); idempotent."""

    def on_document(doc: dict[str, Any]) -> daily.MergeResult | None:
        if doc["daily_metadata"].get("closed"):
            return None
        return daily.MergeResult(daily.close_document(doc, now, tz))

    result = _apply(store, prefix, tz, day, _Edit(lambda tail: daily.close_tail(tail, now, tz), on_document), cache,
                    compression)
    log.info("publish.closed day=%s path=%s attempts=%d", day, result.path, result.attempts)
    return result


@dataclass(frozen=True)
class _Seen:
    """The day's document, which exists, as one attempt read it: what the write needs of it."""

    etag: str
    whole: bytes | None = None  # the whole body, where it is in memory
    found: tuple[int, bytes] | None = None  # our layout: (bytes before the tail, the tail)
    received: int = 0  # bytes this attempt's reads took

    @property
    def keep(self) -> int:
        """Bytes before the tail, which the new document keeps (none without our layout)."""
        return self.found[0] if self.found is not None else 0


@dataclass(frozen=True)
class _Reencoded:
    """An edit of a document in another layout: parsed whole and merged, to be written in ours."""

    document: dict[str, Any]  # after the edit (the one parsed, where nothing changes)
    changed: bool
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.document["daily_metadata"]
        return meta


@dataclass(frozen=True)
class _Attempt:
    """One try at writing a day's document, for its result and its log line."""

    day: date
    key: str
    number: int
    received: int  # over every attempt so far: each re-read costs bytes too
    started: float
    caps: Capabilities  # what the server honours, as this attempt planned with


def _apply(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, edit: _Edit, cache: WriteCache | None,
    compression: Compression,
) -> AppendResult:
    """Read the day's document, choose the path (``choose_plan``), write. A lost race (412)
    re-reads and retries; so does a feature the server refused, now on its fallback path."""
    received = 0
    lost: CapabilityLost | None = None
    for number in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        # Asked on every attempt: a refused feature (CapabilityLost below) changes the path.
        caps = store.capabilities()
        # Our own last write is trusted only where the write carrying its ETag is refused if stale.
        mine = cache if caps.conditional_put else None
        form, info = find_form(store, prefix, day, compression, mine)
        key = form.key
        try:
            seen = _read(store, key, form, caps, mine.get(key) if mine is not None else None, info)
            received += seen.received if seen is not None else 0
            change = _edit_document(edit, seen, day, tz, form)
            plan = choose_plan(_state(seen, change, form), caps)
            attempt = _Attempt(day, key, number, received, started, caps)
            return _carry_out(store, edit, plan, seen, change, mine, attempt, form)
        except PreconditionFailed:
            lost = None
            if cache is not None:
                cache.drop(key)
            log.info("publish.conflict key=%s attempt=%d; re-reading", key, number)
        except CapabilityLost as exc:
            # Nothing was written; the store no longer uses the refused feature.
            if cache is not None:
                cache.drop(key)
            log.info("publish.fallback key=%s attempt=%d reason=%s", key, number, exc.message)
            lost = exc
    if lost is not None:
        raise lost  # the server kept refusing features, each time one more (never expected)
    raise PreconditionFailed(
        f"{key} kept changing during {MAX_ATTEMPTS} attempts to write it",
        "another writer is active on this day; stop it (one uploader per bucket prefix) and retry",
    )


def _read(
    store: Store, key: str, form: DayForm, caps: Capabilities, known: CachedWrite | None, info: ObjectInfo | None,
) -> _Seen | None:
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
        return _Seen(etag, known.suffix, form.split_tail(known.suffix, size))
    if size < SMALL_LIMIT:
        body, got = store.get(key)
        return _Seen(got.etag, body, form.split_tail(body, len(body)), len(body))
    found = form.split_tail(known.suffix, size) if known is not None else None
    if found is not None:
        return _Seen(etag, found=found)
    found, whole, etag, received = _read_tail(store, form, caps)
    if found is None and whole is None:  # not our layout: it is parsed whole
        whole, got = store.get(key)
        etag, received = got.etag, received + len(whole)
    return _Seen(etag, whole, found, received)


def _edit_document(
    edit: _Edit, seen: _Seen | None, day: date, tz: pytz.BaseTzInfo, form: DayForm
) -> daily.TailEdit | _Reencoded:
    """The edit applied to what was read: to the tail (of a new document, too), or to the parsed
    whole of a document in another layout."""
    if seen is None:
        return edit.on_tail(daily.new_tail(day, tz.zone))
    if seen.found is not None:
        return edit.on_tail(seen.found[1])
    assert seen.whole is not None  # _read gets the whole of a document it found no tail in
    parsed = daily.parse(form.plain(seen.whole))
    merged = edit.on_document(parsed)
    if merged is None:  # closing a day closed already
        return _Reencoded(parsed, changed=False)
    # Batches it all lists already: nothing to write, and its layout is left as it is.
    changed = bool(merged.stored) or not merged.already
    return _Reencoded(merged.document if changed else parsed, changed, merged.stored, merged.already)


def _state(seen: _Seen | None, change: daily.TailEdit | _Reencoded, form: DayForm) -> DocumentState:
    """The facts ``choose_plan`` decides on."""
    if seen is None:
        return DocumentState(Layout.ABSENT, changes=change.changed, gzip=form.gzip)
    layout = Layout.FOREIGN if seen.found is None else Layout.OURS
    return DocumentState(layout, seen.keep, held=seen.whole is not None, changes=change.changed, gzip=form.gzip)


def _carry_out(
    store: Store, edit: _Edit, plan: WritePlan, seen: _Seen | None, change: daily.TailEdit | _Reencoded,
    cache: WriteCache | None, attempt: _Attempt, form: DayForm,
) -> AppendResult:
    """Write as ``plan`` says, conditional on the ETag read (or, for a new day, on absence)."""
    key = attempt.key
    etag = seen.etag if seen is not None else None
    meta = daily.user_metadata(change.metadata)
    if plan.path is AppendPath.NONE:
        return AppendResult(attempt.day, key, [], list(change.already), plan.path, etag, attempt.number, 0,
                            attempt.received, meta, attempt.caps)
    if isinstance(change, _Reencoded):
        whole = form.reencoded(daily.serialize(change.document))
        return _done(attempt, change, plan, store.compose(key, 0, [whole], meta, if_match=etag), len(whole))
    keep = seen.keep if seen is not None else 0
    server_keep, source = keep if plan.body is Body.COPIED else 0, None
    if plan.body is Body.PADDING:
        server_keep, source = gzip_form.PAD_SIZE, ensure_pad(store, form.prefix)
    kept = _kept_bytes(store, key, plan, seen, keep)
    opening = [daily.HEAD] if plan.body in (Body.OPENING, Body.PADDING) else []
    body = CountedBody(itertools.chain(kept, form.new_bytes(opening, change, edit.fetch_data)))
    new = plan.path is AppendPath.NEW
    new_etag = store.compose(key, server_keep, body, meta, if_match=None if new else etag, if_none_match=new,
                             source=source)
    if cache is not None:
        cache.remember(key, new_etag, body, server_keep)
    return _done(attempt, change, plan, new_etag, body.sent)


def _kept_bytes(store: Store, key: str, plan: WritePlan, seen: _Seen | None, keep: int) -> Iterable[bytes]:
    """What the client sends of the old body (up to its tail) before the new bytes, per ``plan.body``."""
    if plan.body in (Body.OPENING, Body.PADDING, Body.COPIED):
        return []  # nothing, or the server copies the first bytes itself
    assert seen is not None  # only a new document keeps nothing
    if plan.body is Body.HELD:
        assert seen.whole is not None
        return [seen.whole[:keep]]
    return _old_body(store, key, keep, seen.etag)  # Body.STREAMED


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
    attempt: _Attempt, change: daily.TailEdit | _Reencoded, plan: WritePlan, etag: str | None, sent: int
) -> AppendResult:
    log.debug("publish.written key=%s path=%s guard=%s bytes=%d ms=%d", attempt.key, plan.path, plan.guard, sent,
              int((time.monotonic() - attempt.started) * 1000))
    return AppendResult(attempt.day, attempt.key, list(change.stored), list(change.already), plan.path, etag,
                        attempt.number, sent, attempt.received, daily.user_metadata(change.metadata), attempt.caps)


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
