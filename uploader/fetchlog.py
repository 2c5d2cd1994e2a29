"""The pipeline's side of the bookended file: append one whole record per call, safely.

``append_fetch`` / ``FetchWriter`` write one whole record per single ``write`` while holding an
exclusive ``flock``, the same lock the uploader takes to rewrite the file. This module is the
import path the pipeline uses (``from uploader.fetchlog import FetchWriter``); it imports only
the record encoding, so a pipeline process pays for nothing else of the uploader.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytz

from uploader.local.records import encode_record
from uploader.stamps import DEFAULT_TIMEZONE, format_stamp

__all__ = ["FetchWriter", "append_bytes", "append_fetch"]


class FetchWriter:
    """The pipeline's writer: appends one whole record per call under an exclusive flock.

    Usage from the pipeline::

        writer = FetchWriter("data/all_api.json", "America/New_York")
        writer.append(raw_api_data, total_matches=57)
    """

    def __init__(self, path: str | os.PathLike[str], timezone: str = DEFAULT_TIMEZONE) -> None:
        self.path = Path(path)
        self.tz = pytz.timezone(timezone)

    def append(
        self,
        raw_api_data: Any,
        total_matches: int,
        *,
        header: Mapping[str, Any] | None = None,
        footer: Mapping[str, Any] | None = None,
        fetch_id: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Append one fetch and return its fetch id."""
        if type(total_matches) is not int or total_matches < 0:
            raise ValueError(f"total_matches must be a non-negative int, got {total_matches!r}")
        fetch_id = fetch_id or uuid.uuid4().hex[:12]
        instant = now or datetime.now(pytz.utc)
        document = {
            # The markers' id and time win: a header saying otherwise would contradict them.
            "FETCH_HEADER": {**(header or {}), "fetch_id": fetch_id, "timestamp": format_stamp(instant, self.tz)},
            "RAW_API_DATA": raw_api_data,
            "FETCH_FOOTER": {**(footer or {}), "total_matches": total_matches},
        }
        append_bytes(self.path, encode_record(fetch_id, instant, self.tz, document))
        return fetch_id


def append_fetch(path: str | os.PathLike[str], raw_api_data: Any, total_matches: int, **kw: Any) -> str:
    """One-call form of ``FetchWriter(path).append(...)`` for pipelines that need nothing more."""
    timezone = kw.pop("timezone", DEFAULT_TIMEZONE)
    return FetchWriter(path, timezone).append(raw_api_data, total_matches, **kw)


def append_bytes(path: str | os.PathLike[str], record: bytes) -> None:
    """Append ``record`` with one write under an exclusive flock (the uploader's lock too)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(record)
        while view:  # a regular file takes it in one go; loop only for signals or huge writes
            written = os.write(fd, view)
            view = view[written:]
    finally:
        os.close(fd)  # closing releases the flock
