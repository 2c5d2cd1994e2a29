"""The daily document: key names, merge, close, deterministic bytes with the metadata last.

Everything here is a pure function of its inputs (the clock is passed in as ``now``).

Byte layout (the contract that makes large appends cheap)::

    {"uploads": [
    <upload 1 as one compact JSON line>,
    <upload 2>
    ],
    "daily_metadata": {...}}

A JSON string can never hold a raw newline (``json.dumps`` escapes it), so the marker
``\\n],\\n"daily_metadata": `` occurs exactly once, right after the last upload. Everything before
it (the "body") is never rewritten by an append; only the tail from the marker on is replaced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pytz

from uploader.daily import gzip_form
from uploader.local.batch import Batch, BatchHeader
from uploader.stamps import format_stamp

__all__ = [
    "DATE_FIELD",
    "DEFAULT_NAME",
    "KEY_TEMPLATE",
    "TAIL_MARKER",
    "ListedIds",
    "MergeResult",
    "TailEdit",
    "append_to_tail",
    "close_document",
    "close_tail",
    "counters_from_user_metadata",
    "day_key",
    "day_of_key",
    "entry_head",
    "fetch_id_of",
    "fetch_matches",
    "ids_digest",
    "listed_in_entries",
    "listed_in_tail",
    "merge_batches",
    "new_document",
    "new_tail",
    "parse",
    "parse_tail",
    "serialize",
    "split_tail",
    "upload_entry",
    "user_metadata",
]


# A day document's name under its prefix: ``DATE_FIELD`` stands for the day, YYYY-MM-DD. Each
# stream names its own (``streams.NAME.document_name``, checked by the config: the field once,
# ending in ``.json``, no ``/``); the seed's, and the stream ``all_api``'s, is ``DEFAULT_NAME``.
DATE_FIELD = "{date}"
DEFAULT_NAME = "all_api_json_log_{date}.json"
KEY_TEMPLATE = "{prefix}/" + DEFAULT_NAME.replace(DATE_FIELD, "{day}")  # the seed's key
HEAD = b'{"uploads": ['
TAIL_MARKER = b'\n],\n"daily_metadata": '
_END = b"}\n"


def day_key(prefix: str, day: date, gzip: bool = False, name: str = DEFAULT_NAME) -> str:
    """The object key of one day's document: ``<prefix>/<name>`` with the day in place of
    ``{date}`` (``<prefix>/all_api_json_log_YYYY-MM-DD.json`` by default), and ``.gz`` added for
    a gzip-compressed day (§5.10)."""
    key = f"{prefix.strip('/')}/{name.replace(DATE_FIELD, day.isoformat())}"
    return key + gzip_form.SUFFIX if gzip else key


def day_of_key(prefix: str, key: str, name: str = DEFAULT_NAME) -> date | None:
    """The day whose document ``key`` is, by the name pattern ``name``, plain or gzip, or None for
    any other key (one that only looks like a day's, e.g. 2025-02-30, included)."""
    key = key.removesuffix(gzip_form.SUFFIX)
    before, _, tail = name.partition(DATE_FIELD)
    head = f"{prefix.strip('/')}/{before}"
    if not (key.startswith(head) and key.endswith(tail)) or len(key) != len(head) + 10 + len(tail):
        return None
    text = key[len(head):len(key) - len(tail)]
    if not (text[4] == text[7] == "-" and text.replace("-", "").isdigit()):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class ListedIds:
    """The batch ids a document's entries list, in order, and their digest (§5.4
    ``batch_ids_sha256``: SHA-256 of every id followed by a newline), kept as they grow."""

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._ids: list[str] = []
        self._set: set[str] = set()
        self._hash = hashlib.sha256()
        for batch_id in ids:
            self.add(batch_id)

    def add(self, batch_id: str) -> None:
        self._ids.append(batch_id)
        self._set.add(batch_id)
        self._hash.update(batch_id.encode("utf-8") + b"\n")

    def copy(self) -> ListedIds:
        twin = ListedIds()
        twin._ids, twin._set, twin._hash = list(self._ids), set(self._set), self._hash.copy()
        return twin

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._set

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()

    def digest_with(self, more: Iterable[str]) -> str:
        """The digest these ids would have with ``more`` added (nothing is added)."""
        grown = self._hash.copy()
        for batch_id in more:
            grown.update(batch_id.encode("utf-8") + b"\n")
        return grown.hexdigest()

    def run_giving(self, more: Sequence[str], digest: object) -> int | None:
        """How many of ``more``, taken from the first, added to these ids give ``digest`` (None:
        no such run); one pass, however long ``more`` is."""
        grown = self._hash.copy()
        for count, batch_id in enumerate(more, 1):
            grown.update(batch_id.encode("utf-8") + b"\n")
            if grown.hexdigest() == digest:
                return count
        return None

    def matches(self, meta: dict[str, Any]) -> bool:
        """Whether these are the ids whose digest the metadata ``meta`` holds."""
        return self.digest == meta.get("batch_ids_sha256")


def ids_digest(ids: Iterable[str]) -> str:
    """``batch_ids_sha256`` of a document whose entries list ``ids``, in order."""
    return ListedIds(ids).digest


def new_document(day: date, timezone: str) -> dict[str, Any]:
    """An empty, open document for ``day``."""
    return {"uploads": [], "daily_metadata": _new_metadata(day, timezone)}


def _new_metadata(day: date, timezone: str) -> dict[str, Any]:
    return {
        "date": day.isoformat(),
        "timezone": timezone,
        "total_uploads_today": 0,
        "total_fetches_today": 0,
        "total_matches_today": 0,
        "first_upload_today": None,
        "last_upload": None,
        "matches_in_this_upload": 0,
        "batch_ids_sha256": ListedIds().digest,
        "closed": False,
        "closed_at": None,
        "late_uploads": [],
    }


@dataclass(frozen=True)
class MergeResult:
    """A document after a merge, and which batches were added or were already there."""

    document: dict[str, Any]
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    listed: ListedIds | None = None  # the ids the document lists now (None: not changed by a close)


@dataclass(frozen=True)
class TailEdit:
    """An append (or a close) expressed on bytes: keep the body up to the old tail, then write
    ``lead``, each new upload's entry, and ``tail``, the new metadata.

    An entry is its ``head`` bytes, the batch's ``fetch_data`` exactly as spooled, and ``}``:
    ``pieces`` streams them, reading each batch's fetches only when its turn comes, so a group
    commit of any size is a concatenation in bounded memory. Empty ``tail``: nothing to write.
    """

    tail: bytes
    metadata: dict[str, Any]
    entries: list[tuple[BatchHeader, bytes]] = field(default_factory=list)
    lead: bytes = b""
    stored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    listed: ListedIds | None = None  # the ids the document lists now (None: not changed by a close)

    @property
    def changed(self) -> bool:
        return bool(self.tail)

    def pieces(self, fetch_data: Callable[[BatchHeader], bytes]) -> Iterator[bytes]:
        """The bytes that follow the kept body, in order, one batch's fetches at a time."""
        yield from self.entry_pieces(fetch_data)
        yield self.tail

    def entry_pieces(self, fetch_data: Callable[[BatchHeader], bytes]) -> Iterator[bytes]:
        """The new entries' bytes alone (``pieces`` without the tail)."""
        for i, (header, head) in enumerate(self.entries):
            yield (self.lead if i == 0 else b",\n") + head
            yield fetch_data(header)
            yield b"}"


def upload_entry(batch: Batch, sequence: int, stamp: str) -> dict[str, Any]:
    """One batch as an entry of the document's ``uploads`` list."""
    return {
        "upload_sequence": sequence,
        "batch_id": batch.batch_id,
        "upload_timestamp": stamp,
        "matches_in_upload": batch.matches,
        "fetches_in_upload": batch.fetch_count,
        "fetch_data": batch.fetches,
    }


def listed_in_tail(meta: dict[str, Any]) -> ListedIds | None:
    """The ids a document written before ``batch_ids_sha256`` lists in its metadata (``batch_ids``),
    or None: they are only in its entries."""
    ids = meta.get("batch_ids")
    return ListedIds(ids) if isinstance(ids, list) else None


def _upload_entries(
    meta: dict[str, Any], headers: list[BatchHeader], now: datetime, tz: pytz.BaseTzInfo, listed: ListedIds
) -> tuple[dict[str, Any], list[tuple[BatchHeader, int]], list[str], list[str], str]:
    """Apply batches to a metadata dict (copied) and to ``listed`` (the ids its entries list, added
    to in place).

    Returns (meta, new uploads as (header, upload_sequence), stored, already, upload stamp).
    """
    meta = {**_new_metadata(date.fromisoformat(meta["date"]), meta.get("timezone", "")), **meta}
    meta.pop("batch_ids", None)  # an older document's list: its digest replaces it (§5.4)
    meta["late_uploads"] = list(meta["late_uploads"])
    seen = listed
    stamp = format_stamp(now, tz)
    new: list[tuple[BatchHeader, int]] = []
    stored: list[str] = []
    already: list[str] = []
    for batch in sorted(headers, key=lambda b: b.seq):
        if batch.day.isoformat() != meta["date"]:
            raise ValueError(f"batch {batch.batch_id} is for {batch.day}, document is for {meta['date']}")
        if batch.batch_id in seen:
            already.append(batch.batch_id)
            continue
        seen.add(batch.batch_id)
        meta["total_uploads_today"] += 1
        new.append((batch, meta["total_uploads_today"]))
        stored.append(batch.batch_id)
        meta["total_fetches_today"] += batch.fetch_count
        meta["total_matches_today"] += batch.matches
        meta["first_upload_today"] = meta["first_upload_today"] or stamp
        meta["last_upload"] = stamp
        # "This upload" is the newest entry, as in the seed format; a group commit sums nothing.
        meta["matches_in_this_upload"] = batch.matches
        if meta.get("closed"):
            # A late replay for a closed day is still stored, and marked so an operator sees it.
            meta["late_uploads"].append(batch.batch_id)
    meta["batch_ids_sha256"] = seen.digest
    return meta, new, stored, already, stamp


def entry_head(header: BatchHeader, sequence: int, stamp: str) -> bytes:
    """The bytes of an upload entry up to its fetch_data: what ``_dump_upload`` writes before it."""
    dump = json.dumps
    return (
        f'{{"upload_sequence":{sequence},"batch_id":{dump(header.batch_id, ensure_ascii=False)},'
        f'"upload_timestamp":{dump(stamp, ensure_ascii=False)},"matches_in_upload":{header.matches},'
        f'"fetches_in_upload":{header.fetch_count},"fetch_data":'
    ).encode("utf-8")


def merge_batches(
    document: dict[str, Any], batches: list[Batch], now: datetime, tz: pytz.BaseTzInfo
) -> MergeResult:
    """Append batches in seq order; a batch whose id the document lists is acknowledged only."""
    by_id = {b.batch_id: b for b in batches}
    listed = listed_in_entries(document["uploads"])
    meta, new, stored, already, stamp = _upload_entries(document["daily_metadata"], [b.header for b in batches],
                                                        now, tz, listed)
    entries = [upload_entry(by_id[h.batch_id], sequence, stamp) for h, sequence in new]
    doc = {"uploads": [*document["uploads"], *entries], "daily_metadata": meta}
    return MergeResult(doc, stored, already, listed)


def listed_in_entries(uploads: Iterable[dict[str, Any]]) -> ListedIds:
    """The ids upload entries list, in order (the old logger's entries, without one, are left out)."""
    return ListedIds(e["batch_id"] for e in uploads if isinstance(e.get("batch_id"), str))


def close_document(document: dict[str, Any], now: datetime, tz: pytz.BaseTzInfo) -> dict[str, Any]:
    """Mark the day closed; closing twice keeps the first ``closed_at``."""
    meta = _closed(document["daily_metadata"], now, tz)
    return {"uploads": document["uploads"], "daily_metadata": meta}


def _closed(meta: dict[str, Any], now: datetime, tz: pytz.BaseTzInfo) -> dict[str, Any]:
    if meta.get("closed"):
        return meta
    return {**meta, "closed": True, "closed_at": format_stamp(now, tz)}


def _dump_upload(entry: dict[str, Any]) -> bytes:
    # Compact, one line: no raw newline can appear, which keeps TAIL_MARKER unique.
    return json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _dump_tail(meta: dict[str, Any]) -> bytes:
    return TAIL_MARKER + json.dumps(meta, ensure_ascii=False).encode("utf-8") + _END


def _segment(entries: list[dict[str, Any]], had_uploads: bool) -> bytes:
    parts = [_dump_upload(e) for e in entries]
    if not parts:
        return b""
    lead = b",\n" if had_uploads else b"\n"
    return lead + b",\n".join(parts)


def serialize(document: dict[str, Any]) -> bytes:
    """The document's canonical bytes: uploads one per line, ``daily_metadata`` last."""
    return HEAD + _segment(document["uploads"], False) + _dump_tail(document["daily_metadata"])


def parse(data: bytes) -> dict[str, Any]:
    """Parse a whole document; metadata keys added since the seed format get their defaults."""
    doc: dict[str, Any] = json.loads(data)
    meta = doc.get("daily_metadata", {})
    meta.setdefault("late_uploads", [])
    return doc


def split_tail(suffix: bytes, object_size: int) -> tuple[int, bytes] | None:
    """Find the tail in the last ``len(suffix)`` bytes of an object of ``object_size`` bytes.

    Returns (length of the body to keep, tail bytes), or None when the marker is not in the
    suffix (read a longer suffix).
    """
    pos = suffix.rfind(TAIL_MARKER)
    if pos < 0:
        return None
    return object_size - len(suffix) + pos, suffix[pos:]


def parse_tail(tail: bytes) -> dict[str, Any]:
    """The ``daily_metadata`` dict held in a tail returned by :func:`split_tail`."""
    if not tail.startswith(TAIL_MARKER):
        raise ValueError("not a document tail: marker missing")
    body = tail[len(TAIL_MARKER) :].rstrip()
    if not body.endswith(b"}"):
        raise ValueError("not a document tail: closing brace missing")
    meta: dict[str, Any] = json.loads(body[:-1])
    meta.setdefault("late_uploads", [])
    return meta


def append_to_tail(
    tail: bytes, headers: list[BatchHeader], now: datetime, tz: pytz.BaseTzInfo,
    listed: Callable[[dict[str, Any]], ListedIds],
) -> TailEdit:
    """The bytes that replace ``tail`` to append the batches, knowing only their headers, and
    ``listed(metadata)``: the ids the document's entries list (a copy, extended here).

    Nothing changes (``changed`` is False) when every batch was already listed.
    """
    old = parse_tail(tail)
    ids = listed_in_tail(old)
    ids = listed(old) if ids is None else ids
    meta, new, stored, already, stamp = _upload_entries(old, headers, now, tz, ids)
    if not new:
        return TailEdit(b"", old, stored=stored, already=already, listed=ids)
    entries = [(h, entry_head(h, sequence, stamp)) for h, sequence in new]
    lead = b",\n" if old["total_uploads_today"] > 0 else b"\n"
    return TailEdit(_dump_tail(meta), meta, entries, lead, stored, already, ids)


def close_tail(tail: bytes, now: datetime, tz: pytz.BaseTzInfo) -> TailEdit:
    """The bytes that replace ``tail`` to close the day (nothing changes when already closed)."""
    old = parse_tail(tail)
    if old.get("closed"):
        return TailEdit(b"", old)
    meta = _closed(old, now, tz)
    return TailEdit(_dump_tail(meta), meta)


def new_tail(day: date, timezone: str) -> bytes:
    """The tail of an empty document: appending to ``HEAD`` + this makes a new day."""
    return _dump_tail(_new_metadata(day, timezone))


def user_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """The small x-amz-meta-* set that lets a HEAD answer status (no batch id list)."""
    return {
        "date": str(meta["date"]),
        "total-uploads": str(meta["total_uploads_today"]),
        "total-fetches": str(meta["total_fetches_today"]),
        "total-matches": str(meta["total_matches_today"]),
        "last-upload": meta["last_upload"] or "",
        "closed": "true" if meta.get("closed") else "false",
    }


def counters_from_user_metadata(user_meta: dict[str, str]) -> dict[str, Any]:
    """Read back :func:`user_metadata` (as a HEAD returns it) into typed counters."""

    def number(name: str) -> int:
        try:
            return int(user_meta.get(name, "0"))
        except ValueError:
            return 0

    return {
        "date": user_meta.get("date"),
        "total_uploads_today": number("total-uploads"),
        "total_fetches_today": number("total-fetches"),
        "total_matches_today": number("total-matches"),
        "last_upload": user_meta.get("last-upload") or None,
        "closed": user_meta.get("closed") == "true",
    }


def fetch_id_of(fetch: Any) -> str | None:
    header = fetch.get("FETCH_HEADER") if isinstance(fetch, dict) else None
    if isinstance(header, dict):
        value = header.get("fetch_id")
        return str(value) if value is not None else None
    return None


def fetch_matches(fetch: Any) -> int | None:
    footer = fetch.get("FETCH_FOOTER") if isinstance(fetch, dict) else None
    value = footer.get("total_matches") if isinstance(footer, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
