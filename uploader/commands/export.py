"""`uploader export`: a day's fetches streamed out of its document, one upload at a time.

``jsonl`` writes one JSON object per fetch: ``upload_sequence`` and ``batch_id`` of its upload,
then the fetch's own members. ``bookended`` writes the pipeline's local-file format, exactly as
the shipped writer would, so the output can be fed back through the cut (each record's day is
its FETCH_HEADER timestamp's, as it was). Memory stays bounded whatever the size of the day.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import pytz

from uploader.config import Config
from uploader.daily import day_key, fetch_id_of
from uploader.daily.reading import DocumentError, paused_collector, read_document
from uploader.errors import ObjectNotFound, UsageError
from uploader.local.records import encode_record
from uploader.publish.forms import day_document_key
from uploader.stamps import parse_stamp
from uploader.store import open_store

__all__ = ["FORMATS", "ExportOutcome", "ExportReport", "ExportResult", "export", "export_day"]

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "bookended")


@dataclass
class ExportReport:
    uploads: int = 0
    fetches: int = 0
    guessed_times: int = 0  # bookended records whose header had no readable timestamp
    guessed_ids: int = 0  # ... or no fetch_id


class ExportOutcome(Enum):
    """How an export ended."""

    WRITTEN = "written"
    MISSING = "missing"  # no document for the day
    DAMAGED = "damaged"  # the document stops being valid JSON; the output was not kept


@dataclass
class ExportResult:
    """How an export ended, and the one line (for stderr) that says so."""

    outcome: ExportOutcome
    message: str
    report: ExportReport | None = None


def export(config: Config, day: date, fmt: str, output: Path | None, stdout: BinaryIO) -> ExportResult:
    """Stream ``day``'s document out of the store into ``output`` (``stdout`` if None), with progress.

    Raises UsageError for an ``output`` that cannot be written, before the store is asked.
    """
    # Imported here, not at the top: tqdm costs ~30 ms, and the CLI imports this module for
    # every command (FORMATS is in `--help`).
    from uploader.commands.progress import Progress

    store = open_store(config.storage)
    prefix, name = config.storage.prefix, config.storage.document_name
    key = day_key(prefix, day, name=name)
    where = str(output) if output else "stdout"
    try:
        # --output first: a path that cannot be written is bad usage, whatever the bucket holds.
        with _output(output, stdout) as out:
            key = day_document_key(store, prefix, day, name)  # plain or gzip
            with store.stream(key) as (stream, info), Progress("export", info.size, "bytes", scale=True) as bar:
                report = export_day(stream, fmt, out, day, config.day.tz, on_read=bar.update)
    except ObjectNotFound:
        return ExportResult(ExportOutcome.MISSING, f"export: no document for {day} ({key})")
    except DocumentError as exc:
        return ExportResult(ExportOutcome.DAMAGED, f"export: {key} is damaged ({exc}); nothing kept in {where}. "
                                                   f"Try: uploader repair {day}")
    return ExportResult(ExportOutcome.WRITTEN, f"export: {report.fetches} fetches of {report.uploads} uploads of "
                                               f"{day} written to {where} ({fmt})", report)


@contextmanager
def _output(path: Path | None, stdout: BinaryIO) -> Iterator[BinaryIO]:
    """``stdout``, or ``path`` written under a temporary name and renamed once complete."""
    if path is None:
        yield stdout
        stdout.flush()
        return
    if path.is_dir():
        # Checked first: the export would be written in full beside it, then fail to take its place.
        raise UsageError(f"--output {path} is a folder", f"give a file name, e.g. --output {path / 'export.jsonl'}")
    partial = path.with_name(path.name + ".partial")
    try:
        out = open(partial, "wb")  # noqa: SIM115 - closed below, renamed only when whole
    except OSError as exc:
        raise UsageError(f"cannot write --output {path} ({exc.strerror})", "choose a writable path") from None
    try:
        with out:
            yield out
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


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
    with paused_collector():
        for kind, upload in read_document(_Counting(stream, on_read)):  # type: ignore[arg-type]
            if kind != "upload":
                continue
            report.uploads += 1
            for i, fetch in enumerate(upload.get("fetch_data") or []):
                report.fetches += 1
                if fmt == "jsonl":
                    out.write(_jsonl({"upload_sequence": upload.get("upload_sequence"),
                                      "batch_id": upload.get("batch_id"), **fetch}))
                else:
                    out.write(_bookended(fetch, upload, i, noon, tz, report))
    if report.guessed_times or report.guessed_ids:
        log.warning("export_guessed day=%s times=%d ids=%d (fetches without FETCH_HEADER.timestamp / fetch_id; "
                    "noon of the day and <batch>-<n> used)", day, report.guessed_times, report.guessed_ids)
    return report


def _jsonl(line: dict[str, Any]) -> bytes:
    """One line of jsonl, compact, by orjson (ten times json's speed); json where orjson cannot
    (an integer past 64 bits)."""
    try:
        return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"


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
