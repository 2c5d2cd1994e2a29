"""Loopback ports for the suite's servers and proxies that no other process will take.

The servers are started on a port picked first and bound later, and a fault proxy gives its
port up while "down": a port the kernel may hand to any socket (its ephemeral range, which
``bind(0)`` and every outgoing connection draw from) could be taken in between, by another
pytest-xdist worker above all. So ports come from below that range, and each worker (and each
kind of user: servers, proxies) has a band of its own there.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from pathlib import Path

__all__ = ["free_port", "listen"]

_BAND = 6000  # below the ephemeral range: servers in the upper half, proxies in the lower
_lock = threading.Lock()
# A random start: a second import of this module (as tests.rig.ports) hands out other ports.
_next = itertools.count(random.randrange(1 << 16))


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _band(kind: int) -> range:
    """This worker's ports for ``kind`` (0: servers, 1: proxies)."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    top = _ephemeral_low() - kind * _BAND
    size = _BAND // workers
    start = top - _BAND + worker * size
    return range(max(1024, start), start + size)


def free_port() -> int:
    """A port nothing listens on, for a server to bind next (never handed out twice by this process)."""
    band = _band(0)
    with _lock:
        for _ in range(len(band)):
            port = band[next(_next) % len(band)]
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {band}")


def listen(rng: random.Random) -> socket.socket:
    """A listening socket on a port of this worker's proxy band, chosen by ``rng``."""
    band = _band(1)
    for _ in range(200):
        try:
            return socket.create_server(("127.0.0.1", rng.choice(band)))
        except OSError:
            continue
    raise RuntimeError(f"no free port in {band}")
