"""Salvaging a damaged day document: every complete upload entry it still holds, and its metadata
if readable (what ``uploader repair`` rebuilds from).

The document may be truncated, hold garbage, or not parse at all. In our layout damage costs only
the lines it touches; any other layout is read with ijson up to the first damage.

``salvaged`` streams: it hands out one entry at a time, each with its place in the document, so
a repair keeps only what it plans with and finds the same entries again, at the same places, in
a second read of the same bytes (then without parsing our layout's lines at all). ``salvage``
collects them all, for a document that fits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, BinaryIO

from uploader.daily import HEAD
from uploader.daily.reading import (
    META_LINE,
    Chunks,
    DocumentError,
    Lines,
    events,
    parse_json,
    paused_collector,
    stream_pieces,
)

__all__ = ["Salvage", "Salvaged", "salvage", "salvaged"]

# A line longer than this that does not even start like an object is read past without being held:
# garbage without a newline (binary, a foreign blob) would otherwise be held whole.
_LINE_LIMIT = 8 << 20
_BLANKS = b" \t\r\n"


@dataclass
class Salvage:
    """What could be read from a (possibly damaged) document."""

    entries: list[dict[str, Any]] = field(default_factory=list)  # filled by ``salvage`` only
    meta: dict[str, Any] | None = None
    damage: list[str] = field(default_factory=list)  # what could not be read, for the report

    @property
    def intact(self) -> bool:
        return not self.damage and self.meta is not None


@dataclass(frozen=True)
class Salvaged:
    """One complete upload entry, and where it is.

    ``place`` is its line (our layout) or its number among the entries (another layout): a read
    of the same bytes finds it at the same place. ``text`` is the entry's JSON exactly as stored
    (our layout; None in another); ``value`` is it parsed (None where it was not parsed).
    """

    place: int
    text: bytes | None
    value: dict[str, Any] | None


def _is_entry(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("fetch_data"), list)


def salvage(stream: BinaryIO) -> Salvage:
    """Every complete upload entry (and the metadata, if readable) of a possibly damaged document."""
    found = Salvage()
    with paused_collector():
        found.entries = [s.value for s in salvaged(stream, found) if s.value is not None]
    return found


def salvaged(stream: BinaryIO, found: Salvage, *, parse: bool = True) -> Iterator[Salvaged]:
    """Each complete upload entry of a possibly damaged document, in the document's order; the
    metadata and the damage are noted in ``found`` as they are met (complete once this ends).

    ``parse=False`` (a second read of the same bytes): our layout's lines are handed out as they
    are, unparsed, every line that could hold an entry; only the places found by a parsing read
    are entries. Another layout is parsed all the same.
    """
    lines = Lines(stream_pieces(stream))
    head = lines.next(len(HEAD) + 1)
    if head == HEAD + b"\n":
        return _salvage_lines(lines, found, parse)
    return _salvage_parse(chain([head], lines.rest()), found)


def _salvage_lines(lines: Lines, found: Salvage, parse: bool) -> Iterator[Salvaged]:
    """Our layout: one upload per line, then ``],`` and the metadata line."""
    number = 1
    for line, size in _lines(lines):
        number += 1
        if line is None:
            found.damage.append(f"line {number}: not a complete upload ({size} bytes)")
            continue
        if line in (b"", b"],", b"]"):
            continue
        if line.startswith(META_LINE):
            _metadata(line, number, found)
            continue
        text = (line[:-1] if line.endswith(b",") else line).strip(_BLANKS)
        if not parse:
            yield Salvaged(number, text, None)
            continue
        try:
            value = parse_json(text) if text[:1] == b"{" else None
        except ValueError:
            value = None
        if _is_entry(value):
            yield Salvaged(number, text, value)
        else:
            found.damage.append(f"line {number}: not a complete upload ({size} bytes)")
    if lines.error is not None:
        found.damage.append(f"stops reading: {lines.error}")
    if found.meta is None and not any("daily_metadata" in d for d in found.damage):
        found.damage.append("daily_metadata missing (document cut short)")


def _lines(lines: Lines) -> Iterator[tuple[bytes | None, int]]:
    """Each line without its newline, and its length; None for a long line that cannot hold an
    entry or the metadata (it does not start like one), which is read past, not held."""
    while first := lines.next(_LINE_LIMIT):
        if first.endswith(b"\n") or len(first) <= _LINE_LIMIT:
            line = first  # whole (or the last line, cut short)
        elif first.lstrip(_BLANKS)[:1] != b"{" and not first.startswith(META_LINE):
            size = len(first)
            while (more := lines.next(_LINE_LIMIT)) and not more.endswith(b"\n"):
                size += len(more)
            yield None, size + len(more.rstrip(b"\n"))
            continue
        else:
            parts = [first]
            while not parts[-1].endswith(b"\n") and (more := lines.next(_LINE_LIMIT)):
                parts.append(more)
            line = b"".join(parts)
        line = line.rstrip(b"\n")
        yield line, len(line)


def _metadata(line: bytes, number: int, found: Salvage) -> None:
    """The metadata line into ``found``, or its damage."""
    body = line[len(META_LINE):].rstrip()
    try:
        meta = parse_json(body[:-1]) if body.endswith(b"}") else None
    except ValueError:
        meta = None
    if isinstance(meta, dict):
        found.meta = meta
    else:
        found.damage.append(f"line {number}: daily_metadata unreadable")


def _salvage_parse(pieces: Iterator[bytes], found: Salvage) -> Iterator[Salvaged]:
    """Another layout (e.g. the old logger's): parse until the first damage."""
    number = 0
    try:
        for kind, value in events(Chunks(pieces)):
            if kind == "meta":
                found.meta = value
            elif _is_entry(value):
                number += 1
                yield Salvaged(number, None, value)
            else:
                found.damage.append(f"upload {number + 1}: not an upload entry")
    except DocumentError as exc:
        found.damage.append(f"stops parsing: {exc}")
    if found.meta is None:
        found.damage.append("daily_metadata missing")
