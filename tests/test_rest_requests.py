"""What a server receives from ``ContainersClient``, and how answers are read.

Requests are built and sent through httpx's public API; these pin the result on
the wire: the URL under a base URL with or without a trailing slash or a path,
the gateway's extra query parameters beside each call's own, JSON bodies,
cookies a gateway sets coming back, and compressed answers decoded once.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.errors import BadRequestError
from helpers import CONTAINER, FILE, Script

EXTRA_QUERY = {"provider": "openai", "api-version": "1"}
LIST_PAGE = {"object": "list", "data": [FILE], "has_more": False}


def make_client(handler: Script, base_url: str, **kwargs: object) -> ContainersClient:
    return ContainersClient(
        "sk-test",
        base_url=base_url,
        transport=httpx.MockTransport(handler),
        sleep=lambda _seconds: None,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("base_url", "prefix"),
    [
        ("http://gw.test/v1", "/v1"),
        ("http://gw.test/openai/v1/", "/openai/v1"),
        ("http://gw.test", ""),
        ("http://gw.test/", ""),
    ],
)
def test_each_call_reaches_its_path_under_the_base_url_with_every_query_parameter(
    base_url: str, prefix: str
) -> None:
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(script, base_url, extra_query=EXTRA_QUERY) as client:
        for _ in range(2):  # the second time from the URLs the client keeps
            script.answers = [httpx.Response(200, json=CONTAINER)]
            client.retrieve_container("cntr/1")  # an id with a slash stays one segment
            script.answers = [httpx.Response(200, json=LIST_PAGE)]
            list(client.iter_files("cntr_1", order="desc"))
            script.answers = [httpx.Response(200, json=FILE)]
            client.create_file("cntr_1", b"abc", filename="a.txt")
            script.answers = [httpx.Response(200, content=b"abc")]
            client.download_file("cntr_1", "cfile_1", io.BytesIO())
    sent = [
        (r.method, r.url.host, r.url.raw_path.partition(b"?")[0].decode(), r.url.params)
        for r in script.requests
    ]
    assert [(method, host, path) for method, host, path, _ in sent] == 2 * [
        ("GET", "gw.test", f"{prefix}/containers/cntr%2F1"),
        ("GET", "gw.test", f"{prefix}/containers/cntr_1/files"),
        ("POST", "gw.test", f"{prefix}/containers/cntr_1/files"),
        ("GET", "gw.test", f"{prefix}/containers/cntr_1/files/cfile_1/content"),
    ]
    listing = {"limit": "100", "order": "desc"}
    expected_queries = 2 * [EXTRA_QUERY, {**EXTRA_QUERY, **listing}, EXTRA_QUERY, EXTRA_QUERY]
    for (*_, params), expected in zip(sent, expected_queries, strict=True):
        assert sorted(params.multi_items()) == sorted(expected.items())  # each once


def test_a_json_body_arrives_as_utf8_json_with_its_content_type() -> None:
    script = Script(httpx.Response(200, json=CONTAINER))
    with make_client(script, "http://gw.test/v1") as client:
        client.create_container("ünï box", expires_after_minutes=5)
    request = script.requests[0]
    assert request.headers["content-type"] == "application/json"
    assert int(request.headers["content-length"]) == len(request.content)
    assert json.loads(request.content.decode("utf-8")) == {
        "name": "ünï box",
        "expires_after": {"anchor": "last_active_at", "minutes": 5},
    }


def test_cookies_a_gateway_sets_come_back_on_later_requests() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request.headers.get("cookie"))
        if len(seen) == 1:
            return httpx.Response(200, json=CONTAINER, headers={"set-cookie": "route=b7; Path=/"})
        if request.url.path.endswith("/files"):
            return httpx.Response(200, json=FILE)
        return httpx.Response(200, json=CONTAINER)

    with ContainersClient(
        "sk-test", base_url="http://gw.test/v1", transport=httpx.MockTransport(handler)
    ) as client:
        client.retrieve_container("cntr_1")
        client.create_file("cntr_1", b"abc", filename="a.txt")
        client.retrieve_container("cntr_1")
    assert seen == [None, "route=b7", "route=b7"]


class _Pieces(httpx.SyncByteStream):
    """A body sent in the pieces given, as a server's socket would deliver it."""

    def __init__(self, body: bytes, size: int) -> None:
        self.pieces = [body[i : i + size] for i in range(0, len(body), size)]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def gzipped(status: int, payload: object) -> httpx.Response:
    body = gzip.compress(json.dumps(payload).encode())
    headers = {"content-encoding": "gzip", "content-type": "application/json"}
    return httpx.Response(status, headers=headers, stream=_Pieces(body, 7))


def test_a_compressed_answer_is_decoded_once() -> None:
    error = {"error": {"message": "bad name", "type": "invalid_request_error"}}
    script = Script(gzipped(200, CONTAINER), gzipped(400, error))
    with make_client(script, "http://gw.test/v1") as client:
        assert client.retrieve_container("cntr_1").id == "cntr_1"
        with pytest.raises(BadRequestError, match="HTTP 400: bad name"):
            client.retrieve_container("cntr_1")
    assert "gzip" in script.requests[0].headers["accept-encoding"]
