"""The request machinery under ``ContainersClient``: one exchange, done carefully.

Owns, for every request ``api`` makes: sending it through httpx's public API
(``Client.build_request`` joins the client's base URL, query parameters,
headers, cookies and timeout; ``Client.send(..., stream=True)`` sends it on
the client's transport, a proxy's if the environment names one, and keeps the
cookies a gateway sets); reading the answer into an ``Answer`` within
``request_deadline``, however slowly it trickles in; pacing (the shared
``Pacer`` admits each attempt and hears how it ended); which failures are
worth retrying, and for an upload whether the server may have kept it (the
waits and the count are ``retries.RetryPolicy``; a refusal no retry cures,
quota or a long run of 429s, is ``refusals``'s judgement); request counts
(``RequestStats``, ``RequestOutcome``); mapping every HTTP failure into the
``errors`` tree; pagination (a response's ``after`` cursor, else the last id,
with loop detection); and parsing answers into the tolerant wire models.

Must not: know the API's operations or paths (``api`` does), read a body into
memory that the caller streams, retry a create after a failure where the
server may have done it (that is ``OutcomeUnknownError``), let the API key
into an error message, or reach into httpx beyond its public API.

This module and ``api`` are the only places that see httpx exceptions.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

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
    QuotaExceededError,
    RateLimitedError,
    RefusedTooLongError,
    ServerError,
    TransportError,
)
from cntr_sync.hashing import no_tick
from cntr_sync.pacing import Pacer
from cntr_sync.refusals import RefusalWatch, quota_refusal
from cntr_sync.retries import Retryable, RetryPolicy, parse_retry_after

PAGE_LIMIT = 100
# Empty pages in a row that claim more before a listing gives up: a server that
# filters pages may send one, one that hands out fresh cursors forever would loop.
EMPTY_PAGES = 5
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Answers that tell the pacer to slow down (a 503 is how some gateways say 429).
THROTTLE_STATUSES = frozenset({429, 503})
CHUNK_SIZE = 1024 * 1024
#: Request URLs kept per client (a container's upload path, say; see Requester._keep_url).
URL_CACHE_SIZE = 256

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


@dataclass(frozen=True)
class Answer:
    """A server's answer, read whole within ``request_deadline``: what the client keeps."""

    status: int
    reason: str
    headers: httpx.Headers
    content: bytes  # decoded, if the server compressed it

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _error_of(answer: Answer) -> tuple[object, str]:
    """An error answer's parsed body (None when it is not JSON) and its message:
    that of an OpenAI-style error body, or a short raw excerpt."""
    try:
        body = answer.json()
    except (ValueError, UnicodeDecodeError, RecursionError):
        text = answer.text.strip()
        return None, text[:200] if text else answer.reason
    return body, _message_of(body)


def _message_of(body: object) -> str:
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

    ``sleep``, ``clock`` and ``stop`` are the retry policy's (``retries.RetryPolicy``);
    ``stop`` also ends a pacing wait. ``refusals`` hears every answer (a new one
    when not given). Thread-safe, like the ``httpx.Client`` it drives.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        secret: str,
        max_retries: int,
        sleep: Callable[[float], object],
        clock: Callable[[], float],
        on_request: Callable[[RequestOutcome], None] | None,
        pacer: Pacer | None,
        tick: Callable[[], None] | None = None,
        request_deadline: float | None = None,
        stop: threading.Event | None = None,
        refusals: RefusalWatch | None = None,
    ) -> None:
        self.http = http
        self._stop = stop
        self.refusals = refusals or RefusalWatch()
        self.request_deadline = request_deadline
        self._secret = secret
        self._tick = tick or no_tick
        self._clock = clock
        self._on_request = on_request
        self._pacer = pacer
        self.stats = RequestStats()
        self._urls: dict[str, httpx.URL] = {}
        self._retries = RetryPolicy(
            max_retries=max_retries, sleep=sleep, clock=clock, tick=self._tick, stop=stop
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
        upload: bool = False,
    ) -> Answer:
        """``method path`` with retries; ``upload`` marks a create (see ``request_with``)."""
        return self.request_with(
            call, lambda: self.send(method, path, params=params, json=json), upload=upload
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One attempt: the request httpx builds for ``path`` under the base URL,
        sent, and its answer read within ``request_deadline``."""
        request = self.http.build_request(
            method,
            self._urls.get(path, path),
            params=params,
            json=json,
            content=content,
            headers=headers,
        )
        if not params and path not in self._urls:
            self._keep_url(path, request.url)
        response = self.http.send(request, stream=True)
        try:
            return self._read(response, self._deadline())
        finally:
            response.close()

    def _keep_url(self, path: str, url: httpx.URL) -> None:
        """Keep the absolute URL httpx made of ``path``, to hand back next time.

        Given an absolute ``httpx.URL``, ``build_request`` takes it as it is;
        given ``path``, it parses and joins it again: 0.28 M instructions of the
        1.8 M a 4 KiB upload into the in-process emulator costs (callgrind). The
        client's base URL and query parameters never change: a kept URL stays right.
        """
        if len(self._urls) >= URL_CACHE_SIZE:
            self._urls.clear()
        self._urls[path] = url

    def _read(self, response: httpx.Response, deadline: float | None) -> Answer:
        content = b"".join(self._within_deadline(response.iter_bytes(), deadline))
        return Answer(response.status_code, response.reason_phrase, response.headers, content)

    def _within_deadline(self, chunks: Iterator[bytes], deadline: float | None) -> Iterator[bytes]:
        """``chunks``, giving up once ``deadline`` has passed: httpx's timeouts are
        per read, so a server that dribbles a byte a minute would otherwise hold a
        request (and the pass) for as long as it liked."""
        for chunk in chunks:
            yield chunk
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(
                    f"the answer took longer than request_deadline ({self.request_deadline:g} s)"
                )

    def _deadline(self) -> float | None:
        return None if self.request_deadline is None else time.monotonic() + self.request_deadline

    def request_with(
        self, call: Call, send: Callable[[], Answer], *, upload: bool = False
    ) -> Answer:
        """``send()`` with retries; ``upload`` marks a create that must not be repeated
        once the server may have done it."""

        def attempt() -> Answer:
            with self._paced():
                started = time.monotonic()
                try:
                    answer = send()
                except httpx.DecodingError as exc:
                    raise protocol_error(call, f"the answer cannot be decoded ({exc})") from None
                except httpx.TransportError as exc:
                    self._record(call, None, started)
                    sent = not isinstance(
                        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
                    )
                    raise Retryable(
                        status=None, message=_transport_message(exc), body_sent=sent
                    ) from exc
                self._record(call, answer.status, started)
                self._raise_for_status(call, answer)
                return answer

        def may_repeat(exc: Retryable) -> bool:
            # An upload may be repeated only when the server cannot have kept it.
            return not upload or not exc.body_sent or exc.status == 429

        return self._with_retries(call, attempt, may_repeat=may_repeat, upload=upload)

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
                    with self.http.stream("GET", path) as response:
                        self._record(call, response.status_code, started)
                        if response.status_code >= 400:
                            self._raise_for_status(call, self._read(response, deadline))
                        chunks = response.iter_bytes(CHUNK_SIZE)
                        for chunk in self._within_deadline(chunks, deadline):
                            sink.write(chunk)
                            progress["written"] += len(chunk)
                            self._tick()
                except httpx.DecodingError as exc:
                    raise protocol_error(call, f"the content cannot be decoded ({exc})") from None
                except httpx.TransportError as exc:
                    if progress["written"] == 0:
                        self._record(call, None, started)
                    raise Retryable(status=None, message=_transport_message(exc)) from exc
                return progress["written"]

        # Retrying is safe when nothing reached the sink yet, or it can be rewound.
        return self._with_retries(
            call, attempt, may_repeat=lambda _exc: start is not None or not progress["written"]
        )

    def _with_retries(
        self,
        call: Call,
        attempt: Callable[[], _T],
        *,
        may_repeat: Callable[[Retryable], bool],
        upload: bool = False,
    ) -> _T:
        """``attempt()`` under the retry policy; a failure given up on becomes its error
        in the ``errors`` tree; not repeated once ``refusals`` saw only refusals too long."""
        return self._retries.run(
            attempt,
            may_repeat=lambda exc: not self._refused_too_long(exc) and may_repeat(exc),
            give_up=lambda exc: self._final_error(call, exc, upload=upload),
            describe=call.describe,
        )

    def _refused_too_long(self, exc: Retryable) -> bool:
        return exc.status in THROTTLE_STATUSES and self.refusals.exceeded()

    @contextlib.contextmanager
    def _paced(self) -> Iterator[None]:
        """One attempt, admitted by the pacer, which then hears whether it was throttled."""
        if self._pacer is None:
            yield
            return
        self._tick()
        ticket = self._pacer.acquire(self._tick, self._stop)
        try:
            yield
        except Retryable as exc:
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
        if status is not None:
            self.refusals.answered(refused=status in THROTTLE_STATUSES)
        outcome = RequestOutcome(call.operation, status, time.monotonic() - started)
        self.stats.record(outcome)
        if self._on_request is not None:
            self._on_request(outcome)

    # -- errors

    def _raise_for_status(self, call: Call, answer: Answer) -> None:
        status = answer.status
        if status < 400:
            return
        body, message = _error_of(answer)
        message = self.scrub(message)
        quota = quota_refusal(status, body, message)
        if quota is None and (status in RETRYABLE_STATUSES or status >= 500):
            raise Retryable(status=status, message=message, headers=answer.headers)
        text = f"{call.describe()}: HTTP {status}: {message}"
        error_class: type[ApiError]
        if quota is not None:
            error_class = QuotaExceededError
            text = (
                f"the account has no quota for the API ({quota}): no request can succeed "
                f"until its plan or billing allows it, so the pass stops. {text}"
            )
        elif status == 400 and is_container_expired(message):
            error_class = ContainerExpiredError
        else:
            error_class = {
                401: AuthenticationError,
                403: PermissionDeniedError,
                404: NotFoundError,
            }.get(status, BadRequestError)
        raise error_class(
            text,
            operation=call.operation,
            status=status,
            container_id=call.container_id,
            file_id=call.file_id,
            request_id=answer.headers.get("x-request-id"),
        )

    def _final_error(self, call: Call, exc: Retryable, *, upload: bool) -> ApiError:
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
        if self._refused_too_long(exc):
            minutes = self.refusals.refused_for() / 60
            return RefusedTooLongError(
                f"every answer for {minutes:.0f} min was HTTP 429 or 503, so the pass "
                f"stops (the next one tries again). Last: {where}",
                **kwargs,
            )
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
        re-upload the rest. A cursor seen before, a page that starts at an item
        seen before, or ``EMPTY_PAGES`` empty pages in a row that claim more raise
        ``ProtocolError`` instead of looping.
        """
        cursor: str | None = None
        seen: set[str] = set()
        empty_in_a_row = 0
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
            empty_in_a_row = 0 if data else empty_in_a_row + 1
            if empty_in_a_row >= EMPTY_PAGES:
                raise protocol_error(call, f"{EMPTY_PAGES} empty pages in a row claim more")

    def json_object(self, call: Call, answer: Answer) -> dict[str, Any]:
        try:
            body = answer.json()
        except (ValueError, UnicodeDecodeError):
            raise protocol_error(call, "answer is not JSON") from None
        except RecursionError:
            raise protocol_error(call, "answer is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise protocol_error(call, "answer is not a JSON object")
        return body

    def parse(self, call: Call, model: type[ModelT], answer: Answer) -> ModelT:
        return parse_item(call, model, self.json_object(call, answer))


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
