"""Streams and destinations: ``[streams.NAME]`` and ``[destinations.NAME]`` tables, and the
checks across them (one file, one spool and one set of keys per stream; every destination
named is defined). A config without ``[streams]`` is one stream, ``all_api``, shipping to one
destination, ``default``, from the ``[watch]``, ``[day]``, ``[spool]`` and ``[storage]`` tables:
the keys and the spool of the release before streams."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from uploader.config.tables import (
    SCHEMA,
    Compression,
    DayConfig,
    SpoolConfig,
    StorageConfig,
    WatchConfig,
    apply_schema,
    day_config,
    keys_named,
    spool_config,
    storage_config,
    watch_config,
)
from uploader.errors import ConfigError

__all__ = [
    "LEGACY_DESTINATION",
    "LEGACY_STREAM",
    "DestinationConfig",
    "StreamConfig",
    "legacy_stream",
    "streams_from",
]

LEGACY_STREAM = "all_api"
LEGACY_DESTINATION = "default"
DESTINATIONS_FOLDER = "destinations"  # under a spool: the state of every destination but the first
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_NAME_HINT = "use letters, digits, '_' and '-' (at most 63), starting with a letter or digit"
_DATE = "{date}"  # in a document name: the day, YYYY-MM-DD (daily.DATE_FIELD)
_QUARANTINE = "quarantine/"  # under the prefix, beside the day documents (DESIGN §5.6)

# A stream's own keys; the [day] and [spool] tables give the defaults of the tunables.
_STREAM_SCHEMA: dict[str, Any] = {
    "file": (str, None),
    "spool": (str, None),
    "batch_size": SCHEMA["watch"]["batch_size"],
    "prefix": (str, None),
    "compression": SCHEMA["storage"]["compression"],
    "document_name": (str, None),
    "destinations": (list, None),
    **{key: (kind, None) for key, (kind, _) in SCHEMA["day"].items()},
    **{key: (kind, None) for key, (kind, _) in SCHEMA["spool"].items() if key != "dir"},
}
# A destination is where documents go: [storage] less what belongs to the stream's keys.
_DESTINATION_SCHEMA: dict[str, Any] = {
    key: spec for key, spec in SCHEMA["storage"].items() if key not in ("prefix", "compression")
}


@dataclass(frozen=True)
class DestinationConfig:
    """One store a stream ships to, with the folder of its own exactly-once state."""

    name: str
    storage: StorageConfig  # with the stream's prefix and compression
    # status.json, ids/, capabilities.json and its delivery marks: the stream's first destination
    # keeps them at the spool's root (where one destination always had them), the others in
    # <spool>/destinations/<name>/.
    state_dir: Path


@dataclass(frozen=True)
class StreamConfig:
    """One bookended file, cut into its own spool, shipped to every one of its destinations."""

    name: str
    watch: WatchConfig
    day: DayConfig
    spool: SpoolConfig
    destinations: tuple[DestinationConfig, ...]


def legacy_stream(watch: WatchConfig, day: DayConfig, spool: SpoolConfig, storage: StorageConfig) -> StreamConfig:
    """The one stream a config without [streams] describes."""
    return StreamConfig(LEGACY_STREAM, watch, day, spool, (DestinationConfig(LEGACY_DESTINATION, storage, spool.dir),))


def streams_from(raw: dict[str, Any], values: dict[str, Any],
                 resolve: Callable[[str], Path]) -> tuple[StreamConfig, ...]:
    """The streams of a config that has a [streams] table; ``values`` are its [day] and [spool]
    tables with their defaults (the streams' defaults)."""
    moves = {"watch": "move file and batch_size into each [streams.NAME] table",
             "storage": "move it into [destinations.NAME] tables, its prefix and compression into each [streams.NAME]"}
    for table, hint in moves.items():
        if table in raw:
            raise ConfigError(table, "does not apply with [streams]", hint)
    if "dir" in raw.get("spool", {}):
        raise ConfigError("spool.dir", "does not apply with [streams]", "give each stream its own: streams.NAME.spool")
    streams_raw, dests_raw = _tables(raw, "streams"), _tables(raw, "destinations")
    if not streams_raw:
        raise ConfigError("streams", "declares no stream", "add a [streams.NAME] table, or remove [streams]")
    defined = {name: apply_schema(table, _DESTINATION_SCHEMA, f"destinations.{name}")
               for name, table in dests_raw.items()}
    streams = tuple(_stream(name, apply_schema(table, _STREAM_SCHEMA, f"streams.{name}"), values, defined, resolve)
                    for name, table in streams_raw.items())
    _refuse_shared(streams)
    return streams


def _tables(raw: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    tables = raw.get(key, {})
    if not isinstance(tables, dict):
        raise ConfigError(key, "must be a table", f"write [{key}.NAME] tables")
    for name, table in tables.items():
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{key}.{name}", "is not a usable name", _NAME_HINT)
        if not isinstance(table, dict):
            raise ConfigError(f"{key}.{name}", "must be a table", f"write it as [{key}.{name}]")
    return tables


def _stream(name: str, s: dict[str, Any], values: dict[str, Any], defined: dict[str, dict[str, Any]],
            resolve: Callable[[str], Path]) -> StreamConfig:
    where = f"streams.{name}"
    for key in ("file", "spool"):
        if s[key] is None:
            raise ConfigError(f"{where}.{key}", "is missing", f"every stream names its own {key}")
    tunables = {key: values["spool"][key] if s[key] is None else s[key] for key in _STREAM_SCHEMA
                if key in values["spool"]}
    spool = spool_config(tunables, resolve(s["spool"]), where)
    day = day_config(s["timezone"] or values["day"]["timezone"], s["close_out_at"] or values["day"]["close_out_at"],
                     where)
    watch = watch_config(resolve(s["file"]), s["batch_size"], where)
    prefix = (s["prefix"] if s["prefix"] is not None else f"{name}_rotating_logs").strip("/")
    if not prefix or ".." in prefix.split("/"):
        raise ConfigError(f"{where}.prefix", f"invalid prefix {s['prefix']!r}",
                          "use a plain path like all_api_rotating_logs")
    if s["compression"] not in tuple(Compression):
        raise ConfigError(f"{where}.compression", f"got {s['compression']!r}", 'use "none" or "gzip"')
    document_name = _document_name(s["document_name"], name)
    names = s["destinations"]
    if names is None or not names:
        raise ConfigError(f"{where}.destinations", "names no destination",
                          'list where the stream ships, e.g. destinations = ["linode"], '
                          "each a [destinations.NAME] table")
    destinations = []
    for i, dest in enumerate(names):
        if not isinstance(dest, str) or dest not in defined:
            raise ConfigError(f"{where}.destinations", f"names {dest!r}, which no [destinations.{dest}] table defines",
                              "define it, or fix the name")
        if dest in names[:i]:
            raise ConfigError(f"{where}.destinations", f"names {dest!r} twice", "list each destination once")
        with keys_named("storage.", f"destinations.{dest}."):
            storage = storage_config({**defined[dest], "prefix": prefix, "compression": s["compression"]}, resolve)
        storage = replace(storage, document_name=document_name)
        state = spool.dir if i == 0 else spool.dir / DESTINATIONS_FOLDER / dest
        destinations.append(DestinationConfig(dest, storage, state))
    return StreamConfig(name, watch, day, spool, tuple(destinations))


def _document_name(value: str | None, stream: str) -> str:
    """A stream's day document name, ``"<stream>_json_log_{date}.json"`` unless it gives its own:
    one path component of printable ASCII holding ``{date}`` once and no other brace, ending in
    ``.json``. The expiry rule filters on ``<prefix>/`` and the part before ``{date}`` (DESIGN
    §5.8), so that part must not be empty, nor begin the names of the prefix's other objects
    (``quarantine/``, ``.uploader-*``): it starts with a letter or digit and is not a start of
    ``quarantine``."""
    where = f"streams.{stream}.document_name"
    default = f"{stream}_json_log_{_DATE}.json"
    if value is None:
        return default
    hint = f'write it like "{default}": the day goes where {_DATE} is'
    if odd := [c for c in value if not "!" <= c <= "~"]:
        raise ConfigError(where, f"{value!r} holds {odd[0]!r}", f"use printable ASCII without spaces; {hint}")
    if "/" in value:
        raise ConfigError(where, f"{value!r} holds a '/'",
                          f"name the document alone (folders go in streams.{stream}.prefix); {hint}")
    if value.count(_DATE) != 1 or "{" in value.replace(_DATE, "") or "}" in value.replace(_DATE, ""):
        raise ConfigError(where, f"{value!r} must hold {_DATE} exactly once and no other brace", hint)
    if not value.endswith(".json"):
        raise ConfigError(where, f"{value!r} does not end in .json", f"{hint} (a gzip day adds .gz)")
    before = value.partition(_DATE)[0]
    if not before[:1].isalnum():  # printable ASCII, so a letter or digit
        raise ConfigError(where, f"{value!r} does not start with a letter or digit",
                          f"the expiry rule filters on <prefix>/ and what comes before {_DATE}, which would "
                          f"otherwise take in the quarantine and the uploader's .uploader-* objects; {hint}")
    if _QUARANTINE.startswith(before):
        raise ConfigError(where, f"{value!r} begins as {_QUARANTINE} does",
                          f"the expiry rule on <prefix>/{before} would take in the quarantine too; {hint}")
    return value


def _refuse_shared(streams: tuple[StreamConfig, ...]) -> None:
    """Two streams on one file would cut each other's records; on one spool, share a lock and a
    queue; on one prefix of one store, write each other's day documents."""
    seen_files: dict[Path, str] = {}
    seen_spools: dict[Path, str] = {}
    seen_keys: list[tuple[tuple[str, ...], str, str, str]] = []
    for stream in streams:
        where = f"streams.{stream.name}"
        if (other := seen_files.setdefault(stream.watch.file, stream.name)) != stream.name:
            raise ConfigError(f"{where}.file", f"is also streams.{other}.file", "give each stream its own file")
        for path, other in seen_spools.items():
            if path == stream.spool.dir or path in stream.spool.dir.parents or stream.spool.dir in path.parents:
                raise ConfigError(f"{where}.spool", f"overlaps streams.{other}.spool ({path})",
                                  "give each stream a spool folder of its own, outside the others")
        seen_spools[stream.spool.dir] = stream.name
        for dest in stream.destinations:
            place, prefix = _place(dest.storage), dest.storage.prefix
            for other_place, other_prefix, other_stream, other_dest in seen_keys:
                if place == other_place and _overlap(prefix, other_prefix):
                    key = f"{where}.prefix" if other_stream != stream.name else f"{where}.destinations"
                    raise ConfigError(key, f"destination {dest.name!r} would write the keys of stream "
                                      f"{other_stream!r} in destination {other_dest!r} ({_describe(place)}/{prefix})",
                                      "give each stream its own prefix, and each destination its own bucket or folder")
            seen_keys.append((place, prefix, stream.name, dest.name))


def _place(storage: StorageConfig) -> tuple[str, ...]:
    if storage.backend == "directory":
        return ("directory", str(storage.directory.path))
    return ("s3", storage.s3.endpoint_url or "aws", storage.s3.bucket)


def _describe(place: tuple[str, ...]) -> str:
    return place[1] if place[0] == "directory" else f"s3://{place[-1]}"


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
