"""The service's own record of how uploads are going, kept in the spool for `uploader status`."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uploader.files import atomic_write

__all__ = ["RetryState", "StatusFile"]

log = logging.getLogger(__name__)


@dataclass
class RetryState:
    """Failures of one spooled batch so far; ``next_at`` is a POSIX time."""

    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""


@dataclass
class _Status:
    last_success: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    open_days: list[str] = field(default_factory=list)  # appended to, not yet closed
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch_id -> RetryState


class StatusFile:
    """Thread-safe view of ``status.json``; every change is written through atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._s = _Status()
        try:
            raw = json.loads(path.read_bytes())
            self._s = _Status(**{k: v for k, v in raw.items() if k in _Status.__dataclass_fields__})
        except FileNotFoundError:
            pass
        except (ValueError, TypeError) as exc:
            log.warning("status_unreadable path=%s error=%s action=start-fresh", path, exc)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(asdict(self._s)))
            return copy

    def retry_state(self, batch_id: str) -> RetryState:
        with self._lock:
            raw = self._s.retries.get(batch_id)
            return RetryState(**raw) if raw else RetryState()

    def update(
        self,
        *,
        success: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        failed: dict[str, RetryState] | None = None,
        done: list[str] = (),  # type: ignore[assignment]
        opened: list[str] = (),  # type: ignore[assignment]
        closed: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        with self._lock:
            s = self._s
            if success is not None:
                s.last_success = success
            if error is not None:
                s.last_error = error
            for batch_id, state in (failed or {}).items():
                s.retries[batch_id] = asdict(state)
            for batch_id in done:
                s.retries.pop(batch_id, None)
            s.open_days = sorted((set(s.open_days) | set(opened)) - set(closed))
            # Advisory state for `uploader status`: losing the last update to a power cut is fine.
            atomic_write(self.path, json.dumps(asdict(s), indent=1).encode(), durable=False)

    def open_days(self) -> list[str]:
        with self._lock:
            return list(self._s.open_days)
