"""Incremental passes: the paths events named, planned against a trusted index, no listing.

One engine is kept across passes (as the daemon's worker keeps it): the first
pass is full and earns the index the engine's trust; later passes given
``paths`` scan only those and send only what they changed, whatever the size
of the tree. Anything that casts doubt on the index makes the next pass full.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import Direction, Pair
from cntr_sync.names import remote_names
from cntr_sync.result import PassResult
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"
TREE_FILES = 300  # three pages of listing: a full pass would show it


@dataclass
class Daemonish:
    emu: Emulator
    root: Path
    engine: Engine
    index: Index

    def sync(self, *paths: str) -> PassResult:
        self.emu.reset_counts()
        return self.engine.run_pass(paths=frozenset(paths) if paths else None)

    def requests(self) -> dict[str, int]:
        return {op: n for op, n in self.emu.counts().items() if n}

    def remote(self) -> Counter[str]:
        container_id = self.index.container_id
        assert container_id is not None
        with ContainersClient("k", base_url=BASE_URL, transport=self.emu.transport()) as client:
            return Counter(
                remote_names(f.path)[0]
                for f in client.iter_files(container_id)
                if f.source == "user"
            )

    def local(self) -> Counter[str]:
        return Counter(
            p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()
        )

    def write(self, relpath: str, content: bytes) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        # Older than any quiet period, newer than the index's record: a real edit.
        os.utime(path, ns=(path.stat().st_mtime_ns, path.stat().st_mtime_ns))


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Daemonish]:
    root = tmp_path / "tree"
    for number in range(TREE_FILES):
        path = root / f"d{number % 5}" / f"f{number:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {number}\n".encode())
    pair = Pair(name="p", local=root, container="box", delete=True)
    with (
        Emulator(data_dir=tmp_path / "emulator") as emu,
        ContainersClient(
            "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
        ) as client,
        Index.open(tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box") as index,
    ):
        harness = Daemonish(emu, root, Engine(client, index, pair, concurrency=4), index)
        first = harness.sync()
        assert first.listed and first.uploaded == TREE_FILES
        yield harness


def test_a_new_file_costs_one_upload_and_no_listing(d: Daemonish) -> None:
    d.write("d1/new.txt", b"new")
    result = d.sync("d1/new.txt")
    assert not result.listed
    assert d.requests() == {"create_file": 1}
    assert result.uploaded == 1
    assert d.remote() == d.local()


def test_an_edit_costs_an_upload_and_a_delete(d: Daemonish) -> None:
    d.write("d2/f002.txt", b"edited, and longer than before")
    result = d.sync("d2/f002.txt")
    assert d.requests() == {"create_file": 1, "delete_file": 1}
    assert result.replaced == 1
    assert d.remote() == d.local()


def test_a_removal_costs_one_delete(d: Daemonish) -> None:
    (d.root / "d3/f003.txt").unlink()
    result = d.sync("d3/f003.txt")
    assert d.requests() == {"delete_file": 1}
    assert result.deleted == 1
    assert d.remote() == d.local()


def test_an_unchanged_path_costs_nothing(d: Daemonish) -> None:
    result = d.sync("d4/f004.txt", "no/such/file")
    assert d.requests() == {}
    assert result.plan is not None and result.plan.is_noop


def test_a_directory_event_covers_everything_below_it(d: Daemonish) -> None:
    for number in range(3):
        d.write(f"fresh/sub/{number}.txt", b"x" * number)
    result = d.sync("fresh")
    assert d.requests() == {"create_file": 3}
    assert d.remote() == d.local()
    # A directory moved: both names come as events; its files are sent again under the
    # new name, the old ones deleted; no brake although they are all the directory held.
    (d.root / "fresh").rename(d.root / "moved")
    result = d.sync("fresh", "moved")
    assert d.requests() == {"create_file": 3, "delete_file": 3}
    assert not result.listed
    assert d.remote() == d.local()


def test_a_removed_directory_is_weighed_against_the_whole_tree(d: Daemonish) -> None:
    # 60 of 300 files: 20 %, under the default brake of 50 %, though 100 % of the paths named.
    for path in sorted((d.root / "d0").iterdir()):
        path.unlink()
    (d.root / "d0").rmdir()
    result = d.sync("d0")
    assert d.requests() == {"delete_file": TREE_FILES // 5}
    assert d.remote() == d.local()
    assert result.deleted == TREE_FILES // 5


def test_ignored_paths_stay_ignored(d: Daemonish) -> None:
    d.write("d1/.cntrsync-partial-x", b"ours")
    d.write("d1/x.swp", b"vim")  # a default ignore pattern
    d.write(".git/config", b"[core]")
    d.sync("d1/.cntrsync-partial-x", "d1/x.swp", ".git/config", ".git")
    assert d.requests() == {}


def test_without_trust_the_pass_is_full(d: Daemonish, tmp_path: Path) -> None:
    # A new engine on the same index has not seen a listing yet.
    engine = Engine(d.engine.client, d.index, d.engine.pair, concurrency=4)
    d.write("d1/new.txt", b"new")
    d.emu.reset_counts()
    result = engine.run_pass(paths=frozenset({"d1/new.txt"}))
    assert result.listed
    assert d.requests()["list_files"] == 3
    assert d.requests()["create_file"] == 1


def test_an_ignore_file_in_the_events_makes_the_pass_full(d: Daemonish) -> None:
    d.write(".cntrignore", b"d4/\n")
    result = d.sync(".cntrignore")
    assert result.listed
    assert d.requests().get("list_files") == 3


def test_a_failed_pass_makes_the_next_one_full(d: Daemonish) -> None:
    d.write("d1/new.txt", b"new")
    d.emu.fail_next("create_file", 400)
    failed = d.sync("d1/new.txt")
    assert failed.failures and not failed.listed
    result = d.sync("d1/new.txt")
    assert result.listed
    assert result.uploaded == 1
    assert d.remote() == d.local()
    # Clean again: the next change is incremental once more.
    d.write("d1/newer.txt", b"newer")
    assert not d.sync("d1/newer.txt").listed


def test_the_models_files_and_remote_changes_wait_for_the_next_listing(d: Daemonish) -> None:
    container_id = d.index.container_id
    assert container_id is not None
    d.emu.add_assistant_file(container_id, "/mnt/data/plot.png", b"png")
    d.write("d1/new.txt", b"new")
    d.sync("d1/new.txt")
    assert d.requests() == {"create_file": 1}  # the model's file was not looked at
    full = d.sync()
    assert full.listed and full.unknown_kept == 1
    assert full.plan is not None and full.plan.is_noop


def two_way(d: Daemonish, direction: Direction) -> str:
    """Turn the pair to ``direction``, with one file the model wrote brought home by a
    full pass (which earns the index trust in that direction); its container id."""
    # No content checks: the tests count a full pass's requests to the listing.
    d.engine.pair = d.engine.pair.model_copy(
        update={"direction": direction, "verify_per_listing": 0}
    )
    container_id = d.index.container_id
    assert container_id is not None
    d.emu.add_assistant_file(container_id, "/mnt/data/report.md", b"# report\n")
    first = d.sync()
    assert first.listed and first.downloaded == 1
    assert (d.root / "report.md").read_bytes() == b"# report\n"
    return container_id


def test_both_directions_send_a_local_change_without_a_listing(d: Daemonish) -> None:
    two_way(d, "both")
    d.write("d1/new.txt", b"new")
    result = d.sync("d1/new.txt")
    assert not result.listed
    assert d.requests() == {"create_file": 1}
    d.write("d2/f002.txt", b"edited, and longer than before")
    result = d.sync("d2/f002.txt")
    assert not result.listed
    assert d.requests() == {"create_file": 1, "retrieve_file": 1, "delete_file": 1}
    # A pulled file deleted here is deleted there (both), still without a listing.
    (d.root / "report.md").unlink()
    result = d.sync("report.md")
    assert not result.listed
    assert d.requests() == {"retrieve_file": 1, "delete_file": 1}
    full = d.sync()
    assert full.listed and full.plan is not None and full.plan.is_noop
    assert not (d.root / "report.md").exists()
    assert d.remote() == d.local()


def test_both_directions_bring_the_models_new_files_home_at_the_next_listing(
    d: Daemonish,
) -> None:
    container_id = two_way(d, "both")
    d.emu.add_assistant_file(container_id, "/mnt/data/plots/fig1.png", b"png")
    d.write("d1/new.txt", b"new")
    assert not d.sync("d1/new.txt").listed
    assert d.requests() == {"create_file": 1}  # the model's file was not looked at
    assert not (d.root / "plots").exists()
    full = d.sync()  # the remote poll
    assert full.listed and full.downloaded == 1
    assert (d.root / "plots/fig1.png").read_bytes() == b"png"


def model_file_id(d: Daemonish, container_id: str, path: str) -> str:
    with ContainersClient("k", base_url=BASE_URL, transport=d.emu.transport()) as client:
        (found,) = [f.id for f in client.iter_files(container_id) if f.path == path]
    return found


def test_a_file_the_model_rewrote_since_the_listing_is_not_deleted_blind(
    d: Daemonish,
) -> None:
    """Both sides changed between listings: before deleting the old version, the
    incremental pass sees that the model rewrote it and lists instead, so the
    model's version is kept as a conflict copy, not lost."""
    container_id = two_way(d, "both")
    model_id = model_file_id(d, container_id, "/mnt/data/report.md")
    d.emu.rewrite_file(container_id, model_id, b"# the model's second draft\n")
    d.write("report.md", b"# my edit\n")
    result = d.sync("report.md")
    assert result.listed  # the retrieve showed other bytes: a full pass decided
    assert d.requests()["retrieve_file"] == 1
    assert (d.root / "report.md").read_bytes() == b"# my edit\n"
    copies = [p for p in d.root.iterdir() if p.name.startswith("report (container conflict ")]
    assert [p.read_bytes() for p in copies] == [b"# the model's second draft\n"]


def test_an_edit_in_both_directions_costs_a_retrieve_more(d: Daemonish) -> None:
    """The old version is seen unchanged before it is deleted: 3 requests, no listing."""
    two_way(d, "both")
    d.write("report.md", b"# my edit, longer than the model's\n")
    result = d.sync("report.md")
    assert not result.listed
    assert d.requests() == {"create_file": 1, "retrieve_file": 1, "delete_file": 1}
    assert result.replaced == 1


def test_a_file_gone_from_the_container_since_the_listing_makes_the_pass_full(
    d: Daemonish,
) -> None:
    container_id = two_way(d, "both")
    model_id = model_file_id(d, container_id, "/mnt/data/report.md")
    with ContainersClient("k", base_url=BASE_URL, transport=d.emu.transport()) as client:
        assert client.delete_file(container_id, model_id)  # the model removed it
    (d.root / "report.md").unlink()
    result = d.sync("report.md")
    assert result.listed
    assert "delete_file" not in d.requests()
    assert not (d.root / "report.md").exists()
    assert d.sync().plan is not None and d.sync().plan.is_noop  # type: ignore[union-attr]


def test_pull_sends_nothing_for_a_local_change_and_does_not_list(d: Daemonish) -> None:
    two_way(d, "pull")
    d.write("report.md", b"# my own notes\n")
    (d.root / "d0/f000.txt").unlink()
    result = d.sync("report.md", "d0/f000.txt")
    assert not result.listed
    assert d.requests() == {}
    full = d.sync()
    assert full.listed
    assert set(d.requests()) == {"list_files"}  # nothing uploaded, deleted or pulled again
    assert (d.root / "report.md").read_bytes() == b"# my own notes\n"


# Counts COMMITs: guards figure 1, the cold push (2,000 x 4 KiB), for which the
# index records uploads in batches, not with two commits (fsyncs) per upload.
@pytest.mark.perf_guard
def test_a_cold_push_records_in_batches_with_every_intent_on_disk_first(tmp_path: Path) -> None:
    """300 uploads: a handful of commits, not two per upload; and no upload leaves
    before the commit that holds its intent."""
    root = tmp_path / "tree"
    for number in range(TREE_FILES):
        path = root / f"d{number % 5}" / f"f{number:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file {number}\n".encode())
    committed_intents: set[str] = set()
    sent_before_its_intent: list[str] = []
    with (
        Emulator(data_dir=tmp_path / "emulator") as emu,
        Index.open(tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box") as index,
    ):
        inner = emu.transport()

        class Checking(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                if request.method == "POST" and request.url.path.endswith("/files"):
                    # What a crash now would leave on disk: read through another connection.
                    with sqlite3.connect(index.path) as other:
                        rows = other.execute("SELECT relpath FROM intents").fetchall()
                    committed_intents.update(row[0] for row in rows)
                    body = request.read()
                    name = body.split(b'filename="', 1)[1].split(b'"', 1)[0].decode()
                    if name not in committed_intents:
                        sent_before_its_intent.append(name)
                return inner.handle_request(request)

        statements: list[str] = []
        index._conn.set_trace_callback(statements.append)
        with ContainersClient(
            "sk-test", base_url=BASE_URL, transport=Checking(), sleep=NoSleep()
        ) as client:
            pair = Pair(name="p", local=root, container="box")
            result = Engine(client, index, pair, concurrency=4).run_pass()
        index._conn.set_trace_callback(None)
    assert result.uploaded == TREE_FILES
    assert sent_before_its_intent == []
    commits = sum(1 for statement in statements if statement.strip().upper() == "COMMIT")
    assert commits < TREE_FILES // 10, commits  # was two per upload
    assert not index_has_intents(tmp_path / "state")


def index_has_intents(state: Path) -> bool:
    [path] = state.glob("*.sqlite")
    with sqlite3.connect(path) as db:
        return bool(db.execute("SELECT count(*) FROM intents").fetchone()[0])
