"""A fault-injecting HTTP/1.1 proxy for an S3 server: one request per connection, random faults.

Every request the client sends is read whole and then, by a seeded random draw, either passed
to the upstream server or answered with a fault. Faults land *before* the upstream saw the
request, or *after* it processed it and the answer is lost (the hard case for exactly-once):

- ``http500`` / ``http503``: an S3-style XML error (InternalError / SlowDown) with that status;
- ``reset``: the connection is closed with an RST instead of an answer;
- ``stall``: no answer at all; the client's read timeout has to fire;
- ``down``: the listening socket is closed for a stretch (connection refused), then reopened.

Used by ``scripts/chaos.py`` and by the test suite (which adds ``scripts/`` to ``sys.path``).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Self

__all__ = ["FAULT_KINDS", "FaultProxy"]

FAULT_KINDS = ("http500", "http503", "reset", "stall", "down")

_ERRORS = {
    "http500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "http503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}
_MAX_HEAD = 64 << 10
_STALL_MAX_S = 120.0


class FaultProxy:
    """Listens on a loopback port and forwards to ``target``, injecting faults at ``fault_rate``.

    ``faults_on`` switches injection (and down stretches) on or off at any time; ``counts``
    holds how many of each fault kind were injected (``down`` counts stretches).
    """

    def __init__(self, target: tuple[str, int], seed: int = 0, fault_rate: float = 0.0,
                 kinds: tuple[str, ...] = ("http500", "http503", "reset", "stall")) -> None:
        self.target = target
        self.fault_rate = fault_rate
        self.kinds = kinds
        self.faults_on = fault_rate > 0
        self.counts: dict[str, int] = {k: 0 for k in (*FAULT_KINDS, "passed")}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: set[socket.socket] = set()
        self._drawn = 0
        self._sock: socket.socket | None = _listen_outside_ephemeral_range(self._rng)
        self.port: int = self._sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, args=(self._sock,), daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- control ---------------------------------------------------------------------------

    def go_down(self) -> None:
        """Refuse connections (closed port) until ``come_up``."""
        with self._lock:
            if self._sock is None:
                return
            sock, self._sock = self._sock, None
            self.counts["down"] += 1
        sock.close()

    def come_up(self, timeout: float = 30.0) -> None:
        """Listen again on the same port (retrying while the port is briefly taken)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._sock is not None or self._stop.is_set():
                    return
                try:
                    self._sock = socket.create_server(("127.0.0.1", self.port))
                    sock = self._sock
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.05)  # polling interval of a deadline wait
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    @property
    def is_down(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        self._stop.set()
        self.go_down()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            _close(c)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- serving ---------------------------------------------------------------------------

    def _draw(self) -> tuple[str, bool]:
        """(fault kind or "pass", whether the upstream sees the request first).

        The first faults go round every kind once, so even a short run sees them all.
        """
        with self._lock:
            if not self.faults_on or self._rng.random() >= self.fault_rate:
                return "pass", True
            self._drawn += 1
            if self._drawn <= len(self.kinds):
                return self.kinds[self._drawn - 1], self._drawn % 2 == 0
            return self._rng.choice(self.kinds), self._rng.random() < 0.5

    def _accept(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._open.add(client)
        try:
            request = _read_request(client)
            if request is None:
                return
            kind, upstream_first = self._draw()
            answer = self._forward(request) if kind == "pass" or upstream_first else None
            if kind == "pass":
                if answer is None:
                    _reset(client)  # upstream unreachable: what a dead server looks like
                    return
                client.sendall(answer)
                self._count("passed")
                return
            self._count(kind)
            if kind == "reset":
                _reset(client)
            elif kind == "stall":
                client.settimeout(_STALL_MAX_S)
                while not self._stop.is_set() and client.recv(65536):
                    pass  # hold the connection until the client gives up
            else:
                client.sendall(_error_response(kind))
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            _close(client)

    def _count(self, kind: str) -> None:
        with self._lock:
            self.counts[kind] += 1

    def _forward(self, request: bytes) -> bytes | None:
        """Send one request upstream on its own connection; the whole answer, or None."""
        try:
            with socket.create_connection(self.target, timeout=60) as up:
                up.sendall(request)
                chunks = []
                while data := up.recv(65536):
                    chunks.append(data)
                return b"".join(chunks)
        except OSError:
            return None


def _listen_outside_ephemeral_range(rng: random.Random) -> socket.socket:
    """A listening socket on a port below the kernel's ephemeral range, so that while the proxy
    is "down" no outgoing connection can take its port and the proxy can come back on it."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        try:
            return socket.create_server(("127.0.0.1", port))
        except OSError:
            continue
    raise OSError("no free loopback port below the ephemeral range")


def _read_request(client: socket.socket) -> bytes | None:
    """One whole HTTP request, rewritten to ``Connection: close``; None if the client went away."""
    client.settimeout(60)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = client.recv(65536)
        if not data or len(buf) > _MAX_HEAD:
            return None
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = []
    length = 0
    chunked = expect = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value.strip())
        elif lname == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif lname == b"expect":
            expect = True
            continue
        elif lname in (b"connection", b"keep-alive"):
            continue
        headers.append(line)
    if expect:
        client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if chunked:
        while not body.endswith(b"0\r\n\r\n"):
            data = client.recv(65536)
            if not data:
                return None
            body += data
    else:
        while len(body) < length:
            data = client.recv(min(65536, length - len(body)))
            if not data:
                return None
            body += data
    headers.append(b"Connection: close")
    return b"\r\n".join([lines[0], *headers]) + b"\r\n\r\n" + body


def _error_response(kind: str) -> bytes:
    status, reason, code, message = _ERRORS[kind]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>fault-{time.monotonic_ns():x}</RequestId></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head + body


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
