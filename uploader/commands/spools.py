"""The selected streams' spools for a one-shot command, every lock taken before any work.

Each stream has one spool, shared by its destinations (``Delivery``): a command that writes takes
the spool's lock once for all of them, and refuses while `uploader run` (or another command)
holds it. Taking every selected stream's lock first means a refusal leaves everything as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from uploader.commands.targets import Selection, Target
from uploader.config import StreamConfig
from uploader.local.delivery import Delivery, DeliveryQueue
from uploader.local.spool import Spool

__all__ = ["StreamSpool", "stream_spools"]


@dataclass(frozen=True)
class StreamSpool:
    """One selected stream: its spool, the destinations sharing it, and the targets chosen."""

    stream: StreamConfig
    targets: tuple[Target, ...]
    spool: Spool
    delivery: Delivery

    def queue(self, target: Target) -> DeliveryQueue:
        """What ``target``'s destination has not acknowledged yet."""
        return self.delivery.queue(target.destination.name)


@contextmanager
def stream_spools(selection: Selection, what: str, *, lock: bool = True) -> Iterator[list[StreamSpool]]:
    """The spool of each selected stream, each locked for ``what`` (unless not ``lock``: a dry
    run or a report, which write nothing) until the block ends."""
    with ExitStack() as locks:
        spools = []
        for stream, _ in selection:
            spool = Spool(stream.spool.dir)
            if lock:
                locks.enter_context(spool.locked(what))
            spools.append(spool)
        # Every destination of the stream, selected or not: a batch leaves once all of them have it.
        deliveries = [Delivery(spool, [(d.name, d.state_dir) for d in stream.destinations])
                      for (stream, _), spool in zip(selection, spools, strict=True)]
        if lock:  # a command that writes; a report or a dry run creates nothing
            for delivery in deliveries:
                delivery.prepare()
        yield [StreamSpool(stream, targets, spool, delivery)
               for (stream, targets), spool, delivery in zip(selection, spools, deliveries, strict=True)]
