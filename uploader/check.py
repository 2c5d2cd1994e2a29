"""`uploader check`: put, get and delete a probe object, then report what the server supports."""

from __future__ import annotations

import logging
import uuid
from typing import TextIO

from .config import Config
from .errors import StoreError
from .store import Capabilities, Store, open_store

__all__ = ["run_check"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_PROBLEMS = 1


def run_check(config: Config, out: TextIO) -> int:
    """Exercise the configured store and print a short report; 0 if usable, 1 if not.

    Any store failure becomes ONE line saying what is wrong and what to do, no traceback.
    """
    store = open_store(config.storage)
    print(f"uploader check: {store.describe()} (prefix {config.storage.prefix})", file=out)
    try:
        _round_trip(store, config.storage.prefix, out)
        caps = _probe(store)
    except StoreError as exc:
        log.info("check.failed error=%s", type(exc).__name__)
        print(f"FAILED: {exc.message}. Try: {exc.hint or 'see the log'}", file=out)
        return EXIT_PROBLEMS
    width = max(len(name) for name, _ in caps.rows())
    print("server capabilities:", file=out)
    for name, finding in caps.rows():
        print(f"  {name:<{width}}  {finding}", file=out)
    print(f"  {'appends to days past 5 MiB':<{width}}  {_append_mode(caps)}", file=out)
    print("OK: the store is usable", file=out)
    return EXIT_OK


def _round_trip(store: Store, prefix: str, out: TextIO) -> None:
    key = f"{prefix}/.uploader-check/check-{uuid.uuid4().hex}"
    body = f"uploader check {key}\n".encode()
    store.put(key, body, {"purpose": "uploader-check"})
    print("  put probe object     ok", file=out)
    try:
        data, info = store.get(key)
        if data != body or info.metadata.get("purpose") != "uploader-check":
            raise StoreError(
                "the probe object read back differs from what was written",
                "check for a proxy or gateway that rewrites objects or drops x-amz-meta-* headers",
            )
        print("  get probe object     ok (bytes and metadata match)", file=out)
    finally:
        store.delete(key)
    if store.head(key) is not None:
        raise StoreError("the probe object is still there after DELETE", "check the bucket's versioning/retention settings")
    print("  delete probe object  ok", file=out)


def _probe(store: Store) -> Capabilities:
    # A fresh probe, not one remembered from an earlier use of this instance.
    probe = getattr(store, "probe", None)
    caps: Capabilities = probe() if callable(probe) else store.capabilities()
    return caps


def _append_mode(caps: Capabilities) -> str:
    if not caps.server_side_append:
        return "whole GET + PUT (slower; safe under the single-writer lock)"
    if caps.conditional_append:
        return "server-side copy + new tail, refused if the object changed"
    return "server-side copy + new tail, guarded by a HEAD check and the single-writer lock"
