"""`uploader export`: a day's fetches streamed out of its document, one upload at a time.

``jsonl`` writes one JSON object per fetch: ``upload_sequence`` and ``batch_id`` of its upload,
then the fetch's own members. ``bookended`` writes the pipeline's local-file format, exactly as
the shipped writer would, so the output can be fed back through the cut (each record's day is
its FETCH_HEADER timestamp's, as it was). Memory stays bounded whatever the size of the day.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, BinaryIO

import pytz

from uploader.daily import fetch_id_of
from uploader.local.records import encode_record
from uploader.daily.reading import read_document
from uploader.stamps import parse_stamp

__all__ = ["FORMATS", "ExportReport", "export_day"]

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "bookended")


@dataclass
class ExportReport:
    uploads: int = 0
    fetches: int = 0
    guessed_times: int = 0  # bookended records whose header had no readable timestamp
    guessed_ids: int = 0  # ... or no fetch_id


class _Counting:
    """A stream that reports how many bytes were read from it (for progress)."""

    def __init__(self, stream: BinaryIO, on_read: Callable[[int], None]) -> None:
        self.stream = stream
        self.on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        self.on_read(len(data))
        return data


def export_day(
    stream: BinaryIO,
    fmt: str,
    out: BinaryIO,
    day: date,
    tz: pytz.BaseTzInfo,
    on_read: Callable[[int], None] = lambda n: None,
) -> ExportReport:
    """Write every fetch of the document in ``stream`` to ``out`` in ``fmt``.

    Raises reading.DocumentError where the document stops being valid JSON; what was written
    before that point is complete records.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    report = ExportReport()
    noon = tz.localize(datetime.combine(day, time(12, 0)))
    for kind, upload in read_document(_Counting(stream, on_read)):  # type: ignore[arg-type]
        if kind != "upload":
            continue
        report.uploads += 1
        for i, fetch in enumerate(upload.get("fetch_data") or []):
            report.fetches += 1
            if fmt == "jsonl":
                line = {"upload_sequence": upload.get("upload_sequence"), "batch_id": upload.get("batch_id"), **fetch}
                out.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
            else:
                out.write(_bookended(fetch, upload, i, noon, tz, report))
    if report.guessed_times or report.guessed_ids:
        log.warning("export_guessed day=%s times=%d ids=%d (fetches without FETCH_HEADER.timestamp / fetch_id; "
                    "noon of the day and <batch>-<n> used)", day, report.guessed_times, report.guessed_ids)
    return report


def _bookended(fetch: Any, upload: dict[str, Any], i: int, noon: datetime, tz: pytz.BaseTzInfo,
               report: ExportReport) -> bytes:
    header = fetch.get("FETCH_HEADER") if isinstance(fetch, dict) else None
    stamp = header.get("timestamp") if isinstance(header, dict) else None
    instant = parse_stamp(stamp, tz) if isinstance(stamp, str) else None
    if instant is None:
        # Only fetches written before the shipped writer lack it; keep them in their day.
        report.guessed_times += 1
        instant = noon
    fetch_id = fetch_id_of(fetch)
    if not fetch_id or any(c.isspace() for c in fetch_id):
        report.guessed_ids += 1
        fetch_id = f"{str(upload.get('batch_id') or upload.get('upload_sequence'))[:16]}-{i}"
    return encode_record(fetch_id, instant, tz, fetch if isinstance(fetch, dict) else {"RAW_API_DATA": fetch})
