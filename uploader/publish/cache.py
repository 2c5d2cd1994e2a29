"""WriteCache: our own last write per day, so the next append skips HEAD + GET.

Only used where the server honours conditional writes and said the ETag of our write: the next
write still carries that ETag, so a change by anyone else is refused, the entry dropped, and the
object re-read. ``CountedBody`` is how a write's bytes reach it: counted on their way to the
store, and kept while the body is small (else only its last piece, the tail).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from uploader.publish.plan import SMALL_LIMIT

__all__ = ["CachedWrite", "CountedBody", "WriteCache"]


@dataclass(frozen=True)
class CachedWrite:
    """The ETag, size and last bytes (the whole body when small) of an object we wrote."""

    etag: str
    size: int
    suffix: bytes


class CountedBody:
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


class WriteCache:
    """What this process last wrote to each day's document, the most recent few days."""

    def __init__(self, max_entries: int = 4) -> None:
        self._entries: dict[str, CachedWrite] = {}
        self._max = max_entries

    def get(self, key: str) -> CachedWrite | None:
        return self._entries.get(key)

    def put(self, key: str, known: CachedWrite) -> None:
        self._entries.pop(key, None)
        self._entries[key] = known
        while len(self._entries) > self._max:
            self._entries.pop(next(iter(self._entries)))

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)

    def remember(self, key: str, etag: str | None, body: CountedBody, keep: int) -> None:
        """Note what was just written: ``keep`` bytes copied on the server, then ``body``. Without
        the ETag the server did not say, the entry goes (the next append re-reads)."""
        if etag is None:
            self.drop(key)
            return
        size = keep + body.sent
        suffix = b"".join(body.kept) if body.kept is not None and not keep else body.last
        self.put(key, CachedWrite(etag, size, suffix))
