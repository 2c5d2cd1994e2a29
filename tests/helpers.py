"""Shared test helpers: waiting on conditions, reading spools, building records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytz

from uploader.fetchlog import encode_record
from uploader.spool import Batch, Spool

T = TypeVar("T")
NY = pytz.timezone("America/New_York")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval of a deadline wait, not synchronisation by sleep
        delay = min(delay * 2, 0.1)


def record(fetch_id: str, when: datetime, matches: int = 3, raw: Any = None, tz: Any = NY) -> bytes:
    """The bytes the pipeline's writer produces for one fetch."""
    doc = {
        "FETCH_HEADER": {"fetch_id": fetch_id},
        "RAW_API_DATA": raw if raw is not None else {"games": [fetch_id]},
        "FETCH_FOOTER": {"total_matches": matches},
    }
    return encode_record(fetch_id, when, tz, doc)


def spooled(spool: Spool) -> list[Batch]:
    """Every committed batch in the spool, oldest first."""
    return [e.load() for e in spool.pending_batches()]


def spooled_ids(spool_dir: Path) -> list[str]:
    """Fetch ids of every committed batch in a spool folder, in seq order (duplicates kept)."""
    ids: list[str] = []
    for p in sorted((spool_dir / "batches").glob("*.json")):
        ids.extend(json.loads(p.read_bytes())["fetch_ids"])
    return ids
