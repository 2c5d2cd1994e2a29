"""Command line: argument parsing, logging setup, signals, and error-to-exit-code mapping."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import pytz

from .config import Config, default_config_path, load_config
from .errors import ConfigError, ObjectNotFound, StoreError, UploaderError

__all__ = ["main", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

log = logging.getLogger(__name__)

# Whatever the log level, these never get to print request headers (which carry the key id).
_QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "apscheduler", "watchdog")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


class _Redact(logging.Filter):
    """Last line of defence: blank out credential values if any record ever carries one."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "[redacted]")
                record.msg, record.args = text, None
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event and its key=value fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, pytz.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        out.update({k: v.strip("'\"") for k, v in _FIELD.findall(rest)})
        out["message"] = message
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _DropWatchdogShutdownNoise(logging.Filter):
    """watchdog logs an ERROR when its inotify emitter is stopped mid-read (by design, see
    watchdog PR #963); at shutdown that is expected, not an operator's problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Redact())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("watchdog.observers.inotify").addFilter(_DropWatchdogShutdownNoise())


# -- commands --------------------------------------------------------------------------------


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from .service import Service

    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # Second signal: leave now. Everything is in the spool or the file; the next start resumes.
            os._exit(EXIT_PROBLEMS)
        log.info("signal_received signal=%s action=drain-and-exit", signal.Signals(signum).name)
        stop.set()

    # Handlers first: a SIGTERM while the service is still starting then means "stop once started".
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = Service(config)
    service.start()
    try:
        stop.wait()
    finally:
        service.stop()
    return EXIT_OK


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from . import daily
    from .spool import Spool
    from .status import StatusFile
    from .store import open_store

    spool = Spool(config.spool.dir)
    pending = spool.pending_batches()
    snap = StatusFile(config.spool.dir / "status.json").snapshot()
    today = datetime.now(config.day.tz).date()
    running = spool.is_locked()
    report: dict[str, Any] = {
        "service_running": running,
        "spool": str(config.spool.dir),
        "spool_depth": len(pending),
        "pending_per_day": dict(sorted(Counter(e.day.isoformat() for e in pending).items())),
        "quarantine_not_sent": len(list(spool.quarantine_dir.glob("*.bin"))),
        "retrying": {k: v for k, v in snap["retries"].items() if any(e.batch_id == k for e in pending)},
        "last_success": snap["last_success"],
        "last_error": snap["last_error"],
        "today": {"date": today.isoformat()},
    }
    problems = bool(report["retrying"])
    try:
        info = open_store(config.storage).head(daily.day_key(config.storage.prefix, today))
        report["today"].update(daily.counters_from_user_metadata(info.metadata) if info else {"uploads": 0})
    except StoreError as exc:
        report["today"]["error"] = str(exc)
        problems = True
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report, sys.stdout)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _print_status(r: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w(f"service        {'running' if r['service_running'] else 'not running'}\n")
    per_day = ", ".join(f"{d}: {n}" for d, n in r["pending_per_day"].items()) or "-"
    w(f"spool          {r['spool_depth']} batch(es) pending ({per_day}); {r['quarantine_not_sent']} quarantined not yet sent\n")
    t = r["today"]
    if "error" in t:
        w(f"today          {t['date']}: cannot read counters: {t['error']}\n")
    else:
        counters = " ".join(f"{k}={v}" for k, v in t.items() if k != "date")
        w(f"today          {t['date']}: {counters}\n")
    ls, le = r["last_success"], r["last_error"]
    w(f"last success   {ls['at'] + ' day=' + ls['day'] + ' batches=' + str(ls['batches']) if ls else '-'}\n")
    w(f"last error     {le['at'] + ' ' + le['message'] if le else '-'}\n")
    for batch_id, st in r["retrying"].items():
        w(f"retrying       batch {batch_id} attempts={st['attempts']} last error: {st['last_error']}\n")


@contextmanager
def _exclusive(config: Config, what: str) -> Iterator[Any]:
    """An uploader for a one-shot command, refusing while `uploader run` holds the spool lock."""
    from .spool import Spool
    from .status import StatusFile
    from .store import open_store
    from .upload import Uploader

    spool = Spool(config.spool.dir)
    with spool.locked(what):
        status = StatusFile(config.spool.dir / "status.json")
        yield Uploader(spool, open_store(config.storage, config.spool.dir), config.storage.prefix, config.day.tz,
                       status, config.spool.max_backoff_s)


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    with _exclusive(config, "uploader replay") as uploader:
        pending = uploader.spool.pending_batches(args.day)
        if args.dry_run:
            for day, n in sorted(Counter(e.day for e in pending).items()):
                print(f"would upload {n} batch(es) for {day}")
            print(f"dry run: {len(pending)} batch(es) pending, nothing uploaded")
            return EXIT_OK
        tty = sys.stderr.isatty()

        def progress(rep: Any, total: int) -> None:
            end = "\r" if tty else "\n"
            print(f"replay: {rep.batches}/{total} batches, {rep.fetches} fetches", end=end, file=sys.stderr, flush=True)

        report = uploader.drain(ignore_backoff=True, day=args.day, progress=progress)
        uploader.upload_quarantine()
        if tty:
            print(file=sys.stderr)
        print(f"replay: uploaded {report.batches} batch(es), {report.fetches} fetches, {report.matches} matches; "
              f"{report.left} left in the spool")
        for err in dict.fromkeys(report.errors):
            print(f"replay: error: {err}", file=sys.stderr)
        return EXIT_OK if report.left == 0 and not report.errors else EXIT_PROBLEMS


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from .check import run_check

    return run_check(config, out=sys.stdout)


def cmd_close_day(config: Config, args: argparse.Namespace) -> int:
    with _exclusive(config, "uploader close-day") as uploader:
        report = uploader.drain(ignore_backoff=True, day=args.day)
        if report.left:
            print(f"close-day: {report.left} batch(es) of {args.day} could not be uploaded; day left open", file=sys.stderr)
            return EXIT_PROBLEMS
        if not uploader.close_days([args.day]):
            print(f"close-day: could not close {args.day}; see the log above", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"close-day: {args.day} is closed")
        return EXIT_OK


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    from . import daily
    from .store import open_store

    key = daily.day_key(config.storage.prefix, args.day)
    store = open_store(config.storage)
    try:
        data, info = store.get(key)
    except ObjectNotFound:
        print(f"verify: no document for {args.day} ({key})", file=sys.stderr)
        return EXIT_PROBLEMS
    try:
        document = json.loads(data)
    except ValueError as exc:
        print(f"verify: {key} is not valid JSON: {exc}")
        return EXIT_PROBLEMS
    problems = daily.verify(document, info.metadata)
    meta = document.get("daily_metadata", {}) if isinstance(document, dict) else {}
    print(f"verify: {key}: {meta.get('total_uploads_today')} uploads, {meta.get('total_fetches_today')} fetches, "
          f"{meta.get('total_matches_today')} matches, closed={meta.get('closed')}")
    for p in problems:
        print(f"problem: {p}")
    print("verify: OK" if not problems else f"verify: {len(problems)} problem(s)")
    return EXIT_PROBLEMS if problems else EXIT_OK


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "replay": cmd_replay,
    "check": cmd_check,
    "close-day": cmd_close_day,
    "verify": cmd_verify,
}


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uploader", description="all_api uploader")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, default=None,
                       help="config file (default: $UPLOADER_CONFIG, then ./config.toml)")
        p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
        p.add_argument("--log-format", default="text", choices=["text", "json"])
        return p

    add("run", "run the service until SIGTERM/SIGINT")
    add("status", "spool depth, pending per day, today's counters, last success / error").add_argument(
        "--json", action="store_true", help="machine-readable output")
    p = add("replay", "upload the spool now, with progress")
    p.add_argument("--day", type=_day, default=None, help="only batches of this day (YYYY-MM-DD)")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    add("check", "put/get/delete a probe object and report what the server supports")
    add("close-day", "upload a day's spooled batches and mark its document closed").add_argument("day", type=_day)
    add("verify", "re-count a daily document and check it against its metadata").add_argument("day", type=_day)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage, as argparse does
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config or default_config_path())
        return COMMANDS[args.command](config, args)
    except ConfigError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UploaderError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
