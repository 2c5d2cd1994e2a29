"""A day document stored gzip-compressed, appended in O(batch): the bytes of the form.

The object is a multi-member gzip file (RFC 1952 allows any number of members; `gunzip`,
Python's ``gzip``, zlib's inflate and DuckDB read the concatenation of their contents), and its
content is exactly the plain document (§5.2). An append never touches what is stored: it keeps
every member but the last, then adds one member holding the new entries and a new last member
holding the new tail, so the server copies the old members and the client compresses and sends
only the batch and the tail.

- The **tail member** holds the tail (``TAIL_MARKER`` to the end) and carries a gzip extra field
  ``AT`` in its header, so its start can be found from the end of the object (``split_tail``)
  without trusting anything but the bytes: the signature is checked by inflating the member to
  the object's last byte.
- **Padding members** (``pad``) open a day written where the server appends server-side: empty
  members whose extra field ``AP`` fills 5 MiB, so that the kept members are never below S3's
  5 MiB minimum for a copied part, however small the day. They inflate to nothing. A new day
  copies them server-side from one padding object (``PAD_NAME``), so no client sends them. Once
  the day is closed they are dropped: its object is rewritten from ``PAD_SIZE`` on, which
  ``opens_with_padding`` and ``padding_ends`` check first.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

__all__ = [
    "PAD_MEMBER_SIZE",
    "PAD_NAME",
    "PAD_SEAM",
    "PAD_SIZE",
    "SUFFIX",
    "compress_member",
    "decompress",
    "is_gzip",
    "opens_with_padding",
    "pad",
    "padding_ends",
    "split_tail",
    "tail_member",
]

SUFFIX = ".gz"
PAD_NAME = ".uploader-pad.json.gz"  # under the prefix; a fixed object, written once
_MAGIC = b"\x1f\x8b"
_LEVEL = 6  # gzip's own default: 12x on the pipeline's fetches, ~40 MiB/s of one core
_OS_UNKNOWN = 255
# Under 32 KiB a header: DuckDB refuses a gzip header larger than 32768 bytes.
_PAD_EXTRA = 32 * 1024 - 64
_PAD_MEMBERS = 161  # x ~32.7 KiB: just over 5 MiB


def _header(extra_id: bytes = b"", extra: bytes = b"") -> bytes:
    """A member header: deflate, no name, no time (the same bytes every time), OS unknown, and
    an extra field holding one subfield ``extra_id`` when given."""
    if not extra_id:
        return _MAGIC + bytes([8, 0, 0, 0, 0, 0, 0, _OS_UNKNOWN])
    field = extra_id + struct.pack("<H", len(extra)) + extra
    return _MAGIC + bytes([8, 4, 0, 0, 0, 0, 0, _OS_UNKNOWN]) + struct.pack("<H", len(field)) + field


_TAIL_ID = b"AT"
_TAIL_VERSION = b"\x01\x00"
TAIL_SIGNATURE = _header(_TAIL_ID, _TAIL_VERSION)


def compress_member(pieces: Iterable[bytes], header: bytes = b"") -> Iterator[bytes]:
    """One gzip member holding the concatenation of ``pieces``, compressed as they stream (one
    piece in memory at a time); nothing at all when every piece is empty."""
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    crc = size = 0
    started = False
    for piece in pieces:
        if not piece:
            continue
        if not started:
            yield header or _header()
            started = True
        crc = zlib.crc32(piece, crc)
        size += len(piece)
        out = deflate.compress(piece)
        if out:
            yield out
    if started:
        yield deflate.flush() + struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def tail_member(tail: bytes) -> bytes:
    """The last member: the document's tail, marked so ``split_tail`` finds it."""
    return b"".join(compress_member([tail], TAIL_SIGNATURE))


def split_tail(suffix: bytes, object_size: int) -> tuple[int, bytes] | None:
    """Find the tail member in the last ``len(suffix)`` bytes of an object of ``object_size``.

    Returns (bytes before the tail member, the tail it inflates to), or None when no tail member
    starts in the suffix (read a longer one). A signature inside compressed data is told from
    the real one by inflating: only a member that ends exactly at the object's end, with its
    checksum right, counts.
    """
    end = len(suffix)
    while (pos := suffix.rfind(TAIL_SIGNATURE, 0, end)) >= 0:
        tail = _inflate_last(suffix[pos:])
        if tail is not None:
            return object_size - len(suffix) + pos, tail
        end = pos
    return None


def _inflate_last(member: bytes) -> bytes | None:
    """What one member that fills ``member`` exactly inflates to; None if it is not one."""
    body = member[len(TAIL_SIGNATURE):]
    inflate = zlib.decompressobj(-15)
    try:
        data = inflate.decompress(body)
    except zlib.error:
        return None
    trailer = inflate.unused_data
    if not inflate.eof or len(trailer) != 8:
        return None
    crc, size = struct.unpack("<II", trailer)
    if crc != zlib.crc32(data) & 0xFFFFFFFF or size != len(data) & 0xFFFFFFFF:
        return None
    return data


def _empty_member(header: bytes) -> bytes:
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
    return header + deflate.flush() + struct.pack("<II", 0, 0)


_PAD_MEMBER = _empty_member(_header(b"AP", bytes(_PAD_EXTRA)))
PAD_MEMBER_SIZE = len(_PAD_MEMBER)
PAD_SIZE = PAD_MEMBER_SIZE * _PAD_MEMBERS
# Where the padding meets the content: its last member and the next member's magic bytes.
PAD_SEAM = (PAD_SIZE - PAD_MEMBER_SIZE, PAD_SIZE + len(_MAGIC))


def pad() -> bytes:
    """The padding that opens a day appended server-side: empty members, 5 MiB in all."""
    return _PAD_MEMBER * _PAD_MEMBERS


def opens_with_padding(first: bytes) -> bool:
    """Whether an object whose first PAD_MEMBER_SIZE bytes are ``first`` opens with the padding."""
    return first.startswith(_PAD_MEMBER)


def padding_ends(seam: bytes) -> bool:
    """Whether ``seam``, an object's bytes in the span PAD_SEAM, show a padding member ending
    exactly at PAD_SIZE and another member starting there: the content is what follows PAD_SIZE."""
    return seam == _PAD_MEMBER + _MAGIC


def is_gzip(first_bytes: bytes) -> bool:
    """Whether an object starting with these bytes is gzip (no JSON document starts so)."""
    return first_bytes.startswith(_MAGIC)


def decompress(data: bytes) -> bytes:
    """All members' content, concatenated (what ``gunzip`` gives)."""
    out: list[bytes] = []
    while data:
        inflate = zlib.decompressobj(31)
        out.append(inflate.decompress(data))
        if not inflate.eof:
            raise ValueError("a gzip member is cut short")
        data = inflate.unused_data
    return b"".join(out)
