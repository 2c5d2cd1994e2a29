"""Configuration: defaults, then config.toml, then validation; every error names its key."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
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
    "Compression",
    "Config",
    "WatchConfig",
    "DayConfig",
    "SpoolConfig",
    "StorageConfig",
    "DirectoryConfig",
    "S3Config",
    "MetricsConfig",
    "load_config",
    "default_config_path",
    "is_loopback_url",
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


@dataclass(frozen=True)
class Config:
    watch: WatchConfig
    day: DayConfig
    spool: SpoolConfig
    storage: StorageConfig
    source: Path | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


def _table(cls: type, **types: Any) -> dict[str, tuple[Any, Any]]:
    """key -> (type(s), default) for one TOML table; the default is the dataclass field's, as
    TOML writes it (a path as a string, a time as HH:MM:SS), so each default is written once."""
    defaults = {f.name: f.default for f in fields(cls)}

    def as_toml(value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value.isoformat() if isinstance(value, time) else value

    return {key: (kind, as_toml(defaults[key])) for key, kind in types.items()}


_NUMBER = (int, float)
# A nested dict is a sub-table.
_SCHEMA: dict[str, Any] = {
    "watch": _table(WatchConfig, file=str, batch_size=int),
    "day": _table(DayConfig, timezone=str, close_out_at=str),
    "spool": _table(SpoolConfig, dir=str, retry_interval_s=_NUMBER, max_backoff_s=_NUMBER, archive_days=_NUMBER,
                    archive_max_mb=_NUMBER),
    "storage": {
        **_table(StorageConfig, backend=str, prefix=str, retention_days=int),
        "compression": (str, "none"),
        "directory": _table(DirectoryConfig, path=str),
        "s3": _table(S3Config, bucket=str, endpoint_url=str, region=str, addressing_style=str,
                     request_checksum_calculation=str, response_checksum_validation=str,
                     allow_insecure_http=bool, connect_timeout_s=_NUMBER, read_timeout_s=_NUMBER,
                     max_attempts=int, ca_bundle=str, server_side_encryption=str, kms_key=str,
                     sse_customer_key_file=str),
    },
    "metrics": _table(MetricsConfig, listen=str, allow_remote=bool, healthz_max_pending_age_s=_NUMBER),
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", (int, float): "a number"}


def default_config_path() -> Path:
    """``$UPLOADER_CONFIG``, else ``./config.toml``."""
    return Path(os.environ.get("UPLOADER_CONFIG") or "config.toml")


def load_config(path: Path | str | None = None) -> Config:
    """Read, validate and resolve a config file; raise ConfigError naming the bad key."""
    path = Path(path) if path is not None else default_config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            str(path), "file not found", "pass --config PATH or set UPLOADER_CONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read: {exc}", "check the path and permissions") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML ({exc})", "fix the syntax") from None
    return config_from_dict(raw, base=path.resolve().parent, source=path)


def config_from_dict(raw: dict[str, Any], base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML table and build the Config; relative paths resolve against ``base``."""
    _refuse_credentials(raw, "")
    values = _apply_schema(raw, _SCHEMA, "")

    def resolve(p: str) -> Path:
        return (base / Path(p).expanduser()).resolve()

    w, d = values["watch"], values["day"]
    if w["batch_size"] < 1:
        raise ConfigError("watch.batch_size", f"must be at least 1, got {w['batch_size']}")
    try:
        pytz.timezone(d["timezone"])
    except pytz.UnknownTimeZoneError:
        raise ConfigError(
            "day.timezone", f"unknown time zone {d['timezone']!r}", "use an IANA name like America/New_York"
        ) from None
    close_out_at = _parse_time("day.close_out_at", d["close_out_at"])
    spool = _spool_config(values["spool"], resolve)
    storage = _storage_config(values["storage"], resolve)
    metrics = _metrics_config(values["metrics"])
    watch_file = resolve(w["file"])
    _check_watch_file(watch_file)
    return Config(
        watch=WatchConfig(file=watch_file, batch_size=w["batch_size"]),
        day=DayConfig(timezone=d["timezone"], close_out_at=close_out_at),
        spool=spool,
        storage=storage,
        source=source,
        metrics=metrics,
    )


def _spool_config(s: dict[str, Any], resolve: Callable[[str], Path]) -> SpoolConfig:
    for key in ("retry_interval_s", "max_backoff_s"):
        if s[key] <= 0:
            raise ConfigError(f"spool.{key}", f"must be greater than 0, got {s[key]}")
    for key in ("archive_days", "archive_max_mb"):
        if s[key] < 0:
            raise ConfigError(f"spool.{key}", f"must not be negative, got {s[key]}", "use 0 to keep no archive")
    if s["max_backoff_s"] < s["retry_interval_s"]:
        raise ConfigError("spool.max_backoff_s", "must not be smaller than spool.retry_interval_s")
    return SpoolConfig(
        dir=resolve(s["dir"]),
        retry_interval_s=float(s["retry_interval_s"]),
        max_backoff_s=float(s["max_backoff_s"]),
        archive_days=float(s["archive_days"]),
        archive_max_mb=float(s["archive_max_mb"]),
    )


def _storage_config(st: dict[str, Any], resolve: Callable[[str], Path]) -> StorageConfig:
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


def _check_watch_file(path: Path) -> None:
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
        raise ConfigError("watch.file", f"{path} is a folder, not a file",
                          "give the path of the file the pipeline appends to, e.g. data/all_api.json")
    if in_file:
        raise ConfigError("watch.file", f"{folder} is a file, so {path} cannot be created",
                          "choose a path whose folders are folders")


def _metrics_config(v: dict[str, Any]) -> MetricsConfig:
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


def _refuse_credentials(table: dict[str, Any], where: str) -> None:
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
            _refuse_credentials(value, name)


def _apply_schema(raw: dict[str, Any], schema: dict[str, Any], where: str) -> dict[str, Any]:
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
            out[key] = _apply_schema(sub, spec, name)
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


def _parse_time(name: str, text: str) -> time:
    try:
        value = time.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is not None:  # the zone is [day] timezone's, never an offset
        raise ConfigError(name, f"not a time of day: {text!r}", 'use HH:MM:SS, e.g. "00:00:30"')
    return value
