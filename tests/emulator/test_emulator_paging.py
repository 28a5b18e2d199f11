"""Paging semantics of the emulator's listings, checked against a plain model.

The model is the definition the emulator kept before its listing became O(page): the
live records sorted by (created_at, creation order), those past the cursor's key,
the first ``limit`` of them (capped by ``max_page_size``), and whether more follow.
It is compared page by page at many sizes, orders and page sizes, in every gateway
cursor style, with files deleted (the cursor's own among them) and added between
pages, and with a clock that moves backwards. ``OrderedRecords`` is also checked on
its own against a sorted list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cntr_sync.emulator import Emulator, GatewayStyle, ManualClock
from cntr_sync.emulator.store import OrderedRecords, SortKey

START = 1_750_000_000

STYLES = {
    "plain": GatewayStyle(),
    "small pages": GatewayStyle(max_page_size=3),
    "opaque cursors": GatewayStyle(cursor_style="opaque"),
    "no has_more": GatewayStyle(has_more="omitted"),
    "string has_more": GatewayStyle(has_more="string"),
    "bifrost": GatewayStyle(cursor_style="opaque", has_more="omitted", max_page_size=7),
}


@dataclass
class Model:
    """Every file ever listed by key, and which are alive."""

    keys: dict[str, SortKey] = field(default_factory=dict)
    alive: set[str] = field(default_factory=set)

    def page(
        self, after: str | None, order: str, limit: int, style: GatewayStyle
    ) -> tuple[list[str], bool]:
        ordered = sorted(self.alive, key=self.keys.__getitem__, reverse=order == "desc")
        if after is not None:
            cursor = self.keys[after]
            if order == "asc":
                ordered = [i for i in ordered if self.keys[i] > cursor]
            else:
                ordered = [i for i in ordered if self.keys[i] < cursor]
        limit = min(limit, style.max_page_size or limit)
        return ordered[:limit], len(ordered) > limit


@dataclass
class Rig:
    emulator: Emulator
    client: httpx.Client
    clock: ManualClock
    container_id: str
    model: Model = field(default_factory=Model)
    created: int = 0

    def add(self, created_at: int) -> str:
        self.clock.now = float(created_at)
        file_id = str(
            self.emulator.add_assistant_file(
                self.container_id, f"/mnt/data/f{self.created}", content_missing=True
            )["id"]
        )
        self.model.keys[file_id] = (created_at, self.created)
        self.model.alive.add(file_id)
        self.created += 1
        return file_id

    def delete(self, file_id: str) -> None:
        response = self.client.delete(f"/containers/{self.container_id}/files/{file_id}")
        assert response.status_code == 200, response.text
        self.model.alive.discard(file_id)

    def get_page(self, order: str, limit: int, after: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"order": order, "limit": limit}
        if after is not None:
            params["after"] = after
        response = self.client.get(f"/containers/{self.container_id}/files", params=params)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    opened: list[tuple[Emulator, httpx.Client]] = []

    def make(style: GatewayStyle) -> Rig:
        clock = ManualClock(float(START))
        emulator = Emulator(data_dir=tmp_path / f"emu{len(opened)}", clock=clock, gateway=style)
        client = httpx.Client(
            transport=httpx.MockTransport(emulator.handle), base_url="http://emulator.test/v1"
        )
        opened.append((emulator, client))
        container_id = str(emulator.create_container("box")["id"])
        return Rig(emulator, client, clock, container_id)

    yield make
    for emulator, client in opened:
        client.close()
        emulator.close()


def has_more_of(body: dict[str, Any], style: GatewayStyle, expected: bool) -> bool:
    """Read ``has_more`` as the gateway style writes it, checking how it is written."""
    if style.has_more == "omitted" or (style.cursor_style == "opaque" and not expected):
        assert "has_more" not in body
        return expected
    if style.has_more == "string":
        assert body["has_more"] in ("true", "false")
        return bool(body["has_more"] == "true")
    assert isinstance(body["has_more"], bool)
    return bool(body["has_more"])


def page_through(
    rig: Rig,
    style: GatewayStyle,
    order: str,
    limit: int,
    between: list[list[tuple[str, int]]],
) -> list[str]:
    """Page to the end, comparing every page with the model and running ``between[k]``
    (deletions and additions) after page ``k``; returns every id listed."""
    seen: list[str] = []
    token: str | None = None
    model_after: str | None = None
    for number in range(10_000):
        body = rig.get_page(order, limit, token)
        expected, more = rig.model.page(model_after, order, limit, style)
        ids = [item["id"] for item in body["data"]]
        assert ids == expected, f"page {number}"
        assert body["first_id"] == (ids[0] if ids else None)
        assert body["last_id"] == (ids[-1] if ids else None)
        assert has_more_of(body, style, more) == more
        seen.extend(ids)
        if not more:
            return seen
        model_after = ids[-1]
        if style.cursor_style == "opaque":
            assert body["after"] not in rig.model.keys
            token = body["after"]
        else:
            token = body["last_id"]
        for action, selector in between[number] if number < len(between) else []:
            if action == "delete cursor" and model_after in rig.model.alive:
                rig.delete(model_after)
            elif action == "delete" and rig.model.alive:
                rig.delete(sorted(rig.model.alive)[selector % len(rig.model.alive)])
            elif action == "add":
                rig.add(START + selector)
    raise AssertionError("the listing did not end")


def fill(rig: Rig, size: int, offsets: list[int] | None = None) -> list[str]:
    return [rig.add(START + (offsets[i % len(offsets)] if offsets else 0)) for i in range(size)]


@pytest.mark.parametrize("size", [0, 1, 2, 99, 100, 101, 250, 1000, 3001])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_file_once_in_order_at_many_sizes(make_rig: Any, size: int, order: str) -> None:
    rig = make_rig(GatewayStyle())
    ids = fill(rig, size)
    for limit in (1, 7, 100) if size <= 250 else (100,):
        listed = page_through(rig, GatewayStyle(), order, limit, [])
        assert listed == (ids if order == "asc" else ids[::-1])


@pytest.mark.parametrize("style_name", sorted(STYLES))
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_deletions_between_pages_in_every_style(make_rig: Any, style_name: str, order: str) -> None:
    style = STYLES[style_name]
    rig = make_rig(style)
    ids = fill(rig, 600)
    # After each page: the cursor's own file goes, then two more anywhere.
    between = [[("delete cursor", 0), ("delete", 7 * k), ("delete", 13 * k + 5)] for k in range(60)]
    listed = page_through(rig, style, order, 37, between)
    assert len(listed) == len(set(listed))
    assert listed == sorted(listed, key=ids.index, reverse=order == "desc")
    # What survived the whole listing was listed (nothing skipped around a deletion).
    never_deleted = rig.model.alive
    assert never_deleted <= set(listed)


def test_files_added_while_paging_appear_at_the_end_of_an_ascending_listing(
    make_rig: Any,
) -> None:
    rig = make_rig(GatewayStyle())
    ids = fill(rig, 300)
    between = [[("add", 10)] for _ in range(3)]
    listed = page_through(rig, GatewayStyle(), "asc", 100, between)
    assert listed[:300] == ids
    assert len(listed) == 303


def test_a_clock_that_goes_backwards_still_lists_by_created_at(make_rig: Any) -> None:
    rig = make_rig(GatewayStyle())
    fill(rig, 500, offsets=[5, 3, 9, 0, 3, -2, 7])
    for order in ("asc", "desc"):
        listed = page_through(rig, GatewayStyle(), order, 50, [])
        keys = [rig.model.keys[i] for i in listed]
        assert keys == sorted(keys, reverse=order == "desc")


def test_a_cursor_in_another_container_or_unknown_is_refused(make_rig: Any) -> None:
    rig = make_rig(GatewayStyle())
    fill(rig, 3)
    other = str(rig.emulator.create_container("other")["id"])
    foreign = str(rig.emulator.add_assistant_file(other, "/mnt/data/x", b"x")["id"])
    for after in (foreign, "cfile_nope"):
        response = rig.client.get(f"/containers/{rig.container_id}/files", params={"after": after})
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "after"


def test_an_expired_container_forgets_its_files_and_lists_nothing_after(
    make_rig: Any,
) -> None:
    rig = make_rig(GatewayStyle())
    fill(rig, 20)
    rig.emulator.expire_container(rig.container_id)
    assert len(rig.emulator._store.containers[rig.container_id].files) == 0
    assert rig.emulator._store.containers[rig.container_id].files.in_order() == []


def test_container_name_filter_pages_past_other_names(make_rig: Any) -> None:
    rig = make_rig(GatewayStyle())
    wanted = []
    for i in range(250):
        created = rig.emulator.create_container("wanted" if i % 10 == 3 else "other")
        if created["name"] == "wanted":
            wanted.append(created["id"])
    for order, expected in (("asc", wanted), ("desc", wanted[::-1])):
        seen: list[str] = []
        after: str | None = None
        for _ in range(100):
            params: dict[str, Any] = {"name": "wanted", "limit": 4, "order": order}
            if after:
                params["after"] = after
            body = rig.client.get("/containers", params=params).json()
            seen.extend(c["id"] for c in body["data"])
            assert all(c["name"] == "wanted" for c in body["data"])
            if not body["has_more"]:
                break
            after = body["last_id"]
        assert seen == expected


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 150),
    order=st.sampled_from(["asc", "desc"]),
    limit=st.integers(1, 30),
    style_name=st.sampled_from(sorted(STYLES)),
    offsets=st.lists(st.integers(-3, 3), min_size=1, max_size=8),
    between=st.lists(
        st.lists(
            st.tuples(st.sampled_from(["delete", "delete cursor", "add"]), st.integers(0, 999)),
            max_size=4,
        ),
        max_size=12,
    ),
)
def test_paging_matches_the_model(
    tmp_path_factory: pytest.TempPathFactory,
    size: int,
    order: str,
    limit: int,
    style_name: str,
    offsets: list[int],
    between: list[list[tuple[str, int]]],
) -> None:
    style = STYLES[style_name]
    clock = ManualClock(float(START))
    data_dir = tmp_path_factory.mktemp("emu")
    with (
        Emulator(data_dir=data_dir, clock=clock, gateway=style) as emulator,
        httpx.Client(
            transport=httpx.MockTransport(emulator.handle), base_url="http://emulator.test/v1"
        ) as client,
    ):
        rig = Rig(emulator, client, clock, str(emulator.create_container("box")["id"]))
        fill(rig, size, offsets)
        between = [[(a, s % 7 if a == "add" else s) for a, s in step] for step in between]
        listed = page_through(rig, style, order, limit, between)
        assert len(listed) == len(set(listed))


@settings(max_examples=200, deadline=None)
@given(
    operations=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 20)),
            st.tuples(st.just("delete"), st.integers(0, 10_000)),
        ),
        max_size=120,
    ),
    after=st.none() | st.tuples(st.integers(-1, 21), st.integers(-1, 130)),
    descending=st.booleans(),
    count=st.integers(0, 30),
    odd_only=st.booleans(),
)
def test_ordered_records_match_a_sorted_list(
    operations: list[tuple[str, int]],
    after: SortKey | None,
    descending: bool,
    count: int,
    odd_only: bool,
) -> None:
    @dataclass(frozen=True)
    class Item:
        id: str
        key: SortKey

        def to_json(self) -> dict[str, Any]:
            return {"id": self.id}

    records: OrderedRecords[Item] = OrderedRecords()
    reference: dict[str, Item] = {}
    for seq, (operation, value) in enumerate(operations):
        if operation == "add":
            item = Item(f"i{seq}", (value, seq))
            records[item.id] = item
            reference[item.id] = item
        elif reference:
            victim = sorted(reference)[value % len(reference)]
            del records[victim]
            del reference[victim]
    assert len(records) == len(reference)
    assert set(records) == set(reference)
    ordered = sorted(reference.values(), key=lambda item: item.key)
    assert records.in_order() == ordered

    def accept(item: Item) -> bool:
        return not odd_only or item.key[1] % 2 == 1

    expected = [
        item
        for item in (ordered[::-1] if descending else ordered)
        if after is None or (item.key < after if descending else item.key > after)
        if accept(item)
    ][:count]
    assert records.page(after, descending, count, accept if odd_only else None) == expected
