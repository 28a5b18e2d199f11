"""The daemon's remote poll: the newest files only, a full listing when in doubt.

Counted with the emulator's request counts: a poll that finds nothing new costs
one list request, whatever the container holds; new files cost what they are.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, GatewayStyle
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import Pair, RemoteFile
from cntr_sync.names import strip_hash_prefix
from cntr_sync.quick_listing import HeadReader, Mark
from cntr_sync.result import PassResult
from helpers import NoSleep
from pass_rig import BASE_URL
from test_quiet_passes import OLD, no_wal_files, picture, settle_clock

FILES = 250  # three pages


@dataclass
class PollRig:
    engine: Engine
    emu: Emulator
    client: ContainersClient
    root: Path
    state: Path
    now: list[float]  # the engine's monotonic clock

    def poll(self) -> PassResult:
        self.emu.reset_counts()
        return self.engine.run_pass(poll=True, defer_unsettled=True)

    def lists(self) -> int:
        return self.emu.counts()["list_files"]

    def model_writes(self, name: str) -> str:
        self.emu.advance_clock(1)
        container_id = self.engine.index.container_id
        assert container_id is not None
        made = self.emu.add_assistant_file(container_id, f"/mnt/data/{name}", name.encode())
        return str(made["id"])


def make_rig(
    tmp_path: Path,
    direction: str,
    gateway: GatewayStyle | None = None,
    *,
    files: int = FILES,
    **settings: object,
) -> PollRig:
    """``files`` files on both sides after a first pass: uploaded (push, both) or
    written by the model and downloaded (pull)."""
    root = tmp_path / "tree"
    root.mkdir()
    state = tmp_path / "state"
    emu = Emulator(data_dir=tmp_path / "emulator", gateway=gateway)
    if direction == "pull":
        container_id = str(emu.create_container("box")["id"])
        for number in range(files):
            emu.add_assistant_file(container_id, f"/mnt/data/f{number:03}.txt", b"model")
    else:
        for number in range(files):
            path = root / f"f{number:03}.txt"
            path.write_text(f"file {number}\n")
            os.utime(path, (OLD, OLD))
    client = ContainersClient(
        "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
    )
    index = Index.open(state, base_url=BASE_URL, root=root, container_spec="box")
    pair = Pair(name="t", local=root, container="box", direction=direction, **settings)  # type: ignore[arg-type]
    now = [0.0]
    engine = Engine(client, index, pair, monotonic=lambda: now[0])
    first = engine.run_pass()
    assert first.uploaded + first.downloaded == files
    for path in root.iterdir():
        os.utime(path, (OLD, OLD))  # settled, and their digests cached
    return PollRig(engine, emu, client, root, state, now)


@pytest.fixture(params=["pull", "both"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PollRig]:
    made = make_rig(tmp_path, request.param)
    try:
        # After a first pass that found the container empty (push, both) the first
        # poll lists in full; from then on, the head only.
        made.poll()
        yield made
    finally:
        made.engine.index.close()
        made.client.close()
        made.emu.close()


def test_a_poll_with_nothing_new_costs_one_request_and_writes_nothing(rig: PollRig) -> None:
    before = picture(rig.state)
    assert no_wal_files(before)
    settle_clock()
    result = rig.poll()
    assert rig.lists() == 1 and result.requests == 1
    assert not result.listed and not result.changed_anything
    assert picture(rig.state) == before


def test_new_model_files_cost_one_listing_page_and_their_downloads(rig: PollRig) -> None:
    for number in range(5):
        rig.model_writes(f"model{number}.txt")
    result = rig.poll()
    assert rig.lists() == 1
    assert result.downloaded == 5 and result.requests == 6
    assert not result.listed
    assert (rig.root / "model3.txt").read_bytes() == b"model3.txt"
    assert len(rig.engine.index.entries()) == FILES + 5
    # The next poll starts from them: one request again.
    assert not rig.poll().changed_anything and rig.lists() == 1


def test_more_new_files_than_a_page_are_all_found(rig: PollRig) -> None:
    for number in range(130):
        rig.model_writes(f"many{number:03}.txt")
    result = rig.poll()
    assert result.downloaded == 130 and not result.listed
    assert rig.lists() == 2


def test_a_file_deleted_in_the_container_makes_the_poll_list_everything(rig: PollRig) -> None:
    container_id = rig.engine.index.container_id
    assert container_id is not None
    written = [rig.model_writes(f"late{number}.txt") for number in range(3)]
    assert rig.poll().downloaded == 3
    rig.client.delete_file(container_id, written[1])
    result = rig.poll()
    assert result.listed
    assert rig.lists() == 1 + 3  # the quick page, then the full listing


def test_a_full_listing_comes_every_full_listing_interval(rig: PollRig) -> None:
    rig.now[0] += rig.engine.pair.full_listing_interval - 1
    assert not rig.poll().listed
    rig.now[0] += 1
    assert rig.poll().listed and rig.lists() == 3
    assert not rig.poll().listed and rig.lists() == 1


def test_a_failed_pass_makes_the_next_poll_list_everything(rig: PollRig) -> None:
    rig.model_writes("x.txt")
    rig.emu.fail_next("file_content", status=404, count=10)
    failed = rig.poll()
    assert failed.failures and not failed.listed
    assert rig.poll().listed


def test_a_new_file_on_a_tracked_path_takes_the_full_listing(rig: PollRig) -> None:
    rig.model_writes("f007.txt")  # the model's version of one of ours
    result = rig.poll()
    assert result.listed


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_a_server_that_ignores_order_is_listed_in_full(tmp_path: Path, direction: str) -> None:
    made = make_rig(tmp_path, direction, GatewayStyle(ignore_order=True))
    try:
        made.poll()
        made.model_writes("late.txt")
        result = made.poll()
        assert result.listed and made.lists() == 1 + 3
        if direction == "pull":
            assert (made.root / "late.txt").exists()
    finally:
        made.engine.index.close()
        made.client.close()
        made.emu.close()


def test_a_push_pair_polls_the_head_and_lists_in_full_for_the_models_files(
    tmp_path: Path,
) -> None:
    made = make_rig(tmp_path, "push")
    try:
        made.poll()
        assert not made.poll().listed and made.lists() == 1
        made.model_writes("theirs.txt")
        result = made.poll()
        assert result.listed and result.unknown_kept == 1
        assert not (made.root / "theirs.txt").exists()
        # The full listing's mark covers the stranger: quick again.
        assert not made.poll().listed and made.lists() == 1
    finally:
        made.engine.index.close()
        made.client.close()
        made.emu.close()


# -- the pure reader -------------------------------------------------------------------------


def listed(file_id: str, created_at: int | None) -> RemoteFile:
    return RemoteFile(file_id, f"/mnt/data/{file_id}", file_id, 1, "assistant", created_at)


def read(reader: HeadReader, files: list[RemoteFile]) -> int:
    """How many files the reader took before it said stop (or the listing ended)."""
    for taken, file in enumerate(files, 1):
        if not reader.add(file):
            return taken
    reader.end()
    return len(files)


def test_the_reader_stops_at_the_end_of_the_page_where_the_mark_is() -> None:
    reader = HeadReader(Mark(10, frozenset({"b"})), lambda _id: False, page_size=4)
    files = [listed("n2", 12), listed("n1", 11), listed("b", 10), listed("a", 9), listed("z", 8)]
    assert read(reader, files) == 4
    assert [f.id for f in reader.news] == ["n2", "n1"]
    assert reader.doubt is None
    assert reader.head == Mark(12, frozenset({"n2"}), "n2")
    assert reader.expected_range() == (9, 10)
    assert reader.expected_gone(["a", "b"]) is None
    assert reader.expected_gone(["a", "gone"]) is not None


def test_the_reader_skips_files_the_index_knows_and_takes_a_new_one_of_the_marks_second() -> None:
    reader = HeadReader(Mark(10, frozenset({"b"})), {"ours"}.__contains__, page_size=100)
    read(reader, [listed("ours", 11), listed("c", 10), listed("b", 10), listed("a", 9)])
    assert [f.id for f in reader.news] == ["c"]


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ([listed("n", 11), listed("m", 12)], "not newest first"),
        ([listed("x", None)], "created_at"),
        ([listed("n", 11)], "ended before"),
        # Times that tie: only the first file tells oldest first from newest first.
        ([listed("a", 10), listed("b", 10)], "does not start at the newest"),
    ],
)
def test_the_reader_doubts(files: list[RemoteFile], why: str) -> None:
    reader = HeadReader(Mark(10, frozenset({"a", "b"}), "b"), lambda _id: False, page_size=100)
    read(reader, files)
    assert reader.doubt is not None and why in reader.doubt


def test_a_mark_names_the_newest_files_of_a_complete_listing() -> None:
    assert Mark.of([]) is None  # an empty container: the next poll lists in full
    assert Mark.of([("a", 5), ("b", None)]) is None
    assert Mark.of([("a", 5), ("b", 7), ("c", 7), ("d", 6)]) == Mark(7, frozenset({"b", "c"}), "c")


def test_an_expired_container_takes_the_full_pass_that_replaces_it(rig: PollRig) -> None:
    container_id = rig.engine.index.container_id
    assert container_id is not None
    rig.emu.expire_container(container_id)
    result = rig.poll()
    assert result.container_recreated and result.listed
    assert rig.engine.index.container_id not in (None, container_id)


@pytest.mark.parametrize("direction", ["pull", "both"])
@pytest.mark.parametrize("seed", range(4))
def test_random_model_writes_deletes_and_rewrites_with_polls(
    tmp_path: Path, seed: int, direction: str
) -> None:
    """The model adds, rewrites in place and deletes files between polls: each poll
    brings every new file home, and the full listing after it all leaves the tree
    exactly the container."""
    rng = random.Random(seed)
    made = make_rig(tmp_path, direction, files=20, remote_delete="propagate")
    try:
        container_id = made.engine.index.container_id
        assert container_id is not None
        live: dict[str, str] = {}  # name -> id, the model's files still in the container
        made.poll()
        for step in range(25):
            action = rng.choice(["add", "add", "rewrite", "delete", "poll", "full"])
            if action == "add":
                name = f"s{step}.txt"
                live[name] = made.model_writes(name)
            elif action == "rewrite" and live:
                name = rng.choice(sorted(live))
                # A new size: a same-size rewrite shows only to content checks.
                made.emu.rewrite_file(container_id, live[name], b"!" * (100 + step))
            elif action == "delete" and live:
                name = rng.choice(sorted(live))
                made.client.delete_file(container_id, live.pop(name))
            elif action == "full":
                made.now[0] += made.engine.pair.full_listing_interval
            else:
                result = made.poll()
                assert not result.failures
                assert all((made.root / name).exists() for name in live), sorted(live)
                for path in made.root.iterdir():
                    os.utime(path, (OLD, OLD))  # settled by the next pass, as time would
        made.now[0] += made.engine.pair.full_listing_interval
        final = made.poll()
        assert final.listed and not final.failures, (final.deferred, final.warnings)
        assert not final.deferred, final.deferred
        remote = {
            strip_hash_prefix(item.path.rpartition("/")[2]): item.id
            for item in made.client.iter_files(container_id)
        }
        assert sorted(p.name for p in made.root.iterdir()) == sorted(remote)
        for name, file_id in remote.items():
            blob = made.emu.blob_path(container_id, file_id)
            assert blob is not None
            assert (made.root / name).read_bytes() == blob.read_bytes(), name
    finally:
        made.engine.index.close()
        made.client.close()
        made.emu.close()
