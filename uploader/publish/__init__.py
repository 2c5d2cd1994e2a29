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
What is read first is ``seen.read_day``'s; our own last write per day is kept in a
``cache.WriteCache``, the batch ids each day lists in a ``listed.ListedIndex``; a closed gzip
day loses its padding in ``trim``; quarantined spans go to the bucket through
``publish.quarantine``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from uploader import daily
from uploader.config import Compression
from uploader.daily import gzip_form
from uploader.errors import CapabilityLost, PreconditionFailed
from uploader.local.batch import Batch, BatchHeader
from uploader.local.spool import SpooledBatch
from uploader.publish.cache import CountedBody, WriteCache
from uploader.publish.forms import DayForm, ensure_pad, find_form
from uploader.publish.listed import ListedIndex
from uploader.publish.plan import (
    SMALL_LIMIT,
    AppendPath,
    Body,
    DocumentState,
    Layout,
    WritePlan,
    choose_plan,
)
from uploader.publish.seen import FIRST_SUFFIX, Seen, old_body, read_day
from uploader.publish.trim import drop_padding
from uploader.store import Store
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

MAX_ATTEMPTS = 8


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

    on_tail: Callable[[bytes, Callable[[dict[str, Any]], daily.ListedIds]], daily.TailEdit]
    on_document: Callable[[dict[str, Any]], daily.MergeResult | None]
    fetch_data: Callable[[BatchHeader], bytes] = lambda header: b""
    batch_ids: Sequence[str] = ()  # of the batches it appends, in order


def append_batches(
    store: Store,
    prefix: str,
    tz: pytz.BaseTzInfo,
    batches: Sequence[Batch | SpooledBatch],
    now: datetime,
    cache: WriteCache | None = None,
    on_streamed: Callable[[BatchHeader], None] = lambda header: None,
    compression: Compression = Compression.NONE,
    listed: ListedIndex | None = None,
    name: str = daily.DEFAULT_NAME,
) -> AppendResult:
    """Append all ``batches`` (one day, any order) to that day's document in one write.

    Spooled batches are read one at a time while the write streams (their headers first);
    ``on_streamed`` hears of each as it goes (progress).
    Batches whose batch_id the document already lists are acknowledged, not appended again.
    A new day is stored as ``compression`` says; a day that exists keeps its form. ``listed``
    knows the ids each day lists (without it, a day is read whole to learn them). ``name``: the
    stream's document name pattern (``daily.day_key``).
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

    edit = _Edit(lambda tail, ids: daily.append_to_tail(tail, unique, now, tz, ids), on_document, fetch_data,
                 [h.batch_id for h in unique])
    result = _apply(store, prefix, tz, days.pop(), edit, cache, compression, name, listed)
    # The caller logs the operator-facing "upload" line; this is the store-level detail.
    log.debug(
        "publish.appended day=%s stored=%d already=%d path=%s attempts=%d sent=%d received=%d",
        result.day, len(result.stored), len(result.already), result.path, result.attempts,
        result.bytes_sent, result.bytes_received,
    )
    return result


def close_day(
    store: Store, prefix: str, tz: pytz.BaseTzInfo, day: date, now: datetime, cache: WriteCache | None = None,
    compression: Compression = Compression.NONE, name: str = daily.DEFAULT_NAME,
) -> AppendResult:
    """Mark ``day`` closed (creating an empty closed document if it has none); idempotent.

    A gzip day's padding is then dropped (``trim.drop_padding``), also when the day was closed
    already: a close killed before that is finished by the next.
    """

    def on_document(doc: dict[str, Any]) -> daily.MergeResult | None:
        if doc["daily_metadata"].get("closed"):
            return None
        return daily.MergeResult(daily.close_document(doc, now, tz))

    result = _apply(store, prefix, tz, day, _Edit(lambda tail, ids: daily.close_tail(tail, now, tz), on_document),
                    cache, compression, name)
    log.info("publish.closed day=%s path=%s attempts=%d", day, result.path, result.attempts)

    return drop_padding(store, result, cache)


@dataclass(frozen=True)
class _Reencoded:
    """An edit of a document in another layout: parsed whole and merged, to be written in ours."""

    document: dict[str, Any]  # after the edit (the one parsed, where nothing changes)
    changed: bool
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    listed: daily.ListedIds | None = None

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
    compression: Compression, name: str, listed: ListedIndex | None = None,
) -> AppendResult:
    """Read the day's document, choose the path (``choose_plan``), write. A lost race (412)
    re-reads and retries; so does a feature the server refused, now on its fallback path.
    ``listed``: where an append learns the ids the document lists, and notes them after."""
    received = 0
    lost: CapabilityLost | None = None
    listed = listed or ListedIndex()
    for number in range(1, MAX_ATTEMPTS + 1):
        started = time.monotonic()
        # Asked on every attempt: a refused feature (CapabilityLost below) changes the path.
        caps = store.capabilities()
        # Our own last write is trusted only where the write carrying its ETag is refused if stale.
        mine = cache if caps.conditional_put else None
        form, info = find_form(store, prefix, day, compression, mine, name)
        key = form.key
        try:
            seen = read_day(store, key, form, caps, mine.get(key) if mine is not None else None, info)
            received += seen.received if seen is not None else 0
            read_before = listed.bytes_read
            change = _edit_document(edit, seen, day, tz, form, _ids_of(store, key, day, edit, listed))
            received += listed.bytes_read - read_before
            plan = choose_plan(_state(seen, change, form), caps)
            attempt = _Attempt(day, key, number, received, started, caps)
            result = _carry_out(store, edit, plan, seen, change, mine, attempt, form)
            if change.listed is not None:
                listed.remember(key, change.listed)
            return result
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


def _ids_of(
    store: Store, key: str, day: date, edit: _Edit, listed: ListedIndex
) -> Callable[[dict[str, Any]], daily.ListedIds]:
    """How an append learns the ids the document at ``key`` lists, from its tail's metadata."""
    return lambda meta: listed.listed(store, key, day, meta, edit.batch_ids)


def _edit_document(
    edit: _Edit, seen: Seen | None, day: date, tz: pytz.BaseTzInfo, form: DayForm,
    ids: Callable[[dict[str, Any]], daily.ListedIds],
) -> daily.TailEdit | _Reencoded:
    """The edit applied to what was read: to the tail (of a new document, too), or to the parsed
    whole of a document in another layout."""
    if seen is None:
        return edit.on_tail(daily.new_tail(day, tz.zone), lambda meta: daily.ListedIds())
    if seen.found is not None:
        return edit.on_tail(seen.found[1], ids)
    assert seen.whole is not None  # _read gets the whole of a document it found no tail in
    parsed = daily.parse(form.plain(seen.whole))
    merged = edit.on_document(parsed)
    if merged is None:  # closing a day closed already
        return _Reencoded(parsed, changed=False)
    # Batches it all lists already: nothing to write, and its layout is left as it is.
    changed = bool(merged.stored) or not merged.already
    return _Reencoded(merged.document if changed else parsed, changed, merged.stored, merged.already, merged.listed)


def _state(seen: Seen | None, change: daily.TailEdit | _Reencoded, form: DayForm) -> DocumentState:
    """The facts ``choose_plan`` decides on."""
    if seen is None:
        return DocumentState(Layout.ABSENT, changes=change.changed, gzip=form.gzip)
    layout = Layout.FOREIGN if seen.found is None else Layout.OURS
    return DocumentState(layout, seen.keep, held=seen.whole is not None, changes=change.changed, gzip=form.gzip)


def _carry_out(
    store: Store, edit: _Edit, plan: WritePlan, seen: Seen | None, change: daily.TailEdit | _Reencoded,
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


def _kept_bytes(store: Store, key: str, plan: WritePlan, seen: Seen | None, keep: int) -> Iterable[bytes]:
    """What the client sends of the old body (up to its tail) before the new bytes, per ``plan.body``."""
    if plan.body in (Body.OPENING, Body.PADDING, Body.COPIED):
        return []  # nothing, or the server copies the first bytes itself
    assert seen is not None  # only a new document keeps nothing
    if plan.body is Body.HELD:
        assert seen.whole is not None
        return [seen.whole[:keep]]
    return old_body(store, key, keep, seen.etag)  # Body.STREAMED


def _done(
    attempt: _Attempt, change: daily.TailEdit | _Reencoded, plan: WritePlan, etag: str | None, sent: int
) -> AppendResult:
    log.debug("publish.written key=%s path=%s guard=%s bytes=%d ms=%d", attempt.key, plan.path, plan.guard, sent,
              int((time.monotonic() - attempt.started) * 1000))
    return AppendResult(attempt.day, attempt.key, list(change.stored), list(change.already), plan.path, etag,
                        attempt.number, sent, attempt.received, daily.user_metadata(change.metadata), attempt.caps)
