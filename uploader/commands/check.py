"""`uploader check`: round-trip a probe object, remove probe leftovers, probe what the server honours."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from uploader.config import Config
from uploader.errors import ExitCode, StoreError
from uploader.local.spool import Spool
from uploader.store import LEFTOVER_AGE_S, Store, open_store, probe_prefix
from uploader.store.capabilities import Capabilities

__all__ = ["run_check"]

log = logging.getLogger(__name__)


def run_check(config: Config, say: Callable[[str], None]) -> ExitCode:
    """Exercise the configured store, reporting each step to ``say`` as it happens (a line at a
    time); OK if usable, PROBLEMS if not.

    The capability findings are saved in the spool, so the next `uploader run` starts without
    probing. Any store failure becomes ONE line saying what is wrong and what to do.
    """
    store = open_store(config.storage, config.spool.dir)
    say(f"uploader check: {store.describe()} (prefix {config.storage.prefix})")
    # While `uploader run` works, its appends' multipart uploads and a young probe object may be
    # work in flight: leave those to it (it tidies them itself once a day).
    running = Spool(config.spool.dir).is_locked()
    try:
        _round_trip(store, config.storage.prefix, say)
        leftovers = store.remove_leftovers(older_than_s=LEFTOVER_AGE_S if running else 0.0, uploads=not running)
        caps = store.capabilities(refresh=True)
        versioning = store.versioning()
    except StoreError as exc:
        log.info("check.failed error=%s", type(exc).__name__)
        say(f"FAILED: {exc.message}. Try: {exc.hint or 'see the log'}")
        return ExitCode.PROBLEMS
    if leftovers:
        say(f"  removed {len(leftovers)} leftover(s) of interrupted probes and appends:")
        for item in leftovers:
            say(f"    {item}")
    rows = [*caps.rows(), ("appends to days past 5 MiB", _append_mode(caps))]
    width = max(len(name) for name, _ in rows)
    say("server capabilities:")
    for name, finding in rows:
        say(f"  {name:<{width}}  {finding}")
    say(f"bucket versioning: {versioning}")
    if versioning in ("off", "suspended"):
        say("  enabling it keeps every earlier version of the daily documents, so a stray overwrite or "
            "delete can be undone (add a lifecycle rule expiring noncurrent versions to bound the cost)")
    if not caps.conclusive:
        say("  (some findings are unsure after passing faults; they are probed again within the hour)")
    say("OK: the store is usable")
    return ExitCode.OK


def _round_trip(store: Store, prefix: str, say: Callable[[str], None]) -> None:
    key = f"{probe_prefix(prefix)}/check-{uuid.uuid4().hex}"
    body = f"uploader check {key}\n".encode()
    store.put(key, body, {"purpose": "uploader-check"})
    say("  put probe object     ok")
    try:
        data, info = store.get(key)
        if data != body or info.metadata.get("purpose") != "uploader-check":
            raise StoreError(
                "the probe object read back differs from what was written",
                "check for a proxy or gateway that rewrites objects or drops x-amz-meta-* headers",
            )
        say("  get probe object     ok (bytes and metadata match)")
    finally:
        store.delete(key)
    if store.head(key) is not None:
        raise StoreError("the probe object is still there after DELETE", "check the bucket's versioning/retention settings")
    say("  delete probe object  ok")


def _append_mode(caps: Capabilities) -> str:
    if not caps.server_side_append:
        return "whole GET + PUT (slower; safe under the single-writer lock)"
    if caps.conditional_append:
        return "server-side copy + new tail, refused if the object changed"
    return "server-side copy + new tail, guarded by a HEAD check and the single-writer lock"
