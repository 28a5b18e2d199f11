"""ContainersClient: the nine Containers API operations over sync httpx.

Owns: authentication styles, extra headers and query parameters for gateways,
pagination (both cursor styles), retries with server hints, streaming uploads
and downloads, and mapping every HTTP failure into ``errors``. It knows
nothing of local trees, indexes or plans.

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
import email.utils
import json
import math
import os
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    stop_after_attempt,
    wait_exponential_jitter,
)

from cntr_sync import __version__
from cntr_sync.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from cntr_sync.models import Container, ContainerFile

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PAGE_LIMIT = 100
MAX_RETRY_AFTER = 120.0
RETRYABLE_STATUSES = frozenset({408, 409, 429})
CHUNK_SIZE = 1024 * 1024

AuthStyle = Literal["bearer", "api-key", "x-api-key", "x-bf-vk", "basic"]
AUTH_STYLES: tuple[AuthStyle, ...] = ("bearer", "api-key", "x-api-key", "x-bf-vk", "basic")

# Retry hints, in the order they are trusted. LiteLLM forwards upstream hints
# with an ``llm_provider-`` prefix.
_MS_HINTS = ("retry-after-ms", "llm_provider-retry-after-ms")
_S_HINTS = ("retry-after", "llm_provider-retry-after")

ModelT = TypeVar("ModelT", bound=BaseModel)
_T = TypeVar("_T")
UploadSource = Path | bytes | IO[bytes]


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP exchange, for metrics and summaries (never headers or bodies)."""

    operation: str
    status: int | None  # None: no response (connection error)
    seconds: float


@dataclass
class RequestStats:
    """Thread-safe counts of requests by operation and status."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _by_operation: Counter[str] = field(default_factory=Counter)
    _by_status: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, record: RequestRecord) -> None:
        status = str(record.status) if record.status is not None else "error"
        with self._lock:
            self._by_operation[record.operation] += 1
            self._by_status[(record.operation, status)] += 1

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._by_operation.values())

    def by_operation(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_operation)

    def by_status(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._by_status)


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; carries what the final error needs."""

    def __init__(
        self,
        *,
        status: int | None,
        message: str,
        headers: httpx.Headers | None = None,
        body_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or httpx.Headers()
        self.body_sent = body_sent


@dataclass(frozen=True)
class _Call:
    """What one operation is about, for error messages and stats."""

    operation: str
    container_id: str | None = None
    file_id: str | None = None
    filename: str | None = None

    def describe(self) -> str:
        parts = [self.operation.replace("_", " ")]
        if self.filename is not None:
            parts.append(repr(self.filename))
        if self.file_id:
            parts.append(f"file {self.file_id}")
        if self.container_id:
            parts.append(f"in container {self.container_id}")
        return " ".join(parts)


def parse_retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the server asks us to wait, or None when it gives no usable hint.

    ``retry-after-ms`` first, then ``Retry-After`` as seconds or an HTTP date;
    each also with LiteLLM's ``llm_provider-`` prefix. Capped at 120 s.
    """
    for name in _MS_HINTS:
        value = headers.get(name)
        if value is not None:
            try:
                return _cap(float(value) / 1000.0)
            except ValueError:
                continue
    for name in _S_HINTS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            return _cap(float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        return _cap(when.timestamp() - now)
    return None


def _cap(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _server_message(response: httpx.Response) -> str:
    """The error message of an OpenAI-style error body, or a short raw excerpt."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        text = response.text.strip()
        return text[:200] if text else response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return json.dumps(body)[:200]


class RateLimiter:
    """A token bucket shared by all threads: at most ``rate`` requests a second.

    A few lines, so written here rather than adding a dependency; the clock
    and sleep are injectable so tests need no real waiting.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigError("requests_per_second must be greater than 0")
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self._rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class ContainersClient:
    """Typed, retrying client of the Containers API.

    Thread-safe: the engine calls it from a pool of workers.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
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
        on_request: Callable[[RequestRecord], None] | None = None,
        rate_limiter: RateLimiter | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        # Like the official SDK: the environment fills in what the caller left out.
        env = os.environ if environ is None else environ
        key = api_key if api_key is not None else env.get("OPENAI_API_KEY")
        if not key:
            raise ConfigError(
                "no API key: set OPENAI_API_KEY, api_key_file or api_key in the settings"
            )
        if auth_style not in AUTH_STYLES:
            raise ConfigError(f"auth_style {auth_style!r} is not one of: {', '.join(AUTH_STYLES)}")
        if max_retries < 0:
            raise ConfigError("max_retries must be 0 or more")
        self._key = key
        self.base_url = (base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if urlsplit(self.base_url).username is not None:
            # httpx would turn user:password@ into Basic auth and drop the key.
            raise ConfigError(
                "base_url must not contain a user or password; "
                "use auth_style = 'basic' with basic_username instead"
            )
        self._sleep = sleep
        self._clock = clock
        self._max_retries = max_retries
        self._on_request = on_request
        self._rate_limiter = rate_limiter
        self.stats = RequestStats()
        headers = {
            "User-Agent": f"cntr-sync/{__version__} httpx/{httpx.__version__}",
            "Accept": "application/json",
            **self._auth_headers(key, auth_style, basic_username),
        }
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        headers.update(extra_headers or {})
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            headers=headers,
            params=dict(extra_query or {}),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            verify=_ssl_verify(verify),
            transport=transport,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            follow_redirects=False,
        )

    @staticmethod
    def _auth_headers(key: str, style: AuthStyle, basic_username: str) -> dict[str, str]:
        if style == "bearer":
            return {"Authorization": f"Bearer {key}"}
        if style == "basic":
            token = base64.b64encode(f"{basic_username}:{key}".encode()).decode("ascii")
            return {"Authorization": f"Basic {token}"}
        return {style: key}

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

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
        call = _Call("create_container", filename=name)
        response = self._request_with(
            call, lambda: self._send("POST", "containers", json=body), upload=True
        )
        return self._parse(call, Container, response)

    def iter_containers(
        self, *, name: str | None = None, order: Literal["asc", "desc"] = "desc"
    ) -> Iterator[Container]:
        """Every container, page by page. ``name`` is filtered here too, since
        some gateways drop the server-side filter."""
        params = {"name": name} if name is not None else {}
        for item in self._paginate(_Call("list_containers"), "containers", order, params):
            container = self._parse_item(_Call("list_containers"), Container, item)
            if name is None or container.name == name:
                yield container

    def retrieve_container(self, container_id: str, *, require_running: bool = False) -> Container:
        call = _Call("retrieve_container", container_id=container_id)
        container = self._parse(
            call, Container, self._request(call, "GET", f"containers/{_seg(container_id)}")
        )
        if require_running and not container.is_running:
            raise ContainerExpiredError(
                f"container {container_id} is {container.status}, not running",
                operation=call.operation,
                container_id=container_id,
            )
        return container

    def delete_container(self, container_id: str) -> None:
        call = _Call("delete_container", container_id=container_id)
        self._request(call, "DELETE", f"containers/{_seg(container_id)}")

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
        call = _Call("create_file", container_id=container_id, filename=filename)
        path = f"containers/{_seg(container_id)}/files"

        def send() -> httpx.Response:
            with ExitStack() as stack:
                stream: bytes | IO[bytes]
                if isinstance(source, Path):
                    stream = stack.enter_context(source.open("rb"))
                elif isinstance(source, bytes):
                    stream = source
                else:
                    source.seek(0)
                    stream = source
                return self._send("POST", path, files={"file": (filename, stream, content_type)})

        return self._parse(call, ContainerFile, self._request_with(call, send, upload=True))

    def create_file_from_file_id(self, container_id: str, file_id: str) -> ContainerFile:
        """Copy a Files-API file into the container (JSON variant; some gateways refuse it)."""
        call = _Call("create_file", container_id=container_id, file_id=file_id)
        response = self._request(
            call, "POST", f"containers/{_seg(container_id)}/files", json={"file_id": file_id}
        )
        return self._parse(call, ContainerFile, response)

    def iter_files(
        self, container_id: str, *, order: Literal["asc", "desc"] = "asc"
    ) -> Iterator[ContainerFile]:
        """Every file of the container, one page (100) at a time."""
        call = _Call("list_files", container_id=container_id)
        path = f"containers/{_seg(container_id)}/files"
        for item in self._paginate(call, path, order, {}):
            yield self._parse_item(call, ContainerFile, item)

    def retrieve_file(self, container_id: str, file_id: str) -> ContainerFile:
        call = _Call("retrieve_file", container_id=container_id, file_id=file_id)
        response = self._request(
            call, "GET", f"containers/{_seg(container_id)}/files/{_seg(file_id)}"
        )
        return self._parse(call, ContainerFile, response)

    def delete_file(self, container_id: str, file_id: str, *, missing_ok: bool = True) -> bool:
        """Delete a file. Returns False when it was already gone (404) and missing_ok.

        A 404 on delete is "done": gateways retry DELETE themselves and then
        answer 404 for the file they already removed.
        """
        call = _Call("delete_file", container_id=container_id, file_id=file_id)
        try:
            self._request(call, "DELETE", f"containers/{_seg(container_id)}/files/{_seg(file_id)}")
        except NotFoundError:
            if missing_ok:
                return False
            raise
        return True

    def download_file(self, container_id: str, file_id: str, sink: IO[bytes]) -> int:
        """Stream a file's content into ``sink``; returns the bytes written.

        A failure mid-stream is retried only when ``sink`` can be rewound.
        """
        call = _Call("file_content", container_id=container_id, file_id=file_id)
        path = f"containers/{_seg(container_id)}/files/{_seg(file_id)}/content"
        start = sink.tell() if sink.seekable() else None
        progress = {"written": 0}

        def attempt() -> int:
            self._throttle()
            if start is not None:
                sink.seek(start)
                sink.truncate()
                progress["written"] = 0
            started = time.monotonic()
            try:
                with self._http.stream("GET", path) as response:
                    self._record(call, response.status_code, started)
                    if response.status_code >= 400:
                        response.read()
                        self._raise_for_status(call, response)
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        sink.write(chunk)
                        progress["written"] += len(chunk)
            except httpx.TransportError as exc:
                if progress["written"] == 0:
                    self._record(call, None, started)
                raise _Retryable(status=None, message=_transport_message(exc)) from exc
            return progress["written"]

        # Retrying is safe when nothing reached the sink yet, or it can be rewound.
        return self._retrying(
            call, attempt, retry_allowed=lambda _exc: start is not None or not progress["written"]
        )

    # -- machinery -------------------------------------------------------------

    def _request(
        self,
        call: _Call,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        return self._request_with(call, lambda: self._send(method, path, params=params, json=json))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._http.request(method, path, **kwargs)

    def _request_with(
        self, call: _Call, send: Callable[[], httpx.Response], *, upload: bool = False
    ) -> httpx.Response:
        def attempt() -> httpx.Response:
            self._throttle()
            started = time.monotonic()
            try:
                response = send()
            except httpx.TransportError as exc:
                self._record(call, None, started)
                sent = not isinstance(
                    exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                )
                raise _Retryable(
                    status=None, message=_transport_message(exc), body_sent=sent
                ) from exc
            self._record(call, response.status_code, started)
            self._raise_for_status(call, response)
            return response

        def retry_allowed(exc: _Retryable) -> bool:
            if not upload:
                return True
            # An upload may be repeated only when the server cannot have kept it.
            return not exc.body_sent or exc.status == 429

        return self._retrying(call, attempt, retry_allowed=retry_allowed, upload=upload)

    def _retrying(
        self,
        call: _Call,
        attempt: Callable[[], _T],
        *,
        retry_allowed: Callable[[_Retryable], bool],
        upload: bool = False,
    ) -> _T:
        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            exc = outcome.exception()
            return isinstance(exc, _Retryable) and retry_allowed(exc)

        retrying = Retrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            retry=should_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise self._final_error(call, exc, upload=upload) from None

    _backoff = wait_exponential_jitter(multiplier=0.5, max=8.0, jitter=0.5)

    def _wait(self, state: RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, _Retryable):
            hinted = parse_retry_after(exc.headers, self._clock())
            if hinted is not None:
                return hinted
        return float(self._backoff(state))

    def _throttle(self) -> None:
        if self._rate_limiter is not None:
            self._rate_limiter.acquire()

    def _record(self, call: _Call, status: int | None, started: float) -> None:
        record = RequestRecord(call.operation, status, time.monotonic() - started)
        self.stats.record(record)
        if self._on_request is not None:
            self._on_request(record)

    def _raise_for_status(self, call: _Call, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message = self._scrub(_server_message(response))
        if status in RETRYABLE_STATUSES or status >= 500:
            response.close()
            raise _Retryable(status=status, message=message, headers=response.headers)
        error_class: type[ApiError]
        if status == 400 and is_container_expired(message):
            error_class = ContainerExpiredError
        else:
            error_class = {
                401: AuthenticationError,
                403: PermissionDeniedError,
                404: NotFoundError,
            }.get(status, BadRequestError)
        raise error_class(
            f"{call.describe()}: HTTP {status}: {message}",
            operation=call.operation,
            status=status,
            container_id=call.container_id,
            file_id=call.file_id,
            request_id=response.headers.get("x-request-id"),
        )

    def _final_error(self, call: _Call, exc: _Retryable, *, upload: bool) -> ApiError:
        where = f"{call.describe()}: " + (
            f"HTTP {exc.status}: {exc.message}" if exc.status is not None else exc.message
        )
        if upload and exc.body_sent and exc.status != 429:
            return OutcomeUnknownError(
                f"{where} (the server may have done it; the next listing decides)",
                filename=call.filename or "",
                operation=call.operation,
                container_id=call.container_id,
                status=exc.status,
            )
        kwargs: dict[str, Any] = {
            "operation": call.operation,
            "status": exc.status,
            "container_id": call.container_id,
            "file_id": call.file_id,
        }
        if exc.status == 429:
            return RateLimitedError(f"{where} (rate limited after retries)", **kwargs)
        if exc.status is None or exc.status == 408:
            return TransportError(where, **kwargs)
        if exc.status == 409:
            return BadRequestError(where, **kwargs)
        return ServerError(where, **kwargs)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text

    def _paginate(
        self, call: _Call, path: str, order: str, params: Mapping[str, str]
    ) -> Iterator[dict[str, Any]]:
        """Yield raw items of every page; follow ``after`` if given, else the last id.

        A missing ``has_more`` means false. A cursor seen before, or an empty
        page that claims more, raises ``ProtocolError`` instead of looping.
        """
        cursor: str | None = None
        seen: set[str] = set()
        # A gateway that ignores "after" but hands out fresh cursors would loop
        # forever: a page starting with an item already seen is the same tell.
        first_ids: set[str] = set()
        while True:
            query: dict[str, str | int] = {"limit": PAGE_LIMIT, "order": order, **params}
            if cursor is not None:
                query["after"] = cursor
            page = self._json(call, self._request(call, "GET", path, params=query))
            data = page.get("data")
            if not isinstance(data, list):
                raise self._protocol(call, "list answer has no 'data' array")
            head = data[0].get("id") if data and isinstance(data[0], dict) else None
            if isinstance(head, str):
                if head in first_ids:
                    raise self._protocol(call, f"page starts again at {head!r}; stopping")
                first_ids.add(head)
            for item in data:
                if not isinstance(item, dict):
                    raise self._protocol(call, "list item is not an object")
                yield item
            if page.get("has_more") is not True:
                return
            cursor = _next_cursor(page, data)
            if cursor is None:
                raise self._protocol(call, "page claims more items but gives no cursor")
            if cursor in seen:
                raise self._protocol(call, f"page repeats cursor {cursor!r}; stopping")
            seen.add(cursor)

    def _json(self, call: _Call, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise self._protocol(call, "answer is not JSON") from None
        if not isinstance(body, dict):
            raise self._protocol(call, "answer is not a JSON object")
        return body

    def _parse(self, call: _Call, model: type[ModelT], response: httpx.Response) -> ModelT:
        return self._parse_item(call, model, self._json(call, response))

    def _parse_item(self, call: _Call, model: type[ModelT], item: Mapping[str, Any]) -> ModelT:
        try:
            return model.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "object"
            raise self._protocol(
                call, f"unexpected {model.__name__} shape at {where}: {first['msg']}"
            ) from None

    @staticmethod
    def _protocol(call: _Call, message: str) -> ProtocolError:
        return ProtocolError(
            f"{call.describe()}: {message}",
            operation=call.operation,
            container_id=call.container_id,
            file_id=call.file_id,
        )


def _next_cursor(page: Mapping[str, Any], data: list[dict[str, Any]]) -> str | None:
    opaque = page.get("after")
    if isinstance(opaque, str) and opaque:
        return opaque
    if not data:
        return None
    last = data[-1].get("id")
    return last if isinstance(last, str) and last else None


def _transport_message(exc: httpx.TransportError) -> str:
    kinds: tuple[tuple[type[httpx.TransportError], str], ...] = (
        (httpx.ConnectTimeout, "connection timed out"),
        (httpx.ConnectError, "cannot connect"),
        (httpx.TimeoutException, "timed out"),
        (httpx.RemoteProtocolError, "connection dropped by the server"),
        (httpx.NetworkError, "network error"),
    )
    for kind, text in kinds:
        if isinstance(exc, kind):
            return text
    return type(exc).__name__


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


def is_container_expired(message: str) -> bool:
    """Whether a 400's message says the container expired (not merely "expired").

    The API answers "Container is expired."; gateways wrap it (LiteLLM:
    "litellm.BadRequestError: OpenAIException - Container is expired.").
    """
    lowered = message.lower()
    return "container is expired" in lowered or bool(
        re.search(r"\bcontainer\b[^.]*\bexpired\b", lowered)
    )
