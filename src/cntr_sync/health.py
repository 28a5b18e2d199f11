"""The daemon's HTTP endpoints: /livez /readyz /status /metrics, and the control routes.

Owns the stdlib HTTP servers (``ThreadingHTTPServer`` on daemon threads, no
extra dependency): ``HealthServer`` on ``http_listen`` and ``SocketServer`` on
the control socket, both with the one request handler, and the mapping from
the health routes to answers. What "live" and "ready" mean belongs to the
daemon, behind ``StatusProvider``; the series belong to ``metrics.Metrics``;
the control routes (flush, pause, pairs, events) to ``control.ControlRoutes``.
They are served on the socket (its file mode, 0600, is the access check) and on
``http_listen`` only when a bearer token is set (``control_token_file``),
compared in constant time; a request without it gets 401 and nothing is done.
The health routes stay open.

Must not change daemon state itself (control routes ask the daemon), block
the daemon (it serves on its own thread and ``stop`` is bounded), log per
request (probes arrive every few seconds), or log a token.
A provider that raises answers 500 (503 on /livez) and the server keeps going.

    GET|HEAD /         text index of the endpoints
    GET|HEAD /livez    200 "ok" | 503 "not live"    (main loop heartbeat fresh)
    GET|HEAD /readyz   200 "ok" | 503 "not ready"   (every pair synced once)
    GET|HEAD /status   200 application/json          (provider.status())
    GET|HEAD /metrics  200 Prometheus text           (metrics.render())
    control routes     see control.py and docs/control.md
    anything else      404; other methods 405
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from cntr_sync.errors import ConfigError, LocalError
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


# A control request's body larger than this is refused (a pair's settings are < 4 KiB).
MAX_BODY = 1 << 20

#: A JSON answer (status, document), or a stream of bytes (Server-Sent Events).
ControlAnswer = tuple[HTTPStatus, dict[str, Any]] | Iterator[bytes]


class ControlRoutes(Protocol):
    """The control surface behind the servers (``control.ControlRoutes``)."""

    def handles(self, path: str) -> bool: ...

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> ControlAnswer: ...


class _Endpoints:
    """What a server's handler reads: the provider, metrics, the control routes
    (None: not served here) and the token file (None: no token asked)."""

    provider: StatusProvider
    metrics: Metrics
    control: ControlRoutes | None = None
    token_file: Path | None = None


class _Server(_Endpoints, ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # Some Python releases turned SO_REUSEPORT on for HTTPServer, which lets a
    # second process bind the same port silently; a port in use must fail.
    allow_reuse_port = False

    def __init__(
        self,
        address: tuple[str, int],
        provider: StatusProvider,
        metrics: Metrics,
        control: ControlRoutes | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        self.control = control
        self.token_file = token_file
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
    server: _Endpoints  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"  # keep-alive for Prometheus and kubelet
    # An idle keep-alive connection holds a thread; close it after a while.
    timeout = 60.0
    server_version = "cntr-sync"
    sys_version = ""

    def do_GET(self) -> None:
        if not self._control("GET"):
            self._route(send_body=True)

    def do_HEAD(self) -> None:
        self._route(send_body=False)

    def do_POST(self) -> None:
        if not self._control("POST"):
            self._method_not_allowed()

    def do_DELETE(self) -> None:
        if not self._control("DELETE"):
            self._method_not_allowed()

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

    do_PUT = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _control(self, method: str) -> bool:
        """Serve a control route; False when ``path`` is none (or not served here)."""
        parts = urlsplit(self.path)
        control = self.server.control
        if control is None or not control.handles(parts.path):
            return False
        if not self._authorized():
            self.close_connection = True
            self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid bearer token is required"})
            return True
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "request body too large"})
            return True
        body = self.rfile.read(length) if length > 0 else b""
        try:
            answer = control.answer(method, parts.path, parse_qs(parts.query), body)
        except Exception as exc:  # noqa: BLE001 - a faulty route must not kill the server
            log.warning("control_route_failed", path=parts.path, error=repr(exc))
            answer = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"}
        if isinstance(answer, tuple):
            self._json(*answer)
        else:
            self._stream(answer)
        return True

    def _authorized(self) -> bool:
        token_file = self.server.token_file
        if token_file is None:
            return True
        try:
            expected = read_token(token_file)
        except ConfigError as exc:  # removed or emptied since the start: nobody gets in
            log.warning("control_token_unreadable", error=exc.message)
            return False
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        # Constant time: how much of a guess matched must not show in the answer's timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.encode()
        )

    def _json(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        body = (json.dumps(document, default=str, sort_keys=True) + "\n").encode()
        self._answer(status, body, "application/json", send_body=True)

    def _stream(self, chunks: Iterator[bytes]) -> None:
        """Server-Sent Events: no length, so the connection ends with the stream."""
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:
            pass  # the reader went away
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

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


def read_token(path: Path) -> str:
    """The bearer token in ``path`` (re-read on each request, so a rotated secret
    applies at once); ConfigError naming the file, never showing the token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"control_token_file {path}: {reason}") from None
    if not token:
        raise ConfigError(f"control_token_file {path}: the file is empty")
    return token


def _index(_server: _Endpoints) -> _Answer:
    return HTTPStatus.OK, _INDEX.encode(), _TEXT


def _livez(server: _Endpoints) -> _Answer:
    if server.provider.live():
        return HTTPStatus.OK, b"ok\n", _TEXT
    return HTTPStatus.SERVICE_UNAVAILABLE, b"not live\n", _TEXT


def _readyz(server: _Endpoints) -> _Answer:
    if server.provider.ready():
        return HTTPStatus.OK, b"ok\n", _TEXT
    return HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n", _TEXT


def _status(server: _Endpoints) -> _Answer:
    body = json.dumps(server.provider.status(), default=str, sort_keys=True) + "\n"
    return HTTPStatus.OK, body.encode(), "application/json"


def _metrics(server: _Endpoints) -> _Answer:
    body, content_type = server.metrics.render()
    return HTTPStatus.OK, body, content_type


# path -> (answer, status when the answer raises). A liveness probe that
# cannot tell must fail as "not live" (503), so the kubelet's view stays binary.
_ROUTES: dict[str, tuple[Callable[[_Endpoints], _Answer], HTTPStatus]] = {
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
        control: ControlRoutes | None = None,
        token_file: Path | None = None,
    ) -> None:
        """``control``: the control routes, served only with ``token_file`` (the bearer
        token they ask for); without a token file they are not served here."""
        self._host = host.removeprefix("[").removesuffix("]")
        self._requested_port = port
        self._provider = provider
        self._metrics = metrics
        self._control = control if token_file is not None else None
        self._token_file = token_file
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
            server = server_class(
                (self._host, self._requested_port),
                self._provider,
                self._metrics,
                self._control,
                self._token_file,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise ConfigError(
                f"http_listen {self._display_host}:{self._requested_port}: {reason}"
            ) from exc
        self._server = server
        self._bound_port = server.server_port
        self._thread = _serve(server, self._poll_interval, "cntr-sync-health")

    def stop(self) -> None:
        """Stop serving and close the socket; returns within a few seconds. Idempotent."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None and thread is not None:
            _stop(server, thread)

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


def _serve(server: socketserver.BaseServer, poll_interval: float, name: str) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=name,
        daemon=True,
    )
    thread.start()
    return thread


def _stop(server: socketserver.BaseServer, thread: threading.Thread) -> None:
    # shutdown() waits for serve_forever with no limit; run it aside so a
    # wedged loop cannot hold the daemon's exit.
    stopper = threading.Thread(target=server.shutdown, name="cntr-sync-http-stop", daemon=True)
    stopper.start()
    stopper.join(_STOP_TIMEOUT)
    thread.join(_STOP_TIMEOUT)
    server.server_close()


# -- the control socket --------------------------------------------------------------------


class _SocketServer(_Endpoints, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False
    # An app may send many flushes at once; past the backlog a Unix connect is refused.
    request_queue_size = 1024

    def __init__(
        self, path: Path, provider: StatusProvider, metrics: Metrics, control: ControlRoutes
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        self.control = control
        self.token_file = None  # the socket's mode is the access check
        self.path = path
        super().__init__(os.fspath(path), _Handler, bind_and_activate=False)

    def server_bind(self) -> None:
        # The mode is set on the socket before bind, which gives it to the file:
        # no moment when another user could connect (umask is process-wide, so
        # it is not touched). The chmod after bind covers other kernels.
        os.fchmod(self.socket.fileno(), 0o600)
        super().server_bind()
        self.path.chmod(0o600)

    def get_request(self) -> tuple[socket.socket, Any]:
        request, _ = self.socket.accept()
        # BaseHTTPRequestHandler reads client_address[0]; a Unix peer has no address.
        return request, ("local", 0)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return


# sun_path holds 108 bytes, the terminating NUL included.
_MAX_SOCKET_PATH = 107


class SocketServer:
    """The endpoints and the control routes on a Unix socket (mode 0600)."""

    def __init__(
        self,
        path: Path,
        provider: StatusProvider,
        metrics: Metrics,
        control: ControlRoutes,
        *,
        poll_interval: float = 0.5,
    ) -> None:
        self.path = path
        self._provider = provider
        self._metrics = metrics
        self._control = control
        self._poll_interval = poll_interval
        self._server: _SocketServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (a stale socket left by a dead daemon is replaced) and serve;
        ConfigError when the path is unusable or another daemon answers there."""
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            raise ConfigError(
                f"control_socket {self.path}: longer than {_MAX_SOCKET_PATH} bytes; "
                "choose a shorter path"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise LocalError(f"control_socket {self.path}: {exc.strerror}") from None
        self._remove_stale()
        server = _SocketServer(self.path, self._provider, self._metrics, self._control)
        try:
            server.server_bind()
            server.server_activate()
        except OSError as exc:
            server.server_close()
            raise ConfigError(f"control_socket {self.path}: {exc.strerror or exc}") from None
        self._server = server
        self._thread = _serve(server, self._poll_interval, "cntr-sync-control")

    def _remove_stale(self) -> None:
        if not self.path.is_socket():
            if self.path.exists():
                raise ConfigError(f"control_socket {self.path}: exists and is not a socket")
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(os.fspath(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # nobody answers: a dead daemon's
            return
        finally:
            probe.close()
        raise ConfigError(f"control_socket {self.path}: another daemon is serving it")

    def stop(self) -> None:
        """Stop serving and remove the socket file; bounded, idempotent."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None or thread is None:
            return
        _stop(server, thread)
        self.path.unlink(missing_ok=True)
