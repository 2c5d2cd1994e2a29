"""What an S3 server honours, and the memory of it kept in the spool between runs.

S3-compatible servers honour different subsets of the API (Ceph RGW, which Linode runs, is not
moto, and neither is AWS). ``Capabilities`` records what a probe found; every append path has
a fallback for each capability that is missing, so a probe can only ever choose a path. The
``CapabilityMemo`` keeps findings per endpoint and bucket in a small JSON file in the spool, so
a process start costs no probe requests: a finding is trusted for a day, one that a passing
fault left unsure (``conclusive=False``) for an hour.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from uploader.files import DIR_MODE, atomic_write

__all__ = [
    "FULL_CAPABILITIES",
    "Capabilities",
    "CapabilityMemo",
    "MAX_AGE_S",
    "UNSURE_MAX_AGE_S",
    "memo_path",
]

log = logging.getLogger(__name__)

MAX_AGE_S = 24 * 3600.0
UNSURE_MAX_AGE_S = 3600.0

# The features a probe looks at, in report order, with what each one means for an operator.
_LABELS = {
    "conditional_put": "conditional PUT (If-None-Match / If-Match)",
    "multipart": "multipart upload (create, part, complete)",
    "range_copy": "UploadPartCopy with CopySourceRange",
    "copy_source_if_match": "UploadPartCopy with CopySourceIfMatch",
    "complete_if_match": "CompleteMultipartUpload with If-Match",
    "suffix_range": "suffix Range GET (bytes=-N)",
    "complete_etag": "ETag in CompleteMultipartUpload answer",
}


@dataclass(frozen=True)
class Capabilities:
    """Which parts of the S3 API the server honours, each probed for real (both outcomes).

    ``conditional_put``: PUT with If-None-Match: * is refused on an existing key and accepted on a
    new one, and If-Match with a stale ETag is refused and with the current one accepted.
    ``etag_forms``: which ETag spellings If-Match accepts ("quoted", "unquoted").
    ``multipart``: a multipart upload of uploaded parts completes into the object they make.
    ``range_copy``: UploadPartCopy with CopySourceRange copies exactly that range.
    ``copy_source_if_match``: UploadPartCopy refuses a stale CopySourceIfMatch, takes the current.
    ``complete_if_match``: CompleteMultipartUpload refuses a stale If-Match, takes the current.
    ``suffix_range``: GET with ``Range: bytes=-N`` returns only the last N bytes.
    ``complete_etag``: CompleteMultipartUpload answers with the new object's ETag.

    ``probed_at`` is a POSIX time (0: never probed, e.g. the directory backend);
    ``conclusive`` is False when a passing fault left some finding unsure; ``notes`` holds, per
    capability found missing, what the server answered.
    """

    conditional_put: bool
    etag_forms: tuple[str, ...]
    multipart: bool
    range_copy: bool
    copy_source_if_match: bool
    complete_if_match: bool
    suffix_range: bool
    complete_etag: bool
    probed_at: float = 0.0
    conclusive: bool = True
    notes: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def server_side_append(self) -> bool:
        """Whether a large append can copy the body server-side and send only the tail."""
        return self.multipart and self.range_copy and self.suffix_range

    @property
    def conditional_append(self) -> bool:
        """Whether a server-side append is refused when the object changed since it was read."""
        return self.copy_source_if_match or self.complete_if_match

    def fresh(self, now: float) -> bool:
        """Whether the findings are recent enough to trust at ``now`` (POSIX time)."""
        if self.probed_at == 0.0:
            return True
        return now - self.probed_at < (MAX_AGE_S if self.conclusive else UNSURE_MAX_AGE_S)

    def without(self, name: str, why: str, now: float) -> Capabilities:
        """The same findings with ``name`` missing since ``now`` (the server stopped honouring it).

        Unsure, so it is probed again within the hour, not straight away: a probe that keeps
        saying yes to what real requests are refused costs one refused request an hour.
        """
        if name not in _LABELS:
            raise ValueError(f"unknown capability {name!r}")
        changed: dict[str, Any] = {name: False, "probed_at": now, "conclusive": False, "notes": {**self.notes, name: why}}
        return replace(self, **changed)

    def rows(self) -> list[tuple[str, str]]:
        """(capability, finding) pairs for a report; a missing one says what the server answered."""
        out = []
        for name, label in _LABELS.items():
            value: bool = getattr(self, name)
            finding = "yes" if value else "no"
            if not value and name in self.notes:
                finding += f" ({self.notes[name]})"
            out.append((label, finding))
            if name == "conditional_put":
                out.append(("If-Match ETag forms accepted", ", ".join(self.etag_forms) or "none"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "etag_forms": list(self.etag_forms)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Capabilities:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in names}
        # Findings remembered before multipart was probed on its own: range copy implies it.
        values.setdefault("multipart", bool(values.get("range_copy")))
        values["etag_forms"] = tuple(values.get("etag_forms", ()))
        return cls(**values)


FULL_CAPABILITIES = Capabilities(
    conditional_put=True,
    etag_forms=("quoted", "unquoted"),
    multipart=True,
    range_copy=True,
    copy_source_if_match=True,
    complete_if_match=True,
    suffix_range=True,
    complete_etag=True,
)


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
