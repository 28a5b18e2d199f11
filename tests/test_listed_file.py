"""A listed file read without a model (``models.listed_file``) is what the wire model reads.

A full pass reads every file of the container through ``ContainersClient.iter_listed``:
the tolerant rules of ``ContainerFile`` (a garbage field is unknown and named in
``problems``), applied without a pydantic model per file. Both must agree on every
item, hostile ones included; an id the light reading does not take is left to the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.errors import ProtocolError
from cntr_sync.index import Index
from cntr_sync.models import ContainerFile, ListedFile, Pair, listed_file
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"

# What a hostile server may put in a field: every JSON type, numbers at and past the edges.
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.sampled_from([0, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 3.0, 3.5, 1e23, -1.0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_items = st.dictionaries(
    st.sampled_from(["bytes", "created_at", "path", "source", "object", "container_id", "odd"]),
    _values,
).flatmap(
    lambda fields: st.one_of(st.text(max_size=6), _values).map(
        lambda file_id: {"id": file_id, **fields}
    )
)


def _by_the_model(item: dict[str, Any]) -> ListedFile | None:
    try:
        return ListedFile.of(ContainerFile.model_validate(item))
    except ValueError:  # pydantic's ValidationError: the model refuses the item
        return None


@given(_items)
def test_the_light_reading_agrees_with_the_wire_model(item: dict[str, Any]) -> None:
    light = listed_file(item)
    if light is not None:
        assert light == _by_the_model(item)
    else:  # left to the model: only ids the light reading does not vouch for
        file_id = item["id"]
        assert not (isinstance(file_id, str) and file_id and file_id.isascii())


def test_garbage_fields_are_unknown_and_named() -> None:
    item = {"id": "f", "bytes": 2**63, "created_at": 5e9, "path": 7, "source": None}
    assert listed_file(item) == ListedFile(
        "f",
        "",
        None,
        "unknown",
        None,
        (
            "bytes is not a number from 0 to 9223372036854775807",
            "created_at is not a number from 0 to 4294967295",
            "path is not a string",
            "source is not a string",
        ),
    )
    fine = {"id": "f", "bytes": 3.0, "created_at": 1_700_000_000, "path": "/mnt/data/a"}
    assert listed_file(fine) == ListedFile("f", "/mnt/data/a", 3, "unknown", 1_700_000_000, ())


def _listing_pages(files: list[dict[str, Any]]) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        body = {"object": "list", "data": files, "has_more": False}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


def test_an_id_the_model_refuses_fails_the_listing_as_before() -> None:
    files = [{"id": "f1", "path": "/mnt/data/a"}, {"id": 7, "path": "/mnt/data/b"}]
    with (
        ContainersClient("sk-test", transport=_listing_pages(files), sleep=NoSleep()) as client,
        pytest.raises(ProtocolError, match="unexpected ContainerFile shape at id"),
    ):
        list(client.iter_listed("cntr_1"))


def test_an_id_left_to_the_model_is_read_by_it() -> None:
    files = [{"id": "fé", "path": "/mnt/data/a", "bytes": "12"}]
    with ContainersClient("sk-test", transport=_listing_pages(files), sleep=NoSleep()) as client:
        (listed,) = client.iter_listed("cntr_1")
    assert listed == ListedFile("fé", "/mnt/data/a", None, "unknown", None, listed.problems)
    assert listed.problems == ("bytes is not a number from 0 to 9223372036854775807",)


# Counts models: guards issue 23's warm-pass figure at 100,000 files (a pydantic model
# per listed file was ~0.5 s of the listing's 1.4 s of CPU): a full pass lists without one.
@pytest.mark.perf_guard
def test_a_full_pass_lists_without_a_model_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    for number in range(30):
        (root / f"f{number:02d}.txt").write_bytes(f"file {number}\n".encode())
    validated: list[object] = []
    model_validate = ContainerFile.model_validate

    def counted(item: Any, **kwargs: Any) -> ContainerFile:
        validated.append(item)
        return model_validate(item, **kwargs)

    with Emulator(data_dir=tmp_path / "emulator") as emu:
        pair = Pair(name="p", local=root, container="box")
        with (
            ContainersClient(
                "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
            ) as client,
            Index.open(
                tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box"
            ) as ix,
        ):
            assert Engine(client, ix, pair).run_pass().uploaded == 30
            monkeypatch.setattr(ContainerFile, "model_validate", counted)
            again = Engine(client, ix, pair).run_pass()
    assert again.listed and again.local_files == 30 and again.in_sync
    assert validated == []  # was one per listed file
