"""Make tests/corpus/upgrade-0.1.0/ with the first release's own code (0.1.0, git commit 684398d).

Run by hand only (the suite never runs it; tests/test_upgrade.py reads what it wrote), with the
OLD package on the path, never the repo's::

    # from the repository's root:
    git worktree add /tmp/old-0.1.0 684398d
    REPO=$PWD; (cd /tmp && PYTHONPATH=/tmp/old-0.1.0 "$REPO/.venv/bin/python" \\
        "$REPO/tests/rig/make_upgrade_fixture.py" --old /tmp/old-0.1.0)
    git worktree remove /tmp/old-0.1.0

It writes two states of a 0.1.0 install, each a folder holding ``config.toml`` (0.1.0's shipped
config, byte for byte), ``data/all_api.json`` (the local file), ``data/spool/`` (as 0.1.0 left
it) and ``expected.json`` (what the pipeline wrote: fetch ids and matches per day, and the id
of the unfinished record, which must never be stored):

``waiting/``
    0.1.0's FetchWriter appends 23 fetches of 2026-11-20 and 12 of 2026-11-21 (America/New_York),
    0.1.0's Cutter cutting after every append, as its watcher would; then the pipeline dies
    half-way through one more record. Left: four batches waiting (10, 10, 3 of 11-20; 10 of
    11-21), and in the local file two complete records of 11-21 not yet cut plus the
    unfinished one.

``interrupted/``
    The same writer and cutter: 10 fetches of 2026-11-21, cut (one batch committed); then a
    burst the cutter had not yet looked at: 3 more of 11-21, 11 of 11-22 and half a record.
    The next cut runs in a child process that SIGKILLs itself right after 0.1.0's
    ``Spool.write_journal`` returns: the commit point. Left: ``journal.json`` (0.1.0's form,
    ``rest_digest``), ``journal.kept`` (one record and the half one), two staged
    ``batches/*.json.pending`` (3 of 11-21, 10 of 11-22), and the local file untouched, still
    holding the cut bytes.

Fetch ids and every clock are fixed, so a second run writes the same bytes (but ``mtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytz

OUT = Path(__file__).resolve().parent.parent / "corpus" / "upgrade-0.1.0"


def _old_package(old: Path) -> None:
    """Refuse to run on anything but 0.1.0's own package (the repo's would make a useless fixture)."""
    import uploader

    where = Path(uploader.__file__).resolve()
    if getattr(uploader, "__version__", None) != "0.1.0" or old.resolve() not in where.parents:
        sys.exit(f"imported uploader from {where}, not 0.1.0 under {old}; "
                 f"run with PYTHONPATH={old} from /tmp")
    try:
        import uploader.cut  # noqa: F401  (0.1.0's flat layout; later releases moved it)
    except ImportError:
        sys.exit(f"{where} has no uploader.cut: not 0.1.0's layout")


class Pipeline:
    """0.1.0's FetchWriter and Cutter on one install folder, with a clock this script moves."""

    def __init__(self, root: Path, old: Path, prefix: str) -> None:
        from uploader.cut import Cutter
        from uploader.spool import Spool

        from uploader.config import load_config
        from uploader.fetchlog import FetchWriter

        root.mkdir(parents=True)
        shutil.copyfile(old / "config.toml", root / "config.toml")
        self.config = load_config(root / "config.toml")  # 0.1.0's loader, on 0.1.0's config
        self.config.watch.file.parent.mkdir(parents=True, exist_ok=True)
        self.tz = self.config.day.tz
        self.writer = FetchWriter(self.config.watch.file, self.config.day.timezone)
        self.spool = Spool(self.config.spool.dir)
        self.cutter = Cutter(self.config.watch.file, self.spool, self.tz, self.config.watch.batch_size,
                             clock=lambda: self.now + timedelta(seconds=2))
        self.prefix = prefix
        self.now = datetime.now(pytz.utc)
        self.n = 0
        self.written: dict[str, list[dict[str, object]]] = {}

    def at(self, wall: str) -> None:
        """Set the clock to a wall time in the zone, e.g. ``2026-11-20 23:40``."""
        self.now = self.tz.localize(datetime.strptime(wall, "%Y-%m-%d %H:%M")).astimezone(pytz.utc)

    def append(self, count: int, cut: bool = True) -> None:
        """``count`` fetches a minute apart, each cut after (as 0.1.0's watcher would) if ``cut``."""
        for _ in range(count):
            self.n += 1
            fetch_id = f"{self.prefix}{self.n:03d}"
            matches = self.n % 4 + 1
            home = "Atlético" if self.n % 5 == 0 else "Leeds"  # some non-ASCII, as real feeds have
            raw = {"events": [{"id": self.n, "home": home, "odds": 1.85}]}
            self.writer.append(raw, matches, fetch_id=fetch_id, now=self.now)
            day = self.now.astimezone(self.tz).date().isoformat()
            self.written.setdefault(day, []).append({"fetch_id": fetch_id, "matches": matches})
            if cut:
                self.cutter.cut()
            self.now += timedelta(minutes=1)

    def unfinished(self) -> str:
        """The first half of one more record: a pipeline killed mid-write (0.1.0's encoder)."""
        from uploader.fetchlog import encode_record

        self.n += 1
        fetch_id = f"{self.prefix}{self.n:03d}"
        doc = {"FETCH_HEADER": {"fetch_id": fetch_id}, "RAW_API_DATA": {"events": []},
               "FETCH_FOOTER": {"total_matches": 1}}
        record = encode_record(fetch_id, self.now, self.tz, doc)
        with open(self.config.watch.file, "ab") as f:
            f.write(record[: len(record) // 2])
        return fetch_id

    def expected(self, unfinished: str) -> None:
        days = {day: {"fetch_ids": [f["fetch_id"] for f in fs], "matches": sum(f["matches"] for f in fs)}
                for day, fs in sorted(self.written.items())}
        body = {"made_by": "uploader 0.1.0 (git 684398d), tests/rig/make_upgrade_fixture.py",
                "batch_size": self.config.watch.batch_size, "timezone": self.config.day.timezone,
                "days": days, "unfinished_fetch_id": unfinished}
        (self.config.spool.dir.parent.parent / "expected.json").write_text(json.dumps(body, indent=1) + "\n")


def waiting(root: Path, old: Path) -> None:
    p = Pipeline(root, old, "w")
    with p.spool.locked("uploader run"):
        p.at("2026-11-20 23:37")
        p.append(23)  # 11-20: 10, 10 cut; the last 3 are cut when the next day begins
        p.append(12)  # 11-21 (from 00:00): 10 cut, 2 left
        unfinished = p.unfinished()
    p.expected(unfinished)


def interrupted(root: Path, old: Path) -> None:
    p = Pipeline(root, old, "i")
    with p.spool.locked("uploader run"):
        p.at("2026-11-21 23:47")
        p.append(10)  # one batch of 11-21 committed
        p.append(14, cut=False)  # a burst: 3 more of 11-21, 11 of 11-22 (from 00:00)
        unfinished = p.unfinished()
        pid = os.fork()
        if pid == 0:  # the child: 0.1.0's cut, killed at its commit point
            real = p.spool.write_journal

            def write_then_die(journal: object) -> None:
                real(journal)
                os.kill(os.getpid(), signal.SIGKILL)

            p.spool.write_journal = write_then_die  # type: ignore[method-assign]
            try:
                p.cutter.cut()
            finally:
                os._exit(3)  # not reached: the journal was written and the child killed
        _, status = os.waitpid(pid, 0)
        if not os.WIFSIGNALED(status) or os.WTERMSIG(status) != signal.SIGKILL:
            sys.exit(f"the cut was not killed after its journal (wait status {status})")
    if not (p.spool.journal_path.exists() and list(p.spool.batches_dir.glob("*.pending"))):
        sys.exit("no journal and staged batches after the killed cut")
    p.expected(unfinished)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, default=Path("/tmp/old-0.1.0"), help="0.1.0's worktree")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    _old_package(args.old)
    for name, make in (("waiting", waiting), ("interrupted", interrupted)):
        target = args.out / name
        if target.exists():
            shutil.rmtree(target)
        make(target, args.old)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
