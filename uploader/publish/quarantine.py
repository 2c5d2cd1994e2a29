"""Quarantined spans put in the bucket, verbatim, under ``<prefix>/quarantine/``.

Uploading one twice stores it once; a different span under a name already taken is kept beside
it (the name suffixed with a digest), never overwriting what is there.
"""

from __future__ import annotations

import hashlib
import logging

from uploader.errors import PreconditionFailed
from uploader.local.batch import QuarantineItem
from uploader.store import Store

__all__ = ["quarantine_key", "upload_quarantine"]

log = logging.getLogger(__name__)


def quarantine_key(prefix: str, name: str) -> str:
    """Where a quarantined record lives in the bucket."""
    return f"{prefix.strip('/')}/quarantine/{name}"


def upload_quarantine(store: Store, prefix: str, item: QuarantineItem) -> str:
    """Store the quarantined bytes verbatim; return the key. Uploading twice stores it once."""
    key = quarantine_key(prefix, item.name)
    meta = {
        "reason": _header_safe(item.reason),
        "offset": str(item.offset),
        "detected-at": _header_safe(item.detected_at),
        "day": item.day.isoformat() if item.day else "",
    }
    caps = store.capabilities()
    existing = None if caps.conditional_put else store.head(key)
    if existing is None:
        try:
            store.put(key, item.raw, meta, if_none_match=caps.conditional_put)
            log.info("publish.quarantined key=%s bytes=%d offset=%d", key, len(item.raw), item.offset)
            return key
        except PreconditionFailed:
            existing = store.head(key)
    if existing is not None and existing.size == len(item.raw):
        log.info("publish.quarantine_already key=%s", key)
        return key
    # Same name, different bytes: keep both rather than overwrite evidence.
    digest = hashlib.sha256(item.raw).hexdigest()[:12]
    other = f"{key}-{digest}"
    store.put(other, item.raw, meta)
    log.warning("publish.quarantine_renamed key=%s reason=name_taken", other)
    return other


def _header_safe(text: str, limit: int = 512) -> str:
    # x-amz-meta-* values travel as HTTP headers: ASCII only, one line.
    flat = " ".join(text.split())
    return flat.encode("ascii", "backslashreplace").decode("ascii")[:limit]
