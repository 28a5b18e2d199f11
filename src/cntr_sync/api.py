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
retries without real waiting.
"""

from __future__ import annotations

import base64
import io
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, Literal, cast
from urllib.parse import quote, urlsplit

import httpx

from cntr_sync._version import __version__
from cntr_sync.errors import (
    ConfigError,
    ContainerExpiredError,
    NotFoundError,
    ProtocolError,
)
from cntr_sync.models import (
    AUTH_STYLES,
    DEFAULT_BASE_URL,
    AuthStyle,
    Container,
    ContainerFile,
)
from cntr_sync.pacing import Pacer
from cntr_sync.rest import (
    ByteSink,
    Call,
    Requester,
    RequestOutcome,
    RequestStats,
    parse_item,
)

UploadSource = Path | bytes | IO[bytes] | io.RawIOBase


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
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[RequestOutcome], None] | None = None,
        pacer: Pacer | None = None,
        tick: Callable[[], None] | None = None,
        request_deadline: float | None = 1800.0,
    ) -> None:
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
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
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
            params=dict(extra_query or {}),
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
            sleep=sleep,
            clock=clock,
            on_request=on_request,
            pacer=pacer,
            tick=tick,
            request_deadline=request_deadline,
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
        return f"ContainersClient(base_url={self.base_url!r})"

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
        http = self._rest.http
        response = self._rest.request_with(
            call, lambda: http.request("POST", "containers", json=body), upload=True
        )
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
        ``OutcomeUnknownError``.
        """
        call = Call("create_file", container_id=container_id, filename=filename)
        path = f"containers/{_seg(container_id)}/files"
        http = self._rest.http

        def send() -> httpx.Response:
            with ExitStack() as stack:
                stream: bytes | IO[bytes] | io.RawIOBase
                if isinstance(source, Path):
                    stream = stack.enter_context(source.open("rb"))
                elif isinstance(source, bytes):
                    stream = source
                else:
                    source.seek(0)
                    stream = source
                # httpx reads any object with read() (and measures it with seek);
                # its annotation names IO[bytes] only.
                part = (filename, cast(IO[bytes], stream), content_type)
                return http.request("POST", path, files={"file": part})

        response = self._rest.request_with(call, send, upload=True)
        return self._rest.parse(call, ContainerFile, response)

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
