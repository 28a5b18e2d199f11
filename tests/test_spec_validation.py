"""The contract harness must catch drift: hand-written servers, no emulator."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from spec_validation import SPEC_ENV_VAR, ValidatingTransport, load_spec, spec_path

Handler = Callable[[httpx.Request], httpx.Response]

BASE = "http://emulator/v1"
CONTAINER = {
    "id": "cntr_1",
    "object": "container",
    "name": "mirror",
    "created_at": 1747844794,
    "status": "running",
}
FILE = {
    "id": "cfile_1",
    "object": "container.file",
    "created_at": 1747848842,
    "bytes": 5,
    "container_id": "cntr_1",
    "path": "/mnt/data/a.txt",
    "source": "user",
}
ERROR = {
    "error": {
        "message": "No such file",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
}


def page(data: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }
    body.update(overrides)
    return body


def answer(body: Any, status: int = 200) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handler


@pytest.fixture
def exchange() -> Iterator[Callable[..., ValidatingTransport]]:
    """Send one request through a ValidatingTransport around a MockTransport."""
    clients: list[httpx.Client] = []

    def run(
        handler: Handler,
        method: str,
        url: str,
        *,
        base_url: str = BASE,
        allow_null_bytes: bool = False,
        **kwargs: Any,
    ) -> ValidatingTransport:
        transport = ValidatingTransport(
            httpx.MockTransport(handler), allow_null_bytes=allow_null_bytes
        )
        client = httpx.Client(transport=transport, base_url=base_url)
        clients.append(client)
        client.request(method, url, **kwargs)
        assert transport.validated == 1
        return transport

    yield run
    for client in clients:
        client.close()


def assert_fails(transport: ValidatingTransport, *fragments: str) -> None:
    with pytest.raises(AssertionError) as caught:
        transport.assert_clean()
    for fragment in fragments:
        assert fragment in str(caught.value), transport.failures


def test_correct_list_passes(exchange: Callable[..., ValidatingTransport]) -> None:
    exchange(answer(page([CONTAINER])), "GET", "/containers", params={"limit": 5}).assert_clean()


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8123/v1", "http://gw/openai/v1", "http://x"]
)
def test_any_base_url_prefix_passes(
    exchange: Callable[..., ValidatingTransport], base_url: str
) -> None:
    transport = exchange(answer(page([FILE])), "GET", "/containers/cntr_1/files", base_url=base_url)
    transport.assert_clean()


def test_list_missing_has_more_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    body = page([CONTAINER])
    del body["has_more"]
    transport = exchange(answer(body), "GET", "/containers")
    assert_fails(
        transport, "ListContainers GET /v1/containers", "'has_more' is a required property"
    )


def test_empty_list_with_null_ids_passes(exchange: Callable[..., ValidatingTransport]) -> None:
    body = page([])
    assert body["first_id"] is None
    assert body["last_id"] is None
    exchange(answer(body), "GET", "/containers/cntr_1/files").assert_clean()


def test_non_empty_list_with_null_last_id_fails(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    transport = exchange(answer(page([FILE], last_id=None)), "GET", "/containers/cntr_1/files")
    assert_fails(transport, "ListContainerFiles", "$.last_id", "None is not of type 'string'")


def test_empty_list_missing_ids_still_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    body = page([])
    del body["first_id"]
    transport = exchange(answer(body), "GET", "/containers")
    assert_fails(transport, "'first_id' is a required property")


ASSISTANT_FILE = {**FILE, "id": "cfile_2", "bytes": None, "source": "assistant"}


def test_null_bytes_fails_by_default(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer(page([ASSISTANT_FILE])), "GET", "/containers/cntr_1/files")
    assert_fails(transport, "$.data[0].bytes", "None is not of type 'integer'")
    transport = exchange(answer(ASSISTANT_FILE), "GET", "/containers/cntr_1/files/cfile_2")
    assert_fails(transport, "RetrieveContainerFile", "$.bytes")


def test_null_bytes_passes_when_opted_in(exchange: Callable[..., ValidatingTransport]) -> None:
    # Opt-in: the emulator can list files the model wrote with bytes null, as
    # real servers sometimes do.
    listing = exchange(
        answer(page([FILE, ASSISTANT_FILE])),
        "GET",
        "/containers/cntr_1/files",
        allow_null_bytes=True,
    )
    listing.assert_clean()
    single = exchange(
        answer(ASSISTANT_FILE), "GET", "/containers/cntr_1/files/cfile_2", allow_null_bytes=True
    )
    single.assert_clean()


def test_opt_in_covers_only_assistant_bytes(exchange: Callable[..., ValidatingTransport]) -> None:
    user_file = {**FILE, "bytes": None}
    transport = exchange(
        answer(page([user_file])), "GET", "/containers/cntr_1/files", allow_null_bytes=True
    )
    assert_fails(transport, "$.data[0].bytes")
    odd = {**ASSISTANT_FILE, "bytes": 5, "path": None}
    transport = exchange(
        answer(page([odd])), "GET", "/containers/cntr_1/files", allow_null_bytes=True
    )
    assert_fails(transport, "$.data[0].path")


def test_limit_not_integer_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer(page([])), "GET", "/containers", params={"limit": "abc"})
    assert_fails(transport, "ListContainers GET /v1/containers: request", "limit")


def test_bad_order_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer(page([])), "GET", "/containers", params={"order": "up"})
    assert_fails(transport, "order")


def test_unknown_path_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer({}), "GET", "/containers/cntr_1/files/cfile_1/content/extra")
    assert_fails(transport, "Path not found")
    transport = exchange(answer({}), "GET", "/files")
    assert_fails(transport, "GET /v1/files: request: path has no /containers part")


def test_unknown_method_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer(CONTAINER), "PUT", "/containers/cntr_1")
    assert_fails(transport, "Operation put not found")


def test_create_container_without_name_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer(CONTAINER), "POST", "/containers", json={"memory_limit": "4g"})
    assert_fails(transport, "CreateContainer POST /v1/containers: request", "'name' is a required")


def test_create_container_with_name_passes(exchange: Callable[..., ValidatingTransport]) -> None:
    body = {"name": "m", "expires_after": {"anchor": "last_active_at", "minutes": 20}}
    exchange(answer(CONTAINER), "POST", "/containers", json=body).assert_clean()


def test_container_missing_status_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    body = {k: v for k, v in CONTAINER.items() if k != "status"}
    transport = exchange(answer(body), "GET", "/containers/cntr_1")
    assert_fails(transport, "RetrieveContainer", "'status' is a required property")


def test_error_response_with_valid_body_passes(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    transport = exchange(answer(ERROR, status=404), "GET", "/containers/cntr_1/files/cfile_9")
    transport.assert_clean()


def test_error_response_with_bad_body_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer({"error": "x"}, 404), "GET", "/containers/cntr_1/files/cfile_9")
    assert_fails(transport, "response 404", "ErrorResponse at $.error")


def test_error_response_not_json_fails(exchange: Callable[..., ValidatingTransport]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="Bad Gateway")

    transport = exchange(handler, "GET", "/containers/cntr_1")
    assert_fails(transport, "response 502", "not JSON")


def test_rate_limit_is_validated_as_declared(exchange: Callable[..., ValidatingTransport]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=ERROR, headers={"Retry-After": "2"})

    exchange(handler, "GET", "/containers").assert_clean()
    transport = exchange(answer({"detail": "slow down"}, 429), "GET", "/containers")
    assert_fails(transport, "response 429", "'error' is a required property")


def test_delete_accepts_any_body(exchange: Callable[..., ValidatingTransport]) -> None:
    deleted = {"id": "cfile_1", "object": "container.file.deleted", "deleted": True}
    exchange(answer(deleted), "DELETE", "/containers/cntr_1/files/cfile_1").assert_clean()

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    exchange(empty, "DELETE", "/containers/cntr_1").assert_clean()


def test_file_content_checks_status_only(exchange: Callable[..., ValidatingTransport]) -> None:
    def content(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"\x00\xffraw", headers={"content-type": "text/x-odd"})

    exchange(content, "GET", "/containers/cntr_1/files/cfile_1/content").assert_clean()

    def created(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, content=b"raw")

    transport = exchange(created, "GET", "/containers/cntr_1/files/cfile_1/content")
    assert_fails(transport, "response 201")


def test_json_response_with_wrong_content_type_fails(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=json.dumps(CONTAINER))

    transport = exchange(handler, "GET", "/containers/cntr_1")
    assert_fails(transport, "RetrieveContainer", "text/plain")


def test_multipart_upload_reaches_server_intact(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    payload = bytes(range(256)) * 4 + "é\r\n--not-a-boundary".encode()
    seen: list[tuple[bytes, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.content, request.headers["content-type"]))
        return httpx.Response(200, json=FILE)

    files = {"file": ("dir/ünï code.bin", payload, "application/octet-stream")}
    transport = exchange(handler, "POST", "/containers/cntr_1/files", files=files)
    transport.assert_clean()

    expected = httpx.Request("POST", "http://x", files=files)
    body, content_type = seen[0]
    boundary = content_type.split("boundary=")[1].encode()
    assert content_type.startswith("multipart/form-data")
    assert body.replace(boundary, b"B") == expected.read().replace(
        expected.headers["content-type"].split("boundary=")[1].encode(), b"B"
    )
    assert payload in body


def test_streamed_multipart_upload_reaches_server_intact(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    """A one-shot generator body is read once and still forwarded whole."""
    chunks = [b"--b\r\n", b'Content-Disposition: form-data; name="file"; filename="a"\r\n\r\n']
    chunks += [b"x" * 1000, b"\r\n--b--\r\n"]
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json=FILE)

    transport = exchange(
        handler,
        "POST",
        "/containers/cntr_1/files",
        content=iter(chunks),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    transport.assert_clean()
    assert seen == [b"".join(chunks)]


def test_create_file_from_json_file_id(exchange: Callable[..., ValidatingTransport]) -> None:
    url = "/containers/cntr_1/files"
    exchange(answer(FILE), "POST", url, json={"file_id": "file-1"}).assert_clean()
    transport = exchange(answer(FILE), "POST", url, json={"file_id": 7})
    assert_fails(transport, "CreateContainerFile", "$.file_id")


def test_extra_query_and_headers_pass(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(
        answer(page([CONTAINER])),
        "GET",
        "/containers",
        params={"provider": "openai", "custom_llm_provider": "openai", "limit": "20"},
        headers={"custom-llm-provider": "openai", "x-bf-vk": "vk"},
    )
    transport.assert_clean()


def test_response_reaches_caller_intact() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=CONTAINER, headers={"x-request-id": "req_1"})

    transport = ValidatingTransport(httpx.MockTransport(handler))
    with httpx.Client(transport=transport, base_url=BASE) as client:
        response = client.get("/containers/cntr_1")
        with client.stream("GET", "/containers/cntr_1") as streamed:
            raw = b"".join(streamed.iter_raw())
    assert response.json() == CONTAINER
    assert response.headers["x-request-id"] == "req_1"
    assert json.loads(raw) == CONTAINER
    assert transport.validated == 2
    transport.assert_clean()


def test_assert_clean_lists_every_failure(exchange: Callable[..., ValidatingTransport]) -> None:
    transport = exchange(answer({"error": "x"}, 404), "GET", "/containers", params={"limit": "a"})
    assert len(transport.failures) == 2
    assert_fails(
        transport, "2 OpenAPI contract failure(s) in 1 exchange(s)", "limit", "ErrorResponse"
    )


def test_the_spec_ships_with_the_tests() -> None:
    assert spec_path({}).is_file()
    assert spec_path({}).parent.name == "data"


def test_missing_spec_fails_naming_the_path(tmp_path: Any) -> None:
    missing = str(tmp_path / "nowhere" / "openapi.yaml")
    environ = {SPEC_ENV_VAR: missing}
    assert str(spec_path(environ)) == missing
    with pytest.raises(pytest.fail.Exception, match=r"OpenAPI spec not found at .*nowhere"):
        load_spec(environ)


def test_undecodable_body_is_a_failure_not_a_crash(
    exchange: Callable[..., ValidatingTransport],
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "application/json", "content-encoding": "gzip"}
        return httpx.Response(200, stream=httpx.ByteStream(b"not gzip"), headers=headers)

    transport = ValidatingTransport(httpx.MockTransport(handler))
    # The caller still sees the real error.
    with (
        httpx.Client(transport=transport, base_url=BASE) as client,
        pytest.raises(httpx.DecodingError),
    ):
        client.get("/containers/cntr_1")
    assert_fails(transport, "RetrieveContainer", "validator crashed")
