"""The request machinery under ``ContainersClient``: one exchange, done carefully.

Owns: retries with server hints
(``retry-after-ms``, ``Retry-After`` as seconds or a date, LiteLLM's
``llm_provider-`` prefixes; else exponential backoff with jitter), request
counts (``RequestStats``, ``RequestOutcome``), mapping every HTTP failure into
the ``errors`` tree, pagination (a response's ``after`` cursor, else the last
id, with loop detection), and parsing answers into the tolerant wire models.

Must not: know the API's operations or paths (``api`` does), read a body into
memory that the caller streams, retry a create after a failure where the
server may have done it (that is ``OutcomeUnknownError``), or let the API key
into an error message.

This module and ``api`` are the only places that see httpx exceptions.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from cntr_sync.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from cntr_sync.pacing import Pacer

if TYPE_CHECKING:
    from tenacity import RetryCallState

PAGE_LIMIT = 100
MAX_RETRY_AFTER = 120.0
#: Backoff without a server hint: BACKOFF_BASE * 2**(attempt - 1) plus up to
#: BACKOFF_JITTER at random, at most BACKOFF_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
BACKOFF_JITTER = 0.5
#: Merged request URLs kept per client (one per container's upload path, say).
URL_CACHE_SIZE = 256
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Answers that tell the pacer to slow down (a 503 is how some gateways say 429).
THROTTLE_STATUSES = frozenset({429, 503})
CHUNK_SIZE = 1024 * 1024

# Retry hints, in the order they are trusted. LiteLLM forwards upstream hints
# with an ``llm_provider-`` prefix.
_MS_HINTS = ("retry-after-ms", "llm_provider-retry-after-ms")
_S_HINTS = ("retry-after", "llm_provider-retry-after")

ModelT = TypeVar("ModelT", bound=BaseModel)
_T = TypeVar("_T")


@dataclass(frozen=True)
class RequestOutcome:
    """How one HTTP exchange ended, for metrics and summaries (never headers or bodies)."""

    operation: str
    status: int | None  # None: no response (connection error)
    seconds: float


@dataclass
class RequestStats:
    """Thread-safe counts of requests by operation and status."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _by_operation: Counter[str] = field(default_factory=Counter)
    _by_status: Counter[tuple[str, str]] = field(default_factory=Counter)

    def record(self, outcome: RequestOutcome) -> None:
        status = str(outcome.status) if outcome.status is not None else "error"
        with self._lock:
            self._by_operation[outcome.operation] += 1
            self._by_status[(outcome.operation, status)] += 1

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


@dataclass(frozen=True)
class Call:
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


class ByteSink(Protocol):
    """Where a download streams (an open binary file is one).

    Rewindable sinks (``seekable()``) let a download that broke mid-stream be
    retried from the start.
    """

    def write(self, data: bytes, /) -> object: ...

    def seekable(self) -> bool: ...

    def tell(self) -> int: ...

    def seek(self, offset: int, /) -> object: ...

    def truncate(self) -> object: ...


class DeadlineExceeded(httpx.ReadTimeout):
    """An answer kept coming, but past ``request_deadline``: given up like a timeout."""


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
    except (ValueError, UnicodeDecodeError, RecursionError):
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


def is_container_expired(message: str) -> bool:
    """Whether a 400's message says the container expired (not merely "expired").

    The API answers "Container is expired."; gateways wrap it (LiteLLM:
    "litellm.BadRequestError: OpenAIException - Container is expired.").
    """
    lowered = message.lower()
    return "container is expired" in lowered or bool(
        re.search(r"\bcontainer\b[^.]*\bexpired\b", lowered)
    )


class Requester:
    """Sends requests on one ``httpx.Client``: paced, counted, retried, mapped.

    ``pacer`` (optional, usually shared by every client of the endpoint) admits
    each attempt and hears how it ended. ``tick`` (optional) is called whenever a
    request makes progress: during a pacing wait, after every attempt, around
    every retry wait and for every downloaded chunk, so a watcher can tell a slow
    exchange from a hung one.
    Thread-safe, like the ``httpx.Client`` it drives.

    Requests are built here rather than by ``httpx.Client.build_request``, to the
    same result (the client's base URL, query parameters, headers, cookies and
    timeout), but with the merged URL of each path parsed once and kept: the
    profile of a 2,000-file push showed the client parsing two URLs per request.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        secret: str,
        max_retries: int,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        on_request: Callable[[RequestOutcome], None] | None,
        pacer: Pacer | None,
        tick: Callable[[], None] | None = None,
        request_deadline: float | None = None,
    ) -> None:
        self.http = http
        self.request_deadline = request_deadline
        self._secret = secret
        self._max_retries = max_retries
        self._tick = tick or _no_tick
        self._sleep = sleep
        self._clock = clock
        self._on_request = on_request
        self._pacer = pacer
        self.stats = RequestStats()
        self._urls: dict[str, httpx.URL] = {}
        self._timeout = http.timeout.as_dict()
        # Every request goes to the base URL's host: one transport serves them all.
        # (A private method of httpx.Client; without it, Client.send is used.)
        transport_for_url = getattr(http, "_transport_for_url", None)
        self._transport: httpx.BaseTransport | None = (
            transport_for_url(http.base_url) if callable(transport_for_url) else None
        )

    # -- one request, retried

    def request(
        self,
        call: Call,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        def send() -> httpx.Response:
            return self.send(self.build(method, path, params=params, json=json))

        return self.request_with(call, send)

    def build(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """The request ``http.build_request`` would make, from a URL merged once per path."""
        url = self._url(path)
        if params:
            url = url.copy_merge_params(params)
        merged = httpx.Headers(self.http.headers)
        if headers:
            merged.update(headers)
        cookies = self.http.cookies
        return httpx.Request(
            method,
            url,
            content=content,
            json=json,
            headers=merged,
            cookies=cookies if cookies else None,
            extensions={"timeout": self._timeout},
        )

    def _url(self, path: str) -> httpx.URL:
        """``path`` joined to the client's base URL with its query parameters, as
        ``httpx.Client`` joins them; kept per path."""
        url = self._urls.get(path)
        if url is None:
            base = self.http.base_url
            relative = httpx.URL(path).raw_path.lstrip(b"/")
            url = base.copy_with(raw_path=base.raw_path + relative)
            if self.http.params:
                url = url.copy_merge_params(self.http.params)
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[path] = url
        return url

    def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read its answer within ``request_deadline``."""
        response = self.open(request)
        try:
            return self._read_within_deadline(response)
        finally:
            response.close()

    def open(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the answer's body is left to read (close it).

        Straight to the client's transport for the base URL (the one
        ``Client.send`` picks, a proxy's if the environment names one), doing what
        ``Client.send`` does on the way for a client without auth, hooks or
        redirects: the request on the answer, its cookies kept. That way skips
        0.25 ms of CPU a request (the auth and redirect generators, a cookie jar
        pass over every answer, the answer's stream wrapped again).
        """
        if self._transport is None:
            return self.http.send(request, stream=True)
        response = self._transport.handle_request(request)
        response.request = request
        if "set-cookie" in response.headers:
            self.http.cookies.extract_cookies(response)
        return response

    def _read_within_deadline(self, response: httpx.Response) -> httpx.Response:
        """The response with its body read, giving up after ``request_deadline``.

        httpx's timeouts are per read: a server that dribbles a byte a minute
        would hold a request (and the pass) for as long as it liked. The deadline
        is checked after every raw chunk, by a stream put under ``response.read``
        (reading it into a second ``Response`` cost another 50 us a request).
        """
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        deadline = self._deadline()
        response.stream = _CheckedStream(stream, lambda: self._check_deadline(deadline))
        response.read()
        return response

    def _deadline(self) -> float | None:
        return None if self.request_deadline is None else time.monotonic() + self.request_deadline

    def _check_deadline(self, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded(
                f"the answer took longer than request_deadline ({self.request_deadline:g} s)"
            )

    def request_with(
        self, call: Call, send: Callable[[], httpx.Response], *, upload: bool = False
    ) -> httpx.Response:
        """``send()`` with retries; ``upload`` marks a create that must not be repeated
        once the server may have done it."""

        def attempt() -> httpx.Response:
            with self._paced():
                started = time.monotonic()
                try:
                    response = send()
                except httpx.DecodingError as exc:
                    raise protocol_error(call, f"the answer cannot be decoded ({exc})") from None
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

    def download(self, call: Call, path: str, sink: ByteSink) -> int:
        """Stream ``path`` into ``sink``; returns the bytes written.

        A failure mid-stream is retried only when ``sink`` can be rewound.
        """
        start = sink.tell() if sink.seekable() else None
        progress = {"written": 0}

        def attempt() -> int:
            if start is not None:
                sink.seek(start)
                sink.truncate()
                progress["written"] = 0
            with self._paced():
                started = time.monotonic()
                deadline = self._deadline()
                try:
                    response = self.open(self.build("GET", path))
                    try:
                        self._record(call, response.status_code, started)
                        if response.status_code >= 400:
                            response.read()
                            self._raise_for_status(call, response)
                        for chunk in response.iter_bytes(CHUNK_SIZE):
                            sink.write(chunk)
                            progress["written"] += len(chunk)
                            self._tick()
                            self._check_deadline(deadline)
                    finally:
                        response.close()
                except httpx.DecodingError as exc:
                    raise protocol_error(call, f"the content cannot be decoded ({exc})") from None
                except httpx.TransportError as exc:
                    if progress["written"] == 0:
                        self._record(call, None, started)
                    raise _Retryable(status=None, message=_transport_message(exc)) from exc
                return progress["written"]

        # Retrying is safe when nothing reached the sink yet, or it can be rewound.
        return self._retrying(
            call, attempt, retry_allowed=lambda _exc: start is not None or not progress["written"]
        )

    def _retrying(
        self,
        call: Call,
        attempt: Callable[[], _T],
        *,
        retry_allowed: Callable[[_Retryable], bool],
        upload: bool = False,
    ) -> _T:
        """``attempt()`` until it succeeds, fails in a way not worth retrying, or
        ``max_retries`` retries are spent; waits the server's hint, else backs off.

        The first attempt runs bare: almost every request succeeds at once, and a
        tenacity ``Retrying`` costs 35 us to build (and tenacity ~10 ms to import), so
        both wait for a retry.
        """
        try:
            return attempt()
        except _Retryable as exc:
            if self._max_retries < 1 or not retry_allowed(exc):
                raise self._final_error(call, exc, upload=upload) from None
            first = exc
        # Imported here, on the first failure: a command that never retries skips it.
        from tenacity import Retrying, stop_after_attempt  # noqa: PLC0415

        def should_retry(state: RetryCallState) -> bool:
            outcome = state.outcome
            if outcome is None or not outcome.failed:
                return False
            exc = outcome.exception()
            return isinstance(exc, _Retryable) and retry_allowed(exc)

        def wait(state: RetryCallState) -> float:
            # Called only after should_retry said yes: the outcome is a _Retryable.
            # attempt_number counts tenacity's attempts; the bare one came first.
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            assert isinstance(exc, _Retryable)
            return self._wait(exc, state.attempt_number + 1)

        retrying = Retrying(
            stop=stop_after_attempt(self._max_retries),
            wait=wait,
            retry=should_retry,
            sleep=self._sleep_ticking,
            reraise=True,
        )
        self._sleep_ticking(self._wait(first, 1))
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise self._final_error(call, exc, upload=upload) from None

    def _wait(self, exc: _Retryable, attempts: int) -> float:
        """Seconds before the next attempt, after ``attempts`` failed ones."""
        hinted = parse_retry_after(exc.headers, self._clock())
        if hinted is not None:
            return hinted
        try:
            backoff = BACKOFF_BASE * 2.0 ** (attempts - 1)
        except OverflowError:
            backoff = BACKOFF_MAX
        return min(backoff + random.uniform(0, BACKOFF_JITTER), BACKOFF_MAX)

    def _sleep_ticking(self, seconds: float) -> None:
        # A wait the server asked for is not a hang: tick on both sides of it.
        self._tick()
        self._sleep(seconds)
        self._tick()

    @contextlib.contextmanager
    def _paced(self) -> Iterator[None]:
        """One attempt, admitted by the pacer, which then hears whether it was throttled."""
        if self._pacer is None:
            yield
            return
        self._tick()
        ticket = self._pacer.acquire(self._tick)
        try:
            yield
        except _Retryable as exc:
            if exc.status in THROTTLE_STATUSES:
                hint = parse_retry_after(exc.headers, self._clock())
                self._pacer.release(ticket, throttled=True, retry_after=hint)
            else:
                self._pacer.forget(ticket)
            raise
        except ApiError:
            self._pacer.release(ticket, throttled=False)  # an answer, if a refusal
            raise
        except BaseException:
            self._pacer.forget(ticket)
            raise
        else:
            self._pacer.release(ticket, throttled=False)

    def _record(self, call: Call, status: int | None, started: float) -> None:
        self._tick()
        outcome = RequestOutcome(call.operation, status, time.monotonic() - started)
        self.stats.record(outcome)
        if self._on_request is not None:
            self._on_request(outcome)

    # -- errors

    def _raise_for_status(self, call: Call, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message = self.scrub(_server_message(response))
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

    def _final_error(self, call: Call, exc: _Retryable, *, upload: bool) -> ApiError:
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

    def scrub(self, text: str) -> str:
        """``text`` without the API key, should a server echo it."""
        return text.replace(self._secret, "[redacted]") if self._secret else text

    # -- lists and bodies

    def paginate(
        self, call: Call, path: str, order: str, params: Mapping[str, str]
    ) -> Iterator[dict[str, Any]]:
        """Yield raw items of every page; follow ``after`` if given, else the last id.

        ``has_more`` may be a boolean or the string ``"true"``/``"false"`` (some
        servers send strings; a page cut short by the server says "true"). Missing
        or anything else ends the listing only on a short page: after a full page
        the next page is asked for, since planning from half a listing would
        re-upload the rest. A cursor seen
        before, or an empty page that claims more, raises ``ProtocolError``
        instead of looping.
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
            page = self.json_object(call, self.request(call, "GET", path, params=query))
            data = page.get("data")
            if not isinstance(data, list):
                raise protocol_error(call, "list answer has no 'data' array")
            head = data[0].get("id") if data and isinstance(data[0], dict) else None
            if isinstance(head, str):
                if head in first_ids:
                    raise protocol_error(call, f"page starts again at {head!r}; stopping")
                first_ids.add(head)
            for item in data:
                if not isinstance(item, dict):
                    raise protocol_error(call, "list item is not an object")
                yield item
            has_more = _flag(page.get("has_more"))
            if has_more is False:
                return
            if has_more is not True and len(data) < PAGE_LIMIT:
                return  # no flag (Bifrost leaves it out when false) on a short page: the end
            # True, or no usable flag on a full page: the next page decides.
            cursor = _next_cursor(page, data)
            if cursor is None:
                raise protocol_error(call, "page claims more items but gives no cursor")
            if cursor in seen:
                raise protocol_error(call, f"page repeats cursor {cursor!r}; stopping")
            seen.add(cursor)

    def json_object(self, call: Call, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            raise protocol_error(call, "answer is not JSON") from None
        except RecursionError:
            raise protocol_error(call, "answer is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise protocol_error(call, "answer is not a JSON object")
        return body

    def parse(self, call: Call, model: type[ModelT], response: httpx.Response) -> ModelT:
        return parse_item(call, model, self.json_object(call, response))


def _no_tick() -> None:
    pass


class _CheckedStream(httpx.SyncByteStream):
    """A response body that calls ``check`` after every chunk (which may raise)."""

    def __init__(self, inner: httpx.SyncByteStream, check: Callable[[], None]) -> None:
        self._inner = inner
        self._check = check

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            yield chunk
            self._check()

    def close(self) -> None:
        self._inner.close()


def parse_item(call: Call, model: type[ModelT], item: Mapping[str, Any]) -> ModelT:
    """``item`` as ``model``; a shape the model cannot take is a ``ProtocolError``."""
    try:
        return model.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "object"
        raise protocol_error(
            call, f"unexpected {model.__name__} shape at {where}: {first['msg']}"
        ) from None


def protocol_error(call: Call, message: str) -> ProtocolError:
    return ProtocolError(
        f"{call.describe()}: {message}",
        operation=call.operation,
        container_id=call.container_id,
        file_id=call.file_id,
    )


def _flag(value: object) -> bool | None:
    """A boolean field as servers send it: ``true``, or ``"true"``; None when unusable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _next_cursor(page: Mapping[str, Any], data: list[dict[str, Any]]) -> str | None:
    opaque = page.get("after")
    if isinstance(opaque, str) and opaque:
        return opaque
    if not data:
        return None
    last = data[-1].get("id")
    return last if isinstance(last, str) and last else None


def _transport_message(exc: httpx.TransportError) -> str:
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
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
