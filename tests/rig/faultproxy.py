"""A fault-injecting, request-rewriting HTTP/1.1 proxy in front of an S3 server (tests, chaos runs).

Each request is read whole, logged (``requests``) and then goes through two stages:

1. **Faults**, the network misbehaving. ``mode`` forces one kind on every request; in mode
   "pass" a seeded draw injects one at ``fault_rate`` (when ``faults_on``). A fault lands
   *before* the upstream saw the request, or *after* it processed it and the answer is lost
   (the hard case for exactly-once):

   - ``http500`` / ``http503``: an S3 XML error (InternalError / SlowDown) with that status;
   - ``reset``: the connection is closed with an RST instead of an answer;
   - ``stall``: no answer at all; the client's read timeout has to fire;
   - ``down`` (``go_down`` / ``come_up``): the port is closed for a stretch (connection refused).

2. **Rules**, the server behaving like another S3 implementation. ``rules`` are tried in
   order; the first that matches the request (its ``operation`` and/or a predicate) acts:
   answer an S3 error at once, drop request headers (re-signed with SigV4, so servers that
   check signatures still accept the request: how a test makes a server ignore If-Match or
   Range), rewrite the upstream's answer, or honour an If-Match the upstream ignores.

Every request goes upstream on its own connection with ``Connection: close``; an answer ends
where its Content-Length says, else (chunked) at EOF: waiting for the close would cost ~10 ms a
request on moto's server. Requests must be path-style; re-signing assumes a plain (not
aws-chunked) payload, which is what boto3 sends over http with
``request_checksum_calculation="when_required"``. ``traffic`` counts requests and the bytes the
clients sent and received, by HTTP method (the benchmarks measure bytes on the wire with it).

Used by the test suite, by ``tests/rig/chaos.py`` and by the benchmarks.
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Self
from urllib.parse import parse_qsl, quote, unquote

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

try:
    from .ports import listen as listen_on_a_free_port
except ImportError:  # run as a script: tests/rig is on the path
    from ports import listen as listen_on_a_free_port  # type: ignore[no-redef]

__all__ = ["FAULT_KINDS", "MODES", "FaultProxy", "Request", "Response", "Rule", "Traffic", "blank_complete_etag"]

FAULT_KINDS = ("http500", "http503", "reset", "stall", "down")
MODES = ("pass", "reset", "stall", "http500", "http503")
_REQUEST_FAULTS = ("http500", "http503", "reset", "stall")  # "down" is a stretch, not a per-request draw
_FAULT_ERRORS = {"http500": (500, "InternalError"), "http503": (503, "SlowDown")}
_MESSAGES = {
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold",
}
# Not forwarded as sent: the proxy speaks one request per connection and answers Expect itself.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "expect", "transfer-encoding"})
_MAX_HEAD = 64 << 10
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_STALL_MAX_S = 120.0


@dataclass
class Request:
    """One request as the client sent it (header names lower-cased, body de-chunked)."""

    method: str
    target: str  # the raw request target, still URL-encoded: path plus "?query"
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.target.partition("?")[2], keep_blank_values=True))

    @property
    def bucket(self) -> str:
        return unquote(self.path[1:].partition("/")[0])

    @property
    def key(self) -> str:
        return unquote(self.path[1:].partition("/")[2])

    @property
    def operation(self) -> str:
        """The S3 operation of a path-style request, e.g. "UploadPartCopy"; "Other" if not one we name."""
        m, q = self.method, set(self.query) - {"x-id"}  # botocore adds ?x-id=<Operation> to some
        copy = "x-amz-copy-source" in self.headers
        if not self.bucket:
            return "ListBuckets" if m == "GET" else "Other"
        if not self.key:
            if m == "PUT" and not q:
                return "CreateBucket"
            if m == "GET" and "uploads" in q:
                return "ListMultipartUploads"
            if m == "GET" and self.query.get("list-type") == "2":
                return "ListObjectsV2"
            return "Other"
        if m == "PUT" and {"partNumber", "uploadId"} <= q:
            return "UploadPartCopy" if copy else "UploadPart"
        if m == "PUT" and not q:
            return "CopyObject" if copy else "PutObject"
        if m == "POST" and q == {"uploads"}:
            return "CreateMultipartUpload"
        if m == "POST" and q == {"uploadId"}:
            return "CompleteMultipartUpload"
        if m == "DELETE" and q <= {"uploadId", "versionId"}:
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        reads = all(k in ("versionId", "partNumber") or k.startswith("response-") for k in q)
        if m in ("GET", "HEAD") and reads:
            return "GetObject" if m == "GET" else "HeadObject"
        return "Other"


@dataclass
class Response:
    """An HTTP answer (header names lower-cased, body de-chunked), as handed to ``Rule.edit_response``."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """The answer on the wire, Content-Length fitting the body (edits may change its size)."""
        return _wire(f"HTTP/1.1 {self.status} {self.reason}", self.headers, self.body, True)


@dataclass
class Traffic:
    """Requests and bytes on the clients' side of the proxy, as they sent and received them."""

    requests: int = 0
    sent: int = 0  # request lines, headers and bodies (chunk framing included)
    received: int = 0  # answers, 100 Continue included


@dataclass
class Rule:
    """Matches requests by ``op`` and/or ``when`` (both must hold; neither: every request) and
    takes exactly one action. ``hits`` counts the requests it acted on.

    - ``answer=(status, code)``: answer with that S3 error at once, never forwarding;
    - ``drop_headers``: remove these request headers, re-sign, forward;
    - ``edit_response``: forward, then rewrite the answer;
    - ``enforce_if_match``: for CompleteMultipartUpload with If-Match and UploadPartCopy with
      x-amz-copy-source-if-match (the rule matches no other request), HEAD the object concerned
      and answer 412 PreconditionFailed unless its ETag matches; else drop the header and forward.
    """

    op: str | None = None
    when: Callable[[Request], bool] | None = None
    answer: tuple[int, str] | None = None
    drop_headers: tuple[str, ...] = ()
    edit_response: Callable[[Response], Response] | None = None
    enforce_if_match: bool = False
    hits: int = 0

    def __post_init__(self) -> None:
        actions = (self.answer is not None, bool(self.drop_headers), self.edit_response is not None,
                   self.enforce_if_match)
        if sum(actions) != 1:
            raise ValueError("a Rule takes exactly one action: answer, drop_headers, edit_response "
                             "or enforce_if_match")
        self.drop_headers = tuple(h.lower() for h in self.drop_headers)

    def matches(self, request: Request) -> bool:
        if self.op is not None and request.operation != self.op:
            return False
        if self.enforce_if_match and _if_match_condition(request) is None:
            return False
        return self.when is None or self.when(request)


def blank_complete_etag(resp: Response) -> Response:
    """A CompleteMultipartUpload answer with ``<ETag></ETag>``, as Ceph RGW 16.2 sends it."""
    if b"CompleteMultipartUploadResult" not in resp.body:
        return resp
    return replace(resp, body=re.sub(rb"<ETag>.*?</ETag>", b"<ETag></ETag>", resp.body, flags=re.DOTALL))


class FaultProxy:
    """Listens on a loopback port and forwards to ``target``; see the module docstring.

    ``faults_on`` switches random faults (at ``fault_rate``, drawn from ``kinds``) on or off;
    ``mode`` forces one fault kind on every request; ``counts`` holds how many of each kind
    were injected (``down`` counts stretches) and how many requests ``passed``; ``requests``
    the last ``log_limit`` requests seen (0: none kept, for big bodies); ``traffic`` the
    requests and bytes by method. Rewritten requests are re-signed with the given keys.
    """

    def __init__(self, target: tuple[str, int], seed: int = 0, fault_rate: float = 0.0,
                 kinds: tuple[str, ...] = _REQUEST_FAULTS, *, access_key: str = "testing",
                 secret_key: str = "testing", region: str = "us-east-1", log_limit: int = 1000,
                 upstream_ca: str | None = None) -> None:
        if not set(kinds) <= set(_REQUEST_FAULTS):
            raise ValueError(f"kinds must be among {_REQUEST_FAULTS}; use go_down() for down stretches")
        self.target = target
        # Speak https to the upstream, trusting this CA (Ceph RGW takes SSE headers only over TLS).
        self._tls = ssl.create_default_context(cafile=upstream_ca) if upstream_ca else None
        self.fault_rate = fault_rate
        self.kinds = kinds
        self.faults_on = fault_rate > 0
        self.rules: list[Rule] = []
        self.counts: dict[str, int] = {k: 0 for k in (*FAULT_KINDS, "passed")}
        self.region = region
        self._credentials = Credentials(access_key, secret_key)
        self._mode = "pass"
        # Bounded: a long chaos run must not keep every body it ever forwarded.
        self._log: deque[Request] = deque(maxlen=log_limit)
        self._traffic: dict[str, Traffic] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._open: set[socket.socket] = set()
        self._drawn = 0
        self._sock: socket.socket | None = listen_on_a_free_port(self._rng)
        self.port: int = self._sock.getsockname()[1]
        self._accepter = threading.Thread(target=self._accept, args=(self._sock,), daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {value!r}")
        self._mode = value

    @property
    def requests(self) -> list[Request]:
        """A snapshot of the requests seen, oldest first (faulted ones included)."""
        with self._lock:
            return list(self._log)

    def traffic(self, method: str | None = None) -> Traffic:
        """Requests of ``method`` ("GET", "PUT", ...; None: all) and their bytes, since the start
        or ``reset_traffic``. An answer is counted before the client gets it."""
        with self._lock:
            seen = [t for m, t in self._traffic.items() if method in (None, m)]
        return Traffic(sum(t.requests for t in seen), sum(t.sent for t in seen), sum(t.received for t in seen))

    def reset_traffic(self) -> None:
        with self._lock:
            self._traffic.clear()

    # -- control ---------------------------------------------------------------------------

    def go_down(self) -> None:
        """Refuse connections (closed port) until ``come_up``."""
        with self._lock:
            if self._sock is None:
                return
            sock, self._sock = self._sock, None
            self.counts["down"] += 1
        # close() alone leaves the port listening while the accept thread is blocked in accept();
        # shutdown() stops the listening and wakes that thread (Linux).
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
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
            try:
                c.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it (a stall)
            except OSError:
                pass
            _close(c)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------------

    def _draw(self) -> tuple[str, bool]:
        """(fault kind or "pass", whether the upstream sees the request first).

        A forced mode faults before the upstream. The first random faults go round every kind
        once, so even a short run sees them all.
        """
        with self._lock:
            if self._mode != "pass":
                return self._mode, False
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
            _no_delay(client)
            read = _read_request(client)
            if read is None:
                return
            request, sent, received = read
            with self._lock:
                self._log.append(request)
                counted = self._traffic.setdefault(request.method, Traffic())
                counted.requests += 1
                counted.sent += sent
                counted.received += received
            kind, upstream_first = self._draw()
            # A fault after the upstream loses the answer the rules produced: rules are the server.
            answer = self._respond(request) if kind == "pass" or upstream_first else None
            if kind == "pass":
                if answer is None:
                    _reset(client)  # upstream unreachable: what a dead server looks like
                    return
                self._count("passed", request.method, len(answer))  # before the answer, so a client
                client.sendall(answer)  # that got it sees the counts
                return
            if kind in _FAULT_ERRORS:
                answer = _error(*_FAULT_ERRORS[kind])
                self._count(kind, request.method, len(answer))
                client.sendall(answer)
                return
            self._count(kind)
            if kind == "reset":
                _reset(client)
            elif kind == "stall":
                client.settimeout(_STALL_MAX_S)
                while not self._stop.is_set() and client.recv(65536):
                    pass  # hold the connection until the client gives up
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            _close(client)

    def _count(self, kind: str, method: str | None = None, answer: int = 0) -> None:
        """One more of ``kind``; ``answer`` bytes to the client of a ``method`` request."""
        with self._lock:
            self.counts[kind] += 1
            if method is not None:
                self._traffic.setdefault(method, Traffic()).received += answer

    # -- rules -----------------------------------------------------------------------------

    def _respond(self, req: Request) -> bytes | None:
        """The answer for ``req`` after the first matching rule; None if the upstream is unreachable."""
        rule = next((r for r in list(self.rules) if r.matches(req)), None)
        if rule is None:
            return self._forward(req)
        with self._lock:
            rule.hits += 1
        if rule.answer is not None:
            return _error(*rule.answer)
        if rule.drop_headers:
            return self._forward(self._sign(_without(req, rule.drop_headers)))
        if rule.edit_response is not None:
            raw = self._forward(req)
            return None if raw is None else rule.edit_response(_parse_response(raw)).to_bytes()
        condition = _if_match_condition(req)
        assert condition is not None  # Rule.matches checked it
        header, target = condition
        raw = self._forward(self._sign(Request("HEAD", target, {"host": req.headers["host"]}), names=()))
        if raw is None:
            return None
        head = _parse_response(raw)
        if head.status not in (200, 404):
            return _error(500, "InternalError", f"the proxy's HEAD {target} got {head.status}")
        wanted = req.headers[header].strip().strip('"')
        if head.status == 404 or wanted not in ("*", head.headers.get("etag", "").strip('"')):
            return _error(412, "PreconditionFailed")
        return self._forward(self._sign(_without(req, (header,))))

    def _sign(self, req: Request, names: tuple[str, ...] | None = None) -> Request:
        """``req`` with a fresh SigV4 Authorization, X-Amz-Date and X-Amz-Content-SHA256 over host
        and ``names``, by default the headers the client signed that ``req`` still has.

        Host stays what the client sent (the proxy's address): the server checks the signature
        against the Host header it receives, whatever port it listens on.
        """
        if names is None:
            auth = req.headers.get("authorization", "")
            found = re.search(r"SignedHeaders=([^,\s]+)", auth)
            if not auth.startswith("AWS4-HMAC-SHA256") or found is None:
                return req  # unsigned (or presigned in the query): nothing to redo
            names = tuple(found.group(1).split(";"))
        redone = {"authorization", "x-amz-date", "x-amz-content-sha256"}
        headers = {n: req.headers[n] for n in names if n in req.headers and n not in redone}
        headers["host"] = req.headers["host"]
        aws = AWSRequest(method=req.method, url=f"http://{req.headers['host']}{req.target}",
                         data=req.body, headers=headers)
        S3SigV4Auth(self._credentials, "s3", self.region).add_auth(aws)
        signed = {k: v for k, v in req.headers.items() if k not in redone}
        signed.update((k.lower(), v) for k, v in aws.headers.items())
        return replace(req, headers=signed)

    def _forward(self, req: Request) -> bytes | None:
        """Send one request upstream on its own connection; the whole answer, or None."""
        try:
            with socket.create_connection(self.target, timeout=60) as raw:
                _no_delay(raw)
                with self._tls.wrap_socket(raw, server_hostname=self.target[0]) if self._tls else raw as up:
                    up.sendall(_wire(f"{req.method} {req.target} HTTP/1.1", req.headers, req.body,
                                     "content-length" in req.headers))
                    return _read_answer(up, req.method == "HEAD")
        except OSError:
            return None


def _if_match_condition(req: Request) -> tuple[str, str] | None:
    """(the If-Match header to enforce, target of the object it is about), or None."""
    op = req.operation
    if op == "CompleteMultipartUpload" and "if-match" in req.headers:
        return "if-match", req.path
    if op == "UploadPartCopy" and "x-amz-copy-source-if-match" in req.headers:
        # "bucket/key" or "/bucket/key", URL-encoded, maybe with "?versionId=...".
        source, _, version = req.headers["x-amz-copy-source"].partition("?")
        target = "/" + quote(unquote(source).lstrip("/"), safe="/~")
        return "x-amz-copy-source-if-match", target + (f"?{version}" if version else "")
    return None


def _without(req: Request, names: tuple[str, ...]) -> Request:
    return replace(req, headers={k: v for k, v in req.headers.items() if k not in names})


def _wire(first: str, headers: dict[str, str], body: bytes, sized: bool) -> bytes:
    """A message with ``Connection: close`` and a Content-Length fitting ``body`` (if ``sized`` or any)."""
    lines = [first, *(f"{k}: {v}" for k, v in headers.items() if k not in _HOP_HEADERS | {"content-length"})]
    if sized or body:
        lines.append(f"content-length: {len(body)}")
    lines.append("connection: close")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def _split_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(first line, lower-cased headers; repeated ones joined with ", ")."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return lines[0], headers


def _read_request(client: socket.socket) -> tuple[Request, int, int] | None:
    """One whole request from the client, the bytes it sent for it and those it got back before
    the answer (a 100 Continue); None if it went away or sent garbage."""
    client.settimeout(60)
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = client.recv(65536)
        if not data or len(buf) > _MAX_HEAD:
            return None
        buf += data
    head, _, first_bytes = buf.partition(b"\r\n\r\n")
    body = bytearray(first_bytes)  # grows in place: bodies can be hundreds of MiB
    first, headers = _split_head(head)
    method, _, rest = first.partition(" ")
    target = rest.rpartition(" ")[0]
    continued = 0
    if "100-continue" in headers.get("expect", "").lower():
        client.sendall(_CONTINUE)
        continued = len(_CONTINUE)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not body.endswith(b"0\r\n\r\n"):
            data = client.recv(1 << 20)
            if not data:
                return None
            body += data
        sent = len(head) + 4 + len(body)
        whole = _dechunk(bytes(body))
    else:
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            data = client.recv(min(1 << 20, length - len(body)))
            if not data:
                return None
            body += data
        sent = len(head) + 4 + len(body)
        whole = bytes(body)
    headers = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
    return Request(method, target, headers, whole), sent, continued


def _read_answer(up: socket.socket, head_only: bool) -> bytes:
    """One whole answer from the upstream, up to where its head says it ends, else up to EOF."""
    answer = bytearray()  # grows in place: answers can be hundreds of MiB
    end = 0  # where the answer ends, once its head is in; -1: at EOF
    while data := up.recv(1 << 20):
        answer += data
        if not end and (cut := answer.find(b"\r\n\r\n")) >= 0:
            length = _body_length(bytes(answer[:cut]), head_only)
            end = -1 if length is None else cut + 4 + length
        if 0 < end <= len(answer):
            break
    return bytes(answer)


def _body_length(head: bytes, head_only: bool) -> int | None:
    """The length of the body after an answer's ``head``; None when only EOF tells (chunked)."""
    first, headers = _split_head(head)
    if head_only or first.split(" ")[1:2] in (["204"], ["304"]):
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return None
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


def _parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    first, headers = _split_head(head)
    _, status, reason = (first.split(" ", 2) + [""])[:3]
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Response(int(status), reason, headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while (end := data.find(b"\r\n", pos)) >= 0:
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2
    return bytes(out)


def _error(status: int, code: str, message: str | None = None) -> bytes:
    """An S3-style XML error answer."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message or _MESSAGES.get(code, code)}</Message>"
        f"<RequestId>fault-{time.monotonic_ns():x}</RequestId></Error>"
    ).encode()
    reason = next((s.phrase for s in HTTPStatus if s.value == status), "Error")
    return Response(status, reason, {"content-type": "application/xml"}, body).to_bytes()


def _no_delay(sock: socket.socket) -> None:
    """No Nagle, as boto3's own sockets: the last part of a message must not wait for the
    peer's delayed ACK (up to 40 ms on Linux)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
