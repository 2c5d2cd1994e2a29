"""Command line: argument parsing, logging setup, signals, and error-to-exit-code mapping."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import date, datetime
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TextIO

import pytz

from uploader import __version__
from uploader.config import Config, default_config_path, load_config
from uploader.errors import ConfigError, ExitCode, ObjectNotFound, StoreError, UploaderError, UsageError

__all__ = ["main", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE"]

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = ExitCode.OK, ExitCode.PROBLEMS, ExitCode.USAGE

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
    from uploader.service import Service

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
    from uploader import daily
    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.store import open_store

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
        "quarantine": _quarantine_status(spool),
        "archive": _archive_status(spool),
        "retrying": {k: v for k, v in snap["retries"].items() if any(e.batch_id == k for e in pending)},
        "last_success": snap["last_success"],
        "last_error": snap["last_error"],
        "today": {"date": today.isoformat()},
    }
    problems = bool(report["retrying"])
    try:
        info = open_store(config.storage).head(daily.day_key(config.storage.prefix, today))
        # The same fields whether or not the document exists yet (a day starts at zero).
        counters = daily.counters_from_user_metadata(info.metadata if info else {})
        counters.pop("date")  # the key's day; a document without our metadata would say null
        report["today"].update(counters)
    except StoreError as exc:
        report["today"]["error"] = str(exc)
        problems = True
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report, sys.stdout)
    return EXIT_PROBLEMS if problems else EXIT_OK


def _archive_status(spool: Any) -> dict[str, Any]:
    a = spool.archive_summary()
    return {"batches": a.batches, "bytes": a.bytes, "first_day": a.first_day.isoformat() if a.first_day else None,
            "last_day": a.last_day.isoformat() if a.last_day else None}


def _quarantine_status(spool: Any) -> dict[str, Any]:
    q = spool.quarantine_summary()
    return {"spans": q.not_sent_spans + q.sent_spans, "bytes": q.not_sent_bytes + q.sent_bytes,
            "not_sent": {"spans": q.not_sent_spans, "bytes": q.not_sent_bytes},
            "sent": {"spans": q.sent_spans, "bytes": q.sent_bytes}}


def _size(n: float) -> str:
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            break
    return f"{n:.1f} {unit}"


def _print_status(r: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w(f"service        {'running' if r['service_running'] else 'not running'}\n")
    per_day = ", ".join(f"{d}: {n}" for d, n in r["pending_per_day"].items()) or "-"
    w(f"spool          {r['spool_depth']} batch(es) pending ({per_day})\n")
    q = r["quarantine"]
    w(f"quarantine     {q['spans']} span(s), {_size(q['bytes'])} kept: {q['not_sent']['spans']} "
      f"({_size(q['not_sent']['bytes'])}) not yet sent, {q['sent']['spans']} ({_size(q['sent']['bytes'])}) "
      f"sent to the bucket\n")
    a = r["archive"]
    span = f"{a['first_day']} .. {a['last_day']}" if a["batches"] else "empty"
    w(f"archive        {a['batches']} uploaded batch(es), {a['bytes'] / 2**20:.1f} MiB, days {span}\n")
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
def _exclusive(config: Config, what: str, *, dry_run: bool = False) -> Iterator[Any]:
    """An uploader for a one-shot command, refusing while `uploader run` holds the spool lock.

    A dry run writes nothing, so it takes no lock: the documented way is to look first, with
    the service running, and stop it only for the real thing.
    """
    from uploader.local.spool import Spool
    from uploader.publish.status import StatusFile
    from uploader.store import open_store
    from uploader.publish.uploader import Uploader

    spool = Spool(config.spool.dir)
    with nullcontext() if dry_run else spool.locked(what):
        status = StatusFile(config.spool.dir / "status.json")
        yield Uploader.for_config(config, spool, open_store(config.storage, config.spool.dir), status)


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    with _exclusive(config, "uploader replay", dry_run=args.dry_run) as uploader:
        pending = uploader.spool.pending_batches(args.day)
        if args.dry_run:
            for day, n in sorted(Counter(e.day for e in pending).items()):
                print(f"would upload {n} batch(es) for {day}")
            print(f"dry run: {len(pending)} batch(es) pending, nothing uploaded")
            return EXIT_OK
        from uploader.commands.progress import Progress

        with Progress("replay", len(pending), "batches") as bar:
            report = uploader.drain(ignore_backoff=True, day=args.day,
                                    progress=lambda handled: bar.update(max(0, handled - bar.done)))
        uploader.upload_quarantine()
        print(f"replay: uploaded {report.batches} batch(es), {report.fetches} fetches, {report.matches} matches; "
              f"{report.left} left in the spool")
        for err in dict.fromkeys(report.errors):
            print(f"replay: error: {err}", file=sys.stderr)
        return EXIT_OK if report.left == 0 and not report.errors else EXIT_PROBLEMS


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.check import run_check

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
    from uploader.commands.verify import audit, verify_day
    from uploader.store import open_store

    store = open_store(config.storage)
    prefix = config.storage.prefix
    if args.day is not None:
        one = verify_day(store, prefix, args.day)
        if one.missing:
            print(f"verify: no document for {args.day} ({one.key})", file=sys.stderr)
            return EXIT_PROBLEMS
        print(f"verify: {one.key}: {one.uploads} uploads, {one.fetches} fetches, {one.matches} matches, "
              f"closed={one.closed}")
        for problem in one.problems:
            print(f"problem: {problem}")
        print("verify: OK" if one.ok else f"verify: {len(one.problems)} problem(s)")
        return EXIT_OK if one.ok else EXIT_PROBLEMS
    today = datetime.now(config.day.tz).date()
    report = audit(store, prefix, today, since=args.since, on_day=lambda day: print(day.line(), flush=True))
    for key in report.stray:
        print(f"stray       {key}  (not a daily document, quarantine or probe object)")
    for day in report.left_open:
        print(f"left open   {day}  is past and not closed; `uploader close-day {day}` closes it")
    if not report.days:
        print(f"verify: no daily documents under {prefix}/ (check storage.prefix and the bucket)")
        return EXIT_PROBLEMS
    bad = sum(not d.ok for d in report.days)
    print(f"verify: {len(report.days)} day(s), {bad} with problems or missing, {len(report.stray)} stray object(s), "
          f"{len(report.left_open)} left open")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    from uploader import daily
    from uploader.commands.export import export_day
    from uploader.commands.progress import Progress
    from uploader.daily.reading import DocumentError
    from uploader.store import open_store

    key = daily.day_key(config.storage.prefix, args.day)
    where = str(args.output) if args.output else "stdout"
    try:
        # --output first: a path that cannot be written is bad usage, whatever the bucket holds.
        with _output(args.output) as out, open_store(config.storage).stream(key) as (stream, info), \
                Progress("export", info.size, "bytes", scale=True) as bar:
            report = export_day(stream, args.format, out, args.day, config.day.tz, on_read=bar.update)
    except ObjectNotFound:
        print(f"export: no document for {args.day} ({key})", file=sys.stderr)
        return EXIT_PROBLEMS
    except DocumentError as exc:
        print(f"export: {key} is damaged ({exc}); nothing kept in {where}. Try: uploader repair {args.day}",
              file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"export: {report.fetches} fetches of {report.uploads} uploads of {args.day} written to {where} "
          f"({args.format})", file=sys.stderr)
    return EXIT_OK


@contextmanager
def _output(path: Path | None) -> Iterator[Any]:
    """stdout, or ``path`` written under a temporary name and renamed once complete."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.flush()
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


def cmd_repair(config: Config, args: argparse.Namespace) -> int:
    from uploader import daily
    from uploader.commands.verify import verify_day
    from uploader.errors import PreconditionFailed, SpoolError
    from uploader.daily.reading import salvage
    from uploader.daily.repair_plan import plan_repair

    key = daily.day_key(config.storage.prefix, args.day)
    with _exclusive(config, "uploader repair", dry_run=args.dry_run) as uploader:
        store, spool = uploader.store, uploader.spool
        try:
            archived = [e.load() for e in spool.archived_batches(args.day)]
        except SpoolError as exc:
            print(f"repair: {exc.message}; nothing was changed in the bucket. Try: move it aside (or fix its "
                  f"permissions) and run repair again", file=sys.stderr)
            return EXIT_PROBLEMS
        try:
            with store.stream(key) as (stream, info):
                found, etag = salvage(stream), info.etag
        except ObjectNotFound:
            found, etag = None, None
        if found is None and not archived:
            print(f"repair: nothing to rebuild {args.day} from: no document {key} in the bucket and no archived "
                  f"batch of that day in {spool.archive_dir}", file=sys.stderr)
            return EXIT_PROBLEMS
        plan = plan_repair(args.day, config.day.timezone, found, archived, datetime.now(pytz.utc), config.day.tz)
        for line in plan.report():
            print(f"repair: {line}")
        pending = spool.pending_batches(args.day)
        if pending:
            print(f"repair: {len(pending)} batch(es) of {args.day} still wait in the spool; `uploader replay` "
                  f"uploads them (not part of this repair)")
        if not plan.changed:
            print(f"repair: {key} is sound; nothing to change")
            return EXIT_OK
        if args.dry_run:
            print("repair: dry run; nothing written")
            return EXIT_OK
        body = daily.serialize(plan.document)
        try:
            # Conditional like an append: the store checks by HEAD where the server would not.
            store.put(key, body, daily.user_metadata(plan.document["daily_metadata"]),
                      if_match=etag, if_none_match=etag is None)
        except PreconditionFailed:
            print(f"repair: {key} changed while it was being repaired; nothing was overwritten. "
                  f"Try: stop whatever else writes to this bucket prefix, then run repair again", file=sys.stderr)
            return EXIT_PROBLEMS
        check = verify_day(store, config.storage.prefix, args.day)
        print(f"repair: wrote {key} ({len(body)} bytes); verify: {'OK' if check.ok else '; '.join(check.problems)}")
        return EXIT_OK if check.ok else EXIT_PROBLEMS


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "replay": cmd_replay,
    "check": cmd_check,
    "close-day": cmd_close_day,
    "verify": cmd_verify,
    "export": cmd_export,
    "repair": cmd_repair,
}


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong and where to look, exit 2."""

    def error(self, message: str) -> NoReturn:
        # One prefix for every error line; the hint names the help of the command that failed.
        self.exit(EXIT_USAGE, f"uploader: {message}. Try: {self.prog} --help\n")


_DAY_HELP = "YYYY-MM-DD, a day in the zone of [day] timezone"
# When each command exits 1 (docs/DESIGN.md §9 says the same), for its --help.
_EXIT_1 = {
    "run": "the spool is in use, or start-up failed on the spool or the store",
    "status": "a batch is being retried, or today's counters cannot be read",
    "replay": "the service holds the spool, or a batch is left, or an error occurred",
    "check": "the store failed one of the checks",
    "close-day": "the service holds the spool, a batch of the day could not be uploaded, or the close failed",
    "verify": "no document, a problem, a missing day, a stray object or a past day left open",
    "export": "no document, or it stops being valid JSON",
    "repair": "the service holds the spool, nothing to rebuild from, an archived batch is unreadable, "
              "the document changed meanwhile, or the result does not verify",
}


def _epilog(command: str | None = None) -> str:
    """What the exit codes mean (after the options in --help)."""
    one = f"problems found or work left undone: {_EXIT_1[command]}" if command else \
        "problems found or work left undone (the output says which)"
    lines = ["exit codes:", "  0  done, nothing wrong",
             textwrap.fill(one, 78, initial_indent="  1  ", subsequent_indent="     "),
             "  2  bad usage or bad configuration (one line on stderr names it)"]
    return "\n".join(lines)


def _global_options(for_command: bool) -> argparse.ArgumentParser:
    """--config, --log-level and --log-format, accepted before and after the command.

    The command's copy defaults to SUPPRESS: argparse copies a subparser's defaults over the
    main parser's results, which would undo a value given before the command.
    """
    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if for_command else value

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", type=Path, default=default(None), metavar="PATH",
                   help="config file (default: $UPLOADER_CONFIG, then ./config.toml)")
    p.add_argument("--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe log lines shown, on stderr (default: INFO)")
    p.add_argument("--log-format", default=default("text"), choices=["text", "json"],
                   help="text lines (default) or one JSON object per line")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="uploader", description="all_api uploader", epilog=_epilog(),
                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_global_options(False)])
    parser.add_argument("--version", action="version", version=f"uploader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command_options = _global_options(True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter, parents=[command_options])

    add("run", "run the service until SIGTERM/SIGINT")
    add("status", "spool depth, pending per day, quarantine, today's counters, last success / error").add_argument(
        "--json", action="store_true", help="machine-readable output")
    p = add("replay", "upload the spool now, with progress")
    p.add_argument("--day", type=_day, default=None, help="only batches of this day (YYYY-MM-DD)")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    add("check", "put/get/delete a probe object and report what the server supports")
    add("close-day", "upload a day's spooled batches and mark its document closed").add_argument(
        "day", type=_day, help=f"the day to close ({_DAY_HELP})")
    p = add("verify", "re-count daily documents and check them against their metadata")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("day", type=_day, nargs="?", default=None, help="one day (YYYY-MM-DD)")
    which.add_argument("--all", action="store_true", help="every day under the prefix, gaps and stray objects")
    which.add_argument("--since", type=_day, default=None, help="every day from this one on (YYYY-MM-DD)")
    from uploader.commands.export import FORMATS

    p = add("export", "stream a day's fetches out of the store")
    p.add_argument("day", type=_day, help=f"the day to export ({_DAY_HELP})")
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default) or bookended (the local file's)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="file to write (default: stdout)")
    p = add("repair", "rebuild a damaged or lost day document from the bucket and the local archive")
    p.add_argument("day", type=_day, help=f"the day to rebuild ({_DAY_HELP})")
    p.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (0 done, 1 problems, 2 bad usage or configuration)."""
    try:
        try:
            return _main(argv)
        finally:
            # Flushed here, so a reader that went away shows up below, not at interpreter exit.
            sys.stdout.flush()
    except BrokenPipeError:
        # stdout's reader stopped reading (`| head`): stop quietly, as grep and jq do. Nothing
        # is lost: reports follow the work they report (repair's PUT follows its report, so it
        # is never begun), and export only reads.
        _stdout_to_devnull()
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage, as argparse does
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config or default_config_path())
        return COMMANDS[args.command](config, args)
    except (ConfigError, UsageError) as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UploaderError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return EXIT_PROBLEMS


def _stdout_to_devnull() -> None:
    """Point stdout's descriptor at /dev/null, so the interpreter's last flush of what is still
    buffered cannot fail again (Python's documented recipe for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # a stdout without a descriptor (captured in a test): nothing to flush at exit


if __name__ == "__main__":
    sys.exit(main())
