"""The official ``openai`` SDK drives all nine operations against the emulator over real
HTTP: if the SDK parses our answers, our shapes match the published contract."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from cntr_sync.emulator import EmulatorServer, FaultConfig


@pytest.fixture
def sdk(server: EmulatorServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=0, timeout=10.0)
    try:
        yield client
    finally:
        client.close()


def test_containers_with_the_sdk(sdk: openai.OpenAI) -> None:
    created = sdk.containers.create(
        name="sdk box",
        expires_after={"anchor": "last_active_at", "minutes": 5},
        memory_limit="4g",
    )
    assert created.id.startswith("cntr_")
    assert created.object == "container"
    assert created.name == "sdk box"
    assert created.status == "running"
    assert created.memory_limit == "4g"
    assert created.expires_after is not None
    assert (created.expires_after.anchor, created.expires_after.minutes) == ("last_active_at", 5)
    assert created.last_active_at == created.created_at

    others = [sdk.containers.create(name=f"other {i}").id for i in range(3)]
    listed = [c.id for c in sdk.containers.list(limit=2, order="asc")]
    assert listed == [created.id, *others]
    assert [c.id for c in sdk.containers.list(name="other 1")] == [others[1]]

    retrieved = sdk.containers.retrieve(created.id)
    assert (retrieved.id, retrieved.name, retrieved.status) == (created.id, "sdk box", "running")
    assert sdk.containers.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.containers.retrieve(created.id)


def test_files_with_the_sdk(sdk: openai.OpenAI, tmp_path: Path) -> None:
    container_id = sdk.containers.create(name="files").id
    created = sdk.containers.files.create(container_id, file=("hello.txt", b"hello sdk"))
    assert created.id.startswith("cfile_")
    assert created.object == "container.file"
    assert created.container_id == container_id
    assert created.bytes == 9
    assert created.source == "user"
    assert re.fullmatch(r"/mnt/data/[0-9a-f]{32}-hello\.txt", created.path)

    on_disk = tmp_path / "from disk.bin"
    on_disk.write_bytes(bytes(range(256)) * 40)
    with on_disk.open("rb") as handle:
        from_handle = sdk.containers.files.create(container_id, file=handle)
    assert from_handle.bytes == 10240
    assert from_handle.path.endswith("-from disk.bin")

    retrieved = sdk.containers.files.retrieve(created.id, container_id=container_id)
    assert (retrieved.id, retrieved.bytes, retrieved.path) == (created.id, 9, created.path)
    content = sdk.containers.files.content.retrieve(from_handle.id, container_id=container_id)
    assert content.content == on_disk.read_bytes()

    assert sdk.containers.files.delete(created.id, container_id=container_id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.containers.files.retrieve(created.id, container_id=container_id)
    listed = [f.id for f in sdk.containers.files.list(container_id)]
    assert listed == [from_handle.id]


def test_file_listing_auto_paginates(sdk: openai.OpenAI) -> None:
    container_id = sdk.containers.create(name="many").id
    uploaded = [
        sdk.containers.files.create(container_id, file=(f"{i:03}.txt", b"x")).id for i in range(105)
    ]
    pages = sdk.containers.files.list(container_id, limit=100, order="asc")
    assert pages.has_more is True
    assert [f.id for f in pages] == uploaded
    newest_first = [f.id for f in sdk.containers.files.list(container_id, limit=40)]
    assert newest_first == uploaded[::-1]


def test_sdk_errors(sdk: openai.OpenAI, server: EmulatorServer) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.containers.retrieve("cntr_missing")
    assert missing.value.status_code == 404
    container_id = sdk.containers.create(name="short").id
    server.emulator.expire_container(container_id)
    assert sdk.containers.retrieve(container_id).status == "expired"
    with pytest.raises(openai.BadRequestError, match="expired"):
        sdk.containers.files.list(container_id).data  # noqa: B018 - the request is the point
    with pytest.raises(openai.BadRequestError, match="expired"):
        sdk.containers.files.create(container_id, file=("a.txt", b"a"))


def test_sdk_retries_honour_emulated_faults(server: EmulatorServer) -> None:
    server.emulator.set_faults(FaultConfig(retry_header="retry-after-ms", retry_value=0.01))
    server.emulator.fail_next("list_containers", 429)
    server.emulator.fail_next("list_containers", 503, headers={"retry-after-ms": "10"})
    with openai.OpenAI(api_key="test", base_url=server.base_url, max_retries=2) as retrying:
        assert list(retrying.containers.list()) == []
    assert server.emulator.counts()["list_containers"] == 3
