"""The nine operations over ``httpx.MockTransport``: shapes, pagination, gateway styles,
expiry, assistant files and filenames."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from cntr_sync.emulator import Emulator, GatewayStyle, ManualClock


def make_container(client: httpx.Client, name: str = "box", **extra: Any) -> str:
    response = client.post("/containers", json={"name": name, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def upload(client: httpx.Client, container_id: str, name: str, content: bytes) -> dict[str, Any]:
    response = client.post(f"/containers/{container_id}/files", files={"file": (name, content)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def collect(client: httpx.Client, url: str, **params: Any) -> list[str]:
    """Follow ``after`` (a response token if present, else the last id) to the end."""
    seen: list[str] = []
    after: str | None = None
    for _ in range(1000):
        query = dict(params)
        if after is not None:
            query["after"] = after
        page = client.get(url, params=query).json()
        seen.extend(item["id"] for item in page["data"])
        if not page.get("has_more", False):
            return seen
        after = page.get("after", page["last_id"])
    raise AssertionError("pagination did not end")


# containers


def test_create_container_defaults_and_shape(client: httpx.Client, clock: ManualClock) -> None:
    response = client.post("/containers", json={"name": "My Container", "skills": []})
    assert response.status_code == 200
    body = response.json()
    assert re.fullmatch(r"cntr_[0-9a-f]{48}", body["id"])
    assert body == {
        "id": body["id"],
        "object": "container",
        "name": "My Container",
        "created_at": int(clock.now),
        "status": "running",
        "expires_after": {"anchor": "last_active_at", "minutes": 20},
        "last_active_at": int(clock.now),
        "memory_limit": "1g",
    }


def test_create_container_options_and_validation(client: httpx.Client) -> None:
    created = client.post(
        "/containers",
        json={
            "name": "big",
            "memory_limit": "16g",
            "expires_after": {"anchor": "last_active_at", "minutes": 5},
        },
    ).json()
    assert created["memory_limit"] == "16g"
    assert created["expires_after"] == {"anchor": "last_active_at", "minutes": 5}
    for bad in (
        {},
        {"name": 3},
        {"name": "x", "memory_limit": "2g"},
        {"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}},
        {"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": "5"}},
    ):
        response = client.post("/containers", json=bad)
        assert response.status_code == 400, bad
        assert error_of(response)["type"] == "invalid_request_error"
    assert client.post("/containers", content=b"{not json").status_code == 400


def test_list_containers_order_pagination_and_name_filter(client: httpx.Client) -> None:
    ids = [make_container(client, name=f"c{i % 3}") for i in range(7)]
    default = client.get("/containers").json()
    assert [c["id"] for c in default["data"]] == ids[::-1]
    assert default["first_id"] == ids[-1]
    assert default["last_id"] == ids[0]
    assert default["has_more"] is False
    assert collect(client, "/containers", limit=2, order="asc") == ids
    assert collect(client, "/containers", limit=3, order="desc") == ids[::-1]
    first = client.get("/containers", params={"limit": 2, "order": "asc"}).json()
    assert first["has_more"] is True
    assert [c["id"] for c in first["data"]] == ids[:2]
    named = client.get("/containers", params={"name": "c1", "order": "asc"}).json()
    assert [c["id"] for c in named["data"]] == [ids[1], ids[4]]
    empty = client.get("/containers", params={"name": "nobody"}).json()
    assert empty == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"order": "sideways"}, {"after": "cntr_nope"}],
)
def test_list_parameters_are_checked(client: httpx.Client, params: dict[str, Any]) -> None:
    response = client.get("/containers", params=params)
    assert response.status_code == 400
    assert error_of(response)["param"] in params


def test_limit_bounds_accepted(client: httpx.Client) -> None:
    for limit in (1, 100):
        assert client.get("/containers", params={"limit": limit}).status_code == 200


def test_paging_continues_after_a_deleted_item(client: httpx.Client) -> None:
    ids = [make_container(client) for _ in range(4)]
    page = client.get("/containers", params={"limit": 2, "order": "asc"}).json()
    client.delete(f"/containers/{page['last_id']}")
    rest = client.get("/containers", params={"order": "asc", "after": page["last_id"]}).json()
    assert [c["id"] for c in rest["data"]] == ids[2:]


def test_retrieve_and_delete_container(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    file_id = upload(client, container_id, "a.txt", b"abc")["id"]
    blob = emulator.blob_path(container_id, file_id)
    assert blob is not None and blob.exists()
    assert client.get(f"/containers/{container_id}").json()["id"] == container_id
    deleted = client.delete(f"/containers/{container_id}")
    assert deleted.json() == {"id": container_id, "object": "container.deleted", "deleted": True}
    assert not blob.exists()
    missing = client.get(f"/containers/{container_id}")
    assert missing.status_code == 404
    assert error_of(missing)["message"] == "Container not found"
    assert client.delete(f"/containers/{container_id}").status_code == 404
    assert client.get(f"/containers/{container_id}/files").status_code == 404


@pytest.mark.parametrize("prefix", ["", "/v1", "/openai", "/openai/v1"])
def test_every_route_prefix_is_served_by_a_gateway_style(emulator: Emulator, prefix: str) -> None:
    emulator.set_gateway(GatewayStyle(api_prefixes=(prefix,)))
    with httpx.Client(
        transport=httpx.MockTransport(emulator.handle), base_url=f"http://gw.test{prefix}"
    ) as gateway_client:
        container_id = make_container(gateway_client)
        assert gateway_client.get(f"/containers/{container_id}/files").status_code == 200


@pytest.mark.parametrize("prefix", ["", "/openai", "/openai/v1", "/v1/v1"])
def test_only_v1_is_served_by_default(emulator: Emulator, prefix: str) -> None:
    """A base URL missing ``/v1`` fails here as it does against api.openai.com."""
    with httpx.Client(
        transport=httpx.MockTransport(emulator.handle), base_url=f"http://gw.test{prefix}"
    ) as gateway_client:
        response = gateway_client.get("/containers")
    assert response.status_code == 404
    assert error_of(response)["message"] == f"Invalid URL (GET {prefix}/containers)"
    assert emulator.counts()["unknown"] == 1


def test_a_gateway_style_serves_several_prefixes(emulator: Emulator) -> None:
    emulator.set_gateway(GatewayStyle(api_prefixes=("/openai/v1", "/openai")))
    for prefix in ("/openai/v1", "/openai"):
        with httpx.Client(
            transport=httpx.MockTransport(emulator.handle), base_url=f"http://gw.test{prefix}"
        ) as gateway_client:
            assert gateway_client.get("/containers").status_code == 200
    assert emulator.counts()["list_containers"] == 2


@pytest.mark.parametrize("bad", [(), ("v1",), ("/v1/",), ("/v 1",)])
def test_a_prefix_must_be_path_segments(bad: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        GatewayStyle(api_prefixes=bad)


def test_unknown_route_and_wrong_method(client: httpx.Client, emulator: Emulator) -> None:
    unknown = client.get("/assistants")
    assert unknown.status_code == 404
    assert "Invalid URL" in error_of(unknown)["message"]
    assert client.get("/containers/a/b").status_code == 404
    assert client.put("/containers").status_code == 405
    assert client.post("/containers/x/files/y").status_code == 405
    assert emulator.counts()["unknown"] == 4


# files


def test_upload_list_retrieve_content_delete(client: httpx.Client, clock: ManualClock) -> None:
    container_id = make_container(client)
    created = upload(client, container_id, "notes.txt", b"hello world")
    assert re.fullmatch(r"cfile_[0-9a-f]{32}", created["id"])
    assert re.fullmatch(r"/mnt/data/[0-9a-f]{32}-notes\.txt", created["path"])
    assert created == {
        "id": created["id"],
        "object": "container.file",
        "created_at": int(clock.now),
        "bytes": 11,
        "container_id": container_id,
        "path": created["path"],
        "source": "user",
    }
    url = f"/containers/{container_id}/files/{created['id']}"
    assert client.get(url).json() == created
    content = client.get(url + "/content")
    assert content.content == b"hello world"
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-length"] == "11"
    listed = client.get(f"/containers/{container_id}/files").json()
    assert listed["data"] == [created]
    deleted = client.delete(url).json()
    assert deleted == {"id": created["id"], "object": "container.file.deleted", "deleted": True}
    gone = client.get(url)
    assert gone.status_code == 404
    assert error_of(gone)["message"].startswith(
        f"File {created['id']} not found on container {container_id}"
    )
    assert client.get(url + "/content").status_code == 404
    assert client.delete(url).status_code == 404


def test_duplicate_name_creates_a_new_file(client: httpx.Client) -> None:
    container_id = make_container(client)
    first = upload(client, container_id, "same.txt", b"one")
    second = upload(client, container_id, "same.txt", b"two!")
    assert first["id"] != second["id"]
    listed = client.get(f"/containers/{container_id}/files", params={"order": "asc"}).json()
    assert [f["id"] for f in listed["data"]] == [first["id"], second["id"]]
    content = client.get(f"/containers/{container_id}/files/{first['id']}/content")
    assert content.content == b"one"


def test_file_pagination(client: httpx.Client) -> None:
    container_id = make_container(client)
    ids = [upload(client, container_id, f"f{i}.txt", b"x")["id"] for i in range(25)]
    url = f"/containers/{container_id}/files"
    assert len(client.get(url).json()["data"]) == 20
    assert collect(client, url, limit=7, order="asc") == ids
    assert collect(client, url, limit=100) == ids[::-1]


def test_upload_without_file_field_is_refused(client: httpx.Client) -> None:
    container_id = make_container(client)
    url = f"/containers/{container_id}/files"
    response = client.post(url, data={"purpose": "x"}, files={"other": ("a.txt", b"x")})
    assert response.status_code == 400
    assert error_of(response)["param"] == "file"
    assert (
        client.post(url, content=b"raw", headers={"content-type": "text/plain"}).status_code == 400
    )
    truncated = client.post(
        url,
        content=b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        headers={"content-type": "multipart/form-data; boundary=bnd"},
    )
    assert truncated.status_code == 400


def test_json_file_id_create(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    url = f"/containers/{container_id}/files"
    missing = client.post(url, json={"file_id": "file-abc"})
    assert missing.status_code == 404
    emulator.add_openai_file("file-abc", "report.csv", b"a,b\n1,2\n")
    created = client.post(url, json={"file_id": "file-abc"}).json()
    assert created["bytes"] == 8
    assert created["path"].endswith("-report.csv")
    content = client.get(f"{url}/{created['id']}/content").content
    assert content == b"a,b\n1,2\n"
    with_files = client.post("/containers", json={"name": "pre", "file_ids": ["file-abc"]}).json()
    pre_listed = client.get(f"/containers/{with_files['id']}/files").json()["data"]
    assert [f["bytes"] for f in pre_listed] == [8]
    emulator.set_gateway(GatewayStyle(json_file_id=False))
    assert client.post(url, json={"file_id": "file-abc"}).status_code == 400


# gateway styles


def test_plain_paths_and_dropped_filenames(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    emulator.set_gateway(GatewayStyle(path_style="plain"))
    assert upload(client, container_id, "a b.txt", b"1")["path"] == "/mnt/data/a b.txt"
    emulator.set_gateway(GatewayStyle(path_style="plain", drop_filenames=True))
    assert upload(client, container_id, "named.txt", b"1")["path"] == "/mnt/data/file"
    emulator.set_gateway(GatewayStyle(drop_filenames=True))
    assert re.fullmatch(
        r"/mnt/data/[0-9a-f]{32}-file", upload(client, container_id, "x", b"")["path"]
    )


def test_opaque_cursors(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_gateway(GatewayStyle(cursor_style="opaque"))
    container_id = make_container(client)
    ids = [upload(client, container_id, f"{i}.txt", b"x")["id"] for i in range(5)]
    url = f"/containers/{container_id}/files"
    first = client.get(url, params={"limit": 2, "order": "asc"}).json()
    assert first["has_more"] is True
    assert isinstance(first["after"], str) and first["after"] not in ids
    refused = client.get(url, params={"limit": 2, "order": "asc", "after": first["last_id"]})
    assert refused.status_code == 400
    assert "invalid cursor" in error_of(refused)["message"]
    assert collect(client, url, limit=2, order="asc") == ids
    last = client.get(url, params={"limit": 10}).json()
    assert "has_more" not in last
    assert client.get("/containers", params={"after": "garbage!"}).status_code == 400


def test_long_ids_are_opaque(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_gateway(GatewayStyle(long_ids=True))
    container_id = make_container(client)
    assert len(container_id) > 64 and not container_id.startswith("cntr_")
    file_id = upload(client, container_id, "a.txt", b"abc")["id"]
    assert len(file_id) > 64 and not file_id.startswith("cfile_")
    assert client.get(f"/containers/{container_id}/files/{file_id}/content").content == b"abc"
    assert collect(client, f"/containers/{container_id}/files", limit=1) == [file_id]


# filenames


@pytest.mark.parametrize(
    "name",
    ["データ 📄.txt", 'quote"d.txt', "back\\slash.txt", "semi;colon=x.txt", "100% sure.txt"],
)
def test_filename_round_trip(client: httpx.Client, emulator: Emulator, name: str) -> None:
    emulator.set_gateway(GatewayStyle(path_style="plain"))
    container_id = make_container(client)
    assert upload(client, container_id, name, b"x")["path"] == f"/mnt/data/{name}"


def _raw_upload(client: httpx.Client, container_id: str, disposition: str) -> httpx.Response:
    body = (
        f"--bnd\r\nContent-Disposition: {disposition}\r\n"
        "Content-Type: application/octet-stream\r\n\r\nDATA\r\n--bnd--\r\n"
    ).encode()
    return client.post(
        f"/containers/{container_id}/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=bnd"},
    )


def test_rfc2231_and_percent_encoded_filenames(client: httpx.Client, emulator: Emulator) -> None:
    emulator.set_gateway(GatewayStyle(path_style="plain"))
    container_id = make_container(client)
    extended = _raw_upload(
        client,
        container_id,
        'form-data; name="file"; filename="fallback.txt"; '
        "filename*=utf-8''%E4%BD%A0%E5%A5%BD.txt",
    )
    assert extended.json()["path"] == "/mnt/data/你好.txt"
    assert extended.json()["bytes"] == 4
    literal = _raw_upload(client, container_id, 'form-data; name="file"; filename="a%41.txt"')
    assert literal.json()["path"] == "/mnt/data/a%41.txt"
    emulator.set_gateway(GatewayStyle(path_style="plain", percent_decode_filenames=True))
    decoded = _raw_upload(
        client, container_id, 'form-data; name="file"; filename="%E4%BD%A0 x.txt"'
    )
    assert decoded.json()["path"] == "/mnt/data/你 x.txt"


# expiry


def test_expiry_deletes_files_and_refuses_calls(
    client: httpx.Client, emulator: Emulator, clock: ManualClock
) -> None:
    container_id = make_container(client, expires_after={"anchor": "last_active_at", "minutes": 1})
    file_id = upload(client, container_id, "a.txt", b"abc")["id"]
    blob = emulator.blob_path(container_id, file_id)
    assert blob is not None and blob.exists()
    clock.now += 61
    retrieved = client.get(f"/containers/{container_id}")
    assert retrieved.status_code == 200
    assert retrieved.json()["status"] == "expired"
    assert not blob.exists()
    expected = {
        "error": {
            "message": "Container is expired.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    base = f"/containers/{container_id}/files"
    for response in (
        client.get(base),
        client.post(base, files={"file": ("b.txt", b"b")}),
        client.get(f"{base}/{file_id}"),
        client.get(f"{base}/{file_id}/content"),
        client.delete(f"{base}/{file_id}"),
    ):
        assert response.status_code == 400
        assert response.json() == expected
    listed = client.get("/containers").json()["data"]
    assert [(c["id"], c["status"]) for c in listed] == [(container_id, "expired")]
    assert client.delete(f"/containers/{container_id}").status_code == 200


def test_activity_refreshes_expiry(
    client: httpx.Client, emulator: Emulator, clock: ManualClock
) -> None:
    container_id = make_container(client, expires_after={"anchor": "last_active_at", "minutes": 1})
    for call in (
        lambda: client.get(f"/containers/{container_id}"),
        lambda: client.get(f"/containers/{container_id}/files"),
        lambda: upload(client, container_id, "a.txt", b"a"),
    ):
        clock.now += 50
        call()
    clock.now += 50
    retrieved = client.get(f"/containers/{container_id}").json()
    assert retrieved["status"] == "running"
    assert retrieved["last_active_at"] == int(clock.now)
    # Listing containers is not activity on any one of them.
    clock.now += 50
    client.get("/containers")
    clock.now += 11
    assert client.get(f"/containers/{container_id}").json()["status"] == "expired"


def test_advance_clock_and_expire_now(client: httpx.Client, emulator: Emulator) -> None:
    first = make_container(client)
    second = make_container(client)
    emulator.advance_clock(20 * 60 + 1)
    assert client.get(f"/containers/{first}").json()["status"] == "expired"
    third = make_container(client)
    emulator.expire_container(third)
    assert client.get(f"/containers/{third}/files").status_code == 400
    assert client.get(f"/containers/{second}").json()["status"] == "expired"


# assistant files


HOSTILE_PATHS = [
    "../escape.txt",
    "/etc/passwd",
    "/mnt/data/nul\x00byte.txt",
    "/mnt/data/" + "long" * 300,
    "/mnt/data/a.png/mnt/data/b.png",
]


def test_assistant_files(client: httpx.Client, emulator: Emulator) -> None:
    container_id = make_container(client)
    added = [
        emulator.add_assistant_file(container_id, path, path.encode()) for path in HOSTILE_PATHS
    ]
    nulled = emulator.add_assistant_file(container_id, "/mnt/data/out.csv", b"1,2", bytes_null=True)
    missing = emulator.add_assistant_file(
        container_id, "/mnt/data/ghost.txt", None, content_missing=True
    )
    listed = collect(client, f"/containers/{container_id}/files", order="asc", limit=100)
    assert listed == [f["id"] for f in [*added, nulled, missing]]
    data = client.get(
        f"/containers/{container_id}/files", params={"order": "asc", "limit": 100}
    ).json()["data"]
    assert [f["path"] for f in data[:5]] == HOSTILE_PATHS
    assert {f["source"] for f in data} == {"assistant"}
    assert data[5]["bytes"] is None
    base = f"/containers/{container_id}/files"
    assert client.get(f"{base}/{nulled['id']}/content").content == b"1,2"
    assert client.get(f"{base}/{added[2]['id']}/content").content == HOSTILE_PATHS[2].encode()
    gone = client.get(f"{base}/{missing['id']}/content")
    assert gone.status_code == 404
    assert error_of(gone)["message"] == (
        f"File {missing['id']} not found on container {container_id}."
    )


def test_reset_wipes_everything(client: httpx.Client, emulator: Emulator, tmp_path: Path) -> None:
    container_id = make_container(client)
    upload(client, container_id, "a.txt", b"abc")
    emulator.set_gateway(GatewayStyle(path_style="plain"))
    emulator.advance_clock(5)
    emulator.reset()
    assert client.get("/containers").json()["data"] == []
    assert emulator.gateway == GatewayStyle()
    assert list((tmp_path / "emu" / "blobs").iterdir()) == []
    assert emulator.counts()["list_containers"] == 1


def test_async_client_through_mock_transport(emulator: Emulator) -> None:
    async def scenario() -> bytes:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(emulator.handle), base_url="http://emu.test/v1"
        ) as async_client:
            created = await async_client.post("/containers", json={"name": "async"})
            container_id = created.json()["id"]
            uploaded = await async_client.post(
                f"/containers/{container_id}/files", files={"file": ("a.bin", b"async bytes")}
            )
            content = await async_client.get(
                f"/containers/{container_id}/files/{uploaded.json()['id']}/content"
            )
            return content.content

    assert asyncio.run(scenario()) == b"async bytes"
