"""Logging for every command: text or JSON lines on stderr, secrets redacted, noisy libraries quieted."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from datetime import datetime
from typing import Any

import pytz

from uploader.threads import whose

__all__ = ["DropWatchdogShutdownNoise", "JsonFormatter", "NameTheStream", "RedactSecrets", "redact", "setup_logging"]

# Whatever the log level, these never get to print request headers (which carry the key id).
_QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "apscheduler", "watchdog")
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


# Secrets known once the config is read (the SSE-C key, as it goes on the wire and raw).
_MORE_SECRETS: set[str] = set()


def redact(*secrets: str) -> None:
    """Blank these values out of every log record from now on, as the credentials are."""
    _MORE_SECRETS.update(s for s in secrets if len(s) >= 8)


class RedactSecrets(logging.Filter):
    """Last line of defence: blank out credential values if any record ever carries one."""

    def __init__(self) -> None:
        super().__init__()
        # Shorter values would blank out ordinary words; real keys are 16 characters and more.
        self.secrets = [v for k in _SECRET_ENV if len(v := os.environ.get(k, "")) >= 8]

    def _all(self) -> list[str]:
        return [*self.secrets, *_MORE_SECRETS]

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._all()
        if secrets:
            text = record.getMessage()
            if any(s in text for s in secrets):
                for s in secrets:
                    text = text.replace(s, "[redacted]")
                record.msg, record.args = text, None
        return True


class NameTheStream(logging.Filter):
    """Add the stream (and destination) a service thread works for to each of its lines, unless
    the line names them already: one process serves many streams, and the modules that log do
    not know which."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = whose(record.threadName or "")
        if fields:
            text = record.getMessage()
            if " stream=" not in text:
                record.msg, record.args = f"{text} {fields}", None
        return True


class JsonFormatter(logging.Formatter):
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


class DropWatchdogShutdownNoise(logging.Filter):
    """watchdog logs an ERROR when its inotify emitter is stopped mid-read (by design, see
    watchdog PR #963); at shutdown that is expected, not an operator's problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def setup_logging(level: str, fmt: str) -> None:
    """Send every log record to stderr at ``level`` and above, as ``fmt`` ("text" or "json") lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(NameTheStream())
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("watchdog.observers.inotify").addFilter(DropWatchdogShutdownNoise())
