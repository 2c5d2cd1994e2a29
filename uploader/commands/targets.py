"""Which streams and destinations a command acts on: ``--stream``, ``--destination`` and ``--from``.

A ``Target`` is one stream's destination and the flattened ``Config`` of the two that every
command works on (``Config.view``). A ``Selection`` holds the targets of each stream picked, in
the config's order. Each name given that the config does not know is refused in one line naming
the ones it does (``UsageError``: exit 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from uploader.config import Config, DestinationConfig, StreamConfig
from uploader.errors import ConfigError, UploaderError, UsageError

__all__ = ["RepairTargets", "Selection", "Target", "repair_targets", "run_each", "select", "select_one"]

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """One destination of one stream, and their flattened config."""

    stream: StreamConfig
    destination: DestinationConfig
    config: Config

    @property
    def label(self) -> str:
        """How a report heads this target's section."""
        return f"stream {self.stream.name}, destination {self.destination.name}"


@dataclass(frozen=True)
class Selection:
    """The targets of each stream selected, streams and destinations in the config's order."""

    groups: tuple[tuple[StreamConfig, tuple[Target, ...]], ...]

    @property
    def targets(self) -> list[Target]:
        return [t for _, targets in self.groups for t in targets]

    @property
    def many(self) -> bool:
        """More than one target: each one's report is then headed by its ``label``."""
        return len(self.targets) > 1

    def __iter__(self) -> Iterator[tuple[StreamConfig, tuple[Target, ...]]]:
        return iter(self.groups)


def select(config: Config, stream: str | None, destination: str | None) -> Selection:
    """Every stream (or the one named), each with every destination (or the one named).

    With several streams, ``destination`` keeps the streams that ship to it; none of them does:
    UsageError.
    """
    streams = config.select(stream)
    groups = []
    for s in streams:
        dests = s.destinations if destination is None else tuple(d for d in s.destinations if d.name == destination)
        if dests:
            groups.append((s, tuple(Target(s, d, config.view(s, d)) for d in dests)))
    if not groups:
        raise _unknown_destination(streams, destination)
    return Selection(tuple(groups))


def select_one(config: Config, stream: str | None, destination: str | None, command: str) -> Target:
    """The one target a command on one document works on: the stream named (or the only one)
    and the destination named (or the stream's first)."""
    streams = config.select(stream)
    if len(streams) > 1:
        raise UsageError(f"{command} works on one stream and the config has {len(streams)}",
                         f"add --stream NAME (one of: {_names(streams)})")
    s = streams[0]
    dest = s.destinations[0] if destination is None else _destination(s, destination)
    return Target(s, dest, config.view(s, dest))


@dataclass(frozen=True)
class RepairTargets:
    """What `uploader repair` rebuilds, and from which destination's document (None: each
    target's own)."""

    selection: Selection
    source: DestinationConfig | None = None


def repair_targets(config: Config, stream: str | None, destination: str | None, source: str | None) -> RepairTargets:
    """Without ``source``: every selected destination, each rebuilt from its own document. With
    it: one target, ``destination``, or the stream's other one when it has two."""
    if source is None:
        return RepairTargets(select(config, stream, destination))
    streams = config.select(stream)
    if len(streams) > 1:
        raise UsageError(f"repair --from rebuilds one stream's document and the config has {len(streams)} streams",
                         f"add --stream NAME (one of: {_names(streams)})")
    s = streams[0]
    src = _destination(s, source)
    others = [d for d in s.destinations if d.name != src.name]
    if not others:
        raise UsageError(f"stream {s.name} has one destination ({src.name}): no other to rebuild from",
                         "run repair without --from: it rebuilds from the document itself and the local archive")
    if destination is not None:
        target = _destination(s, destination)
    elif len(others) == 1:
        target = others[0]
    else:
        raise UsageError(f"repair --from {src.name}: stream {s.name} has {len(s.destinations)} destinations; "
                         "which one to rebuild?", f"add --destination NAME (one of: {_names(others)})")
    if target.name == src.name:
        raise UsageError(f"--from {src.name} is the destination to rebuild",
                         f"rebuild another from it: --from {src.name} --destination NAME (one of: {_names(others)})")
    return RepairTargets(Selection(((s, (Target(s, target, config.view(s, target)),)),)), src)


def run_each(items: Iterable[tuple[Target, T]], work: Callable[[Target, T], bool], *, many: bool,
             say: Callable[[str], None], err: Callable[[str], None]) -> bool:
    """``work`` on each target in turn; True if every one returned True.

    With ``many`` targets each is headed by its label, and one that fails (an ``UploaderError``)
    is said in one line on stderr and counted, while the others still run. With one, its failure
    propagates: the CLI's one line, as before streams.
    """
    ok = True
    for target, item in items:
        if many:
            say(f"{target.label}:")
        try:
            done = work(target, item)
        except (ConfigError, UsageError):
            raise
        except UploaderError as exc:
            if not many:
                raise
            err(f"uploader: {target.label}: {exc}")
            done = False
        ok = done and ok
    return ok


def _destination(stream: StreamConfig, name: str) -> DestinationConfig:
    for d in stream.destinations:
        if d.name == name:
            return d
    raise _unknown_destination((stream,), name)


def _unknown_destination(streams: tuple[StreamConfig, ...], name: str | None) -> UsageError:
    where = f"stream {streams[0].name}" if len(streams) == 1 else f"streams {_names(streams)}"
    known = ", ".join(dict.fromkeys(d.name for s in streams for d in s.destinations))
    return UsageError(f"no destination named {name!r} in {where}", f"use one of: {known}")


def _names(items: Sequence[StreamConfig] | Sequence[DestinationConfig]) -> str:
    return ", ".join(i.name for i in items)
