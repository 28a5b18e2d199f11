"""ContainersClient: the nine Containers API operations over sync httpx.

Owns: the operations and their paths, authentication styles, extra headers and
query parameters for gateways, TLS settings, and streaming upload sources. The
machinery under every call (rate limit, retries, counts, error mapping,
pagination, parsing) is ``rest.Requester``. It knows nothing of local trees,
indexes or plans, and reads no environment: the settings layer resolves the
key and the base URL (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``) and passes them.

Must not: read a whole upload or download into memory, log or raise anything
that contains the API key, or retry an upload after a failure where the
server may have stored it (that raises ``OutcomeUnknownError``, resolved by
the caller's next listing).

The transport is injectable (``transport=httpx.MockTransport(...)`` or the
emulator's ``handle``), and so are ``sleep`` and ``clock``, so tests run
retries without real waiting. ``stop`` (an event) ends every retry and pacing
wait the moment it is set: the request raises ``StoppedError``. ``refusals``
(a ``refusals.RefusalWatch``) counts how long every answer has been a 429 or
503; past its limit a pass stops (``RefusedTooLongError``).
"""

from __future__ import annotations

import base64
import io
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from cntr_sync._version import __version__
from cntr_sync.errors import (
    ConfigError,
    ContainerExpiredError,
    LocalError,
    NotFoundError,
    ProtocolError,
    redact_url,
)
from cntr_sync.models import (
    AUTH_STYLES,
    DEFAULT_BASE_URL,
    AuthStyle,
    Container,
    ContainerFile,
    ListedFile,
    listed_file,
)
from cntr_sync.pacing import Pacer
from cntr_sync.refusals import RefusalWatch
from cntr_sync.rest import (
    CHUNK_SIZE,
    Answer,
    ByteSink,
    Call,
    Requester,
    RequestOutcome,
    RequestStats,
    parse_item,
)

UploadSource = Path | bytes | IO[bytes] | io.RawIOBase


def normalized_base_url(base_url: str | None) -> str:
    """The base URL as a client keeps it (and a pair's files are named by): no query,
    no fragment, no "/" at its end. A query (a gateway's ``?api-version=``) is sent
    with every request instead (``base_query``); it never names the index or the
    container claim, since it may carry a key."""
    parts = urlsplit(base_url or DEFAULT_BASE_URL)
    return urlunsplit(parts._replace(query="", fragment="")).rstrip("/")


def base_query(base_url: str | None) -> dict[str, str]:
    """The query parameters written into the base URL, in order."""
    return dict(parse_qsl(urlsplit(base_url or DEFAULT_BASE_URL).query, keep_blank_values=True))


class ContainersClient:
    """Typed, retrying client of the Containers API.

    Thread-safe: the engine calls it from a pool of workers.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        auth_style: AuthStyle = "bearer",
        basic_username: str = "",
        organization: str | None = None,
        project: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        verify: bool | str = True,
        max_retries: int = 4,
        max_connections: int = 16,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[RequestOutcome], None] | None = None,
        pacer: Pacer | None = None,
        tick: Callable[[], None] | None = None,
        request_deadline: float | None = 1800.0,
        stop: threading.Event | None = None,
        refusals: RefusalWatch | None = None,
    ) -> None:
        """``sleep``: how a retry wait is slept (``time.sleep``; ``stop.wait`` when
        ``stop`` is given, so that setting it ends the wait)."""
        if not api_key:
            raise ConfigError(
                "no API key: set OPENAI_API_KEY, api_key_file or api_key in the settings"
            )
        if not _sendable(api_key) or not _sendable(basic_username):
            # Never echo it: a mistyped key is still a secret.
            raise ConfigError(
                "the API key contains characters that cannot be sent in an HTTP header "
                "(only printable ASCII; no spaces or line breaks)"
            )
        if auth_style not in AUTH_STYLES:
            raise ConfigError(f"auth_style {auth_style!r} is not one of: {', '.join(AUTH_STYLES)}")
        if max_retries < 0:
            raise ConfigError("max_retries must be 0 or more")
        self.base_url = normalized_base_url(base_url)
        if urlsplit(self.base_url).username is not None:
            # httpx would turn user:password@ into Basic auth and drop the key.
            raise ConfigError(
                "base_url must not contain a user or password; "
                "use auth_style = 'basic' with basic_username instead"
            )
        headers = {
            "User-Agent": f"cntr-sync/{__version__} httpx/{httpx.__version__}",
            "Accept": "application/json",
            **_auth_headers(api_key, auth_style, basic_username),
        }
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        headers.update(extra_headers or {})
        plain_http = urlsplit(self.base_url).scheme.lower() == "http"
        http = httpx.Client(
            base_url=self.base_url + "/",
            headers=headers,
            params={**base_query(base_url), **(extra_query or {})},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            # Plain http never uses TLS: skip loading the CA bundle (~26 ms at start).
            verify=False if plain_http else _ssl_verify(verify),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )
        self._rest = Requester(
            http,
            secret=api_key,
            max_retries=max_retries,
            sleep=sleep or (time.sleep if stop is None else stop.wait),
            clock=clock,
            on_request=on_request,
            pacer=pacer,
            tick=tick,
            request_deadline=request_deadline,
            stop=stop,
            refusals=refusals,
        )

    @property
    def request_deadline(self) -> float | None:
        """Seconds one request may take in all, however steadily bytes trickle in."""
        return self._rest.request_deadline

    @property
    def stats(self) -> RequestStats:
        """Requests sent so far, by operation and status."""
        return self._rest.stats

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        self._rest.http.close()

    def __enter__(self) -> ContainersClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ContainersClient(base_url={redact_url(self.base_url)!r})"

    # -- containers ------------------------------------------------------------

    def create_container(
        self,
        name: str,
        *,
        expires_after_minutes: int | None = None,
        memory_limit: str | None = None,
        file_ids: list[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> Container:
        body: dict[str, Any] = {"name": name}
        if expires_after_minutes is not None:
            body["expires_after"] = {"anchor": "last_active_at", "minutes": expires_after_minutes}
        if memory_limit is not None:
            body["memory_limit"] = memory_limit
        if file_ids:
            body["file_ids"] = list(file_ids)
        body.update(extra_body or {})
        # Not idempotent either: a retry after the body was sent could make two.
        call = Call("create_container", filename=name)
        response = self._rest.request(call, "POST", "containers", json=body, upload=True)
        return self._rest.parse(call, Container, response)

    def iter_containers(
        self, *, name: str | None = None, order: Literal["asc", "desc"] = "desc"
    ) -> Iterator[Container]:
        """Every container, page by page. ``name`` is filtered here too, since
        some gateways drop the server-side filter."""
        call = Call("list_containers")
        params = {"name": name} if name is not None else {}
        for item in self._rest.paginate(call, "containers", order, params):
            container = parse_item(call, Container, item)
            if name is None or container.name == name:
                yield container

    def retrieve_container(self, container_id: str, *, require_running: bool = False) -> Container:
        call = Call("retrieve_container", container_id=container_id)
        response = self._rest.request(call, "GET", f"containers/{_seg(container_id)}")
        container = self._rest.parse(call, Container, response)
        if require_running and not container.is_running:
            raise ContainerExpiredError(
                f"container {container_id} is {container.status}, not running",
                operation=call.operation,
                container_id=container_id,
            )
        return container

    def delete_container(self, container_id: str) -> None:
        call = Call("delete_container", container_id=container_id)
        self._rest.request(call, "DELETE", f"containers/{_seg(container_id)}")

    # -- files -----------------------------------------------------------------

    def create_file(
        self,
        container_id: str,
        source: UploadSource,
        *,
        filename: str,
        content_type: str = "application/octet-stream",
    ) -> ContainerFile:
        """Upload ``source`` as a new file named ``filename`` (streamed, never read whole).

        Retried only where the server cannot have stored it (no connection,
        429); any other failure after the body was sent raises
        ``OutcomeUnknownError``. A source that changes length while it is read
        raises ``LocalError`` (the request is cut off unfinished: nothing stored).
        """
        call = Call("create_file", container_id=container_id, filename=filename)
        path = f"containers/{_seg(container_id)}/files"
        rest = self._rest

        def send() -> Answer:
            # A new body (and boundary) for every attempt: a retry reads the source again.
            with ExitStack() as stack:
                stream: IO[bytes] | io.RawIOBase | None = None
                if isinstance(source, Path):
                    stream = stack.enter_context(source.open("rb"))
                elif not isinstance(source, bytes):
                    source.seek(0)
                    stream = source
                form = FilePart.new(filename, content_type)
                headers = {"Content-Type": form.content_type}
                content: bytes | Iterator[bytes]
                if stream is None:
                    assert isinstance(source, bytes)
                    content = form.head + source + form.tail
                else:
                    length = _length_of(stream)
                    if length is not None:
                        headers["Content-Length"] = str(len(form.head) + length + len(form.tail))
                    content = form.stream(stream, length)
                return rest.send("POST", path, content=content, headers=headers)

        response = rest.request_with(call, send, upload=True)
        return rest.parse(call, ContainerFile, response)

    def create_file_from_file_id(self, container_id: str, file_id: str) -> ContainerFile:
        """Copy a Files-API file into the container (JSON variant; some gateways refuse it)."""
        call = Call("create_file", container_id=container_id, file_id=file_id)
        response = self._rest.request(
            call, "POST", f"containers/{_seg(container_id)}/files", json={"file_id": file_id}
        )
        return self._rest.parse(call, ContainerFile, response)

    def iter_files(
        self, container_id: str, *, order: Literal["asc", "desc"] = "asc"
    ) -> Iterator[ContainerFile]:
        """Every file of the container, one page (100) at a time."""
        call = Call("list_files", container_id=container_id)
        path = f"containers/{_seg(container_id)}/files"
        for item in self._rest.paginate(call, path, order, {}):
            yield parse_item(call, ContainerFile, item)

    def iter_listed(
        self, container_id: str, *, order: Literal["asc", "desc"] = "asc"
    ) -> Iterator[ListedFile]:
        """``iter_files`` as a pass reads it: each file by the wire model's rules,
        without a model each (``models.listed_file``); the model reads the odd one."""
        call = Call("list_files", container_id=container_id)
        path = f"containers/{_seg(container_id)}/files"
        for item in self._rest.paginate(call, path, order, {}):
            listed = listed_file(item)
            yield (
                listed
                if listed is not None
                else ListedFile.of(parse_item(call, ContainerFile, item))
            )

    def retrieve_file(self, container_id: str, file_id: str) -> ContainerFile:
        call = Call("retrieve_file", container_id=container_id, file_id=file_id)
        response = self._rest.request(
            call, "GET", f"containers/{_seg(container_id)}/files/{_seg(file_id)}"
        )
        return self._rest.parse(call, ContainerFile, response)

    def delete_file(self, container_id: str, file_id: str, *, missing_ok: bool = True) -> bool:
        """Delete a file. Returns False when it was already gone (404) and missing_ok.

        A 404 on delete is "done": gateways retry DELETE themselves and then
        answer 404 for the file they already removed.
        """
        call = Call("delete_file", container_id=container_id, file_id=file_id)
        try:
            self._rest.request(
                call, "DELETE", f"containers/{_seg(container_id)}/files/{_seg(file_id)}"
            )
        except NotFoundError:
            if missing_ok:
                return False
            raise
        return True

    def download_file(self, container_id: str, file_id: str, sink: ByteSink) -> int:
        """Stream a file's content into ``sink``; returns the bytes written.

        A failure mid-stream is retried only when ``sink`` can be rewound.
        """
        call = Call("file_content", container_id=container_id, file_id=file_id)
        path = f"containers/{_seg(container_id)}/files/{_seg(file_id)}/content"
        return self._rest.download(call, path, sink)


# How httpx (and HTML5 forms) escape a form parameter's value: '"' as %22, a
# backslash doubled, control characters but ESC percent-encoded. Kept identical so
# the names servers see do not change.
_FORM_ESCAPES = str.maketrans(
    {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
)


@dataclass(frozen=True)
class FilePart:
    """The multipart/form-data body of an upload: one ``file`` part, built by hand.

    Byte for byte what httpx's multipart encoder sends for
    ``files={"file": (filename, data, content_type)}`` (a random boundary, the
    same escapes), without its generic machinery: a small file goes out as one
    piece (headers, data and closing boundary in one send), a large one in
    ``CHUNK_SIZE`` reads. The profile of a 2,000-file push showed httpx's encoder
    sending six pieces per 4 KiB upload, and the emulator reading each.
    """

    filename: str
    boundary: str
    head: bytes
    tail: bytes

    @classmethod
    def new(cls, filename: str, content_type: str) -> FilePart:
        boundary = os.urandom(16).hex()
        disposition = 'Content-Disposition: form-data; name="file"'
        if filename:
            disposition += f'; filename="{filename.translate(_FORM_ESCAPES)}"'
        head = f"--{boundary}\r\n{disposition}\r\nContent-Type: {content_type}\r\n\r\n"
        return cls(filename, boundary, head.encode(), f"\r\n--{boundary}--\r\n".encode())

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def stream(self, source: IO[bytes] | io.RawIOBase, length: int | None) -> Iterator[bytes]:
        """The body read from ``source`` (``length`` bytes, if known) as it is sent.

        Reads to the end, as httpx does. A source that turns out shorter or longer
        than ``length`` raises ``LocalError`` before the body is complete: the
        connection is closed under an unfinished request, so the server stores
        nothing. (httpx's encoder left that to h11, whose error escaped the
        error tree.)
        """
        chunks = self._checked(_chunks(source, length), length)
        first = next(chunks, b"")
        if length is not None and len(first) >= length:
            more = next(chunks, b"")
            if not more:
                yield self.head + first + self.tail  # the whole small file: one send
                return
            yield self.head
            yield first
            yield more
        else:
            yield self.head
            if first:
                yield first
        yield from chunks
        yield self.tail

    def _checked(self, chunks: Iterator[bytes], length: int | None) -> Iterator[bytes]:
        sent = 0
        for chunk in chunks:
            sent += len(chunk)
            if length is not None and sent > length:
                raise self._changed(f"it grew past the {length} bytes measured")
            yield chunk
        if length is not None and sent < length:
            raise self._changed(f"it ended after {sent} of the {length} bytes measured")

    def _changed(self, how: str) -> LocalError:
        return LocalError(
            f"{self.filename!r} changed while it was uploaded ({how}); nothing was stored",
            path=self.filename,
        )


def _chunks(source: IO[bytes] | io.RawIOBase, length: int | None) -> Iterator[bytes]:
    """``source`` read to its end in reads of at most ``CHUNK_SIZE``; a known
    ``length`` sizes the reads (no 1 MiB buffer for a 4 KiB file)."""
    remaining = length
    while True:
        size = CHUNK_SIZE if remaining is None else max(1, min(CHUNK_SIZE, remaining))
        chunk = source.read(size)
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _length_of(stream: IO[bytes] | io.RawIOBase) -> int | None:
    """The length of ``stream`` as httpx measures it: the open file's size, else
    by seeking to the end and back; None when neither works (sent chunked)."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError):
        pass
    try:
        offset = stream.tell()
        length = stream.seek(0, os.SEEK_END)
        stream.seek(offset)
    except (AttributeError, OSError):
        return None
    return length


def _sendable(value: str) -> bool:
    return value.isascii() and all(0x21 <= ord(ch) < 0x7F for ch in value)


def _auth_headers(key: str, style: AuthStyle, basic_username: str) -> dict[str, str]:
    if style == "bearer":
        return {"Authorization": f"Bearer {key}"}
    if style == "basic":
        token = base64.b64encode(f"{basic_username}:{key}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {style: key}


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, bool):
        return verify
    path = Path(verify)
    if path.is_dir():
        return ssl.create_default_context(capath=str(path))
    return ssl.create_default_context(cafile=str(path))


def _seg(identifier: str) -> str:
    """Quote an opaque id for use as one URL path segment.

    Ids are opaque, but "." and ".." would be collapsed by URL normalisation
    into another resource (deleting file ".." would delete the container).
    """
    if identifier in ("", ".", ".."):
        raise ProtocolError(f"refusing to use {identifier!r} as an id in a URL")
    return quote(identifier, safe="")


__all__ = ["ContainersClient", "RequestOutcome", "RequestStats", "UploadSource"]
