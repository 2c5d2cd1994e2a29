"""A day document re-counted against its metadata: fed one upload at a time, in bounded memory.

Pure. ``Verifier`` takes the uploads as a reader streams them and lists every disagreement
with the document's counters (and with the object's user metadata where it holds ours);
``verify`` does the same for a whole parsed document.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from uploader.daily import counters_from_user_metadata, fetch_id_of, fetch_matches, ids_digest

__all__ = ["Verifier", "verify"]


class Verifier:
    """Re-counts a document fed one upload at a time (bounded memory), then lists every
    disagreement with its metadata; ``verify`` does the same for a whole parsed document."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.uploads = 0
        self.fetches = 0
        self.matches = 0
        self.batch_ids: list[Any] = []
        self._fetch_ids: Counter[str] = Counter()

    def add(self, up: Any) -> None:
        self.uploads += 1
        i = self.uploads
        if not isinstance(up, dict) or not isinstance(up.get("fetch_data", []), list):
            self.problems.append(f"upload {i}: not an upload entry")
            self.batch_ids.append(None)
            return
        data = up.get("fetch_data", [])
        if up.get("upload_sequence") != i:
            self.problems.append(f"upload {i}: upload_sequence is {up.get('upload_sequence')}, expected {i}")
        if up.get("fetches_in_upload") != len(data):
            self.problems.append(
                f"upload {i}: fetches_in_upload is {up.get('fetches_in_upload')}, fetch_data holds {len(data)}"
            )
        counted = [fetch_matches(f) for f in data]
        if all(c is not None for c in counted) and sum(c or 0 for c in counted) != up.get("matches_in_upload"):
            self.problems.append(
                f"upload {i}: matches_in_upload is {up.get('matches_in_upload')}, "
                f"fetch footers sum to {sum(c or 0 for c in counted)}"
            )
        self.fetches += len(data)
        self.matches += int(up.get("matches_in_upload") or 0)
        self._fetch_ids.update(fid for fid in (fetch_id_of(f) for f in data) if fid is not None)
        self.batch_ids.append(up.get("batch_id"))

    def finish(self, meta: Any, user_meta: dict[str, str] | None = None, day: date | None = None) -> list[str]:
        """Every problem found; [] means the document is sound.

        ``user_meta`` (the object's x-amz-meta-*) is compared where it holds our counters (the
        old logger wrote none); ``day`` is the day the object's key names.
        """
        problems = list(self.problems)
        if not isinstance(meta, dict):
            return [*problems, "document lacks a 'daily_metadata' object"]
        if day is not None and meta.get("date") != day.isoformat():
            problems.append(f"daily_metadata.date is {meta.get('date')}, the object's key says {day}")
        for bid, n in Counter(b for b in self.batch_ids if isinstance(b, str)).items():
            if n > 1:
                problems.append(f"batch_id {bid} is stored {n} times")
        for fid, n in self._fetch_ids.items():
            if n > 1:
                problems.append(f"fetch_id {fid} is stored {n} times")
        expected = {
            "total_uploads_today": self.uploads,
            "total_fetches_today": self.fetches,
            "total_matches_today": self.matches,
        }
        for name, value in expected.items():
            if meta.get(name) != value:
                problems.append(f"daily_metadata.{name} is {meta.get(name)}, the uploads add up to {value}")
        problems += self._listed(meta)
        if user_meta is not None and "total-uploads" in user_meta:
            counters = counters_from_user_metadata(user_meta)
            for name, value in expected.items():
                if counters[name] != value:
                    problems.append(f"object metadata {name} is {counters[name]}, the uploads add up to {value}")
        return problems


    def _listed(self, meta: dict[str, Any]) -> list[str]:
        if "batch_ids" in meta:  # written before batch_ids_sha256 replaced the list
            ok = meta["batch_ids"] == self.batch_ids
            return [] if ok else ["daily_metadata.batch_ids does not list the uploads' batch_ids in order"]
        if meta.get("batch_ids_sha256") != ids_digest(b for b in self.batch_ids if isinstance(b, str)):
            return ["daily_metadata.batch_ids_sha256 is not the digest of the uploads' batch_ids in order"]
        return []


def verify(document: dict[str, Any], user_meta: dict[str, str] | None = None) -> list[str]:
    """Re-count a document and list every disagreement with its metadata; [] means sound."""
    uploads = document.get("uploads") if isinstance(document, dict) else None
    if not isinstance(uploads, list):
        return ["document lacks an 'uploads' list or a 'daily_metadata' object"]
    checker = Verifier()
    for up in uploads:
        checker.add(up)
    return checker.finish(document.get("daily_metadata"), user_meta)
