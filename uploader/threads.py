"""Whose work a log line is: the service's threads are named for the stream (and destination)
they work for, and work done for one elsewhere (a stream's start-up, on the main thread) is
marked while it runs. The log names each line's stream and destination from these, so every
module logs without knowing either."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["thread_name", "whose", "working_for"]

_NAMED = re.compile(r"(?:upload-worker|watcher):([A-Za-z0-9_-]+)(?:/([A-Za-z0-9_-]+))?")
_FOR: ContextVar[str] = ContextVar("uploader_working_for", default="")


def thread_name(role: str, stream: str, destination: str | None = None) -> str:
    """``upload-worker:STREAM/DEST`` or ``watcher:STREAM``."""
    return f"{role}:{stream}" + (f"/{destination}" if destination else "")


@contextmanager
def working_for(stream: str, destination: str | None = None) -> Iterator[None]:
    """Mark the lines logged in this block, on this thread, as one stream's (and destination's)."""
    token = _FOR.set(_fields(stream, destination))
    try:
        yield
    finally:
        _FOR.reset(token)


def whose(name: str) -> str:
    """The ``stream=S destination=D`` fields of the work under way ("" when none is marked and
    the thread, named ``name``, is not one ``thread_name`` named)."""
    marked = _FOR.get()
    if marked:
        return marked
    found = _NAMED.fullmatch(name)
    return "" if found is None else _fields(*found.groups())


def _fields(stream: str, destination: str | None) -> str:
    return f"stream={stream}" + (f" destination={destination}" if destination else "")
