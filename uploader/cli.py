"""Command line: argument parsing, signals, printing, and error-to-exit-code mapping.

Each command is parse, call, print: the work is in ``uploader.commands`` (and the service's in
``uploader.service``); what it returns is printed here and mapped to an ``ExitCode``.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn

from uploader import __version__
from uploader.commands.check import run_check
from uploader.commands.export import FORMATS, ExportOutcome, export
from uploader.commands.repair import Message, RepairOutcome, repair_day
from uploader.commands.verify import audit, render_audit, render_day, verify_day
from uploader.config import Config, default_config_path, load_config
from uploader.errors import ConfigError, ExitCode, UploaderError, UsageError
from uploader.logs import redact, setup_logging
from uploader.store import open_store

# Three imports stay inside the commands that use them; at the top, every command would pay
# for them, `--help` (~100 ms) included. uploader.service (APScheduler, watchdog, the metrics
# server): ~200 ms, in cmd_run. uploader.commands.replay (the uploader with its metrics, i.e.
# prometheus_client, and tqdm): ~110 ms, in cmd_replay, cmd_close_day and cmd_repair.
# uploader.commands.status (the uploader.publish package, for status.json): ~8 ms over 90 runs,
# in cmd_status. The imports above cost no measurable time. (commands.export imports tqdm late.)

__all__ = ["main"]

log = logging.getLogger(__name__)


def _print(lines: Iterable[str], err: bool = False) -> None:
    for line in lines:
        print(line, file=sys.stderr if err else sys.stdout)


def _exit_code(ok: bool) -> ExitCode:
    return ExitCode.OK if ok else ExitCode.PROBLEMS


# -- commands --------------------------------------------------------------------------------


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from uploader.service import Service

    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            # Second signal: leave now. Everything is in the spool or the file; the next start resumes.
            os._exit(ExitCode.PROBLEMS)
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
    return ExitCode.OK


def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.status import build_status, render_status

    report = build_status(config)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        sys.stdout.write(render_status(report))
    return _exit_code(not report.problems)


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.replay import exclusive_uploader, replay

    with exclusive_uploader(config, "uploader replay", dry_run=args.dry_run) as uploader:
        result = replay(uploader, args.day, dry_run=args.dry_run)
        _print(result.lines)
        _print(result.errors, err=True)
        return _exit_code(result.ok)


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    return run_check(config, say=print, fix=args.fix)


def cmd_close_day(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.replay import close_day, exclusive_uploader

    with exclusive_uploader(config, "uploader close-day") as uploader:
        result = close_day(uploader, args.day)
        _print(result.lines)
        _print(result.errors, err=True)
        return _exit_code(result.ok)


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    store = open_store(config.storage)
    prefix = config.storage.prefix
    if args.day is not None:
        one = verify_day(store, prefix, args.day)
        _print(render_day(one), err=one.missing)
        return _exit_code(one.ok)
    today = datetime.now(config.day.tz).date()
    report = audit(store, prefix, today, since=args.since, on_day=lambda day: print(day.line(), flush=True))
    _print(render_audit(report, prefix))
    return _exit_code(bool(report.days) and report.ok)  # no day at all: a wrong prefix or bucket


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    result = export(config, args.day, args.format, args.output, sys.stdout.buffer)
    print(result.message, file=sys.stderr)
    return _exit_code(result.outcome is ExportOutcome.WRITTEN)


def cmd_repair(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.replay import exclusive_uploader

    def say(message: Message) -> None:
        print(message.text, file=sys.stderr if message.error else sys.stdout)

    with exclusive_uploader(config, "uploader repair", dry_run=args.dry_run) as uploader:
        # Printed as it comes, so the plan is on the screen before the write begins.
        result = repair_day(config, uploader.store, uploader.spool, args.day, dry_run=args.dry_run, on_message=say)
        return _exit_code(result.outcome in (RepairOutcome.SOUND, RepairOutcome.DRY_RUN) or result.verified)


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
        self.exit(ExitCode.USAGE, f"uploader: {message}. Try: {self.prog} --help\n")


_DAY_HELP = "YYYY-MM-DD, a day in the zone of [day] timezone"
# When each command exits 1 (docs/DESIGN.md §9 says the same), for its --help.
_EXIT_1 = {
    "run": "the spool is in use, or start-up failed on the spool or the store",
    "status": "a batch is being retried, or today's counters cannot be read",
    "replay": "the service holds the spool, or a batch is left, or an error occurred",
    "check": "the store failed one of the checks, or --fix could not install the lifecycle rules",
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


def _global_options(for_command: bool) -> _Parser:
    """--config, --log-level and --log-format, accepted before and after the command.

    The command's copy defaults to SUPPRESS: argparse copies a subparser's defaults over the
    main parser's results, which would undo a value given before the command.
    """
    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if for_command else value

    p = _Parser(add_help=False)  # of the subparsers' own type, as add_parser(parents=...) is typed
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
    add("check", "put/get/delete a probe object, report what the server supports and the bucket's "
        "lifecycle rules").add_argument(
        "--fix", action="store_true",
        help="install or update this uploader's lifecycle rules (other rules on the bucket are kept)")
    add("close-day", "upload a day's spooled batches and mark its document closed").add_argument(
        "day", type=_day, help=f"the day to close ({_DAY_HELP})")
    p = add("verify", "re-count daily documents and check them against their metadata")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("day", type=_day, nargs="?", default=None, help="one day (YYYY-MM-DD)")
    which.add_argument("--all", action="store_true", help="every day under the prefix, gaps and stray objects")
    which.add_argument("--since", type=_day, default=None, help="every day from this one on (YYYY-MM-DD)")
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
        return ExitCode.OK


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on bad usage, as argparse does
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config or default_config_path())
        key = config.storage.s3.customer_key
        if key is not None:
            redact(base64.b64encode(key.key).decode(), key.key.decode("latin-1"))
        return COMMANDS[args.command](config, args)
    except (ConfigError, UsageError) as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except UploaderError as exc:
        print(f"uploader: {exc}", file=sys.stderr)
        return ExitCode.PROBLEMS
    except KeyboardInterrupt:
        return ExitCode.PROBLEMS


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
