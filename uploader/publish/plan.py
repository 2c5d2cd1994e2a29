"""Which way an append goes into the day's document: a pure function of what was read of the
document and of what the server honours, ARCHITECTURE.md's capability table in code.

``publish`` reads the document, asks ``choose_plan``, and carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from uploader.store.capabilities import MIN_PART_SIZE, Capabilities

__all__ = ["SMALL_LIMIT", "AppendPath", "Body", "DocumentState", "Guard", "Layout", "WritePlan", "choose_plan"]

# Below this a document is rewritten whole: a multipart copy part must be at least 5 MiB.
SMALL_LIMIT = MIN_PART_SIZE


class AppendPath(StrEnum):
    """How an append (or close) wrote the day's document; a StrEnum, as logs and metrics name it."""

    NEW = "new"  # the key did not exist: the whole document, created
    REWRITE = "rewrite"  # the old body sent again, from memory or a GET (or re-encoded in our layout)
    TAIL = "tail"  # server-side append: the body copied by range on the server, only the rest sent
    NONE = "none"  # nothing to write: every batch already listed, or the day already closed


class Layout(Enum):
    """What the read found under the day's key."""

    ABSENT = "absent"  # no document yet
    OURS = "ours"  # our layout: the tail marker found, everything before it is kept as it is
    FOREIGN = "foreign"  # another layout (the old logger's): no tail to replace, parsed whole


class Body(Enum):
    """Where the new document's first bytes come from: the old document up to its tail, kept."""

    OPENING = "opening"  # nothing to keep: a new document starts with daily.HEAD
    PADDING = "padding"  # a new gzip document: its padding copied on the server, then daily.HEAD (S3 only)
    HELD = "held"  # the old body is in memory (read whole below 5 MiB, or our own last write)
    STREAMED = "streamed"  # streamed from a GET into the write: the client sends the whole day
    COPIED = "copied"  # copied on the server (UploadPartCopy with a range): never sent
    REENCODED = "reencoded"  # a foreign layout, parsed and written whole in ours


class Guard(StrEnum):
    """What refuses the write if the document changed since it was read (the store carries it out).

    For NEW and REWRITE this is the guard of one PUT; a body past one 8 MiB part is written
    multipart where the server has it, and then guarded as TAIL is (Complete's If-Match for a
    rewrite where honoured, else the HEAD check), which only the store can tell as it streams.
    """

    SERVER = "server"  # the server checks If-None-Match / If-Match (on PUT, or on Complete)
    HEAD = "head"  # a HEAD just before the write (before Complete) checks it; the lock covers the rest


@dataclass(frozen=True)
class DocumentState:
    """What an append knows of the day's document when it chooses how to write it."""

    layout: Layout
    keep: int = 0  # OURS: bytes before the old tail, which the new document keeps as they are
    held: bool = False  # the whole old body is in memory, so sending it again costs no read
    changes: bool = True  # the edit changes something (False: every batch listed, or day closed)
    gzip: bool = False  # stored gzip-compressed (DESIGN §5.10)


@dataclass(frozen=True)
class WritePlan:
    """How to write: the path, where the kept bytes come from, and what guards the write.

    ``copy_checked``: the server-side copy carries CopySourceIfMatch, so a stale copy is refused
    before anything is sent; only an early refusal, the write itself is still guarded by ``guard``.
    """

    path: AppendPath
    body: Body | None = None  # None: nothing is written
    guard: Guard | None = None
    copy_checked: bool = False


def choose_plan(doc: DocumentState, caps: Capabilities) -> WritePlan:
    """The append path for ``doc`` on a server honouring ``caps``.

    Every capability only chooses among paths that all land the upload (invariant 14): where one
    is missing, its fallback is a path that does without it.
    """
    if doc.layout is Layout.ABSENT:
        # Always written: an edit of a new tail always changes it (an append, or a close that
        # creates the day empty and closed).
        if doc.gzip and caps.server_side_append and caps.min_copy > 0:
            # Padded, so that every later append keeps at least S3's 5 MiB copied part: one
            # multipart upload, guarded by the HEAD just before Complete. (A store that copies
            # any size, the directory, needs no padding; a closed day loses it, publish.trim.)
            return WritePlan(AppendPath.NEW, Body.PADDING, Guard.HEAD)
        return WritePlan(AppendPath.NEW, Body.OPENING, _put_guard(caps))
    if not doc.changes:
        return WritePlan(AppendPath.NONE)
    if doc.layout is Layout.FOREIGN:
        return WritePlan(AppendPath.REWRITE, Body.REENCODED, _put_guard(caps))
    if doc.held:
        # Read whole already (below 5 MiB, where S3 copies no part anyway): sending it is cheapest.
        return WritePlan(AppendPath.REWRITE, Body.HELD, _put_guard(caps))
    if doc.keep >= SMALL_LIMIT and caps.server_side_append:
        guard = Guard.SERVER if caps.complete_if_match else Guard.HEAD
        return WritePlan(AppendPath.TAIL, Body.COPIED, guard, copy_checked=caps.copy_source_if_match)
    # The server cannot append (no range copy, multipart or suffix reads), or the kept part is
    # below S3's 5 MiB minimum for a copied part: the client sends the old body again.
    return WritePlan(AppendPath.REWRITE, Body.STREAMED, _put_guard(caps))


def _put_guard(caps: Capabilities) -> Guard:
    """The guard of a write in one PUT."""
    return Guard.SERVER if caps.conditional_put else Guard.HEAD
