"""Child process for the crash tests: run one cut and SIGKILL itself at a chosen step.

Usage: crash_child.py FILE SPOOL STEP [BATCH_SIZE]. The kill happens inside the real code path
by wrapping the function that performs the step; no failpoints live in the product.
``crash_child.py compose ...`` instead appends to a day on S3 and dies between two copy parts.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytz

import uploader.local.surgery as surgery
from uploader.local.cut import Cutter
from uploader.local.journal import Journal
from uploader.local.spool import Spool


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(obj: object, name: str, nth: int = 1) -> None:
    """Die right after the nth call of obj.name returns."""
    real = getattr(obj, name)
    calls = [0]

    def wrapper(*a, **kw):
        result = real(*a, **kw)
        calls[0] += 1
        if calls[0] == nth:
            die()
        return result

    setattr(obj, name, wrapper)


def append_after_journal(journal: Journal, path: Path) -> None:
    """A writer appends a record after the journal is written and before the cut takes the lock."""
    real = journal.write

    def wrapper(journal: object) -> None:
        real(journal)  # type: ignore[arg-type]
        with open(path, "ab") as f:
            # The test's file ends in a torn record: finish it first, as its writer would have.
            f.write(b'"FETCH_FOOTER": {"total_matches": 1}}\n=== FETCH END: unfinished | x ===\n')
            f.write(b"=== FETCH START: window | 07/10/2025 04:00:00 PM EDT ===\n"
                    b'{"FETCH_HEADER": {"fetch_id": "window"}, "FETCH_FOOTER": {"total_matches": 2}}\n'
                    b"=== FETCH END: window | 07/10/2025 04:00:00 PM EDT ===\n")

    journal.write = wrapper  # type: ignore[method-assign]


def append_then_die(args: list[str]) -> None:
    """Append one batch to a day on S3, its kept body copied in parts of COPY_PART bytes, and die
    right after the NTH UploadPartCopy (the next part not yet asked for).

    Usage: crash_child.py compose ENDPOINT BUCKET BATCH_FILE COPY_PART NTH NOW_ISO
    """
    from datetime import datetime

    from uploader.local.batch import Batch
    from uploader.publish import append_batches
    from uploader.store.s3 import S3Store

    endpoint, bucket, batch_file, copy_part, nth, now = args
    store = S3Store(bucket, endpoint_url=endpoint, region="us-east-1", addressing_style="path", prefix="logs")
    store.copy_part_size = int(copy_part)
    store.capabilities()  # the probe's own copies are not the ones counted
    copies = [0]

    def after_copy(**kwargs: object) -> None:
        copies[0] += 1
        if copies[0] == int(nth):
            die()

    store.client.meta.events.register("after-call.s3.UploadPartCopy", after_copy)
    batch = Batch.from_json(Path(batch_file).read_bytes())
    append_batches(store, "logs", pytz.timezone("America/New_York"), [batch], datetime.fromisoformat(now))
    raise SystemExit("the append finished: the kill never came")


def main() -> None:
    if sys.argv[1] == "compose":
        return append_then_die(sys.argv[2:])
    path, spool_dir, step = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    spool = Spool(spool_dir)
    cutter = Cutter(path, spool, pytz.timezone("America/New_York"), batch_size)
    if step.startswith("append-then-"):
        append_after_journal(cutter.journal, path)
        step = step.removeprefix("append-then-")
    if step == "after-first-stage":
        after(spool, "_write_pending")
    elif step == "after-journal":
        after(cutter.journal, "write")
    elif step == "after-commit":
        after(spool, "commit")
    elif step == "mid-shift":
        surgery.CHUNK = 97  # many small copies, so the kill lands inside the shift
        after(surgery.os, "pwrite", nth=5)
    elif step == "before-truncate":
        surgery.os.ftruncate = lambda fd, n: die()  # type: ignore[assignment]
    elif step == "after-truncate":
        after(surgery.os, "ftruncate")
    elif step == "before-clear":
        cutter.journal.clear = die  # type: ignore[method-assign]
    elif step != "none":
        raise SystemExit(f"unknown step {step}")
    cutter.recover()
    cutter.cut()


if __name__ == "__main__":
    main()
