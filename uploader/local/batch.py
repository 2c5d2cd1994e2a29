"""The batch file format: a one-line JSON header, then the fetches as the day document stores them.

Pure: bytes in, records out. A batch is up to batch_size complete fetches of one day, cut from
the local file in one piece; ``batch_id`` is a digest of the exact bytes cut, so cutting the
same bytes again (after a crash) yields the same id and the day document refuses to store it
twice. Quarantine items (bytes that were not a well-formed fetch) and their note are here too.

0.1.0 wrote each batch as one JSON object with a ``fetches`` list; those files still load
(``tests/test_upgrade.py``), so an upgrade keeps every batch waiting in the spool.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

__all__ = [
    "Batch",
    "BatchHeader",
    "QuarantineItem",
    "batch_digest",
    "encode_fetches",
    "fetch_data_of",
    "fetch_data_from",
    "header_from",
]

FORMAT = 2  # 0.1.0's files have no "format": one JSON object, fetches parsed


def encode_fetches(fetches: list[dict[str, Any]]) -> bytes:
    """A batch's fetches as the day document stores them: one compact JSON array, no newline."""
    return json.dumps(fetches, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def fetch_data_of(bodies: list[bytes]) -> bytes:
    """Record bodies (each a JSON object, as the pipeline wrote it) as a one-line JSON array.

    A newline can only be whitespace between tokens in valid JSON (a string cannot hold a raw
    one), so turning each into a space keeps every value intact and the array on one line.
    """
    return b"[" + b",".join(b.strip().replace(b"\r", b" ").replace(b"\n", b" ") for b in bodies) + b"]"


def batch_digest(chunks: Sequence[bytes]) -> str:
    """The id of the bytes cut: the same bytes cut again (after a crash) get the same id."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class BatchHeader:
    """What a batch file says about its batch, without its fetches (the file's first line)."""

    batch_id: str
    seq: int
    day: date
    cut_at: str
    matches: int
    fetch_count: int
    fetch_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchHeader:
        count = d["fetch_count"] if "fetch_count" in d else len(d["fetches"])
        return cls(batch_id=d["batch_id"], seq=d["seq"], day=date.fromisoformat(d["day"]), cut_at=d["cut_at"],
                   matches=d["matches"], fetch_count=count, fetch_ids=d.get("fetch_ids", []))


@dataclass(frozen=True)
class Batch:
    """A batch with its fetches: ``fetch_data`` is their bytes exactly as the day stores them.

    The cut makes ``fetch_data`` from the records' own bytes (never re-encoded), and an append
    copies it from the spool file unparsed. ``fetches`` parses it, for those that need the
    objects (repair, tests).
    """

    batch_id: str
    seq: int
    day: date
    cut_at: str
    fetch_data: bytes
    matches: int
    fetch_count: int
    fetch_ids: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, batch_id: str, seq: int, day: date, cut_at: str, fetches: list[dict[str, Any]], matches: int,
        fetch_ids: list[str] | None = None,
    ) -> Batch:
        """A batch of parsed fetches (encoded here)."""
        return cls(batch_id, seq, day, cut_at, encode_fetches(fetches), matches, len(fetches), list(fetch_ids or []))

    @cached_property
    def fetches(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = json.loads(self.fetch_data)
        return parsed

    @property
    def header(self) -> BatchHeader:
        return BatchHeader(self.batch_id, self.seq, self.day, self.cut_at, self.matches, self.fetch_count,
                           self.fetch_ids)

    def to_json(self) -> bytes:
        """The file's bytes."""
        head = {
            "format": FORMAT, "batch_id": self.batch_id, "seq": self.seq, "day": self.day.isoformat(),
            "cut_at": self.cut_at, "matches": self.matches, "fetch_count": self.fetch_count,
            "fetch_ids": self.fetch_ids,
            # Uploads copy these bytes into the day unparsed: a damaged file must be caught first.
            "fetch_data_sha256": hashlib.sha256(self.fetch_data).hexdigest(),
        }
        return json.dumps(head, ensure_ascii=False).encode("utf-8") + b"\n" + self.fetch_data

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
        """A batch from a file's bytes, either form."""
        first, _, rest = data.partition(b"\n")
        header = header_from(first, lambda: rest)
        return cls(header.batch_id, header.seq, header.day, header.cut_at, fetch_data_from(first, rest),
                   header.matches, header.fetch_count, header.fetch_ids)


def header_from(first_line: bytes, rest: Callable[[], bytes]) -> BatchHeader:
    """The header of a batch file from its first line; ``rest`` (the bytes after that line) is
    read only for 0.1.0's one-object form."""
    d = json.loads(first_line)
    if d.get("format") != FORMAT:
        d = json.loads(first_line + b"\n" + rest())
    return BatchHeader.from_dict(d)


def fetch_data_from(first_line: bytes, rest: bytes) -> bytes:
    """The fetches of a batch file exactly as the day stores them, checked against the digest
    the cut recorded (0.1.0's form: encoded from its parsed list)."""
    head = json.loads(first_line)
    if head.get("format") != FORMAT:
        return encode_fetches(json.loads(first_line + b"\n" + rest)["fetches"])
    if hashlib.sha256(rest).hexdigest() != head["fetch_data_sha256"]:
        raise ValueError("its fetches do not match the digest recorded when it was cut")
    return rest


@dataclass(frozen=True)
class QuarantineItem:
    """Bytes cut from the local file that were not a well-formed fetch, kept verbatim."""

    name: str
    raw: bytes
    reason: str
    offset: int
    detected_at: str
    day: date | None = None

    def note(self) -> bytes:
        """The ``.json`` beside the ``.bin``: why, where and when."""
        return json.dumps({"reason": self.reason, "offset": self.offset, "detected_at": self.detected_at,
                           "day": self.day.isoformat() if self.day else None, "bytes": len(self.raw)}).encode()

    @classmethod
    def from_files(cls, name: str, raw: bytes, note: bytes) -> QuarantineItem:
        meta = json.loads(note)
        day = date.fromisoformat(meta["day"]) if meta["day"] else None
        return cls(name=name, raw=raw, reason=meta["reason"], offset=meta["offset"],
                   detected_at=meta["detected_at"], day=day)
