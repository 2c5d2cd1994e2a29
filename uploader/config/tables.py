"""The tables of config.toml: their dataclasses, schema, and the checks that name a bad key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import time
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytz

from uploader.errors import ConfigError
from uploader.s3_config import CREDENTIALS_HINT, S3Config, is_loopback_url, s3_config
from uploader.stamps import DEFAULT_TIMEZONE

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA",
    "Compression",
    "DayConfig",
    "DirectoryConfig",
    "MetricsConfig",
    "S3Config",
    "SpoolConfig",
    "StorageConfig",
    "WatchConfig",
    "apply_schema",
    "check_watch_file",
    "day_config",
    "keys_named",
    "watch_config",
    "metrics_config",
    "parse_time",
    "refuse_credentials",
    "spool_config",
    "storage_config",
]

# Any key whose name looks like one of these is a credential and is refused wherever it appears.
_CREDENTIAL_WORDS = ("secret", "access_key", "accesskey", "session_token", "password", "key_id")
DEFAULT_PREFIX = "all_api_rotating_logs"  # the seed's key prefix; the backends' default too


class Compression(StrEnum):
    """How a day document is stored: as JSON, or gzip-compressed (``.json.gz``, DESIGN §5.10)."""

    NONE = "none"
    GZIP = "gzip"


@dataclass(frozen=True)
class WatchConfig:
    file: Path = Path("data/all_api.json")
    batch_size: int = 10


@dataclass(frozen=True)
class DayConfig:
    timezone: str = DEFAULT_TIMEZONE
    close_out_at: time = time(0, 0, 30)

    @property
    def tz(self) -> pytz.BaseTzInfo:
        return pytz.timezone(self.timezone)


@dataclass(frozen=True)
class SpoolConfig:
    dir: Path = Path("data/spool")
    retry_interval_s: float = 30.0
    max_backoff_s: float = 600.0
    # Uploaded batches are kept this long (and at most this much) for `uploader repair`.
    archive_days: float = 7.0
    archive_max_mb: float = 1024.0


@dataclass(frozen=True)
class DirectoryConfig:
    path: Path = Path("data/bucket")


@dataclass(frozen=True)
class MetricsConfig:
    """Where `uploader run` serves Prometheus /metrics and /healthz; ``listen`` "" is off."""

    listen: str = "127.0.0.1:9464"
    host: str = "127.0.0.1"
    port: int = 9464
    # Metrics name the bucket and show the traffic: beyond loopback only when asked for.
    allow_remote: bool = False
    healthz_max_pending_age_s: float = 900.0

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


@dataclass(frozen=True)
class StorageConfig:
    backend: str = "directory"
    prefix: str = DEFAULT_PREFIX
    directory: DirectoryConfig = field(default_factory=DirectoryConfig)
    s3: S3Config = field(default_factory=S3Config)
    # Days a day document or quarantined span is kept in the bucket (a lifecycle rule `uploader
    # check --fix` installs); None keeps them for ever.
    retention_days: int | None = None
    # How new day documents are stored; a day keeps the form it was started in.
    compression: Compression = field(default_factory=lambda: Compression.NONE)
    # The day document's name under the prefix, "{date}" standing for YYYY-MM-DD (daily.day_key):
    # a stream's own (streams.NAME.document_name); the legacy [storage] table has no such key.
    document_name: str = "all_api_json_log_{date}.json"


def table(cls: type, **types: Any) -> dict[str, tuple[Any, Any]]:
    """key -> (type(s), default) for one TOML table; the default is the dataclass field's, as
    TOML writes it (a path as a string, a time as HH:MM:SS), so each default is written once."""
    defaults = {f.name: f.default for f in fields(cls)}

    def as_toml(value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value.isoformat() if isinstance(value, time) else value

    return {key: (kind, as_toml(defaults[key])) for key, kind in types.items()}


_NUMBER = (int, float)
# A nested dict is a sub-table.
SCHEMA: dict[str, Any] = {
    "watch": table(WatchConfig, file=str, batch_size=int),
    "day": table(DayConfig, timezone=str, close_out_at=str),
    "spool": table(SpoolConfig, dir=str, retry_interval_s=_NUMBER, max_backoff_s=_NUMBER, archive_days=_NUMBER,
                    archive_max_mb=_NUMBER),
    "storage": {
        **table(StorageConfig, backend=str, prefix=str, retention_days=int),
        "compression": (str, "none"),
        "directory": table(DirectoryConfig, path=str),
        "s3": table(S3Config, bucket=str, endpoint_url=str, region=str, addressing_style=str,
                     request_checksum_calculation=str, response_checksum_validation=str,
                     allow_insecure_http=bool, connect_timeout_s=_NUMBER, read_timeout_s=_NUMBER,
                     max_attempts=int, ca_bundle=str, server_side_encryption=str, kms_key=str,
                     sse_customer_key_file=str, profile=str),
    },
    "metrics": table(MetricsConfig, listen=str, allow_remote=bool, healthz_max_pending_age_s=_NUMBER),
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", (int, float): "a number",
               list: "a list"}


def watch_config(file: Path, batch_size: int, where: str = "watch") -> WatchConfig:
    if batch_size < 1:
        raise ConfigError(f"{where}.batch_size", f"must be at least 1, got {batch_size}")
    check_watch_file(file, f"{where}.file")
    return WatchConfig(file=file, batch_size=batch_size)


def day_config(timezone: str, close_out_at: str, where: str = "day") -> DayConfig:
    try:
        pytz.timezone(timezone)
    except pytz.UnknownTimeZoneError:
        raise ConfigError(
            f"{where}.timezone", f"unknown time zone {timezone!r}", "use an IANA name like America/New_York"
        ) from None
    return DayConfig(timezone=timezone, close_out_at=parse_time(f"{where}.close_out_at", close_out_at))


def spool_config(s: dict[str, Any], dir: Path, where: str = "spool") -> SpoolConfig:
    for key in ("retry_interval_s", "max_backoff_s"):
        if s[key] <= 0:
            raise ConfigError(f"{where}.{key}", f"must be greater than 0, got {s[key]}")
    for key in ("archive_days", "archive_max_mb"):
        if s[key] < 0:
            raise ConfigError(f"{where}.{key}", f"must not be negative, got {s[key]}", "use 0 to keep no archive")
    if s["max_backoff_s"] < s["retry_interval_s"]:
        raise ConfigError(f"{where}.max_backoff_s", f"must not be smaller than {where}.retry_interval_s")
    return SpoolConfig(
        dir=dir,
        retry_interval_s=float(s["retry_interval_s"]),
        max_backoff_s=float(s["max_backoff_s"]),
        archive_days=float(s["archive_days"]),
        archive_max_mb=float(s["archive_max_mb"]),
    )


def storage_config(st: dict[str, Any], resolve: Callable[[str], Path]) -> StorageConfig:
    if st["backend"] not in ("directory", "s3"):
        raise ConfigError("storage.backend", f"unknown backend {st['backend']!r}", 'use "directory" or "s3"')
    prefix = st["prefix"].strip("/")
    if not prefix or ".." in prefix.split("/"):
        raise ConfigError("storage.prefix", f"invalid prefix {st['prefix']!r}", "use a plain path like all_api_rotating_logs")
    s3 = s3_config(st["s3"], required=st["backend"] == "s3", resolve=resolve)
    retention = st["retention_days"]
    if retention is not None and retention < 1:
        raise ConfigError("storage.retention_days", f"must be at least 1, got {retention}",
                          "leave it out to keep day documents for ever")
    if st["compression"] not in tuple(Compression):
        raise ConfigError("storage.compression", f"got {st['compression']!r}", 'use "none" or "gzip"')
    return StorageConfig(backend=st["backend"], prefix=prefix,
                         directory=DirectoryConfig(path=resolve(st["directory"]["path"])), s3=s3,
                         retention_days=retention, compression=Compression(st["compression"]))


def check_watch_file(path: Path, key: str = "watch.file") -> None:
    """Refuse a watch.file that can never be a file: a folder at the path, or a file where one
    of its folders should be. Checked here, not when `run` starts, so every command (`check`
    after installing, first of all) names the key with exit 2 before anything runs. A missing
    file is fine: the pipeline creates it."""
    try:
        is_dir = path.is_dir()
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        in_file = not folder.is_dir()
    except OSError:
        return  # a path this user may not look at: not a config mistake as such; `run` meets it
    if is_dir:
        raise ConfigError(key, f"{path} is a folder, not a file",
                          "give the path of the file the pipeline appends to, e.g. data/all_api.json")
    if in_file:
        raise ConfigError(key, f"{folder} is a file, so {path} cannot be created",
                          "choose a path whose folders are folders")


def metrics_config(v: dict[str, Any]) -> MetricsConfig:
    age = v["healthz_max_pending_age_s"]
    if age <= 0:
        raise ConfigError("metrics.healthz_max_pending_age_s", f"must be greater than 0, got {age}")
    listen = v["listen"].strip()
    if not listen:
        return MetricsConfig(listen="", host="", port=0, allow_remote=v["allow_remote"],
                             healthz_max_pending_age_s=float(age))
    hint = 'write HOST:PORT, e.g. "127.0.0.1:9464" or "[::1]:9464"; "" turns metrics off'
    parts = urlsplit("//" + listen)
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or not 0 < port < 65536 or parts.path or parts.query \
            or parts.fragment or parts.username is not None:
        raise ConfigError("metrics.listen", f"not an address to listen on: {listen!r}", hint)
    if not is_loopback_url(f"http://{listen}") and not v["allow_remote"]:
        raise ConfigError(
            "metrics.listen",
            f"{listen} would serve /metrics and /healthz beyond this host, without authentication",
            "listen on 127.0.0.1 (scrape through a tunnel or a proxy), "
            "or set metrics.allow_remote = true if you really mean it",
        )
    return MetricsConfig(listen=listen, host=parts.hostname, port=port, allow_remote=v["allow_remote"],
                         healthz_max_pending_age_s=float(age))


def refuse_credentials(table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        name = f"{where}.{key}" if where else key
        lowered = key.lower()
        if any(word in lowered for word in _CREDENTIAL_WORDS):
            # Never echo the value: it may be a real secret.
            raise ConfigError(name, "credentials do not belong in the config file", CREDENTIALS_HINT)
        if "customer_key" in lowered and not lowered.endswith("_file"):
            raise ConfigError(name, "an SSE-C key does not belong in the config file",
                              "write it to a file of its own (mode 600) and set storage.s3.sse_customer_key_file")
        if isinstance(value, dict):
            refuse_credentials(value, name)


def apply_schema(raw: dict[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in raw:
        if key not in schema:
            name = f"{where}.{key}" if where else key
            known = ", ".join(sorted(schema))
            raise ConfigError(name, "unknown key", f"check the spelling; known here: {known}")
    for key, spec in schema.items():
        name = f"{where}.{key}" if where else key
        if isinstance(spec, dict):
            sub = raw.get(key, {})
            if not isinstance(sub, dict):
                raise ConfigError(name, "must be a table", f"write it as [{name}]")
            out[key] = apply_schema(sub, spec, name)
            continue
        types, default = spec
        if key not in raw:
            out[key] = default
            continue
        value = raw[key]
        # bool is an int subclass in Python; never accept true for a number or 1 for a flag.
        ok = isinstance(value, types) and not (isinstance(value, bool) and types is not bool)
        if not ok:
            raise ConfigError(name, f"must be {_TYPE_NAMES[types]}, got {value!r}")
        out[key] = value
    return out


def parse_time(name: str, text: str) -> time:
    try:
        value = time.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is not None:  # the zone is [day] timezone's, never an offset
        raise ConfigError(name, f"not a time of day: {text!r}", 'use HH:MM:SS, e.g. "00:00:30"')
    return value


@contextmanager
def keys_named(old: str, new: str) -> Iterator[None]:
    """Checks written for one table (``storage.``) reused for another (``destinations.X.``): a
    refusal names the key as the operator wrote it, in the message and in its hint."""
    try:
        yield
    except ConfigError as exc:
        field = new + exc.field.removeprefix(old) if exc.field.startswith(old) else exc.field
        hint = exc.hint.replace(old, new) if exc.hint else exc.hint
        raise ConfigError(field, exc.reason.replace(old, new), hint) from None
