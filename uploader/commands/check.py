"""`uploader check`: round-trip a probe object, remove probe leftovers, probe what the server honours."""

from __future__ import annotations

import logging
import uuid
from typing import TextIO

from uploader.config import Config
from uploader.errors import ExitCode, StoreError
from uploader.local.spool import Spool
from uploader.store import LEFTOVER_AGE_S, Store, open_store, probe_prefix
from uploader.store.capabilities import Capabilities

__all__ = ["run_check"]

log = logging.getLogger(__name__)


def run_check(config: Config, out: TextIO) -> int:
    """Exercise the configured store and print a short report; 0 if usable, 1 if not.

    The capability findings are saved in the spool, so the next `uploader run` starts without
    probing. Any store failure becomes ONE line saying what is wrong and what to do.
    """
    store = open_store(config.storage, config.spool.dir)
    print(f"uploader check: {store.describe()} (prefix {config.storage.prefix})", file=out)
    # While `uploader run` works, its appends' multipart uploads and a young probe object may be
    # work in flight: leave those to it (it tidies them itself once a day).
    running = Spool(config.spool.dir).is_locked()
    try:
        _round_trip(store, config.storage.prefix, out)
        leftovers = store.remove_leftovers(older_than_s=LEFTOVER_AGE_S if running else 0.0, uploads=not running)
        caps = store.capabilities(refresh=True)
        versioning = store.versioning()
    except StoreError as exc:
        log.info("check.failed error=%s", type(exc).__name__)
        print(f"FAILED: {exc.message}. Try: {exc.hint or 'see the log'}", file=out)
        return ExitCode.PROBLEMS
    if leftovers:
        print(f"  removed {len(leftovers)} leftover(s) of interrupted probes and appends:", file=out)
        for item in leftovers:
            print(f"    {item}", file=out)
    rows = [*caps.rows(), ("appends to days past 5 MiB", _append_mode(caps))]
    width = max(len(name) for name, _ in rows)
    print("server capabilities:", file=out)
    for name, finding in rows:
        print(f"  {name:<{width}}  {finding}", file=out)
    print(f"bucket versioning: {versioning}", file=out)
    if versioning in ("off", "suspended"):
        print("  enabling it keeps every earlier version of the daily documents, so a stray overwrite or "
              "delete can be undone (add a lifecycle rule expiring noncurrent versions to bound the cost)", file=out)
    if not caps.conclusive:
        print("  (some findings are unsure after passing faults; they are probed again within the hour)", file=out)
    print("OK: the store is usable", file=out)
    return ExitCode.OK


def _round_trip(store: Store, prefix: str, out: TextIO) -> None:
    key = f"{probe_prefix(prefix)}/check-{uuid.uuid4().hex}"
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


def _append_mode(caps: Capabilities) -> str:
    if not caps.server_side_append:
        return "whole GET + PUT (slower; safe under the single-writer lock)"
    if caps.conditional_append:
        return "server-side copy + new tail, refused if the object changed"
    return "server-side copy + new tail, guarded by a HEAD check and the single-writer lock"
