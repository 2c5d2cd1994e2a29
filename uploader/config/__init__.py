"""Configuration: defaults, then config.toml, then validation; every error names its key.

``Config`` is what the uploader and each command work on: one stream's file, zone and spool,
and one of its destinations' storage. ``Config.streams`` holds every stream of the file (a
config without ``[streams]`` is the one stream ``all_api`` with the destination ``default``),
and ``Config.view`` gives the ``Config`` of any stream and destination.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uploader.config.streams import (
    LEGACY_DESTINATION,
    LEGACY_STREAM,
    DestinationConfig,
    StreamConfig,
    legacy_stream,
    streams_from,
)
from uploader.config.tables import (
    DEFAULT_PREFIX,
    SCHEMA,
    Compression,
    DayConfig,
    DirectoryConfig,
    MetricsConfig,
    S3Config,
    SpoolConfig,
    StorageConfig,
    WatchConfig,
    apply_schema,
    day_config,
    metrics_config,
    refuse_credentials,
    spool_config,
    storage_config,
    watch_config,
)
from uploader.errors import ConfigError, UsageError
from uploader.s3_config import is_loopback_url

__all__ = [
    "DEFAULT_PREFIX",
    "LEGACY_DESTINATION",
    "LEGACY_STREAM",
    "Compression",
    "Config",
    "DayConfig",
    "DestinationConfig",
    "DirectoryConfig",
    "MetricsConfig",
    "S3Config",
    "SpoolConfig",
    "StorageConfig",
    "StreamConfig",
    "WatchConfig",
    "default_config_path",
    "is_loopback_url",
    "load_config",
]


@dataclass(frozen=True)
class Config:
    """One stream and one of its destinations (the first of each, as loaded), and the file's
    metrics and streams."""

    watch: WatchConfig
    day: DayConfig
    spool: SpoolConfig
    storage: StorageConfig
    source: Path | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    declared: tuple[StreamConfig, ...] = ()  # the [streams] tables; () for a config without them
    stream: str = LEGACY_STREAM
    destination: str = LEGACY_DESTINATION
    state_dir: Path | None = None  # this destination's own state; None: the spool folder

    @property
    def state(self) -> Path:
        """Where this destination keeps status.json, ids/ and capabilities.json."""
        return self.state_dir or self.spool.dir

    @property
    def streams(self) -> tuple[StreamConfig, ...]:
        return self.declared or (legacy_stream(self.watch, self.day, self.spool, self.storage),)

    def view(self, stream: StreamConfig, destination: DestinationConfig | None = None) -> Config:
        """The Config of one stream's destination (its first when None)."""
        dest = destination or stream.destinations[0]
        return Config(stream.watch, stream.day, stream.spool, dest.storage, self.source, self.metrics, self.declared,
                      stream.name, dest.name, dest.state_dir)

    def select(self, name: str | None) -> tuple[StreamConfig, ...]:
        """Every stream, or the one named (``--stream NAME``)."""
        if name is None:
            return self.streams
        for stream in self.streams:
            if stream.name == name:
                return (stream,)
        known = ", ".join(s.name for s in self.streams)
        raise UsageError(f"no stream named {name!r} in the config", f"use one of: {known}")


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
    refuse_credentials(raw, "")
    multi = {key: raw[key] for key in ("streams", "destinations") if key in raw}
    if "destinations" in multi and "streams" not in multi:
        raise ConfigError("destinations", "no stream ships to them", "add [streams.NAME] tables that name them")
    values = apply_schema({k: v for k, v in raw.items() if k not in multi}, SCHEMA, "")

    def resolve(p: str) -> Path:
        path = base / Path(p).expanduser()
        try:
            return path.resolve()
        except (OSError, RuntimeError):  # a link to itself: the path as written; what reads it says why
            return Path(os.path.abspath(path))

    metrics = metrics_config(values["metrics"])
    if multi:
        streams = streams_from(raw, values, resolve)
        first = streams[0]
        return Config(first.watch, first.day, first.spool, first.destinations[0].storage, source, metrics,
                      streams).view(first)
    w, d = values["watch"], values["day"]
    return Config(
        watch=watch_config(resolve(w["file"]), w["batch_size"]),
        day=day_config(d["timezone"], d["close_out_at"]),
        spool=spool_config(values["spool"], resolve(values["spool"]["dir"])),
        storage=storage_config(values["storage"], resolve),
        source=source,
        metrics=metrics,
    )
