"""Salvaging a damaged day document: every complete upload entry it still holds, and its metadata
if readable (what ``uploader repair`` rebuilds from).

The document may be truncated, hold garbage, or not parse at all. In our layout damage costs only
the lines it touches; any other layout is read with ijson up to the first damage.
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

__all__ = ["Salvage", "salvage"]


@dataclass
class Salvage:
    """What could be read from a (possibly damaged) document."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] | None = None
    damage: list[str] = field(default_factory=list)  # what could not be read, for the report

    @property
    def intact(self) -> bool:
        return not self.damage and self.meta is not None


def _is_entry(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("fetch_data"), list)


def salvage(stream: BinaryIO) -> Salvage:
    """Every complete upload entry (and the metadata, if readable) of a possibly damaged document."""
    with paused_collector():
        lines = Lines(stream_pieces(stream))
        head = lines.next(len(HEAD) + 1)
        if head == HEAD + b"\n":
            return _salvage_lines(lines)
        return _salvage_parse(chain([head], lines.rest()))


def _salvage_lines(lines: Lines) -> Salvage:
    """Our layout: one upload per line, then ``],`` and the metadata line."""
    found = Salvage()
    number = 1
    while raw := lines.next():
        number += 1
        line = raw.rstrip(b"\n")
        if line in (b"", b"],", b"]"):
            continue
        if line.startswith(META_LINE):
            body = line[len(META_LINE):].rstrip()
            try:
                meta = parse_json(body[:-1]) if body.endswith(b"}") else None
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                found.meta = meta
            else:
                found.damage.append(f"line {number}: daily_metadata unreadable")
            continue
        try:
            value = parse_json(line[:-1] if line.endswith(b",") else line)
        except ValueError:
            value = None
        if _is_entry(value):
            found.entries.append(value)
        else:
            found.damage.append(f"line {number}: not a complete upload ({len(line)} bytes)")
    if lines.error is not None:
        found.damage.append(f"stops reading: {lines.error}")
    if found.meta is None and not any("daily_metadata" in d for d in found.damage):
        found.damage.append("daily_metadata missing (document cut short)")
    return found


def _salvage_parse(pieces: Iterator[bytes]) -> Salvage:
    """Another layout (e.g. the old logger's): parse until the first damage."""
    found = Salvage()
    try:
        for kind, value in events(Chunks(pieces)):
            if kind == "meta":
                found.meta = value
            elif _is_entry(value):
                found.entries.append(value)
            else:
                found.damage.append(f"upload {len(found.entries) + 1}: not an upload entry")
    except DocumentError as exc:
        found.damage.append(f"stops parsing: {exc}")
    if found.meta is None:
        found.damage.append("daily_metadata missing")
    return found
