"""Requests as ``rest.Requester`` builds and sends them: what ``httpx.Client`` would send.

The requester builds requests from a URL merged once per path and hands them to the
client's transport itself; these pin that URL, query, headers, cookies and timeout
come out as ``Client.build_request`` makes them, and that cookies a gateway sets
come back on later requests.
"""

from __future__ import annotations

import httpx
import pytest

from cntr_sync.api import ContainersClient
from helpers import CONTAINER, FILE


def make_client(handler: httpx.MockTransport, **kwargs: object) -> ContainersClient:
    return ContainersClient(
        "sk-test",
        transport=handler,
        sleep=lambda _seconds: None,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "base_url", ["http://gw.test/v1", "http://gw.test/openai/v1/", "http://gw.test"]
)
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("containers", None),
        ("containers", {"limit": 100, "order": "asc", "after": "cntr_9"}),
        ("containers/cntr%2F1/files", {"provider": "mine"}),
        ("containers/cntr_1/files/cfile_1/content", None),
    ],
)
def test_requests_are_what_build_request_makes(
    base_url: str, path: str, params: dict[str, str | int] | None
) -> None:
    handler = httpx.MockTransport(lambda request: httpx.Response(200))
    with make_client(
        handler,
        base_url=base_url,
        extra_query={"provider": "openai", "api-version": "1"},
        extra_headers={"X-Extra": "yes"},
        organization="org-1",
    ) as client:
        rest = client._rest
        for _ in range(2):  # the second time from the kept URL
            built = rest.build("GET", path, params=params)
            expected = rest.http.build_request("GET", path, params=params)
            assert built.url == expected.url
            assert built.headers.multi_items() == expected.headers.multi_items()
            assert built.extensions == expected.extensions


def test_a_json_body_is_encoded_as_httpx_encodes_it() -> None:
    handler = httpx.MockTransport(lambda request: httpx.Response(200))
    with make_client(handler, base_url="http://gw.test/v1") as client:
        body = {"name": "ünï", "expires_after": {"anchor": "last_active_at", "minutes": 5}}
        built = client._rest.build("POST", "containers", json=body)
        expected = client._rest.http.build_request("POST", "containers", json=body)
        assert built.read() == expected.read()
        assert built.headers.multi_items() == expected.headers.multi_items()


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

    with make_client(httpx.MockTransport(handler), base_url="http://gw.test/v1") as client:
        client.retrieve_container("cntr_1")
        client.create_file("cntr_1", b"abc", filename="a.txt")
        client.retrieve_container("cntr_1")
    assert seen == [None, "route=b7", "route=b7"]


def test_an_answer_carries_its_request() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=CONTAINER)

    with make_client(httpx.MockTransport(handler), base_url="http://gw.test/v1") as client:
        rest = client._rest
        request = rest.build("GET", "containers/cntr_1")
        response = rest.send(request)
        assert response.request is request
        assert response.json()["id"] == "cntr_1"
