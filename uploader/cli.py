"""Command line: argument parsing, signals, printing, and error-to-exit-code mapping.

Each command is parse, call, print: the work is in ``uploader.commands`` (and the service's in
``uploader.service``); what it returns is printed here and mapped to an ``ExitCode``. Every
command acts on every stream of the config, or on the one ``--stream`` names; those on day
documents on every destination of each, or on the one ``--destination`` names
(``uploader.commands.targets``).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import logging
import os
import signal
import sys
import textwrap
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from types import FrameType
from typing import NoReturn

from uploader import __version__
from uploader.commands.check import check_selection
from uploader.commands.export import FORMATS, ExportOutcome, export
from uploader.commands.repair import Message, repair_selection
from uploader.commands.targets import Selection, repair_targets, select, select_one
from uploader.commands.verify import audit_selection, verify_selection
from uploader.config import Config, default_config_path, load_config
from uploader.errors import ConfigError, ExitCode, UploaderError, UsageError
from uploader.logs import redact, setup_logging

# Three imports stay inside the commands that use them; at the top, every command would pay
# for them, `--help` (~100 ms) included. uploader.service (APScheduler, watchdog, the metrics
# server): ~200 ms, in cmd_run. uploader.commands.replay (the uploader with its metrics, i.e.
# prometheus_client, and tqdm): ~110 ms, in cmd_replay, cmd_close_day and cmd_repair.
# uploader.commands.status (the uploader.publish package, for status.json): ~8 ms over 90 runs,
# in cmd_status. The imports above cost no measurable time. (commands.export imports tqdm late.)

__all__ = ["main"]

log = logging.getLogger(__name__)


def _exit_code(ok: bool) -> ExitCode:
    return ExitCode.OK if ok else ExitCode.PROBLEMS


def _say(line: str) -> None:
    print(line, flush=True)  # a line as soon as it is known: verify --all's days, repair's plan


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _selection(config: Config, args: argparse.Namespace) -> Selection:
    return select(config, args.stream, getattr(args, "destination", None))


# -- commands --------------------------------------------------------------------------------


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from uploader.service import Service

    streams = config.select(args.stream)  # an unknown name: bad usage
    if args.stream is not None and config.declared:
        config = dataclasses.replace(config, declared=streams).view(streams[0])
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
    from uploader.commands.status import build_overview, render_overview, render_status

    overview = build_overview(_selection(config, args))
    # One stream and one destination: the form of before streams (plus "stream" and "destination").
    one = overview.streams[0] if len(overview.streams) == 1 else None
    if args.json:
        print(json.dumps(one.to_dict() if one else overview.to_dict(), indent=2))
    else:
        sys.stdout.write(render_status(one) if one else render_overview(overview))
    return _exit_code(not overview.problems)


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.replay import replay_selection

    return _exit_code(replay_selection(_selection(config, args), args.day, dry_run=args.dry_run, say=_say, err=_err))


def cmd_check(config: Config, args: argparse.Namespace) -> int:
    return check_selection(_selection(config, args), _say, _err, fix=args.fix)


def cmd_close_day(config: Config, args: argparse.Namespace) -> int:
    from uploader.commands.replay import close_day_selection

    return _exit_code(close_day_selection(_selection(config, args), args.day, say=_say, err=_err))


def cmd_verify(config: Config, args: argparse.Namespace) -> int:
    selection = _selection(config, args)
    if args.day is not None:
        return _exit_code(verify_selection(selection, args.day, say=_say, err=_err))
    return _exit_code(audit_selection(selection, args.since, say=_say, err=_err))


def cmd_export(config: Config, args: argparse.Namespace) -> int:
    target = select_one(config, args.stream, args.destination, "export")
    result = export(target.config, args.day, args.format, args.output, sys.stdout.buffer)
    print(result.message, file=sys.stderr)
    return _exit_code(result.outcome is ExportOutcome.WRITTEN)


def cmd_repair(config: Config, args: argparse.Namespace) -> int:
    targets = repair_targets(config, args.stream, args.destination, args.source)

    def say(message: Message) -> None:
        # Printed as it comes, so the plan is on the screen before the write begins.
        (_err if message.error else _say)(message.text)

    return _exit_code(repair_selection(targets, args.day, dry_run=args.dry_run, on_message=say, say=_say, err=_err))


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
    "run": "a stream's spool is in use, or start-up failed on a spool or a store",
    "status": "a batch is being retried, a stream's file cannot be read, or today's counters cannot be read "
              "(the output names which stream and destination)",
    "replay": "the service holds a stream's spool, or a batch is left for a destination, or an error occurred",
    "check": "a store failed one of the checks, or --fix could not install the lifecycle rules",
    "close-day": "the service holds a stream's spool, a batch of the day could not be uploaded to a destination, "
                 "or a close failed",
    "verify": "no document, a problem, a missing day, a stray object or a past day left open; with DAY, also a "
              "stream's destinations holding different batches, fetches or counters",
    "export": "no document, or it stops being valid JSON",
    "repair": "the service holds the spool, nothing to rebuild from, an archived batch is unreadable, "
              "the document changed meanwhile, the target holds batches --from's document lacks, "
              "or the result does not verify",
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
    """--config, --stream, --log-level and --log-format, accepted before and after the command.

    The command's copy defaults to SUPPRESS: argparse copies a subparser's defaults over the
    main parser's results, which would undo a value given before the command.
    """
    def default(value: str | None) -> str | None:
        return argparse.SUPPRESS if for_command else value

    p = _Parser(add_help=False)  # of the subparsers' own type, as add_parser(parents=...) is typed
    p.add_argument("--config", type=Path, default=default(None), metavar="PATH",
                   help="config file (default: $UPLOADER_CONFIG, then ./config.toml)")
    p.add_argument("--stream", default=default(None), metavar="NAME",
                   help="act on this stream of the config only (default: every stream)")
    p.add_argument("--log-level", default=default("INFO"), choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe log lines shown, on stderr (default: INFO)")
    p.add_argument("--log-format", default=default("text"), choices=["text", "json"],
                   help="text lines (default) or one JSON object per line")
    return p


def _destination(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--destination", default=None, metavar="NAME",
                   help=f"act on this destination of the stream only (default: {default})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="uploader", description="all_api uploader", epilog=_epilog(),
                     formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_global_options(False)])
    parser.add_argument("--version", action="version", version=f"uploader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command_options = _global_options(True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=_epilog(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter, parents=[command_options])

    add("run", "run the service until SIGTERM/SIGINT (every stream, or --stream's)")
    p = add("status", "per stream and destination: spool depth, pending per day, quarantine, today's counters, "
            "last success / error")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _destination(p, "every destination")
    p = add("replay", "upload the spool now, to each destination, with progress")
    p.add_argument("--day", type=_day, default=None, help="only batches of this day (YYYY-MM-DD)")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    _destination(p, "every destination")
    p = add("check", "put/get/delete a probe object, report what the server supports and the bucket's "
            "lifecycle rules, for each destination")
    p.add_argument("--fix", action="store_true",
                   help="install or update this uploader's lifecycle rules (other rules on the bucket are kept)")
    _destination(p, "every destination")
    p = add("close-day", "upload a day's spooled batches and mark its document closed, on each destination")
    p.add_argument("day", type=_day, help=f"the day to close ({_DAY_HELP})")
    _destination(p, "every destination")
    p = add("verify", "re-count daily documents and check them against their metadata; with DAY, also that a "
            "stream's destinations hold the same day")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("day", type=_day, nargs="?", default=None, help="one day (YYYY-MM-DD)")
    which.add_argument("--all", action="store_true", help="every day under the prefix, gaps and stray objects")
    which.add_argument("--since", type=_day, default=None, help="every day from this one on (YYYY-MM-DD)")
    _destination(p, "every destination")
    p = add("export", "stream a day's fetches out of one stream's destination")
    p.add_argument("day", type=_day, help=f"the day to export ({_DAY_HELP})")
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default) or bookended (the local file's)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE", help="file to write (default: stdout)")
    _destination(p, "the stream's first")
    p = add("repair", "rebuild a damaged or lost day document from the bucket (or another destination's, "
            "--from) and the local archive")
    p.add_argument("day", type=_day, help=f"the day to rebuild ({_DAY_HELP})")
    p.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    p.add_argument("--from", dest="source", default=None, metavar="DEST",
                   help="rebuild from destination DEST's document (the target: --destination, or the stream's "
                        "other destination when it has two)")
    _destination(p, "every destination; with --from, the one rebuilt")
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
