"""The local spool: durable batches waiting for upload, quarantined bytes, the cut journal, the lock."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import pwd
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from datetime import date
from pathlib import Path
from typing import Any

from uploader.errors import AlreadyRunning, SpoolError, UnreadableBatch
from uploader.files import DIR_MODE, FILE_MODE, TMP, atomic_write, fsync_dir, write_all

__all__ = ["ArchivePolicy", "ArchiveSummary", "QuarantineSummary", "BatchHeader", "encode_fetches", "fetch_data_of", "Batch", "CutJournal", "QuarantineItem", "Spool", "SpooledBatch"]

log = logging.getLogger(__name__)

PENDING = ".pending"  # written by a cut that has not committed yet; invisible to uploads
_BATCH_NAME = re.compile(r"^(\d{12})-(\d{4}-\d{2}-\d{2})-([0-9a-f]+)\.json$")
SERVICE_UNIT = "all-api-uploader"  # the unit name scripts/uploader.service is installed as
# The CLI's commands, to tell from a lock holder's command line whether it is the service.
_COMMANDS = ("run", "status", "replay", "check", "close-day", "verify", "export", "repair")


def encode_fetches(fetches: list[dict[str, Any]]) -> bytes:
    """A batch's fetches as the day document stores them: one compact JSON array, no newline."""
    return json.dumps(fetches, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class BatchHeader:
    """What a batch file says about its batch, without its fetches (the file's first line)."""

    batch_id: str
    seq: int
    day: date
    cut_at: str
    matches: int
    fetch_count: int
    fetch_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BatchHeader:
        return cls(
            batch_id=d["batch_id"], seq=d["seq"], day=date.fromisoformat(d["day"]), cut_at=d["cut_at"],
            matches=d["matches"], fetch_count=d["fetch_count"] if "fetch_count" in d else len(d["fetches"]),
            fetch_ids=d.get("fetch_ids", []),
        )


@dataclass(frozen=True)
class Batch:
    """Up to batch_size complete fetches of one day, cut from the local file in one piece.

    ``batch_id`` is a digest of the exact bytes cut, so cutting the same bytes again (after a
    crash) yields the same id, and the daily document can refuse to store it twice.

    ``fetch_data`` is the batch's fetches as one JSON array on one line, exactly the bytes the
    day document stores; the cut makes it from the records' own bytes (never re-encoded), and
    an append copies it from the spool file unparsed. ``fetches`` parses it, for those that
    need the objects (repair, tests). On disk (``to_json``): a one-line JSON header, a newline,
    then ``fetch_data``. Files of the older one-JSON-object form still load.
    """

    batch_id: str
    seq: int
    day: date
    cut_at: str
    fetch_data: bytes
    matches: int
    fetch_count: int
    fetch_ids: list[str] = field(default_factory=list)

    @classmethod
    def of(
        cls, batch_id: str, seq: int, day: date, cut_at: str, fetches: list[dict[str, Any]], matches: int,
        fetch_ids: list[str] | None = None,
    ) -> Batch:
        """A batch of parsed fetches (encoded here)."""
        return cls(batch_id, seq, day, cut_at, encode_fetches(fetches), matches, len(fetches), list(fetch_ids or []))

    @cached_property
    def fetches(self) -> list[dict[str, Any]]:
        parsed: list[dict[str, Any]] = json.loads(self.fetch_data)
        return parsed

    @property
    def header(self) -> BatchHeader:
        return BatchHeader(self.batch_id, self.seq, self.day, self.cut_at, self.matches, self.fetch_count,
                           self.fetch_ids)

    def to_json(self) -> bytes:
        head = {
            "format": 2, "batch_id": self.batch_id, "seq": self.seq, "day": self.day.isoformat(),
            "cut_at": self.cut_at, "matches": self.matches, "fetch_count": self.fetch_count,
            "fetch_ids": self.fetch_ids,
            # Uploads copy these bytes into the day unparsed: a damaged file must be caught first.
            "fetch_data_sha256": hashlib.sha256(self.fetch_data).hexdigest(),
        }
        return json.dumps(head, ensure_ascii=False).encode("utf-8") + b"\n" + self.fetch_data

    @classmethod
    def from_json(cls, data: bytes) -> Batch:
        first, newline, rest = data.partition(b"\n")
        d = json.loads(first)
        if newline and d.get("format") == 2:
            fetch_data, count = rest, d["fetch_count"]
        else:
            fetch_data, count = encode_fetches(d["fetches"]), len(d["fetches"])
        return cls(
            batch_id=d["batch_id"],
            seq=d["seq"],
            day=date.fromisoformat(d["day"]),
            cut_at=d["cut_at"],
            fetch_data=fetch_data,
            matches=d["matches"],
            fetch_count=count,
            fetch_ids=d.get("fetch_ids", []),
        )


def fetch_data_of(bodies: list[bytes]) -> bytes:
    """Record bodies (each a JSON object, as the pipeline wrote it) as a one-line JSON array.

    A newline can only be whitespace between tokens in valid JSON (a string cannot hold a raw
    one), so turning each into a space keeps every value intact and the array on one line.
    """
    return b"[" + b",".join(b.strip().replace(b"\r", b" ").replace(b"\n", b" ") for b in bodies) + b"]"


@dataclass(frozen=True)
class QuarantineItem:
    """Bytes cut from the local file that were not a well-formed fetch, kept verbatim."""

    name: str
    raw: bytes
    reason: str
    offset: int
    detected_at: str
    day: date | None = None


@dataclass(frozen=True)
class SpooledBatch:
    """A batch file in the spool, known from its name alone (no need to read it)."""

    path: Path
    seq: int
    day: date
    batch_id: str

    def load(self) -> Batch:
        """The whole batch, fetches parsed (repair, tests; uploads use ``header`` and ``fetch_data``)."""
        with self._reading():
            return Batch.from_json(self.path.read_bytes())

    def header(self) -> BatchHeader:
        """The batch's header: the file's first line only (the whole file in the older form)."""
        with self._reading(), open(self.path, "rb") as f:
            first = f.readline()
            d = json.loads(first)
            if d.get("format") != 2:
                d = json.loads(first + f.read())
            return BatchHeader.from_dict(d)

    def fetch_data(self) -> bytes:
        """The fetches exactly as the day document stores them (no parsing in the newer form),
        checked against the digest the cut recorded."""
        with self._reading(), open(self.path, "rb") as f:
            head = json.loads(f.readline())
            if head.get("format") != 2:
                f.seek(0)
                return encode_fetches(json.loads(f.read())["fetches"])
            data = f.read()
            if hashlib.sha256(data).hexdigest() != head["fetch_data_sha256"]:
                raise ValueError("its fetches do not match the digest recorded when it was cut")
            return data

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UnreadableBatch(
                f"spooled batch {self.path} cannot be read: {exc}",
                "move the file aside and report it; the other batches are unaffected",
                self.batch_id,
            ) from exc


@dataclass(frozen=True)
class ArchivePolicy:
    """How long (after upload) and how much of the uploaded batches the archive keeps."""

    max_age_s: float = 7 * 86400.0
    max_bytes: int = 1024 << 20

    @property
    def enabled(self) -> bool:
        return self.max_age_s > 0 and self.max_bytes > 0


@dataclass(frozen=True)
class ArchiveSummary:
    """What the local archive of uploaded batches holds."""

    batches: int = 0
    bytes: int = 0
    first_day: date | None = None
    last_day: date | None = None


@dataclass(frozen=True)
class QuarantineSummary:
    """Quarantined spans kept in the spool: not yet in the bucket, and sent (kept ``archive_days``)."""

    not_sent_spans: int = 0
    not_sent_bytes: int = 0
    sent_spans: int = 0
    sent_bytes: int = 0


@dataclass(frozen=True)
class CutJournal:
    """A cut committed to: the rewrite of the local file may not have happened, or finished.

    Written (durably) before the file's lock is taken, so nothing durable is ever destroyed
    without a copy. ``length``/``digest``: the cut bytes at the front of the file. ``size``: the
    file's size when journaled; ``kept_*``: its bytes [length:size], which move to the front (a
    copy is in ``journal.kept``). ``tail_digest`` covers the last ``tail_len`` bytes before
    ``size``, which the shift never overwrites: intact, they tell a shift not yet truncated from
    a finished one. ``inode``: the file cut; another file at the path is never written into.
    """

    length: int
    digest: str
    size: int
    kept_len: int
    kept_digest: str
    tail_len: int
    tail_digest: str
    inode: int
    pending: list[str]

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CutJournal:
        d = json.loads(data)
        if "rest_digest" in d:
            # Left by the previous version: its digest of [kept_len:size] is the same check over
            # the whole region; the inode was not recorded (-1: the file at the path).
            d["tail_len"], d["tail_digest"], d["inode"] = d["size"] - d["kept_len"], d.pop("rest_digest"), -1
        return cls(**d)


def _listed(folder: Path, day: date | None) -> list[SpooledBatch]:
    """Batch files in ``folder`` (of ``day`` if given), by seq."""
    out = []
    for name in os.listdir(folder):
        m = _BATCH_NAME.match(name)
        if m:
            entry = SpooledBatch(folder / name, int(m[1]), date.fromisoformat(m[2]), m[3])
            if day is None or entry.day == day:
                out.append(entry)
    return sorted(out, key=lambda e: e.seq)


def _sizes(paths: Iterator[Path]) -> list[int]:
    """Sizes of the files that still exist (a concurrent upload or prune may move one away)."""
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_size)
        except FileNotFoundError:
            continue
    return out


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _access_error(root: Path, path: Path, exc: OSError, doing: str) -> SpoolError:
    """The one-line SpoolError for a spool this process may not use: what really failed, and
    the fix that fits (remount, remove a folder in the way, change owner or modes)."""
    why = exc.strerror or str(exc)
    if exc.errno == errno.EROFS:
        return SpoolError(f"spool folder {root} is not writable ({why})",
                          "remount it read-write, or set spool.dir to a folder on writable persistent disk")
    if exc.errno == errno.EISDIR:
        return SpoolError(f"cannot {doing} {path}: it is a folder",
                          f"remove that folder (rmdir {path}); the uploader creates the file itself")
    if exc.errno not in (errno.EACCES, errno.EPERM):
        return SpoolError(f"cannot {doing} {path} ({why})", "check spool.dir and its permissions")
    owners = set()
    for p in (root, path):
        try:
            owners.add(p.stat().st_uid)
        except OSError:
            continue  # not there yet, or not even that may be looked at
    me = os.geteuid()
    if not owners:  # the spool is not there yet and this user may not create it
        hint = f"create it for this user (mkdir -p {root} && chown {_user(me)} {root}), or set spool.dir elsewhere"
    elif owners - {me}:
        them = ", ".join(sorted(_user(uid) for uid in owners))
        hint = (f"run the uploader as the spool's owner ({them}), or give the spool to this user: "
                f"chown -R {_user(me)} {root}")
    else:
        hint = (f"make it writable for its owner again: chmod -R u+rwX {root} "
                "(the uploader keeps folders 0700, files 0600)")
    return SpoolError(f"cannot {doing} {path} ({why})", hint)


def _holder(text: str) -> tuple[int | None, str | None]:
    """The pid in the lock file's "pid N", and which uploader command that process runs, read
    from its command line (Linux /proc; None where that cannot be told)."""
    m = re.fullmatch(r"pid (\d+)", text)
    if not m:
        return None, None
    try:
        args = [a.decode(errors="replace") for a in Path(f"/proc/{m[1]}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return int(m[1]), None
    for i, arg in enumerate(args):
        name = os.path.basename(arg)
        if name == "replay_spool.py":
            return int(m[1]), "replay"
        if name in ("uploader", "uploader.cli"):
            return int(m[1]), next((a for a in args[i + 1:] if a in _COMMANDS), None)
    return int(m[1]), None


def _busy_hint(command: str | None, what: str) -> str:
    """What to do about the process holding the spool: a service is stopped, a one-shot ends."""
    if command == "run":
        return (f"stop the running service first (`systemctl stop {SERVICE_UNIT}`, or Ctrl-C the "
                f"`uploader run`), then run `{what}` again")
    if command:
        return f"wait for that command to finish, then run `{what}` again"
    return (f"stop the running uploader first (`systemctl stop {SERVICE_UNIT}` if it is the service), "
            f"then run `{what}` again")


class Spool:
    """Durable local state under one folder (0700; files 0600).

    Layout: ``batches/<seq>-<day>-<batch_id>.json`` waiting for upload; ``archive/`` the same
    files once the store acknowledged them, kept a while for ``uploader repair``; ``quarantine/``
    bytes that were not well-formed fetches (``.bin`` verbatim + ``.json`` why), ``quarantine/sent/``
    once they are in the bucket; ``journal.json`` (+ ``journal.kept``) while a cut's rewrite
    is unfinished; ``state.json`` the next sequence number; ``lock`` held by the running process.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.batches_dir = root / "batches"
        self.archive_dir = root / "archive"
        self.quarantine_dir = root / "quarantine"
        self.sent_dir = self.quarantine_dir / "sent"
        self.journal_path = root / "journal.json"
        self.kept_path = root / "journal.kept"
        self._state_path = root / "state.json"
        self._lock_fd: int | None = None
        self._seq_lock = threading.Lock()
        for d in (root, self.batches_dir, self.archive_dir, self.quarantine_dir, self.sent_dir):
            self._make_private(d)
        try:
            self._next_seq = self._recover_next_seq()
        except PermissionError as exc:
            raise _access_error(root, Path(exc.filename or root), exc, "read") from None

    def _make_private(self, folder: Path) -> None:
        """Create ``folder`` 0700, or bring an existing one back to 0700.

        Nothing is written when the folder is already right, so a command that only reads
        (`status`) still works on a spool it may not write (a read-only mount).
        """
        try:
            st = folder.stat()
        except FileNotFoundError:
            try:
                folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                st = folder.stat()
            except OSError as exc:
                raise _access_error(self.root, folder, exc, "create the spool folder") from None
        except OSError as exc:  # looked at first: "cannot create" would be wrong for one that exists
            raise _access_error(self.root, folder, exc, "read the spool folder") from None
        if not stat.S_ISDIR(st.st_mode):
            raise SpoolError(f"spool path {folder} is not a folder",
                             "move that file aside, or set spool.dir elsewhere")
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            try:
                os.chmod(folder, DIR_MODE)
            except OSError as exc:
                raise _access_error(self.root, folder, exc, "chmod 0700 the spool folder") from None

    # -- single instance -------------------------------------------------------------------

    @contextmanager
    def locked(self, what: str = "uploader") -> Iterator[None]:
        """Hold the spool's exclusive lock; raise AlreadyRunning if another process has it."""
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise _access_error(self.root, path, exc, "open the spool's lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            pid, command = _holder(holder)
            who = f"pid {pid} (uploader {command})" if command else holder or "another process"
            raise AlreadyRunning(f"the spool {self.root} is in use by {who}", _busy_hint(command, what)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            os.close(fd)

    def is_locked(self) -> bool:
        """True if some process holds the lock (a running service); takes nothing itself."""
        try:
            fd = os.open(self.root / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the shared lock if we got it

    # -- sequence numbers ------------------------------------------------------------------

    def _recover_next_seq(self) -> int:
        try:
            persisted = int(json.loads(self._state_path.read_bytes())["next_seq"])
        except FileNotFoundError:
            persisted = 1
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("spool_state_unreadable path=%s error=%s action=derive-from-files", self._state_path, exc)
            persisted = 1
        seen = [int(p.name[:12]) for d in (self.batches_dir, self.archive_dir, self.quarantine_dir, self.sent_dir)
                for p in d.iterdir() if p.name[:12].isdigit()]
        return max([persisted, *(s + 1 for s in seen)])

    def allocate_seqs(self, n: int) -> list[int]:
        """Reserve ``n`` sequence numbers; they only ever grow, across restarts too."""
        with self._seq_lock:
            first = self._next_seq
            self._next_seq += n
            atomic_write(self._state_path, json.dumps({"next_seq": self._next_seq}).encode(), sync_dir=False)
            return list(range(first, first + n))

    # -- batches ---------------------------------------------------------------------------

    def stage(self, batches: list[Batch], quarantined: list[QuarantineItem]) -> list[str]:
        """Write batches and quarantined bytes under pending names that uploads ignore (``commit``
        makes them visible); return the names. Durable on return.

        Every file is written first and all are fsynced after, so the filesystem commits them
        together rather than one fsync after another. No temporary name is needed: a pending
        file is never listed in a journal before it is whole and durable, and recovery
        discards any other.
        """
        files: list[tuple[str, bytes]] = []
        for b in batches:
            files.append((f"batches/{b.seq:012d}-{b.day.isoformat()}-{b.batch_id}.json", b.to_json()))
        for q in quarantined:
            meta = {"reason": q.reason, "offset": q.offset, "detected_at": q.detected_at,
                    "day": q.day.isoformat() if q.day else None, "bytes": len(q.raw)}
            files += [(f"quarantine/{q.name}.json", json.dumps(meta).encode()), (f"quarantine/{q.name}.bin", q.raw)]
        fds = []
        try:
            for name, data in files:
                fds.append(self._write_pending(self.root / (name + PENDING), data))
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        return [name for name, _ in files]

    def stage_batch(self, batch: Batch) -> str:
        """One batch, staged on its own (see ``stage``)."""
        [name] = self.stage([batch], [])
        return name

    @staticmethod
    def _write_pending(path: Path, data: bytes) -> int:
        """Write ``data`` as ``path`` (mode 0600) and return the open descriptor, not yet fsynced."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, data)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)  # a full disk must not keep half a file
            raise
        return fd

    def sync_names(self) -> None:
        """Make file names in the batch and quarantine folders durable (their contents are).

        Called for staged names before the journal commits, and for promoted names before the
        journal goes.
        """
        fsync_dir(self.batches_dir)
        fsync_dir(self.quarantine_dir)

    def commit(self, names: list[str]) -> None:
        """Make staged files visible; idempotent, so recovery may run it again.

        No fsync here: until ``sync_names`` the journal still lists these names, and
        recovery promotes them again after a crash.
        """
        for name in names:
            staged = self.root / (name + PENDING)
            if staged.exists():
                os.replace(staged, self.root / name)

    def discard_staged(self) -> int:
        """Remove pending files of a cut that never committed (its bytes are still in the file)."""
        staged = [p for d in (self.batches_dir, self.quarantine_dir)
                  for pattern in ("*" + PENDING, ".*" + TMP) for p in d.glob(pattern)]
        for p in staged:
            p.unlink()
        return len(staged)

    def pending_batches(self, day: date | None = None) -> list[SpooledBatch]:
        """Committed batches waiting for upload, oldest (lowest seq) first."""
        return _listed(self.batches_dir, day)

    def archived_batches(self, day: date | None = None) -> list[SpooledBatch]:
        """Uploaded batches still kept in the archive, oldest (lowest seq) first."""
        return _listed(self.archive_dir, day)

    def remove(self, entries: list[SpooledBatch]) -> None:
        """Forget batches the store has acknowledged (when no archive is kept)."""
        for e in entries:
            e.path.unlink(missing_ok=True)

    def archive(self, entries: list[SpooledBatch], now: float) -> int:
        """Move batches the store has acknowledged into the archive; return the bytes moved.

        Their mtime becomes ``now``: the archive keeps batches for a while after their upload.
        No fsync: a move lost to a power cut brings the batch back, and the daily document
        acknowledges its batch_id instead of storing it twice.
        """
        moved = 0
        for e in entries:
            target = self.archive_dir / e.path.name
            try:
                os.replace(e.path, target)
                os.utime(target, (now, now))
                moved += target.stat().st_size
            except FileNotFoundError:
                continue
        return moved

    def prune_archive(self, now: float, max_age_s: float, max_bytes: int) -> ArchiveSummary:
        """Drop archived batches uploaded more than ``max_age_s`` ago, then the oldest until the
        archive holds at most ``max_bytes``; and sent quarantine files older than ``max_age_s``.
        Only the archive and ``quarantine/sent`` are looked at: nothing waiting is in them."""
        kept: list[tuple[float, int, int, SpooledBatch]] = []
        for e in self.archived_batches():
            try:
                st = e.path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime > max_age_s:
                e.path.unlink(missing_ok=True)
            else:
                kept.append((st.st_mtime, e.seq, st.st_size, e))
        kept.sort(key=lambda k: (k[0], k[1]))
        total = sum(k[2] for k in kept)
        while kept and total > max_bytes:
            _, _, size, e = kept.pop(0)
            e.path.unlink(missing_ok=True)
            total -= size
        for sent in self.sent_dir.iterdir():  # quarantine already in the bucket: the same age rule
            try:
                if now - sent.stat().st_mtime > max_age_s:
                    sent.unlink()
            except FileNotFoundError:
                continue
        days = [k[3].day for k in kept]
        return ArchiveSummary(len(kept), total, min(days, default=None), max(days, default=None))

    def archive_summary(self) -> ArchiveSummary:
        """Count, bytes and span of days of the archive, for `uploader status`."""
        entries = self.archived_batches()
        size = 0
        for e in entries:
            try:
                size += e.path.stat().st_size
            except FileNotFoundError:
                continue
        days = [e.day for e in entries]
        return ArchiveSummary(len(entries), size, min(days, default=None), max(days, default=None))

    def quarantine_summary(self) -> QuarantineSummary:
        """Spans and bytes quarantined, not yet sent and sent, for `uploader status`."""
        not_sent = _sizes(self.quarantine_dir.glob("*.bin"))
        sent = _sizes(self.sent_dir.glob("*.bin"))
        return QuarantineSummary(len(not_sent), sum(not_sent), len(sent), sum(sent))

    # -- quarantine ------------------------------------------------------------------------

    def pending_quarantine(self) -> list[tuple[QuarantineItem, Path]]:
        out = []
        for p in sorted(self.quarantine_dir.glob("*.bin")):
            try:
                meta = json.loads(p.with_suffix(".json").read_bytes())
                item = QuarantineItem(
                    name=p.stem, raw=p.read_bytes(), reason=meta["reason"], offset=meta["offset"],
                    detected_at=meta["detected_at"], day=date.fromisoformat(meta["day"]) if meta["day"] else None,
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # The bytes matter, their note less: ship them without it rather than stall.
                log.warning("quarantine_note_unreadable name=%s error=%s (sent without it)", p.stem, exc)
                item = QuarantineItem(name=p.stem, raw=p.read_bytes(), reason=f"note unreadable: {exc}",
                                      offset=-1, detected_at="", day=None)
            out.append((item, p))
        return out

    def mark_quarantine_sent(self, path: Path) -> None:
        """Keep the local copy, out of the upload queue."""
        for p in (path, path.with_suffix(".json")):
            if p.exists() or p == path:  # the note may be gone (see pending_quarantine)
                os.replace(p, self.sent_dir / p.name)
        fsync_dir(self.quarantine_dir)

    # -- cut journal -----------------------------------------------------------------------

    def read_journal(self) -> CutJournal | None:
        try:
            return CutJournal.from_json(self.journal_path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise SpoolError(f"cut journal {self.journal_path} is unreadable: {exc}",
                             "inspect it; do not delete it unless the local file is known to be intact") from exc

    def write_journal(self, journal: CutJournal) -> None:
        atomic_write(self.journal_path, journal.to_json())

    def clear_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)
        self.kept_path.unlink(missing_ok=True)
        # No fsync: a journal that comes back after a power cut finds its cut already done
        # (kept bytes at the front) and is simply cleared again.
