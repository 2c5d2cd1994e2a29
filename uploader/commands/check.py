"""`uploader check`: round-trip a probe object, remove probe leftovers, probe what the server honours,
report (and with ``--fix`` install) the bucket lifecycle rules this uploader owns."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable

from uploader.commands.targets import Selection, run_each
from uploader.config import Config
from uploader.daily import day_of_key
from uploader.errors import EncryptionRefused, ExitCode, StoreError
from uploader.local.spool import Spool
from uploader.store import LEFTOVER_AGE_S, Store, lifecycle, open_store, probe_prefix
from uploader.store.capabilities import Capabilities

__all__ = ["check_selection", "run_check"]

log = logging.getLogger(__name__)


def check_selection(selection: Selection, say: Callable[[str], None], err: Callable[[str], None],
                    fix: bool = False) -> ExitCode:
    """``run_check`` on every selected destination, each headed when there are several; OK if
    every store is usable."""
    ok = run_each(((t, None) for t in selection.targets), lambda t, _: run_check(t.config, say, fix) == ExitCode.OK,
                  many=selection.many, say=say, err=err)
    return ExitCode.OK if ok else ExitCode.PROBLEMS


def run_check(config: Config, say: Callable[[str], None], fix: bool = False) -> ExitCode:
    """Exercise the configured store, reporting each step to ``say`` as it happens (a line at a
    time); OK if usable, PROBLEMS if not.

    The capability findings are saved in the destination's state folder (``config.state``), so
    the next `uploader run` starts without probing. Any store failure becomes ONE line saying
    what is wrong and what to do. The bucket's lifecycle rules are only read, unless ``fix``:
    then ours are installed or brought up to date (the bucket's other rules kept) before the
    report.
    """
    store = open_store(config.storage, config.state)
    say(f"uploader check: {store.describe()} (prefix {config.storage.prefix})")
    # While `uploader run` works, its appends' multipart uploads and a young probe object may be
    # work in flight: leave those to it (it tidies them itself once a day).
    running = Spool(config.spool.dir).is_locked()
    try:
        _round_trip(store, config.storage.prefix, say)
        caps = store.capabilities(refresh=True)
        # After the probe: what it could not remove itself (a permission missing) is removed here,
        # or the refusal is this check's one FAILED line, not a warning in the log.
        leftovers = store.remove_leftovers(older_than_s=LEFTOVER_AGE_S if running else 0.0, uploads=not running)
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
    if config.storage.backend == "s3":
        try:
            encrypted = _encryption(store, config, caps, say)
        except StoreError as exc:
            say(f"FAILED: {exc.message}. Try: {exc.hint or 'see the log'}")
            return ExitCode.PROBLEMS
        if not encrypted:
            return ExitCode.PROBLEMS
    try:
        rules_ok = _lifecycle(store, config, fix, say)
    except StoreError as exc:
        log.info("check.lifecycle_failed error=%s fix=%s", type(exc).__name__, fix)
        if fix:
            say(f"FAILED: {exc.message}. Try: {exc.hint or 'see the log'}")
            return ExitCode.PROBLEMS
        # Like versioning: a bucket that will not say is no reason to call the store unusable.
        say(f"bucket lifecycle: unknown ({exc.message}). Try: {exc.hint or 'see the log'}")
    else:
        if not rules_ok:
            say("PROBLEMS: the server did not keep our lifecycle rules as sent")
            return ExitCode.PROBLEMS
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


def _encryption(store: Store, config: Config, caps: Capabilities, say: Callable[[str], None]) -> bool:
    """Report the encryption asked for, whether the server applies it, and how each day document
    is stored (a HEAD each); False when the server does not apply it: then no write is made."""
    wanted = config.storage.s3.encryption
    say(f"encryption at rest: {wanted.describe()}")
    if caps.encryption_problem:
        say(f"  PROBLEMS: the server does not apply it (the probe object was {caps.encryption_problem}); "
            "every upload is refused until the server or storage.s3's encryption settings change")
        return False
    prefix, name = config.storage.prefix, config.storage.document_name
    kinds: Counter[str] = Counter()
    other: list[str] = []
    for key in store.list(prefix.strip("/") + "/"):
        if day_of_key(prefix, key, name) is None:
            continue
        try:
            info = store.head(key)
        except EncryptionRefused as exc:  # SSE-C with another key than ours: unreadable, not a failure of the store
            kinds["unreadable with the configured key"] += 1
            other.append(f"{key}: {exc.message}")
            continue
        if info is None:
            continue
        kinds[info.encryption or "unencrypted"] += 1
        if wanted.mode is not None and info.encryption != wanted.mode.value:
            other.append(f"{key}: {info.encryption or 'unencrypted'}")
    found = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none yet"
    say(f"  day documents: {found}")
    if other:
        say(f"  {len(other)} not encrypted as configured (written before the setting changed, or by another "
            "tool; an append re-encrypts only its own day):")
        for line in other[:5]:
            say(f"    {line}")
        if len(other) > 5:
            say(f"    ... and {len(other) - 5} more")
    return True


def _lifecycle(store: Store, config: Config, fix: bool, say: Callable[[str], None]) -> bool:
    """Report which of our lifecycle rules the bucket holds; with ``fix``, install ours first.

    False only when ``fix`` wrote our rules and the server then held them otherwise: rules
    missing from a bucket nobody asked to fix are reported, not a failure of the store.
    """
    if config.storage.backend != "s3":
        say("bucket lifecycle: does not apply to the directory backend (nothing expires there)")
        return True
    from uploader.store.s3 import S3Store  # boto3: only for an S3 check, not every command's start

    assert isinstance(store, S3Store)
    prefix, retention, name = config.storage.prefix, config.storage.retention_days, config.storage.document_name
    bucket = store.lifecycle()
    if fix:
        if lifecycle.compare(bucket, prefix, retention, name).changed:
            store.set_lifecycle(lifecycle.merge(bucket, prefix, retention, name))
            log.info("check.lifecycle_installed prefix=%s retention_days=%s", prefix, retention)
            say("bucket lifecycle: our rules installed (the bucket's other rules kept as they were)")
            bucket = store.lifecycle()  # report what the server now holds, not what was sent
        else:
            say("bucket lifecycle: our rules are already as configured; nothing written")
    found = lifecycle.compare(bucket, prefix, retention, name)
    kept = "kept for ever" if retention is None else f"expired after {retention} days"
    say(f"bucket lifecycle (rules of this uploader; day documents {kept}):")
    width = max(len(f.rule_id) for f in found.findings)
    for finding in found.findings:
        say(f"  {finding.rule_id:<{width}}  {finding.state.value:<10}  {finding.summary}")
    say(f"  other rules on the bucket: {found.other_rules} (left as they are)")
    if found.changed and not fix:
        say("  `uploader check --fix` installs ours as configured")
    return not (fix and found.changed)
