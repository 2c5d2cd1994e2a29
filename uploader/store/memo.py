"""The probe's findings kept in the spool between runs, per endpoint and bucket.

A process start then costs no probe requests; ``Capabilities.fresh`` says how long a finding
is trusted.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from uploader.files import DIR_MODE, atomic_write
from uploader.store.capabilities import Capabilities

__all__ = ["CapabilityMemo", "memo_path"]

log = logging.getLogger(__name__)


class CapabilityMemo:
    """Probe findings per server ("<endpoint> <bucket>"), in one JSON file (0600) in the spool.

    Losing the file costs one probe; an unreadable one is ignored and rewritten.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, where: str, now: float) -> Capabilities | None:
        """The findings for ``where`` if recorded and still fresh at ``now``, else None."""
        entry = self._read().get(where)
        if not isinstance(entry, dict):
            return None
        try:
            caps = Capabilities.from_json(entry)
        except (TypeError, ValueError) as exc:
            log.warning("capabilities_unreadable path=%s error=%s action=probe-again", self.path, exc)
            return None
        return caps if caps.fresh(now) else None

    def save(self, where: str, caps: Capabilities) -> None:
        """Record ``caps`` for ``where``; a failure only costs a probe next time, so it is logged."""
        entries = self._read()
        entries[where] = caps.to_json()
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            atomic_write(self.path, json.dumps(entries, indent=1, sort_keys=True).encode(), durable=False)
        except OSError as exc:
            log.warning("capabilities_not_saved path=%s error=%s", self.path, exc.strerror or exc)

    def _read(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("capabilities_unreadable path=%s error=%s action=probe-again", self.path,
                        getattr(exc, "strerror", None) or exc)
            return {}
        return raw if isinstance(raw, dict) else {}


def memo_path(state_dir: Path | str) -> Path:
    """Where the memo lives inside a spool folder."""
    return Path(os.fspath(state_dir)) / "capabilities.json"
