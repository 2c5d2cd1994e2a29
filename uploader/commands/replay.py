"""`uploader replay` and `uploader close-day`: the spool uploaded now, by a one-shot command.

Both use the uploader `run` uses (``exclusive_uploader``), so they refuse while the service
holds the spool lock, and retry nothing: a batch the store refuses stays spooled for later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date

from uploader.commands.progress import Progress
from uploader.config import Config
from uploader.local.spool import Spool
from uploader.publish.status import StatusFile
from uploader.publish.uploader import Uploader
from uploader.store import open_store

__all__ = ["ReplayResult", "close_day", "exclusive_uploader", "replay"]


@dataclass
class ReplayResult:
    """What a replay or a close-day did: ``lines`` for stdout, then ``errors`` for stderr."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def exclusive_uploader(config: Config, what: str, *, dry_run: bool = False) -> Iterator[Uploader]:
    """An uploader for a one-shot command, refusing while `uploader run` holds the spool lock.

    A dry run writes nothing, so it takes no lock: the documented way is to look first, with
    the service running, and stop it only for the real thing.
    """
    spool = Spool(config.spool.dir)
    with nullcontext() if dry_run else spool.locked(what):
        status = StatusFile(config.spool.dir / "status.json")
        yield Uploader.for_config(config, spool, open_store(config.storage, config.spool.dir), status)


def replay(uploader: Uploader, day: date | None = None, *, dry_run: bool = False) -> ReplayResult:
    """Upload every spooled batch (of ``day``, if given) now, backoff or not, then the quarantine.

    A dry run only lists what would be uploaded. Progress goes to stderr as it happens.
    """
    pending = uploader.spool.pending_batches(day)
    if dry_run:
        lines = [f"would upload {n} batch(es) for {d}" for d, n in sorted(Counter(e.day for e in pending).items())]
        lines.append(f"dry run: {len(pending)} batch(es) pending, nothing uploaded")
        return ReplayResult(True, lines)
    with Progress("replay", len(pending), "batches") as bar:
        report = uploader.drain(ignore_backoff=True, day=day,
                                progress=lambda handled: bar.update(max(0, handled - bar.done)))
    uploader.upload_quarantine()
    line = (f"replay: uploaded {report.batches} batch(es), {report.fetches} fetches, {report.matches} matches; "
            f"{report.left} left in the spool")
    errors = [f"replay: error: {err}" for err in dict.fromkeys(report.errors)]
    return ReplayResult(report.left == 0 and not report.errors, [line], errors)


def close_day(uploader: Uploader, day: date) -> ReplayResult:
    """Upload ``day``'s spooled batches, then mark its document closed."""
    report = uploader.drain(ignore_backoff=True, day=day)
    if report.left:
        return ReplayResult(False, errors=[(f"close-day: {report.left} batch(es) of {day} could not be "
                                            f"uploaded; day left open")])
    if not uploader.close_days([day]):
        return ReplayResult(False, errors=[f"close-day: could not close {day}; see the log above"])
    return ReplayResult(True, [f"close-day: {day} is closed"])
