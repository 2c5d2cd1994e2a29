"""What an S3 server honours and accepts: the probe's findings, and S3's part sizes.

S3-compatible servers honour different subsets of the API (Ceph RGW, which Linode runs, is not
moto, and neither is AWS). ``Capabilities`` records what a probe found; every append path has
a fallback for each capability that is missing, so a probe can only ever choose a path. A
finding is trusted for a day, one that a passing fault left unsure (``conclusive=False``) for
an hour (``memo.CapabilityMemo`` keeps them between runs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = [
    "COPY_PART_SIZE",
    "FULL_CAPABILITIES",
    "MAX_AGE_S",
    "MAX_OBJECT_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_COPY_PART_SIZE",
    "MIN_PART_SIZE",
    "PART_SIZE",
    "UNSURE_MAX_AGE_S",
    "Capabilities",
]

# S3 refuses a multipart part below 5 MiB unless it is the last one.
MIN_PART_SIZE = 5 * 1024 * 1024
# What a streamed write buffers per part: bounds its memory, and keeps a large group commit
# well inside S3's 10,000 parts (80 GiB).
PART_SIZE = 8 * 1024 * 1024
# S3's other limits: parts per multipart upload, bytes per part (uploaded or copied), bytes per object.
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3
MAX_OBJECT_SIZE = 5 * 1024**4
# One UploadPartCopy copies at most this much of a kept body. A copy answers only when done, so
# it must finish well within the read timeout (30 s by default): 512 MiB took 1.7-3.5 s on moto
# and on the suite's Ceph RGW 16 (1 GiB: 3.8-6.8 s): a server eight times slower still makes it.
COPY_PART_SIZE = 512 * 1024 * 1024
# The smallest copy part: the kept body is split into equal ranges, each at least half of this,
# and every range but the last part of an upload must be MIN_PART_SIZE or more.
MIN_COPY_PART_SIZE = 2 * MIN_PART_SIZE

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

    ``min_copy``: the fewest bytes a write may keep by copying them on the server (``compose``'s
    ``keep``): S3's smallest part, 5 MiB; 0 where any range is copied (the directory backend copies
    locally), so nothing needs padding to reach it. A trait of the backend, not probed.

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
    # Why the server did not store the probe object with the encryption asked for; "" when it
    # did, or none was asked. Not a path choice: every write is refused while it is set.
    encryption_problem: str = ""
    min_copy: int = MIN_PART_SIZE
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
