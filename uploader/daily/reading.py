"""Reading day documents back from a stream: whole ones one upload at a time, damaged ones salvaged.

Documents can reach hundreds of MiB, so nothing here loads one whole: ``read_document`` walks
the JSON with ijson and hands out one upload entry at a time (and ``daily_metadata`` wherever
it sits: ours puts it last, the old logger first). ``salvage`` recovers every complete upload
entry from a document that is truncated, has garbage in it, or does not parse at all: in our
layout each upload is one line (see daily.py), so damage costs only the lines it touches; any
other layout is read with ijson up to the first damage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import ijson

from uploader.daily import HEAD, TAIL_MARKER

__all__ = ["DocumentError", "Salvage", "read_document", "salvage"]


_META_LINE = TAIL_MARKER.split(b"\n")[-1]  # b'"daily_metadata": '


class DocumentError(ValueError):
    """Raised when a document is not the JSON it should be; says where it stops making sense."""


def read_document(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ("upload", entry) for each upload in order and ("meta", daily_metadata) once.

    One pass, bounded memory (one upload at a time). Raises DocumentError on malformed JSON.
    """
    builder: ijson.ObjectBuilder | None = None
    target = ""
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if builder is None:
                if (prefix, event) in (("uploads.item", "start_map"), ("daily_metadata", "start_map")):
                    builder, target = ijson.ObjectBuilder(), prefix
                else:
                    continue
            builder.event(event, value)
            if prefix == target and event == "end_map":
                yield ("upload" if target == "uploads.item" else "meta"), builder.value
                builder = None
    except ijson.JSONError as exc:
        raise DocumentError(f"not valid JSON: {exc}") from exc


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
    head = stream.read(len(HEAD) + 1)
    if head == HEAD + b"\n":
        return _salvage_lines(stream)
    return _salvage_parse(head, stream)


def _salvage_lines(stream: BinaryIO) -> Salvage:
    """Our layout: one upload per line, then ``],`` and the metadata line."""
    found = Salvage()
    number = 1
    for raw in stream:
        number += 1
        line = raw.rstrip(b"\n")
        if line in (b"", b"],", b"]"):
            continue
        if line.startswith(_META_LINE):
            body = line[len(_META_LINE):].rstrip()
            try:
                meta = json.loads(body[:-1]) if body.endswith(b"}") else None
            except ValueError:
                meta = None
            if isinstance(meta, dict):
                found.meta = meta
            else:
                found.damage.append(f"line {number}: daily_metadata unreadable")
            continue
        try:
            value = json.loads(line[:-1] if line.endswith(b",") else line)
        except ValueError:
            value = None
        if _is_entry(value):
            found.entries.append(value)
        else:
            found.damage.append(f"line {number}: not a complete upload ({len(line)} bytes)")
    if found.meta is None and not any("daily_metadata" in d for d in found.damage):
        found.damage.append("daily_metadata missing (document cut short)")
    return found


def _salvage_parse(head: bytes, stream: BinaryIO) -> Salvage:
    """Another layout (e.g. the old logger's): parse until the first damage."""
    found = Salvage()

    class _Joined:
        # ijson wants one stream; give it back the bytes we peeked at first.
        def __init__(self) -> None:
            self.pending = head

        def read(self, n: int) -> bytes:
            if self.pending:
                out, self.pending = self.pending[:n], self.pending[n:]
                return out
            return stream.read(n)

    try:
        for kind, value in read_document(_Joined()):  # type: ignore[arg-type]
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
