"""Reading day documents back from a stream, one upload at a time, plain or gzip.

Documents reach hundreds of MiB, so nothing here loads one whole. ``read_document`` hands out one
upload entry at a time, then ``daily_metadata``; a gzip document (it starts with gzip's magic
bytes, which no JSON text does) is inflated on the way, member after member, as ``gzip -dc`` does.

Two paths, one result:

- **Our layout** (``daily.serialize``: the first line exactly ``daily.HEAD``, one upload per line)
  is read a line at a time, each line parsed whole by orjson: several times faster than a parser
  that hands Python one event per token.
- **Anything else** (the old logger's layout, pretty-printed JSON, damage) is read by ijson, event
  by event. The fast path hands over at the first line it does not take for ours: ijson resumes a
  few lines back, put in the state it would have there, reading in the same 64 KiB chunks, so what
  follows (the rest of the uploads, the metadata, an error and its message) is exactly what ijson
  reading the whole document gives.

Damaged documents are ``daily.salvage``'s, on the same line reader and parsers.
"""

from __future__ import annotations

import gc
import json
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from itertools import chain
from typing import Any, BinaryIO

import ijson
import orjson

from uploader.daily import HEAD, TAIL_MARKER

__all__ = ["META_LINE", "Chunks", "DocumentError", "Lines", "events", "parse_json", "paused_collector",
           "read_document", "stream_pieces"]


META_LINE = TAIL_MARKER.split(b"\n")[-1]  # b'"daily_metadata": '
_READ = 1 << 20  # bytes per read of the stream and per inflated piece: few calls, bounded memory
_IJSON_READ = 64 * 1024  # ijson's reads: its error messages quote the chunk the error is in
_LINE_LIMIT = 32 << 20  # a line seen longer (at a read) is left to ijson, which needs no whole line
_CONTEXT = 64  # bytes kept before the line ijson resumes at: its messages quote 30 of them
_GZIP_MAGIC = b"\x1f\x8b"
# orjson reads integers past 64 bits that ijson refuses (past 2**64 as floats). Only a run of 19
# digits can be one, so a line holding such a run is parsed by ijson itself.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


class DocumentError(ValueError):
    """Raised when a document is not the JSON it should be; says where it stops making sense."""


def read_document(stream: BinaryIO, *, fast: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ("upload", entry) for each upload in order and ("meta", daily_metadata) once.

    One pass, bounded memory (one upload at a time), gzip inflated. ``fast=False`` reads with ijson
    alone (the result is the same). Raises DocumentError on malformed JSON or gzip.
    """
    pieces = stream_pieces(stream)
    if fast:
        return _read_lines(pieces)
    return events(Chunks(pieces))


# -- the bytes: plain or gzip ------------------------------------------------------------------


def stream_pieces(stream: BinaryIO) -> Iterator[bytes]:
    """The document's bytes in non-empty pieces of up to ``_READ``, inflated if it is gzip."""
    first = stream.read(_READ)
    while 0 < len(first) < len(_GZIP_MAGIC) and (more := stream.read(_READ)):
        first += more  # a short read cannot tell gzip from JSON yet
    if first.startswith(_GZIP_MAGIC):
        yield from _gunzip(first, stream)
        return
    while first:
        yield first
        first = stream.read(_READ)


def _gunzip(data: bytes, stream: BinaryIO) -> Iterator[bytes]:
    """Every member's content in turn, in pieces of at most ``_READ`` (what ``gzip -dc`` writes).

    Zero bytes between members are skipped, as Python's gzip does. Raises DocumentError for bytes
    that are not gzip, fail a member's checksum, or end inside a member.
    """
    inflate: Any = None  # the member being inflated
    while True:
        if inflate is None:
            data = data.lstrip(b"\0")
            if not data:
                data = stream.read(_READ)
                if not data:
                    return
                continue
            inflate = zlib.decompressobj(31)
        try:
            out = inflate.decompress(data, _READ)  # bounded: JSON inflates 10-60 times
        except zlib.error as exc:
            raise DocumentError(f"not valid gzip: {exc}") from exc
        if out:
            yield out
        if inflate.eof:
            data, inflate = inflate.unused_data, None
        elif inflate.unconsumed_tail or len(out) == _READ:
            data = inflate.unconsumed_tail  # more output waits for this input (or for none)
        elif not (data := stream.read(_READ)):
            raise DocumentError("the gzip data ends inside a member: the document is cut short")


class Chunks:
    """Pieces of bytes as a file whose ``read(n)`` gives n bytes until the end, as the store's
    streams do: ijson's chunks, and so its error messages, depend on it. Bytes read before the
    pieces fail (bad gzip) are handed out first, the error on the next read."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.stream_pieces = iter(pieces)
        self._buf = b""
        self._pos = 0
        self._error: DocumentError | None = None

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            raise self._error
        out: list[bytes] = []
        left = size if size >= 0 else 1 << 62
        while left > 0:
            if self._pos >= len(self._buf):
                try:
                    piece = next(self.stream_pieces, None)
                except DocumentError as exc:
                    if not out:
                        raise
                    self._error = exc
                    break
                if piece is None:
                    break
                self._buf, self._pos = piece, 0
                continue
            part = self._buf[self._pos:self._pos + left]
            self._pos += len(part)
            left -= len(part)
            out.append(part)
        return b"".join(out)


class Lines:
    """The lines of a document's pieces, each with its newline (the last one may have none)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.stream_pieces = pieces
        self._buf = b""
        self._pos = 0
        self.error: DocumentError | None = None  # what ended the pieces early (bad gzip)

    def next(self, limit: int | None = None) -> bytes:
        """The next line; b"" at the end. Without a newline at the end, or once longer than
        ``limit`` (then only the bytes read so far)."""
        parts: list[bytes] = []
        size = 0
        while True:
            end = self._buf.find(b"\n", self._pos)
            if end >= 0:
                parts.append(self._buf[self._pos:end + 1])
                self._pos = end + 1
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if self._pos < len(self._buf):
                parts.append(self._buf[self._pos:])
                size += len(parts[-1])
            self._buf, self._pos = b"", 0
            if (limit is not None and size > limit) or not self._fill():
                return b"".join(parts)

    def _fill(self) -> bool:
        if self.error is not None:
            return False
        try:
            self._buf = next(self.stream_pieces, b"")
        except DocumentError as exc:
            self.error = exc
            return False
        return bool(self._buf)

    def rest(self) -> Iterator[bytes]:
        """What has not been handed out as lines yet, to the end (raising what ended it early)."""
        yield self._buf[self._pos:]
        self._buf, self._pos = b"", 0
        if self.error is not None:
            raise self.error
        yield from self.stream_pieces


# -- the slow path: ijson, any layout ---------------------------------------------------------


def events(stream: Any, skip: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """ijson, event by event: any layout. ``skip``: uploads already handed out, not to repeat."""
    builder: ijson.ObjectBuilder | None = None
    target = ""
    try:
        for prefix, event, value in ijson.parse(stream, buf_size=_IJSON_READ, use_float=True):
            if builder is None:
                if (prefix, event) in (("uploads.item", "start_map"), ("daily_metadata", "start_map")):
                    builder, target = ijson.ObjectBuilder(), prefix
                else:
                    continue
            builder.event(event, value)
            if prefix == target and event == "end_map":
                if target != "uploads.item":
                    yield "meta", builder.value
                elif skip:
                    skip -= 1
                else:
                    yield "upload", builder.value
                builder = None
    except (ijson.JSONError, UnicodeDecodeError) as exc:  # the latter: bad UTF-8, a lone "\udc00"
        raise DocumentError(f"not valid JSON: {exc}") from exc


# -- the fast path: our layout, a line at a time ------------------------------------------------


class _At(Enum):
    """Where a line of our layout starts; the value is JSON that leaves ijson in the same state
    (``0`` is an upload that is not an object, which ``events`` passes over)."""

    START = b""
    IN_LIST = b'{"uploads": ['
    AFTER_COMMA = b'{"uploads": [0,'
    AFTER_LAST = b'{"uploads": [0'
    AFTER_LIST = b'{"uploads": [],'
    AFTER_META = b"{}"


def _read_lines(pieces: Iterator[bytes]) -> Iterator[tuple[str, Any]]:
    """Our layout a line at a time; from the first line that is not ours, ijson (``_Replay``)."""
    lines = Lines(pieces)
    replay = _Replay()
    at, meta = _At.START, None
    while True:
        line = lines.next(len(HEAD) + 1 if at is _At.START else _LINE_LIMIT)
        if at is _At.AFTER_META and not line and lines.error is None:
            yield "meta", meta  # only now: ijson would report bytes after it first
            return
        step = _step(at, line)
        if step is None:
            yield from replay.resume(line, lines)
            return
        after, value = step
        if after in (_At.AFTER_COMMA, _At.AFTER_LAST):
            yield "upload", value
        elif after is _At.AFTER_META:
            meta = value
        replay.keep(at, line, after in (_At.AFTER_COMMA, _At.AFTER_LAST))
        at = after


def _step(at: _At, line: bytes) -> tuple[_At, Any] | None:
    """Where the next line starts and what ``line`` holds, or None if our layout has no such line
    here (a line cut short or too long included)."""
    if not line.endswith(b"\n"):
        return None
    body = memoryview(line)[:-1]  # views, not copies: a line can be MiBs
    if at is _At.START:
        return (_At.IN_LIST, None) if len(body) == len(HEAD) and body.tobytes() == HEAD else None
    if len(body) == 2 and body.tobytes() == b"],":
        return (_At.AFTER_LIST, None) if at in (_At.IN_LIST, _At.AFTER_LAST) else None
    if at in (_At.IN_LIST, _At.AFTER_COMMA):
        comma = line.endswith(b",\n")
        entry = _object(line, body[:-1] if comma else body)
        return None if entry is None else (_At.AFTER_COMMA if comma else _At.AFTER_LAST, entry)
    if at is _At.AFTER_LIST and line.startswith(META_LINE) and line.endswith(b"}\n"):
        meta = _object(line, body[len(META_LINE):-1])
        return None if meta is None else (_At.AFTER_META, meta)
    return None


def _object(line: bytes, text: memoryview) -> dict[str, Any] | None:
    """``text``, a part of ``line``, as the JSON object ijson would read there, or None if it is
    not one."""
    if not (text[:1].tobytes() == b"{" and text[-1:].tobytes() == b"}"):
        return None
    try:
        if _LONG_NUMBER in line.translate(_DIGITS):
            values = list(ijson.items(bytes(text), "", use_float=True))
            value = values[0] if len(values) == 1 else None
        else:
            value = _loads(text)
    except (ijson.JSONError, ValueError):  # orjson's errors and bad UTF-8 are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def _loads(text: bytes | memoryview) -> Any:
    """orjson.loads, the collector paused (see ``paused_collector``)."""
    with paused_collector():
        return orjson.loads(text)


@contextmanager
def paused_collector() -> Iterator[None]:
    """Python's cyclic garbage collector paused for the block (as it was after).

    Reading a document builds hundreds of thousands of objects per upload; the collector would
    walk each upload again and again while it lives (a third of the time of a read). Values
    read from JSON hold no cycles, so reference counting frees them all the same.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Replay:
    """The last lines read (at least ``_CONTEXT`` bytes of them) and where the first one starts:
    what ijson resumes from, so that it reads on exactly as it reads the whole document."""

    def __init__(self) -> None:
        self.offset = 0  # of the first line kept, in the document
        self.size = 0
        self.lines: deque[tuple[_At, bytes, bool]] = deque()  # (where it starts, line, an upload)

    def keep(self, at: _At, line: bytes, upload: bool) -> None:
        self.lines.append((at, line, upload))
        self.size += len(line)
        while self.size - len(self.lines[0][1]) >= _CONTEXT:
            _, first, _ = self.lines.popleft()
            self.offset += len(first)
            self.size -= len(first)

    def resume(self, line: bytes, lines: Lines) -> Iterator[tuple[str, dict[str, Any]]]:
        """ijson from the first line kept: ``line`` (not ours) and the rest follow it."""
        start = self.lines[0][0].value if self.lines else b""
        if self.offset:
            # Blanks (JSON's own) put the kept lines where they are in ijson's chunks, and at
            # least one ends what the state's JSON holds.
            start += b" " * ((self.offset - len(start) - 1) % _IJSON_READ + 1)
        pieces = chain([start], (kept for _, kept, _ in self.lines), [line], lines.rest())
        return events(Chunks(pieces), skip=sum(upload for _, _, upload in self.lines))


def parse_json(text: bytes) -> Any:
    """``json.loads(text)``, by orjson where the two agree (all but long integers and what orjson
    refuses): several times faster. Raises ValueError."""
    if _LONG_NUMBER not in text.translate(_DIGITS):
        try:
            return _loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)
