"""ContainersClient against hand-written transports: headers, retries, errors, pagination."""

from __future__ import annotations

import base64
import email.utils
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    StoppedError,
    TransportError,
)
from cntr_sync.pacing import Pacer
from cntr_sync.rest import EMPTY_PAGES
from cntr_sync.retries import parse_retry_after
from helpers import CONTAINER, FILE, Script

KEY = "sk-test-SECRET-0123456789abcdef"


class FakeClock:
    """Records sleeps instead of sleeping; time moves only when slept."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def time(self) -> float:
        return self.now


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    clock: FakeClock | None = None,
    **kwargs: Any,
) -> ContainersClient:
    clock = clock or FakeClock()
    return ContainersClient(
        KEY,
        base_url=kwargs.pop("base_url", "http://gateway.test/v1"),
        transport=httpx.MockTransport(handler),
        sleep=kwargs.pop("sleep", clock.sleep),
        clock=clock.time,
        **kwargs,
    )


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "param": None, "code": None}}
    return httpx.Response(status, json=body, headers=headers)


# -- authentication and request shape ------------------------------------------


@pytest.mark.parametrize(
    ("style", "header", "expected"),
    [
        ("bearer", "authorization", f"Bearer {KEY}"),
        ("api-key", "api-key", KEY),
        ("x-api-key", "x-api-key", KEY),
        ("x-bf-vk", "x-bf-vk", KEY),
        ("basic", "authorization", "Basic " + base64.b64encode(f"me:{KEY}".encode()).decode()),
    ],
)
def test_each_auth_style_puts_the_right_header(style: Any, header: str, expected: str) -> None:
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(script, auth_style=style, basic_username="me") as client:
        client.retrieve_container("cntr_1")
    sent = script.requests[0].headers
    assert sent[header] == expected
    other_auth = {"authorization", "api-key", "x-api-key", "x-bf-vk"} - {header}
    assert not other_auth & {name.lower() for name in sent}


def test_extra_headers_query_org_project_and_user_agent_arrive_on_every_call() -> None:
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(
        script,
        extra_headers={"X-Gateway": "yes"},
        extra_query={"provider": "openai"},
        organization="org-1",
        project="proj-1",
    ) as client:
        client.retrieve_container("cntr_1")
        client.create_file("cntr_1", b"abc", filename="a.txt")
    for request in script.requests:
        assert request.headers["x-gateway"] == "yes"
        assert request.url.params["provider"] == "openai"
        assert request.headers["openai-organization"] == "org-1"
        assert request.headers["openai-project"] == "proj-1"
        assert request.headers["user-agent"].startswith("cntr-sync/")


def test_a_query_in_the_base_url_goes_with_every_call_and_names_nothing() -> None:
    """Azure-style gateways take ``?api-version=`` in the base URL: it goes with
    every request (``extra_query`` wins a clash), the paths stay under the base
    path, and the client's ``base_url`` (which names the index and the container
    claim) has no query, since a query may carry a key."""
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(
        script,
        base_url="https://gw.example/openai/v1/?api-version=2025-04-01&api-key=sk-q&sig=old",
        extra_query={"sig": "new"},
    ) as client:
        assert client.base_url == "https://gw.example/openai/v1"
        client.retrieve_container("cntr_1")
        client.create_file("cntr_1", b"abc", filename="a.txt")
    assert len(script.requests) == 2
    for request in script.requests:
        assert request.url.path.startswith("/openai/v1/containers/cntr_1")
        assert dict(request.url.params) == {
            "api-version": "2025-04-01",
            "api-key": "sk-q",
            "sig": "new",
        }


def test_the_client_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings layer alone reads OPENAI_*; the client uses what it is given.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.test/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-key-000000")
    script = Script(httpx.Response(200, json=CONTAINER))
    with ContainersClient("sk-arg-key-111111", transport=httpx.MockTransport(script)) as client:
        client.retrieve_container("cntr_1")
    assert script.requests[0].url.host == "api.openai.com"
    assert script.requests[0].headers["authorization"] == "Bearer sk-arg-key-111111"


@pytest.mark.parametrize("key", ["sk-ünïcode-key", "sk-key\nInjected: yes", "sk key", "sk-\x00"])
def test_a_key_that_cannot_be_sent_is_a_config_error_without_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match="cannot be sent in an HTTP header") as caught:
        ContainersClient(key)
    assert key not in str(caught.value)


def test_missing_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API key"):
        ContainersClient("", base_url="http://x.test")


def test_every_attempt_and_retry_wait_is_a_sign_of_progress() -> None:
    # A daemon tells a slow exchange from a hung one by these ticks.
    clock = FakeClock()
    ticks: list[float] = []  # when each tick came, on the clock the sleeps move
    script = Script(
        error(429, "slow", {"retry-after-ms": "10"}), httpx.Response(200, json=CONTAINER)
    )
    with make_client(script, clock=clock, tick=lambda: ticks.append(clock.now)) as client:
        client.retrieve_container("cntr_1")
    start = 1_700_000_000.0
    # attempt, just before the wait, just after it, attempt
    assert clock.sleeps == [0.01]
    assert ticks == [start, start, start + 0.01, start + 0.01]


def test_a_download_ticks_for_every_chunk() -> None:
    ticks: list[None] = []
    body = b"x" * (3 * 1024 * 1024 + 1)
    script = Script(httpx.Response(200, content=body))
    with make_client(script, tick=lambda: ticks.append(None)) as client:
        sink = io.BytesIO()
        assert client.download_file("cntr_1", "cfile_1", sink) == len(body)
    assert len(ticks) >= 4  # four 1 MiB chunks, and the attempt itself


def test_opaque_ids_are_quoted_as_one_path_segment() -> None:
    long_id = "litellm_" + "A/b+c=" * 20
    script = Script(httpx.Response(200, json={**CONTAINER, "id": long_id}))
    with make_client(script) as client:
        container = client.retrieve_container(long_id)
    assert container.id == long_id
    assert script.requests[0].url.raw_path.decode().count("/") == 3  # /v1/containers/<id>


# -- upload and download ---------------------------------------------------------


def test_upload_streams_a_file_with_the_chosen_filename(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    source.write_bytes(b"x" * 300_000)
    script = Script(httpx.Response(200, json={**FILE, "bytes": 300_000}))
    with make_client(script) as client:
        created = client.create_file("cntr_1", source, filename="dir/ünï code.txt")
    body = script.requests[0].content
    assert b'name="file"' in body
    assert "ünï code.txt".encode() in body
    assert body.count(b"x" * 300_000) == 1
    assert created.bytes == 300_000


def test_download_streams_into_the_sink() -> None:
    payload = bytes(range(256)) * 10_000
    script = Script(httpx.Response(200, content=payload))
    sink = io.BytesIO()
    with make_client(script) as client:
        written = client.download_file("cntr_1", "cfile_1", sink)
    assert written == len(payload)
    assert sink.getvalue() == payload
    assert script.requests[0].url.path == "/v1/containers/cntr_1/files/cfile_1/content"


def test_download_retries_a_5xx_and_rewinds_the_sink() -> None:
    script = Script(error(503, "busy"), httpx.Response(200, content=b"whole"))
    sink = io.BytesIO()
    with make_client(script) as client:
        assert client.download_file("cntr_1", "cfile_1", sink) == 5
    assert sink.getvalue() == b"whole"


def test_download_of_a_missing_file_raises_not_found() -> None:
    script = Script(error(404, "File cfile_1 not found on container cntr_1."))
    with make_client(script) as client, pytest.raises(NotFoundError):
        client.download_file("cntr_1", "cfile_1", io.BytesIO())
    assert len(script.requests) == 1


# -- retries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"llm_provider-retry-after-ms": "40"}, 0.04),
        ({"llm_provider-retry-after": "3"}, 3.0),
        ({"retry-after": "900"}, 120.0),
    ],
)
def test_each_retry_header_is_honoured(headers: dict[str, str], expected: float) -> None:
    clock = FakeClock()
    script = Script(error(429, "slow down", headers), httpx.Response(200, json=CONTAINER))
    with make_client(script, clock=clock) as client:
        client.retrieve_container("cntr_1")
    assert clock.sleeps == [pytest.approx(expected)]
    assert len(script.requests) == 2


def test_retry_after_as_an_http_date_is_relative_to_the_clock() -> None:
    clock = FakeClock()
    date = email.utils.formatdate(clock.now + 30, usegmt=True)
    script = Script(error(503, "later", {"retry-after": date}), httpx.Response(200, json=CONTAINER))
    with make_client(script, clock=clock) as client:
        client.retrieve_container("cntr_1")
    assert clock.sleeps == [pytest.approx(30, abs=1)]


def test_parse_retry_after_ignores_garbage() -> None:
    assert parse_retry_after(httpx.Headers({"retry-after": "soon"}), 0.0) is None
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "nan"}), 0.0) is None
    assert parse_retry_after(httpx.Headers({}), 0.0) is None


def test_without_hints_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    clock = FakeClock()
    script = Script(error(500, "boom"))
    with make_client(script, clock=clock, max_retries=6) as client, pytest.raises(ServerError):
        client.retrieve_container("cntr_1")
    assert len(script.requests) == 7
    assert len(clock.sleeps) == 6
    for attempt, slept in enumerate(clock.sleeps):
        base = min(0.5 * 2**attempt, 8.0)
        assert base <= slept <= base + 0.5
    assert max(clock.sleeps) <= 8.5


def test_no_retries_means_one_attempt_and_no_wait() -> None:
    clock = FakeClock()
    script = Script(error(503, "busy"), httpx.Response(200, json=CONTAINER))
    with make_client(script, clock=clock, max_retries=0) as client, pytest.raises(ServerError):
        client.retrieve_container("cntr_1")
    assert len(script.requests) == 1
    assert clock.sleeps == []


def test_each_wait_is_one_call_of_sleep_which_may_return_early() -> None:
    # What a shutdown needs later: sleep may be an Event.wait, woken early.
    woken = threading.Event()
    woken.set()
    waits: list[float] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        return woken.wait(seconds)  # returns at once: the event is set

    script = Script(
        error(429, "slow", {"retry-after": "30"}),
        error(503, "busy", {"retry-after-ms": "45000"}),
        httpx.Response(200, json=CONTAINER),
    )
    with ContainersClient(
        KEY, base_url="http://gateway.test/v1", transport=httpx.MockTransport(script), sleep=sleep
    ) as client:
        assert client.retrieve_container("cntr_1").id == "cntr_1"
    assert waits == [30.0, 45.0]
    assert len(script.requests) == 3


def test_a_stop_during_a_retry_wait_ends_the_retries_without_another_attempt() -> None:
    """Issue 25, finding 8: the daemon stopping a pair mid-storm is not held up by
    Retry-After; the request ends with ``StoppedError`` (a pass cut short, not failed)."""
    stop = threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> bool:  # the stop comes while the first wait is slept
        waits.append(seconds)
        stop.set()
        return stop.wait(seconds)

    script = Script(error(429, "slow", {"retry-after": "60"}), httpx.Response(200, json=CONTAINER))
    with (
        make_client(script, sleep=sleep, stop=stop) as client,
        pytest.raises(StoppedError),
    ):
        client.retrieve_container("cntr_1")
    assert waits == [60.0]
    assert len(script.requests) == 1  # no attempt after the stop


def test_a_client_given_stop_sleeps_on_it_and_wakes_when_it_is_set() -> None:
    stop = threading.Event()
    script = Script(error(429, "slow", {"retry-after": "60"}), httpx.Response(200, json=CONTAINER))
    timer = threading.Timer(0.2, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        with (
            ContainersClient(
                KEY,
                base_url="http://gateway.test/v1",
                transport=httpx.MockTransport(script),
                stop=stop,
            ) as client,
            pytest.raises(StoppedError),
        ):
            client.retrieve_container("cntr_1")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10.0  # not the 60 s the server asked for
    assert len(script.requests) == 1


def test_once_stopped_a_client_sends_nothing() -> None:
    stop = threading.Event()
    stop.set()
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(script, stop=stop) as client, pytest.raises(StoppedError):
        client.retrieve_container("cntr_1")
    assert script.requests == []


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
def test_retryable_statuses_are_retried(status: int) -> None:
    script = Script(error(status, "transient"), httpx.Response(200, json=CONTAINER))
    with make_client(script) as client:
        assert client.retrieve_container("cntr_1").id == "cntr_1"
    assert len(script.requests) == 2


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, BadRequestError), (401, AuthenticationError), (404, NotFoundError)],
)
def test_non_retryable_statuses_are_not_retried(status: int, error_class: type) -> None:
    script = Script(error(status, "no"), httpx.Response(200, json=CONTAINER))
    with make_client(script) as client, pytest.raises(error_class):
        client.retrieve_container("cntr_1")
    assert len(script.requests) == 1


def test_exhausted_retries_map_to_rate_limited_and_transport_errors() -> None:
    with make_client(Script(error(429, "slow")), max_retries=2) as client:
        with pytest.raises(RateLimitedError):
            client.retrieve_container("cntr_1")
        assert client.stats.total == 3
    refused = httpx.ConnectError("refused")
    with (
        make_client(Script(refused), max_retries=1) as client,
        pytest.raises(TransportError, match="cannot connect"),
    ):
        next(client.iter_containers())


def test_expired_container_maps_to_its_error_and_is_not_retried() -> None:
    litellm = "litellm.BadRequestError: OpenAIException - Container is expired."
    script = Script(error(400, litellm))
    with make_client(script) as client, pytest.raises(ContainerExpiredError):
        list(client.iter_files("cntr_1"))
    assert len(script.requests) == 1


def test_retrieve_can_require_a_running_container() -> None:
    script = Script(httpx.Response(200, json={**CONTAINER, "status": "expired"}))
    with make_client(script) as client:
        assert client.retrieve_container("cntr_1").status == "expired"
        with pytest.raises(ContainerExpiredError, match="expired, not running"):
            client.retrieve_container("cntr_1", require_running=True)


# -- uploads are not idempotent --------------------------------------------------


def test_dropped_connection_during_upload_is_outcome_unknown_and_not_retried() -> None:
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    script = Script(dropped, httpx.Response(200, json=FILE))
    with make_client(script) as client, pytest.raises(OutcomeUnknownError) as caught:
        client.create_file("cntr_1", b"abc", filename="a.txt")
    assert len(script.requests) == 1
    assert caught.value.filename == "a.txt"
    assert "next listing" in caught.value.message


def test_5xx_after_an_upload_is_outcome_unknown() -> None:
    script = Script(error(500, "oops"), httpx.Response(200, json=FILE))
    with make_client(script) as client, pytest.raises(OutcomeUnknownError):
        client.create_file("cntr_1", b"abc", filename="a.txt")
    assert len(script.requests) == 1


def test_upload_is_retried_when_the_server_cannot_have_stored_it(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"abc")
    script = Script(
        httpx.ConnectError("refused"),
        error(429, "slow", {"retry-after-ms": "10"}),
        httpx.Response(200, json=FILE),
    )
    with make_client(script) as client:
        assert client.create_file("cntr_1", source, filename="a.txt").id == "cfile_1"
    assert len(script.requests) == 3
    assert all(b"abc" in request.content for request in script.requests)


# -- secrets ---------------------------------------------------------------------


def test_the_key_never_appears_in_errors_even_when_the_server_echoes_it() -> None:
    script = Script(error(401, f"Incorrect API key provided: {KEY}."))
    with make_client(script) as client, pytest.raises(AuthenticationError) as caught:
        client.retrieve_container("cntr_1")
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.args)
    assert KEY not in repr(client)


# -- pagination ------------------------------------------------------------------


def pager(total: int, *, opaque: bool) -> Callable[[httpx.Request], httpx.Response]:
    """A list endpoint over `total` files, with id cursors or Bifrost's opaque ones."""
    ids = [f"cfile_{n:04d}" for n in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        after = request.url.params.get("after")
        if opaque:
            start = int(base64.b64decode(after).decode()) if after else 0
        else:
            start = ids.index(after) + 1 if after else 0
        chunk = ids[start : start + limit]
        more = start + limit < total
        body: dict[str, Any] = {
            "object": "list",
            "data": [{**FILE, "id": i} for i in chunk],
            "first_id": chunk[0] if chunk else None,
            "last_id": chunk[-1] if chunk else None,
        }
        if opaque:
            if more:
                body["has_more"] = True
            body["after"] = base64.b64encode(str(start + limit).encode()).decode()
        else:
            body["has_more"] = more
        return httpx.Response(200, json=body)

    return handler


@pytest.mark.parametrize("opaque", [False, True])
def test_pagination_over_250_items_in_both_cursor_styles(opaque: bool) -> None:
    calls: list[httpx.Request] = []
    inner = pager(250, opaque=opaque)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return inner(request)

    with make_client(handler) as client:
        ids = [f.id for f in client.iter_files("cntr_1")]
    assert ids == [f"cfile_{n:04d}" for n in range(250)]
    assert len(calls) == 3
    assert all(c.url.params["limit"] == "100" for c in calls)


def test_a_page_that_repeats_its_cursor_raises_instead_of_looping() -> None:
    # New items on each page, but the same cursor every time.
    pages = [
        {"object": "list", "data": [{**FILE, "id": f"f{n}"}], "has_more": True, "after": "same"}
        for n in range(2)
    ]
    script = Script(*(httpx.Response(200, json=page) for page in pages))
    with make_client(script) as client, pytest.raises(ProtocolError, match="repeats cursor"):
        list(client.iter_files("cntr_1"))
    assert len(script.requests) == 2


def test_an_empty_page_claiming_more_raises() -> None:
    page = {"object": "list", "data": [], "has_more": True}
    with (
        make_client(Script(httpx.Response(200, json=page))) as client,
        pytest.raises(ProtocolError, match="no cursor"),
    ):
        list(client.iter_files("cntr_1"))


def test_empty_pages_with_fresh_cursors_end_in_an_error_not_a_loop() -> None:
    """An empty page that claims more is followed (a filtering server may send one);
    an endless run of them, each with a new cursor, stops after ``EMPTY_PAGES``."""
    first = {"data": [{**FILE, "id": "f0"}], "has_more": True, "after": "c0"}
    empty = {"data": [], "has_more": True, "after": "c1"}
    last = {"data": [FILE], "has_more": False}
    one_empty = Script(*(httpx.Response(200, json=page) for page in [first, empty, last]))
    with make_client(one_empty) as client:
        assert [f.id for f in client.iter_files("cntr_1")] == ["f0", FILE["id"]]

    asked = 0

    def endless(request: httpx.Request) -> httpx.Response:
        nonlocal asked
        asked += 1
        if asked > 1 + EMPTY_PAGES:
            pytest.fail("the listing did not stop")
        page = first if asked == 1 else empty
        return httpx.Response(200, json={**page, "after": f"c{asked}"})

    with (
        make_client(endless) as client,
        pytest.raises(ProtocolError, match=f"{EMPTY_PAGES} empty pages in a row"),
    ):
        list(client.iter_files("cntr_1"))
    assert asked == 1 + EMPTY_PAGES


def test_missing_has_more_means_the_last_page() -> None:
    page = {"object": "list", "data": [FILE], "first_id": "cfile_1", "last_id": "cfile_1"}
    script = Script(httpx.Response(200, json=page))
    with make_client(script) as client:
        assert [f.id for f in client.iter_files("cntr_1")] == ["cfile_1"]
    assert len(script.requests) == 1


@pytest.mark.parametrize("flag", ["missing", "yes", 1, None])
def test_a_full_page_without_a_boolean_has_more_is_not_the_end(flag: object) -> None:
    inner = pager(250, opaque=False)

    def handler(request: httpx.Request) -> httpx.Response:
        body = inner(request).json()
        del body["has_more"]
        if flag != "missing":
            body["has_more"] = flag
        return httpx.Response(200, json=body)

    with make_client(handler) as client:
        ids = [f.id for f in client.iter_files("cntr_1")]
    assert ids == [f"cfile_{n:04d}" for n in range(250)]


def test_has_more_as_a_string_is_read_even_on_a_page_the_server_cut_short() -> None:
    # A server that caps pages at 3 items and sends has_more as "true"/"false".
    ids = [f"cfile_{n:04d}" for n in range(7)]

    def handler(request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("after")
        start = ids.index(after) + 1 if after else 0
        chunk = ids[start : start + 3]
        more = "true" if start + 3 < len(ids) else "False"
        body = {"object": "list", "data": [{**FILE, "id": i} for i in chunk], "has_more": more}
        return httpx.Response(200, json=body)

    with make_client(handler) as client:
        assert [f.id for f in client.iter_files("cntr_1")] == ids


def test_container_name_filter_is_applied_client_side_too() -> None:
    # LiteLLM drops the name filter: every container comes back.
    page = {
        "object": "list",
        "data": [{**CONTAINER, "id": "a", "name": "docs"}, {**CONTAINER, "id": "b", "name": "x"}],
        "has_more": False,
    }
    script = Script(httpx.Response(200, json=page))
    with make_client(script) as client:
        assert [c.id for c in client.iter_containers(name="docs")] == ["a"]
    assert script.requests[0].url.params["name"] == "docs"


# -- tolerant models and protocol errors -------------------------------------------


def test_models_tolerate_unknown_fields_null_bytes_and_missing_optionals() -> None:
    assistant = {"id": "x" * 120, "path": "/mnt/data/../a\x00b", "bytes": None, "extra": [1]}
    page = {"object": "list", "data": [assistant], "has_more": False}
    with make_client(Script(httpx.Response(200, json=page))) as client:
        (file,) = client.iter_files("cntr_1")
    assert file.bytes is None
    assert file.id == "x" * 120
    assert file.model_extra == {"extra": [1]}
    assert not file.is_user_upload


def test_a_negative_size_in_a_listing_is_read_as_unknown() -> None:
    page = {"object": "list", "data": [{"id": "f", "bytes": -5}, {"id": "g", "bytes": 0}]}
    with make_client(Script(httpx.Response(200, json=page))) as client:
        assert [file.bytes for file in client.iter_files("cntr_1")] == [None, 0]


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200),
        httpx.Response(200, json={"id": "cfile_1", "object": "container.file.deleted"}),
    ],
)
def test_delete_accepts_an_answer_with_or_without_a_body(answer: httpx.Response) -> None:
    with make_client(Script(answer)) as client:
        assert client.delete_file("cntr_1", "cfile_1") is True


def test_delete_of_a_file_already_gone_is_done() -> None:
    with make_client(Script(error(404, "not found"))) as client:
        assert client.delete_file("cntr_1", "cfile_1") is False
        with pytest.raises(NotFoundError):
            client.delete_file("cntr_1", "cfile_1", missing_ok=False)


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (httpx.Response(200, content=b"<html>gateway</html>"), "not JSON"),
        (httpx.Response(200, json=[1, 2]), "not a JSON object"),
        (httpx.Response(200, json={"object": "container"}), "shape at id"),
    ],
)
def test_answers_that_are_not_the_api_raise_protocol_errors(
    answer: httpx.Response, match: str
) -> None:
    with make_client(Script(answer)) as client, pytest.raises(ProtocolError, match=match):
        client.retrieve_container("cntr_1")


def test_stats_count_requests_by_operation_and_status() -> None:
    script = Script(error(503, "x"), httpx.Response(200, json=CONTAINER))
    with make_client(script) as client:
        client.retrieve_container("cntr_1")
        assert client.stats.by_operation() == {"retrieve_container": 2}
        assert client.stats.by_status() == {
            ("retrieve_container", "503"): 1,
            ("retrieve_container", "200"): 1,
        }


def test_create_container_sends_expiry_and_memory() -> None:
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(script) as client:
        client.create_container("docs", expires_after_minutes=30, memory_limit="4g")
    assert json.loads(script.requests[0].content) == {
        "name": "docs",
        "expires_after": {"anchor": "last_active_at", "minutes": 30},
        "memory_limit": "4g",
    }


def test_a_429_throttles_the_pacer_and_every_request_waits_the_hint() -> None:
    clock = FakeClock(now=0.0)
    pacer = Pacer(monotonic=clock.time, sleep=clock.sleep)
    script = Script(
        httpx.Response(200, json=CONTAINER),
        error(429, "slow down", {"retry-after-ms": "2000"}),
        httpx.Response(200, json=CONTAINER),
        httpx.Response(404, json={"error": {"message": "gone"}}),
        error(500, "oops"),
        httpx.Response(200, json=CONTAINER),
    )
    with make_client(script, clock, pacer=pacer) as client:
        client.retrieve_container("cntr_1")
        assert pacer.rate is None  # nothing limited before the server pushes back
        client.retrieve_container("cntr_1")  # 429, retried after its hint
        assert pacer.throttles == 1
        assert pacer.rate is not None
        assert clock.now >= 2.0
        with pytest.raises(NotFoundError):
            client.retrieve_container("cntr_1")
        client.retrieve_container("cntr_1")  # a 500 is retried: not a throttle
    assert pacer.throttles == 1
    assert len(script.requests) == 6


def test_credentials_in_the_base_url_are_refused_not_silently_used() -> None:
    with pytest.raises(ConfigError, match="must not contain a user or password") as caught:
        ContainersClient("sk-key-123456", base_url="http://me:hunter2@gateway.test/v1")
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize("bad_id", ["", ".", ".."])
def test_dot_ids_are_refused_before_they_reach_a_url(bad_id: str) -> None:
    script = Script(httpx.Response(200))
    with make_client(script) as client, pytest.raises(ProtocolError, match="refusing"):
        client.delete_file("cntr_1", bad_id)
    assert script.requests == []


@pytest.mark.parametrize(
    ("message", "expired"),
    [
        ("Container is expired.", True),
        ("litellm.BadRequestError: OpenAIException - Container is expired.", True),
        ("The container cntr_1 has expired", True),
        ("File 'expired_tokens.csv' is too large.", False),
        ("Your API key expired", False),
    ],
)
def test_only_a_container_expiry_counts_as_one(message: str, expired: bool) -> None:
    error_class = ContainerExpiredError if expired else BadRequestError
    with make_client(Script(error(400, message))) as client, pytest.raises(error_class):
        client.retrieve_container("cntr_1")


def test_a_gateway_that_ignores_the_cursor_is_caught_not_followed_forever() -> None:
    pages = iter(range(1_000))

    def handler(request: httpx.Request) -> httpx.Response:
        # Always the first page, each time with a brand-new opaque cursor.
        body = {"object": "list", "data": [FILE], "has_more": True, "after": f"c{next(pages)}"}
        return httpx.Response(200, json=body)

    with make_client(handler) as client, pytest.raises(ProtocolError, match="starts again"):
        list(client.iter_files("cntr_1"))


def test_creating_a_container_is_not_retried_after_the_body_was_sent() -> None:
    script = Script(error(502, "bad gateway"), httpx.Response(200, json=CONTAINER))
    with make_client(script) as client, pytest.raises(OutcomeUnknownError) as caught:
        client.create_container("docs")
    assert len(script.requests) == 1
    assert caught.value.operation == "create_container"


class _Dribble(httpx.SyncByteStream):
    """A body that arrives a little at a time, each piece well within any read timeout."""

    def __init__(self, pieces: int, pause: float) -> None:
        self.pieces, self.pause = pieces, pause

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.pieces):
            time.sleep(self.pause)
            yield b" "
        yield json.dumps(CONTAINER).encode()


def test_an_answer_dribbled_past_the_request_deadline_is_given_up() -> None:
    attempts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        return httpx.Response(200, stream=_Dribble(pieces=20, pause=0.02))

    with (
        make_client(handler, request_deadline=0.1, max_retries=1) as client,
        pytest.raises(TransportError, match="request_deadline"),
    ):
        client.retrieve_container("cntr_1")
    assert len(attempts) == 2
    with make_client(handler, request_deadline=30.0) as patient:
        assert patient.retrieve_container("cntr_1").id == "cntr_1"


def test_a_download_dribbled_past_the_request_deadline_is_given_up() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_Dribble(pieces=20, pause=0.02))

    with (
        make_client(handler, request_deadline=0.1, max_retries=0) as client,
        pytest.raises(TransportError, match="request_deadline"),
    ):
        client.download_file("cntr_1", "cfile_1", io.BytesIO())
