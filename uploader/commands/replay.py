"""`uploader replay` and `uploader close-day`: the spool uploaded now, by a one-shot command.

Both use the uploader `run` uses, one per selected destination (``uploaders``), so they refuse
while the service holds a stream's spool lock, and retry nothing: a batch the store refuses stays
spooled for later. Each destination uploads what it has not acknowledged yet (its queue); a batch
leaves the spool once every destination of its stream has it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date

from uploader.commands.progress import Progress
from uploader.commands.spools import stream_spools
from uploader.commands.targets import Selection, Target, run_each
from uploader.publish.status import StatusFile
from uploader.publish.uploader import Uploader
from uploader.store import open_store

__all__ = ["ReplayResult", "close_day", "close_day_selection", "replay", "replay_selection", "uploaders"]


@dataclass
class ReplayResult:
    """What a replay or a close-day did: ``lines`` for stdout, then ``errors`` for stderr."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def uploaders(selection: Selection, what: str, *, dry_run: bool = False) -> Iterator[list[tuple[Target, Uploader]]]:
    """An uploader for each selected destination, for a one-shot command, refusing while
    `uploader run` holds a selected stream's spool lock (``stream_spools``).

    A dry run writes nothing, so it takes no lock: the documented way is to look first, with the
    service running, and stop it only for the real thing.
    """
    with stream_spools(selection, what, lock=not dry_run) as spools:
        made = []
        for s in spools:
            for t in s.targets:
                view = t.config
                status = StatusFile(view.state / "status.json")
                made.append((t, Uploader.for_config(view, s.spool, open_store(view.storage, view.state), status,
                                                    queue=s.queue(t))))
        yield made


def replay_selection(selection: Selection, day: date | None, *, dry_run: bool, say: Callable[[str], None],
                     err: Callable[[str], None]) -> bool:
    """`uploader replay` on every selected destination; False if any left work or failed."""
    with uploaders(selection, "uploader replay", dry_run=dry_run) as made:
        def work(target: Target, uploader: Uploader) -> bool:
            return _said(replay(uploader, day, dry_run=dry_run), say, err)

        return run_each(made, work, many=selection.many, say=say, err=err)


def close_day_selection(selection: Selection, day: date, *, say: Callable[[str], None],
                        err: Callable[[str], None]) -> bool:
    """`uploader close-day` on every selected destination; False if any could not close."""
    with uploaders(selection, "uploader close-day") as made:
        return run_each(made, lambda target, uploader: _said(close_day(uploader, day), say, err),
                        many=selection.many, say=say, err=err)


def _said(result: ReplayResult, say: Callable[[str], None], err: Callable[[str], None]) -> bool:
    for line in result.lines:
        say(line)
    for line in result.errors:
        err(line)
    return result.ok


def replay(uploader: Uploader, day: date | None = None, *, dry_run: bool = False) -> ReplayResult:
    """Upload every spooled batch (of ``day``, if given) now, backoff or not, then the quarantine.

    A dry run only lists what would be uploaded. Progress goes to stderr as it happens.
    """
    pending = uploader.queue.pending_batches(day)
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
