"""/metrics and /healthz of `uploader run`, served from a daemon thread.

``serve`` binds the configured address; a bind that fails is a ``ConfigError`` naming
``metrics.listen``. /metrics is prometheus_client's exposition of ``Metrics.registry``;
/healthz answers 200 "ok" or 503 with ``Metrics.health``'s one-line reason.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any, Self, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from uploader.config import MetricsConfig
from uploader.errors import ConfigError
from uploader.metrics import Metrics

__all__ = ["MetricsServer", "serve"]

log = logging.getLogger(__name__)


class _Quiet(WSGIRequestHandler):
    """No access log on stderr: a scrape every 15 s is not an event."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """/metrics and /healthz served from a daemon thread until ``close``.

    The thread sleeps in ``select`` until a request or ``close`` comes: ``serve_forever`` would
    wake twice a second to look for a shutdown, the one thing a quiet service did when idle.
    """

    def __init__(self, httpd: WSGIServer, listen: str) -> None:
        self._httpd = httpd
        self.listen = listen
        self.port: int = httpd.server_address[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._httpd, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_r in ready:
                    return
                self._httpd.handle_request()  # ready: accepts at once, answers in a thread of its own

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join()
        self._httpd.server_close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(config: MetricsConfig, metrics: Metrics) -> MetricsServer:
    """Bind ``config.listen`` and serve; ConfigError naming metrics.listen if it cannot be bound."""
    app = _app(metrics)
    hint = 'stop what uses it, or choose another metrics.listen ("" turns metrics off)'
    try:
        family = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        httpd = make_server(config.host, config.port, app, server_class=Server, handler_class=_Quiet)
    except socket.gaierror as exc:
        raise ConfigError("metrics.listen", f"cannot resolve {config.host!r}: {exc.strerror}",
                          "use an IP address such as 127.0.0.1") from None
    except OSError as exc:
        raise ConfigError("metrics.listen", f"cannot listen on {config.listen}: {exc.strerror or exc}", hint) from None
    log.info("metrics_listening address=%s paths=/metrics,/healthz", config.listen)
    return MetricsServer(httpd, config.listen)


def _app(metrics: Metrics) -> Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]:
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            problem = metrics.health()
            body = f"{problem or 'ok'}\n".encode()
            status = "200 OK" if problem is None else "503 Service Unavailable"
        elif path in ("/metrics", "/"):
            return cast(Iterable[bytes], exposition(environ, start_response))
        else:
            body, status = b"not found: try /metrics or /healthz\n", "404 Not Found"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        return [body]

    return app
