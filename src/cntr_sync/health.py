"""The daemon's health and metrics endpoint: /livez /readyz /status /metrics.

Owns one small stdlib HTTP server (``ThreadingHTTPServer`` on daemon threads,
no extra dependency) and the mapping from routes to answers. What "live" and
"ready" mean belongs to the daemon, behind ``StatusProvider``; the series
belong to ``metrics.Metrics``.

Must not change daemon state, block the daemon (it serves on its own thread
and ``stop`` is bounded), or log per request: probes arrive every few seconds.
A provider that raises answers 500 (503 on /livez) and the server keeps going.

    GET|HEAD /         text index of the endpoints
    GET|HEAD /livez    200 "ok" | 503 "not live"    (main loop heartbeat fresh)
    GET|HEAD /readyz   200 "ok" | 503 "not ready"   (every pair synced once)
    GET|HEAD /status   200 application/json          (provider.status())
    GET|HEAD /metrics  200 Prometheus text           (metrics.render())
    anything else      404; other methods 405
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

from cntr_sync.errors import ConfigError
from cntr_sync.logs import get_logger
from cntr_sync.metrics import Metrics

log = get_logger("cntr_sync.health")

_TEXT = "text/plain; charset=utf-8"
_INDEX = (
    "cntr-sync\n"
    "/livez    200 while the main loop runs\n"
    "/readyz   200 once every pair completed its first sync\n"
    "/status   pairs and their state (JSON)\n"
    "/metrics  Prometheus metrics\n"
)
_STOP_TIMEOUT = 5.0


class StatusProvider(Protocol):
    """What the daemon exposes to the endpoint; each call must be quick."""

    def live(self) -> bool:
        """True while the main loop's heartbeat is fresh."""
        ...

    def ready(self) -> bool:
        """True once every pair completed its first full sync."""
        ...

    def status(self) -> dict[str, Any]:
        """A JSON-able picture of the daemon; non-JSON values are sent as str()."""
        ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Some Python releases turned SO_REUSEPORT on for HTTPServer, which lets a
    # second process bind the same port silently; a port in use must fail.
    allow_reuse_port = False

    def __init__(
        self, address: tuple[str, int], provider: StatusProvider, metrics: Metrics
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(host), a reverse DNS
        # lookup that can hang for seconds on 0.0.0.0 without working DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up mid-answer are routine for probes; the default
        # prints a traceback to stderr for each.
        return


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive for Prometheus and kubelet
    # An idle keep-alive connection holds a thread; close it after a while.
    timeout = 60.0
    server_version = "cntr-sync"
    sys_version = ""

    def do_GET(self) -> None:
        self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def _method_not_allowed(self) -> None:
        # The request may carry a body we do not read; closing keeps the next
        # request on this connection from being parsed out of it.
        self.close_connection = True
        self._answer(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"method not allowed\n",
            _TEXT,
            send_body=True,
            extra_headers={"Allow": "GET, HEAD"},
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = (
        _method_not_allowed
    )

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _route(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        route = _ROUTES.get(path)
        if route is None:
            self._answer(HTTPStatus.NOT_FOUND, b"not found\n", _TEXT, send_body=send_body)
            return
        handler, failure_status = route
        try:
            status, body, content_type = handler(self.server)
        except Exception as exc:  # noqa: BLE001 - a faulty provider must not kill the server
            log.warning("http_handler_failed", path=path, error=repr(exc))
            status, body, content_type = failure_status, b"internal error\n", _TEXT
        self._answer(status, body, content_type, send_body=send_body)

    def _answer(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        send_body: bool,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            self.wfile.write(body)


_Answer = tuple[HTTPStatus, bytes, str]


def _index(_server: _Server) -> _Answer:
    return HTTPStatus.OK, _INDEX.encode(), _TEXT


def _livez(server: _Server) -> _Answer:
    if server.provider.live():
        return HTTPStatus.OK, b"ok\n", _TEXT
    return HTTPStatus.SERVICE_UNAVAILABLE, b"not live\n", _TEXT


def _readyz(server: _Server) -> _Answer:
    if server.provider.ready():
        return HTTPStatus.OK, b"ok\n", _TEXT
    return HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n", _TEXT


def _status(server: _Server) -> _Answer:
    body = json.dumps(server.provider.status(), default=str, sort_keys=True) + "\n"
    return HTTPStatus.OK, body.encode(), "application/json"


def _metrics(server: _Server) -> _Answer:
    body, content_type = server.metrics.render()
    return HTTPStatus.OK, body, content_type


# path -> (answer, status when the answer raises). A liveness probe that
# cannot tell must fail as "not live" (503), so the kubelet's view stays binary.
_ROUTES: dict[str, tuple[Callable[[_Server], _Answer], HTTPStatus]] = {
    "/": (_index, HTTPStatus.INTERNAL_SERVER_ERROR),
    "/livez": (_livez, HTTPStatus.SERVICE_UNAVAILABLE),
    "/readyz": (_readyz, HTTPStatus.INTERNAL_SERVER_ERROR),
    "/status": (_status, HTTPStatus.INTERNAL_SERVER_ERROR),
    "/metrics": (_metrics, HTTPStatus.INTERNAL_SERVER_ERROR),
}


class HealthServer:
    """The endpoint on ``host:port``; ``start`` binds and serves on a daemon thread.

    ``host`` may be IPv4, IPv6 (``::1`` or ``[::1]``) or a name; port 0 picks a
    free port, readable from ``port`` after ``start``. Usable as a context manager.
    """

    def __init__(
        self,
        host: str,
        port: int,
        provider: StatusProvider,
        metrics: Metrics,
        *,
        poll_interval: float = 0.5,
    ) -> None:
        self._host = host.removeprefix("[").removesuffix("]")
        self._requested_port = port
        self._provider = provider
        self._metrics = metrics
        # How often the serve loop checks for stop(); the upper bound of stop().
        self._poll_interval = poll_interval
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None

    def start(self) -> None:
        """Bind and serve in the background; ConfigError when the address is unusable."""
        if self._server is not None:
            raise RuntimeError("HealthServer already started")
        server_class = _Server6 if ":" in self._host else _Server
        try:
            server = server_class((self._host, self._requested_port), self._provider, self._metrics)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"http_listen {self._display_host}:{self._requested_port}: {reason}"
            ) from exc
        self._server = server
        self._bound_port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name="cntr-sync-health",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; returns within a few seconds. Idempotent."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None or thread is None:
            return
        # shutdown() waits for serve_forever with no limit; run it aside so a
        # wedged loop cannot hold the daemon's exit.
        stopper = threading.Thread(
            target=server.shutdown, name="cntr-sync-health-stop", daemon=True
        )
        stopper.start()
        stopper.join(_STOP_TIMEOUT)
        thread.join(_STOP_TIMEOUT)
        server.server_close()

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked); only after ``start``."""
        if self._bound_port is None:
            raise RuntimeError("HealthServer not started")
        return self._bound_port

    @property
    def url(self) -> str:
        """``http://host:port``, IPv6 hosts in brackets."""
        return f"http://{self._display_host}:{self.port}"

    @property
    def _display_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    def __enter__(self) -> HealthServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
