"""The local spool: durable batches waiting for upload, quarantined bytes, the cut journal, the lock."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

__all__ = ["Batch", "QuarantineItem"]


@dataclass(frozen=True)
class Batch:
    """Up to batch_size complete fetches of one day, cut from the local file in one piece.

    ``batch_id`` is a digest of the exact bytes cut, so cutting the same bytes again (after a
    crash) yields the same id, and the daily document can refuse to store it twice.
    """

    batch_id: str
    seq: int
    day: date
    cut_at: str
    fetches: list[dict[str, Any]]
    matches: int
    fetch_ids: list[str] = field(default_factory=list)

    @property
    def fetch_count(self) -> int:
        return len(self.fetches)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "batch_id": self.batch_id,
                "seq": self.seq,
                "day": self.day.isoformat(),
                "cut_at": self.cut_at,
                "matches": self.matches,
                "fetch_ids": self.fetch_ids,
                "fetches": self.fetches,
            },
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
        d = json.loads(data)
        return cls(
            batch_id=d["batch_id"],
            seq=d["seq"],
            day=date.fromisoformat(d["day"]),
            cut_at=d["cut_at"],
            fetches=d["fetches"],
            matches=d["matches"],
            fetch_ids=d.get("fetch_ids", []),
        )


@dataclass(frozen=True)
class QuarantineItem:
    """Bytes cut from the local file that were not a well-formed fetch, kept verbatim."""

    name: str
    raw: bytes
    reason: str
    offset: int
    detected_at: str
    day: date | None = None
