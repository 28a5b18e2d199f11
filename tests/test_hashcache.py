"""The hash cache's table of one row per directory: its blobs, damaged rows, the
migration from the row-per-file table, and what the scan's lane keeps of ``_hash``
(never reading a non-regular file, dropping a vanished one, deferring a changed one)."""

from __future__ import annotations

import gc
import marshal
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from cntr_sync.hashcache import SqliteHashCache, decode, encode
from cntr_sync.index import SCHEMA_VERSION, Index
from cntr_sync.scan import IgnoreRules, Snapshot, collector_paused, scan
from helpers import MemoryDatabase

OLD_NS = time.time_ns() - 3600 * 10**9


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))  # past the racy window: cacheable
    return path


def digest(data: str) -> str:
    return xxhash.xxh3_128(data.encode()).hexdigest()


def lane_cache() -> SqliteHashCache:
    """An SQLite cache in memory: the scan takes its rows a directory at a time."""
    return SqliteHashCache(MemoryDatabase())


def run(root: Path, cache: Any) -> Snapshot:
    return scan(root, rules=IgnoreRules.load(root), hash_cache=cache)


# -- blobs ---------------------------------------------------------------------------


def test_a_blob_decodes_to_what_was_encoded_and_a_damaged_one_to_nothing() -> None:
    entries = {"a.txt": (2**63 + 5, 3, -1_000, 2**70, "h"), "b": (1, 2, 3, 4, "d")}
    assert decode(encode(entries)) == entries  # any int: inodes and times beyond 64 bits
    assert decode(b"") is None
    assert decode(b"\x00garbage") is None
    assert decode(encode(entries)[:-3]) is None  # cut short
    assert decode(marshal.dumps([1, 2])) is None  # not a dict
    assert decode(marshal.dumps({"a": (1, 2, 3, 4)})) is None  # a field short
    assert decode(marshal.dumps({"a": (1, 2, 3, 4, b"h")})) is None  # digest not a str
    assert decode(marshal.dumps({"a": [1, 2, 3, 4, "h"]})) is None  # not a tuple
    assert decode("text") is None  # not a blob at all


def test_a_damaged_row_costs_a_re_hash_of_its_directory_and_is_rewritten(tmp_path: Path) -> None:
    for name in ("a/1.txt", "a/2.txt", "b/3.txt", "c/4.txt", "top.txt"):
        write(tmp_path / name, name)
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    first = run(tmp_path, cache)
    cache.flush()
    db.conn.execute("UPDATE hashes SET entries = ? WHERE dir = 'a'", (b"\x00garbage",))
    db.conn.execute(
        "UPDATE hashes SET entries = ? WHERE dir = 'b'", (marshal.dumps({"3.txt": (1, 2)}),)
    )
    assert cache.count() == 5  # what the rows say, damaged or not

    second = run(tmp_path, cache)
    cache.flush()
    third = run(tmp_path, cache)

    assert second.hashed_count == 3  # a's two files and b's one, not c's or the root's
    assert second.files == first.files
    assert third.hashed_count == 0
    assert set(db.cached()) == set(first.files)


def test_prune_drops_a_damaged_row_and_counts_what_it_said_it_held() -> None:
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    for relpath in ("a/1", "a/2", "b/3", "b/4", "b/5", "6"):
        cache.store(relpath, 1, 2, 3, 4, relpath)
    cache.flush()
    db.conn.execute("UPDATE hashes SET entries = X'00' WHERE dir = 'b'")

    assert cache.prune(["a/1", "b/3", "6"]) == 1 + 3
    assert db.cached() == {"a/1": (1, 2, 3, 4, "a/1"), "6": (1, 2, 3, 4, "6")}
    assert cache.count() == 2
    assert cache.prune([]) == 2
    assert db.conn.execute("SELECT count(*) FROM hashes").fetchone()[0] == 0


# -- the migration -------------------------------------------------------------------


def test_the_row_per_file_table_of_schema_5_is_replaced_and_refilled(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    write(root / "d" / "a.txt", "a")
    with Index.open(state, base_url="http://x", root=root, container_spec="c") as index:
        path = index.path
    # The file as cntr-sync with schema 5 left it: a row per file.
    db = sqlite3.connect(path)
    db.execute("DROP TABLE hashes")
    db.execute(
        "CREATE TABLE hashes (relpath TEXT PRIMARY KEY, inode INTEGER NOT NULL,"
        " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
        " hash TEXT NOT NULL) WITHOUT ROWID"
    )
    db.execute("INSERT INTO hashes VALUES ('d/a.txt', 1, 1, 1, 1, 'old')")
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()

    with Index.open(state, base_url="http://x", root=root, container_spec="c") as index:
        assert index.hashes.lookup("d/a.txt", 1, 1, 1, 1) is None  # the old rows are gone
        assert index.hashes.count() == 0
        first = scan(root, rules=IgnoreRules.load(root), hash_cache=index.hashes)
    with Index.open(state, base_url="http://x", root=root, container_spec="c") as index:
        second = scan(root, rules=IgnoreRules.load(root), hash_cache=index.hashes)
        assert index.hashes.count() == 1

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        columns = [row[1] for row in db.execute("PRAGMA table_info(hashes)")]
        assert columns == ["dir", "files", "entries"]
    finally:
        db.close()
    assert (first.hashed_count, second.hashed_count) == (1, 0)
    assert second.files["d/a.txt"].hash == digest("a")


# -- the lane's hashing keeps _hash's guarantees -------------------------------------


def test_a_file_swapped_for_a_non_regular_one_is_never_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "a.txt", "a")
    real_fstat, real_pread = os.fstat, os.pread
    reads: list[int] = []

    def fifo_fstat(fd: int) -> os.stat_result:
        real = real_fstat(fd)
        return os.stat_result((stat.S_IFIFO | 0o644, *tuple(real)[1:]))

    def pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(fd)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "fstat", fifo_fstat)
    monkeypatch.setattr(os, "pread", pread)
    snapshot = run(tmp_path, lane_cache())

    assert reads == []
    assert snapshot.files == {}
    assert snapshot.unreadable == ("a.txt",)
    assert "not a regular file" in snapshot.warnings[0].reason


@pytest.mark.parametrize("change", ["vanished", "changed"])
def test_a_file_that_vanishes_or_changes_while_hashed_is_dropped_or_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    write(tmp_path / "a.txt", "a")
    kept = write(tmp_path / "b.txt", "b")
    target = str(tmp_path / "a.txt")
    real_stat = os.stat

    def after_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        real = real_stat(path, *args, **kwargs)
        if str(path) != target:
            return real
        if change == "vanished":
            raise FileNotFoundError(2, "No such file or directory", target)
        fields = list(real)
        return os.stat_result((*fields[:8], real.st_mtime + 1, *fields[9:]))

    monkeypatch.setattr(os, "stat", after_stat)
    snapshot = run(tmp_path, lane_cache())

    assert set(snapshot.files) == {"b.txt"}
    assert snapshot.files["b.txt"].hash == digest(kept.read_text())
    assert snapshot.unstable == (("a.txt",) if change == "changed" else ())
    assert snapshot.unreadable == ()


# -- the collector -------------------------------------------------------------------


def test_the_collector_is_paused_during_a_scan_and_as_it_was_after(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    seen: list[bool] = []

    def hasher(path: Path) -> str:
        seen.append(gc.isenabled())
        return digest(path.read_text())

    assert gc.isenabled()
    scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=lane_cache(), hasher=hasher)
    assert seen == [False]
    assert gc.isenabled()

    def broken(path: Path) -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=lane_cache(), hasher=broken)
    assert gc.isenabled()

    gc.disable()
    try:
        scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=lane_cache())
        assert not gc.isenabled()  # a caller's choice stays
    finally:
        gc.enable()


def test_overlapping_pauses_end_with_the_last(tmp_path: Path) -> None:
    inside = threading.Event()
    release = threading.Event()

    def other_scan() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=other_scan)
    thread.start()
    try:
        assert inside.wait(10)
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other one still runs
    finally:
        release.set()
        thread.join(10)
    assert gc.isenabled()
