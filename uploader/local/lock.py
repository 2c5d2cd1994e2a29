"""The spool's single-instance lock: who holds it, what to do about it, and access errors' fixes.

One process at a time may change a spool: `uploader run`, or a one-shot command that writes
(replay, repair, close-day, check). The lock is an ``flock`` on ``<spool>/lock``, which holds the
holder's pid, so the refusal can say which command holds it and how to stop it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from uploader.errors import AlreadyRunning, SpoolError
from uploader.files import FILE_MODE

__all__ = ["SERVICE_UNIT", "access_error", "hold", "is_held"]

SERVICE_UNIT = "all-api-uploader"  # the unit name scripts/uploader.service is installed as
# The CLI's commands, to tell from a lock holder's command line whether it is the service.
_COMMANDS = ("run", "status", "replay", "check", "close-day", "verify", "export", "repair")


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def access_error(root: Path, path: Path, exc: OSError, doing: str) -> SpoolError:
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


@contextmanager
def hold(root: Path, what: str = "uploader") -> Iterator[None]:
    """Hold the spool's exclusive lock; raise AlreadyRunning if another process has it."""
    path = root / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise access_error(root, path, exc, "open the spool's lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        os.close(fd)
        pid, command = _holder(holder)
        who = f"pid {pid} (uploader {command})" if command else holder or "another process"
        raise AlreadyRunning(f"the spool {root} is in use by {who}", _busy_hint(command, what)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


def is_held(root: Path) -> bool:
    """True if some process holds the lock (a running service); takes nothing itself."""
    try:
        fd = os.open(root / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock if we got it
