"""What the index holds in memory: entries that share the scan's and the listing's
objects, and a reader's copy that is a temporary file rather than memory."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cntr_sync.listing import Listing
from cntr_sync.models import IndexEntry, LocalFile
from helpers import open_index


def fresh(text: str) -> str:
    """An equal string that is not the same object."""
    return "".join(list(text))


def filled(state_dir: Path, root: Path) -> None:
    with open_index(state_dir, root) as index:
        index.set_container("cntr_1", "box")
        index.adopt(
            IndexEntry("a.txt", "cfile_a", "/mnt/data/a.txt", 1024, 5_000, "h1", 1.5, "push", 1024)
        )
        index.adopt(
            IndexEntry(
                "d/b.txt", "cfile_b", "/mnt/data/d/b.txt", 2048, 6_000, "h2", 2.5, "pull", None, 7
            )
        )


# Object identity: guards figure 5, the peak RSS of a no-change `sync` and of
# `status` at 100k files (<= 150 MB), where entries share the scan's and listing's objects.
@pytest.mark.perf_guard
def test_entries_hold_the_scans_and_the_listings_objects(tmp_path: Path, root: Path) -> None:
    state_dir = tmp_path / "state"
    filled(state_dir, root)
    local = {
        # Equal to the entry: its objects are taken.
        fresh("a.txt"): LocalFile(fresh("a.txt"), 1024, 5_000, 1, fresh("h1")),
        # Changed since: the entry keeps its own hash, size and mtime.
        fresh("d/b.txt"): LocalFile(fresh("d/b.txt"), 4096, 9_000, 2, fresh("h9")),
    }
    listing = Listing()
    listing.add(fresh("cfile_a"), fresh("/mnt/data/a.txt"), 1024, "user", 10)
    listing.add(fresh("cfile_b"), fresh("/mnt/data/elsewhere.txt"), 2048, "assistant", 20)
    with open_index(state_dir, root) as index:
        plain = index.entries()
        shared = index.entries(local, listing)
        table = index.entry_table(local, listing)
    assert shared == plain  # the same values
    assert dict(table) == plain and list(table) == ["a.txt", "d/b.txt"]
    assert table["a.txt"].hash is local["a.txt"].hash
    assert table["a.txt"].remote_id is listing.file(0).id
    a, b = shared["a.txt"], shared["d/b.txt"]
    seen = local["a.txt"]
    assert a.relpath is seen.relpath and a.hash is seen.hash
    assert a.size is seen.size and a.mtime_ns is seen.mtime_ns
    assert a.remote_size is a.size
    first, second = listing.file(0), listing.file(1)
    assert a.remote_id is first.id and a.remote_path is first.path
    assert b.relpath is local["d/b.txt"].relpath
    assert b.hash == "h2" and b.size == 2048 and b.mtime_ns == 6_000
    assert b.remote_id is second.id
    assert b.remote_path == "/mnt/data/d/b.txt" and b.remote_path is not second.path
    assert (b.origin, b.remote_size, b.remote_created_at) == ("pull", None, 7)


def test_a_reader_copies_the_index_into_a_temporary_file(tmp_path: Path, root: Path) -> None:
    state_dir = tmp_path / "state"
    filled(state_dir, root)
    with open_index(state_dir, root, lock=False) as reader:
        assert set(reader.entries()) == {"a.txt", "d/b.txt"}
        # SQLite's temporary database keeps a rollback journal; ":memory:" has none.
        assert reader.read("PRAGMA journal_mode", ()) == [("delete",)]


def test_a_reader_copies_into_memory_when_no_temporary_file_can_be_made(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_dir = tmp_path / "state"
    filled(state_dir, root)
    connect = sqlite3.connect
    made: list[str] = []

    def no_temporary_files(database: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        made.append(database)
        conn = connect(database, *args, **kwargs)
        if database == "":
            conn.close()  # as good as unwritable: the copy into it fails
        return conn

    monkeypatch.setattr(sqlite3, "connect", no_temporary_files)
    with open_index(state_dir, root, lock=False) as reader:
        assert set(reader.entries()) == {"a.txt", "d/b.txt"}
        assert reader.read("PRAGMA journal_mode", ()) == [("memory",)]
    assert made[0] == "" and ":memory:" in made
