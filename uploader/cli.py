"""Command line: argument parsing, logging setup, signals, and error-to-exit-code mapping."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import Config, default_config_path, load_config
from .errors import ConfigError, UploaderError

__all__ = ["main", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

log = logging.getLogger(__name__)


def _cmd_check(config: Config, args: argparse.Namespace) -> int:
    from .check import run_check

    return run_check(config, out=sys.stdout)


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "check": _cmd_check,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uploader", description=__doc__)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", type=Path, default=None, help="config file (default: $UPLOADER_CONFIG, then ./config.toml)")
        return p

    add("check", "put/get/delete a probe object and report what the server supports")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
