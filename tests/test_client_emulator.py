"""ContainersClient against the emulator; every exchange is validated against the spec."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, GatewayStyle
from cntr_sync.errors import (
    AuthenticationError,
    ContainerExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    ServerError,
)
from helpers import NoSleep
from spec_validation import ValidatingTransport


def test_all_nine_operations(api: ContainersClient, tmp_path: Path) -> None:
    created = api.create_container("docs", expires_after_minutes=30, memory_limit="4g")
    assert created.is_running and created.name == "docs"
    assert created.expires_after is not None and created.expires_after.minutes == 30
    assert [c.id for c in api.iter_containers(name="docs")] == [created.id]
    assert api.retrieve_container(created.id).memory_limit == "4g"

    source = tmp_path / "notes.md"
    source.write_bytes(b"# notes\n" * 1000)
    uploaded = api.create_file(created.id, source, filename="dir/notes.md")
    assert uploaded.bytes == 8000 and uploaded.source == "user"
    assert uploaded.path.endswith("dir/notes.md")
    assert [f.id for f in api.iter_files(created.id)] == [uploaded.id]
    assert api.retrieve_file(created.id, uploaded.id).path == uploaded.path

    sink = io.BytesIO()
    assert api.download_file(created.id, uploaded.id, sink) == 8000
    assert sink.getvalue() == source.read_bytes()

    assert api.delete_file(created.id, uploaded.id) is True
    assert list(api.iter_files(created.id)) == []
    api.delete_container(created.id)
    with pytest.raises(NotFoundError):
        api.retrieve_container(created.id)


def test_json_file_id_variant(api: ContainersClient, emu: Emulator) -> None:
    emu.add_openai_file("file-abc", "data.csv", b"a,b\n1,2\n")
    container = api.create_container("x")
    copied = api.create_file_from_file_id(container.id, "file-abc")
    assert copied.bytes == 8


def test_pagination_over_250_files(api: ContainersClient, emu: Emulator) -> None:
    container = api.create_container("many")
    uploaded = [api.create_file(container.id, b"x", filename=f"f{n}").id for n in range(250)]
    emu.reset_counts()
    assert [f.id for f in api.iter_files(container.id)] == uploaded
    assert emu.counts()["list_files"] == 3


def test_pagination_over_250_files_with_bifrost_cursors(emu: Emulator) -> None:
    # Bifrost's lists leave out has_more and carry an opaque cursor: off-spec on
    # purpose, so this exchange is not run through the spec validator.
    emu.set_gateway(GatewayStyle(cursor_style="opaque"))
    with ContainersClient("k", base_url="http://e/v1", transport=emu.transport()) as client:
        container = client.create_container("many")
        uploaded = [client.create_file(container.id, b"x", filename=f"f{n}").id for n in range(250)]
        emu.reset_counts()
        assert [f.id for f in client.iter_files(container.id)] == uploaded
    assert emu.counts()["list_files"] == 3
    sent_cursors = [r.query for r in emu.requests_log() if r.operation == "list_files"]
    assert all(not dict(q).get("after", "").startswith("cfile_") for q in sent_cursors)


def test_duplicate_names_create_distinct_files(api: ContainersClient) -> None:
    container = api.create_container("dup")
    first = api.create_file(container.id, b"1", filename="same.txt")
    second = api.create_file(container.id, b"2", filename="same.txt")
    assert first.id != second.id
    assert len(list(api.iter_files(container.id))) == 2


def test_expired_container_maps_to_its_error(api: ContainersClient, emu: Emulator) -> None:
    container = api.create_container("short")
    api.create_file(container.id, b"x", filename="a")
    emu.expire_container(container.id)
    with pytest.raises(ContainerExpiredError):
        list(api.iter_files(container.id))
    assert api.retrieve_container(container.id).status == "expired"
    with pytest.raises(ContainerExpiredError):
        api.retrieve_container(container.id, require_running=True)


def test_retries_follow_the_emulator_hints(
    api: ContainersClient, emu: Emulator, no_sleep: NoSleep
) -> None:
    container = api.create_container("retry")
    emu.fail_next("list_files", 429, headers={"retry-after-ms": "1500"})
    emu.fail_next("list_files", 503)
    assert list(api.iter_files(container.id)) == []
    assert no_sleep.sleeps[0] == pytest.approx(1.5)
    assert 0.5 <= no_sleep.sleeps[1] <= 1.5
    assert emu.counts()["list_files"] == 3


def test_persistent_server_errors_give_up_after_the_configured_attempts(
    api: ContainersClient, emu: Emulator
) -> None:
    container = api.create_container("down")
    emu.fail_next("retrieve_container", 500, count=10)
    with pytest.raises(ServerError):
        api.retrieve_container(container.id)
    assert emu.counts()["retrieve_container"] == 5  # 1 + max_retries (4)


@pytest.mark.parametrize("mode", ["ambiguous", "ambiguous_drop"])
def test_ambiguous_upload_is_outcome_unknown_and_the_file_is_listed(
    api: ContainersClient, emu: Emulator, mode: str
) -> None:
    container = api.create_container("amb")
    emu.fail_next("create_file", mode)  # type: ignore[arg-type]
    with pytest.raises(OutcomeUnknownError):
        api.create_file(container.id, b"abc", filename="a.txt")
    # Not retried: exactly one copy exists, and the listing shows it.
    assert emu.counts()["create_file"] == 1
    assert [f.bytes for f in api.iter_files(container.id)] == [3]


def test_dropped_connection_on_a_read_is_retried(api: ContainersClient, emu: Emulator) -> None:
    container = api.create_container("drop")
    emu.fail_next("retrieve_container", "drop")
    assert api.retrieve_container(container.id).id == container.id
    assert emu.counts()["retrieve_container"] == 2


def test_assistant_files_with_null_bytes_and_missing_content(emu: Emulator, tmp_path: Path) -> None:
    # The emulator can list assistant files with bytes: null, as real servers do;
    # the spec says integer, so this test opts in to exactly that.
    transport = ValidatingTransport(emu.transport(), allow_null_bytes=True)
    with ContainersClient("k", base_url="http://e/v1", transport=transport) as client:
        container = client.create_container("model")
        emu.add_assistant_file(
            container.id, "/mnt/data/../../etc/x", b"", bytes_null=True, content_missing=True
        )
        (listed,) = client.iter_files(container.id)
        assert listed.bytes is None and listed.source == "assistant"
        with pytest.raises(NotFoundError):
            client.download_file(container.id, listed.id, io.BytesIO())
    transport.assert_clean()


@pytest.mark.parametrize("style", ["bearer", "api-key", "x-api-key", "x-bf-vk", "basic"])
def test_each_auth_style_is_accepted_and_a_wrong_key_refused(tmp_path: Path, style: str) -> None:
    with Emulator(data_dir=tmp_path, api_keys={"sk-right-key"}) as keyed:
        for key, works in (("sk-right-key", True), ("sk-wrong-key", False)):
            with ContainersClient(
                key,
                base_url="http://e/v1",
                transport=keyed.transport(),
                auth_style=style,  # type: ignore[arg-type]
            ) as client:
                if works:
                    assert client.create_container(style).name == style
                else:
                    with pytest.raises(AuthenticationError) as caught:
                        client.create_container(style)
                    assert key not in caught.value.message


def test_finding_a_container_by_name_costs_no_404(api: ContainersClient, emu: Emulator) -> None:
    """The start-up lookup of a name lists by name; it never asks for the name as an id."""
    from cntr_sync.containers import find_container  # noqa: PLC0415

    created = api.create_container("notes")
    emu.reset_counts()
    found = find_container(api, "notes")
    assert found is not None and found.id == created.id
    assert emu.counts()["retrieve_container"] == 0 and emu.counts()["list_containers"] == 1
    # An id is still asked for as an id; a name nobody has is tried as one, once.
    assert find_container(api, created.id) == api.retrieve_container(created.id)
    emu.reset_counts()
    assert find_container(api, "nobody") is None
    assert emu.counts()["retrieve_container"] == 1
