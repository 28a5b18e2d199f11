"""The emulator as a real HTTP/1.1 server, on the stdlib ``ThreadingHTTPServer``.

Owns sockets only: request framing (Content-Length and ``Transfer-Encoding:
chunked``), streaming the request body from the socket into ``Emulator.dispatch``
and the response body (a spooled file, via ``sendfile``) back out, keep-alive,
and dropping a connection without any response when a fault says so. Why the
stdlib and not ASGI: the core is sync, bodies go socket -> disk with no buffering,
and a dropped TCP connection cannot be expressed in ASGI.
"""

from __future__ import annotations

import http.client
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from .core import Emulator
from .settings import FaultConfig, GatewayStyle
from .wire import CHUNK_SIZE, EmuRequest, EmuResponse, bad_request, server_error

_MAX_LINE = 64 * 1024
_MAX_HEADERS = 100
# A header line as the email parser tells one (``email.feedparser.headerRE``).
_HEADER_LINE = re.compile(r"[\041-\071\073-\176]*:")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, size: int = -1, /) -> bytes: ...


class FramingError(ValueError):
    """The request body's framing (chunk sizes, Content-Length) is not valid HTTP/1.1."""


class RequestBody:
    """A request body read from the socket on demand, as an iterable of chunks.

    Iterating again resumes where the last iteration stopped, so the server can
    drain whatever the emulator did not read and keep the connection usable.
    """

    def __init__(self, rfile: _Readable, length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._remaining = length or 0
        self._chunked = chunked
        self._chunk_left = 0
        self.complete = not chunked and not length

    def __iter__(self) -> Iterator[bytes]:
        if self.complete:
            return
        if self._chunked:
            yield from self._read_chunked()
        else:
            while self._remaining > 0:
                data = self._rfile.read(min(CHUNK_SIZE, self._remaining))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._remaining -= len(data)
                yield data
        self.complete = True

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            if self._chunk_left == 0:
                size_line = self._rfile.readline(_MAX_LINE)
                if not size_line:
                    raise ConnectionError("client closed the connection mid-body")
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise FramingError(f"bad chunk size line {size_line[:40]!r}") from None
                if size == 0:
                    self._read_trailers()
                    return
                self._chunk_left = size
            while self._chunk_left > 0:
                data = self._rfile.read(min(CHUNK_SIZE, self._chunk_left))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._chunk_left -= len(data)
                yield data
            if self._rfile.readline(_MAX_LINE).strip():
                raise FramingError("chunk data not followed by CRLF")

    def _read_trailers(self) -> None:
        while True:
            line = self._rfile.readline(_MAX_LINE)
            if line in (b"\r\n", b"\n", b""):
                return

    def drain(self) -> None:
        for _ in self:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator, verbose: bool) -> None:
        self.emulator = emulator
        self.verbose = verbose
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    @property
    def open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so their threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; Nagle + delayed ACK would stall each
    # small response by ~40 ms.
    disable_nagle_algorithm = True
    server: _Server
    raw_requestline: bytes  # set by handle_one_request before parse_request
    timeout = 300
    """Seconds an idle keep-alive connection or a stalled body may wait."""

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            with suppress(OSError):
                super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            body = self._request_body()
        except FramingError:
            self.close_connection = True
            self._write(bad_request("Malformed request body framing.").response())
            return
        target = self.path
        if not target.startswith("/"):
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, query_string = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = EmuRequest(
            method=self.command,
            path=path,
            query=tuple(parse_qsl(query_string, keep_blank_values=True)),
            headers=headers,
            body=body,
        )
        try:
            response = self.server.emulator.dispatch(request)
        except (OSError, FramingError):
            # The client went away or sent garbage mid-body: nothing sane to answer.
            self.close_connection = True
            return
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the connection silently
            if self.server.verbose:
                self.server.handle_error(self.connection, self.client_address)
            response = server_error().response()
            self.close_connection = True
        if response.drop:
            self._drop()
            return
        try:
            body.drain()
        except (OSError, FramingError):
            response.discard()
            self.close_connection = True
            return
        self._write(response)

    def _request_body(self) -> RequestBody:
        encoding = self.headers.get("transfer-encoding", "")
        if encoding:
            if encoding.strip().lower().split(",")[-1].strip() != "chunked":
                raise FramingError(f"unsupported Transfer-Encoding {encoding!r}")
            return RequestBody(self.rfile, None, chunked=True)
        raw_length = self.headers.get("content-length")
        if raw_length is None:
            return RequestBody(self.rfile, 0, chunked=False)
        try:
            length = int(raw_length)
        except ValueError:
            raise FramingError(f"bad Content-Length {raw_length!r}") from None
        if length < 0:
            raise FramingError(f"bad Content-Length {raw_length!r}")
        return RequestBody(self.rfile, length, chunked=False)

    def parse_request(self) -> bool:
        """The stdlib's ``parse_request``, with the headers read by ``_read_headers``.

        The stdlib parses them as an email message: for a multipart Content-Type
        it compiles a regular expression from the boundary, a new one for every
        upload (0.5 ms a request, a third of the emulator's time per upload).
        """
        self.command = None  # type: ignore[assignment]  # set in case of an error
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                major, minor = version.split("/", 1)[1].split(".")
                number = int(major), int(minor)
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if number >= (1, 1):
                self.close_connection = False
            if number >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version})"
                )
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = self._read_headers()
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err)
            )
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if expect == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _read_headers(self) -> http.client.HTTPMessage:
        """The header lines up to the blank line, read with ``http.client``'s limits
        (64 KiB a line, 100 lines) and taken as its email parser takes them: a
        folded line continues the header before it, and the first line that is not
        a header ends the headers (the rest is dropped)."""
        lines: list[str] = []
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise http.client.LineTooLong("header line")
            if line in (b"\r\n", b"\n", b""):
                break
            lines.append(line.decode("iso-8859-1"))
            if len(lines) > _MAX_HEADERS:
                raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        headers = http.client.HTTPMessage()
        name: str | None = None
        value = ""
        for text in lines:
            if text[:1] in (" ", "\t"):
                if name is not None:
                    value += text
                continue
            if name is not None:
                headers[name] = value.rstrip("\r\n")
                name = None
            if not _HEADER_LINE.match(text):
                break
            name, _, rest = text.partition(":")
            value = rest.lstrip(" \t")
        if name is not None:
            headers[name] = value.rstrip("\r\n")
        return headers

    def _write(self, response: EmuResponse) -> None:
        """The status line, headers and a small body in one write (a file body follows it)."""
        try:
            self.log_request(response.status)
            lines = [
                f"{self.protocol_version} {response.status} {_reason(response.status)}\r\n",
                f"Server: {self.version_string()}\r\n",
                f"Date: {self.date_time_string()}\r\n",
            ]
            for name, value in response.headers:
                lines.append(f"{name}: {value}\r\n")
                if name.lower() == "connection":
                    self.close_connection = value.lower() == "close"
            lines.append(f"Content-Length: {response.length}\r\n")
            if self.close_connection:
                lines.append("Connection: close\r\n")
            lines.append("\r\n")
            head = "".join(lines).encode("latin-1", "strict")
            if response.file is None:
                self.wfile.write(head + response.content if response.content else head)
            elif response.file.bytes_per_s is not None:
                self.wfile.write(head)
                for chunk in response.file.chunks():
                    self.wfile.write(chunk)
            else:
                self.wfile.write(head)
                self.connection.sendfile(response.file.file, 0, response.file.length)
        except OSError:
            self.close_connection = True
        finally:
            response.discard()

    def _drop(self) -> None:
        """Cut the connection without a byte of response."""
        self.close_connection = True
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class EmulatorServer:
    """The emulator on a real socket, served from a background thread.

    Binds at construction (port 0 picks a free port), serves from ``start()`` or
    ``with``, and owns the ``Emulator`` it creates (closed by ``stop()``); an
    ``emulator`` passed in is left open.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        emulator: Emulator | None = None,
        control: bool = False,
        data_dir: Path | None = None,
        api_keys: set[str] | None = None,
        verbose: bool = False,
    ) -> None:
        self._owns_emulator = emulator is None
        self.emulator = emulator or Emulator(data_dir=data_dir, control=control, api_keys=api_keys)
        try:
            self._httpd = _Server((host, port), self.emulator, verbose)
        except BaseException:
            if self._owns_emulator:
                self.emulator.close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL, as clients and the ``openai`` SDK take it."""
        return self.root_url + "/v1"

    @property
    def open_connections(self) -> int:
        """Client connections a handler thread is still serving (0 once all are done).

        After a client is killed, its requests may still be running here; when
        this reaches 0 they have all finished (tests wait on it, not on a sleep).
        """
        return self._httpd.open_connections

    def start(self) -> EmulatorServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="cntr-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, release the port (and owned state)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._owns_emulator:
            self.emulator.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    control: bool = False,
    data_dir: Path | None = None,
    api_keys: set[str] | None = None,
    verbose: bool = False,
    quiet: bool = False,
    faults: FaultConfig | None = None,
    gateway: GatewayStyle | None = None,
) -> None:
    """Serve the emulator until SIGINT or SIGTERM; prints the base URL once on start
    (``quiet``: not even that), and with ``verbose`` a line per request.

    ``faults`` and ``gateway`` are where it starts (the control surface can change them).
    """
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if in_main_thread:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, on_signal)
    try:
        emulator = Emulator(
            data_dir=data_dir, control=control, api_keys=api_keys, faults=faults, gateway=gateway
        )
        with emulator, EmulatorServer(host, port, emulator=emulator, verbose=verbose) as server:
            if not quiet:
                sys.stdout.write(f"cntr-sync emulator listening on {server.base_url}\n")
                sys.stdout.flush()
            with suppress(KeyboardInterrupt):
                while not stopping.wait(0.5):
                    pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
