"""The names of the service's threads, which say whose work they do: the log names each line's
stream and destination from them, so every module logs without knowing either."""

from __future__ import annotations

import re

__all__ = ["thread_name", "whose"]

_NAMED = re.compile(r"(?:upload-worker|watcher):([A-Za-z0-9_-]+)(?:/([A-Za-z0-9_-]+))?")


def thread_name(role: str, stream: str, destination: str | None = None) -> str:
    """``upload-worker:STREAM/DEST`` or ``watcher:STREAM``."""
    return f"{role}:{stream}" + (f"/{destination}" if destination else "")


def whose(name: str) -> str:
    """The ``stream=S destination=D`` fields of a thread named by ``thread_name`` ("" otherwise)."""
    found = _NAMED.fullmatch(name)
    if found is None:
        return ""
    stream, dest = found.groups()
    return f"stream={stream}" + (f" destination={dest}" if dest else "")
