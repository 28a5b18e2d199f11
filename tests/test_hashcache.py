"""The hash cache's two tables (a blob per directory, a delta row per file changed
since): blobs, deltas and how a whole-tree scan folds them, damaged blobs, the
migration from the row-per-file table; what hashing in a whole-tree scan keeps
(never reading a non-regular file, dropping a vanished one, deferring a changed
one)."""

from __future__ import annotations

import marshal
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from cntr_sync.hashcache import ReadThroughCache, SqliteHashCache, decode, encode
from cntr_sync.ignore import IgnoreRules
from cntr_sync.index import Index
from cntr_sync.index_file import SCHEMA_VERSION
from cntr_sync.scan import Snapshot, scan
from helpers import MemoryDatabase

OLD_NS = time.time_ns() - 3600 * 10**9


def write(path: Path, data: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data)
    os.utime(path, ns=(OLD_NS, OLD_NS))  # past the racy window: cacheable
    return path


def digest(data: str) -> str:
    return xxhash.xxh3_128(data.encode()).hexdigest()


def sqlite_cache() -> SqliteHashCache:
    """An SQLite cache in memory, loaded in bulk by a whole-tree scan."""
    return SqliteHashCache(MemoryDatabase())


def run(root: Path, cache: Any, only: list[str] | None = None) -> Snapshot:
    return scan(root, rules=IgnoreRules.load(root), hash_cache=cache, only=only)


def blob_bytes(db: MemoryDatabase) -> dict[str, bytes]:
    """Every directory's blob as stored, byte for byte."""
    return dict(db.conn.execute("SELECT dir, entries FROM hashes").fetchall())


def scanned_then_changed(root: Path, cache: SqliteHashCache, texts: dict[str, str]) -> Snapshot:
    """A whole-tree scan of ``root``, then ``texts`` (relpath: text) written and scanned
    alone, as a daemon's incremental pass does; each flushed. The second snapshot."""
    run(root, cache)
    cache.flush()
    for relpath, text in texts.items():
        write(root / relpath, text)
    snapshot = run(root, cache, only=list(texts))
    cache.flush()
    return snapshot


def changes(db: MemoryDatabase) -> int:
    """Rows inserted, replaced or deleted on the connection so far."""
    return db.conn.total_changes


# -- blobs and deltas ------------------------------------------------------------------


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
    assert decode(b"\x00" + encode(entries)[1:]) is None  # a wrong checksum
    data = marshal.dumps([1, 2])
    assert decode(xxhash.xxh3_64_digest(data) + data) is None  # checksummed, not a dict


def test_a_blob_is_the_same_whoever_else_holds_its_objects() -> None:
    # No back-references (marshal 3+ writes one for every object referenced elsewhere,
    # as the scan's are, by its LocalFiles): the bytes depend on the values alone.
    big, digest_ = 10**18, "f" * 32
    shared = {"a": (big, big, big, big, digest_), "b": (big, big, big, big, digest_)}
    fresh = {
        name: (int(str(big)), int(str(big)), int(str(big)), int(str(big)), "".join(digest_))
        for name in ("a", "b")
    }
    assert encode(shared) == encode(fresh)
    assert decode(encode(shared)) == shared


def test_blobs_and_deltas_round_trip_through_the_tables() -> None:
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    # A whole-tree scan's fold writes blobs...
    with cache.scanning():
        for directory in ("", "d"):
            digests = cache.directory(directory)
            digests.add("a", 1, 2, 3, 4, f"{directory}a")
            digests.close()
    cache.flush()
    # ...single stores and forgets write deltas over them.
    cache.store("d/a", 5, 6, 7, 8, "new")
    cache.store("d/b", 1, 1, 1, 1, "b")
    cache.forget("a")
    cache.flush()

    assert db.blobs() == {"": {"a": (1, 2, 3, 4, "a")}, "d": {"a": (1, 2, 3, 4, "da")}}
    assert db.deltas() == {
        "d/a": (5, 6, 7, 8, "new"),
        "d/b": (1, 1, 1, 1, "b"),
        "a": (None, None, None, None, None),
    }
    assert db.conn.execute("SELECT dir, files, newest FROM hashes ORDER BY dir").fetchall() == [
        ("", 1, 4),
        ("d", 1, 4),
    ]
    # The deltas win, in a lookup and in what a scan takes.
    assert cache.lookup("d/a", 5, 6, 7, 8) == "new"
    assert cache.lookup("d/a", 1, 2, 3, 4) is None
    assert cache.lookup("a", 1, 2, 3, 4) is None
    fresh = SqliteHashCache(db)
    assert fresh.lookup("d/a", 5, 6, 7, 8) == "new"
    assert fresh.lookup("d/b", 1, 1, 1, 1) == "b"
    with fresh.scanning():
        assert fresh.directory("").empty  # its one row is gone
        taken = fresh.directory("d")
        assert not taken.empty
        assert taken.digest("a", 5, 6, 7, 8) == "new"
        assert taken.digest("a", 1, 2, 3, 4) is None
        assert taken.digest("b", 1, 1, 1, 1) == "b"


def test_a_delta_that_says_gone_hides_the_blobs_row(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    first = run(tmp_path, cache)
    cache.flush()
    before = blob_bytes(db)
    a = first.files["d/a.txt"]
    key = (a.inode, a.size, a.mtime_ns, a.ctime_ns)
    (tmp_path / "d" / "a.txt").unlink()

    gone = run(tmp_path, cache, only=["d/a.txt"])  # the daemon's event for the deletion
    cache.flush()

    assert gone.files == {}
    assert db.deltas() == {"d/a.txt": (None, None, None, None, None)}
    assert blob_bytes(db) == before  # the blob still holds a.txt's row...
    assert "a.txt" in db.blobs()["d"]
    assert SqliteHashCache(db).lookup("d/a.txt", *key) is None  # ...which no longer counts
    b = first.files["d/b.txt"]
    fresh = SqliteHashCache(db)
    with fresh.scanning():
        taken = fresh.directory("d")
        assert taken.digest("a.txt", *key) is None
        assert taken.digest("b.txt", b.inode, b.size, b.mtime_ns, b.ctime_ns) == b.hash
    # The next whole-tree scan folds the deletion into the blob.
    run(tmp_path, cache)
    cache.flush()
    assert set(db.blobs()["d"]) == {"b.txt"}
    assert db.deltas() == {}


# Guards figure 4 (README Performance: a daemon's change listed within the quiet period
# + 50 ms at 100k files): one changed file writes one small row, rewrites no directory.
@pytest.mark.perf_guard
def test_a_single_path_scan_writes_one_delta_row_and_leaves_the_blob(tmp_path: Path) -> None:
    for number in range(50):
        write(tmp_path / "d" / f"f{number}.txt", f"file {number}")
    write(tmp_path / "other" / "x.txt", "x")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    run(tmp_path, cache)
    cache.flush()
    before = blob_bytes(db)
    write(tmp_path / "d" / "f7.txt", "changed")
    db.reads.clear()
    written = changes(db)

    snapshot = run(tmp_path, cache, only=["d/f7.txt"])
    cache.flush()

    assert snapshot.hashed_count == 1
    assert snapshot.files["d/f7.txt"].hash == digest("changed")
    changed = snapshot.files["d/f7.txt"]
    assert db.deltas() == {
        "d/f7.txt": (changed.inode, changed.size, changed.mtime_ns, changed.ctime_ns, changed.hash)
    }
    assert blob_bytes(db) == before  # no blob rewritten
    assert changes(db) - written == 1  # one row: the delta
    # Its change time is newer than any in d's blob: the blob was not even read.
    assert not any("SELECT entries" in sql for sql in db.reads)
    # And the next incremental pass over it finds its delta row.
    again = run(tmp_path, cache, only=["d/f7.txt"])
    assert again.hashed_count == 0
    assert again.files["d/f7.txt"] == changed


# Guards figure 5 (README Performance, scan at 100k files, warm): a whole-tree scan
# rewrites only the directories that changed, and nothing when nothing did.
@pytest.mark.perf_guard
def test_a_whole_tree_scan_folds_deltas_and_rewrites_only_their_directories(
    tmp_path: Path,
) -> None:
    for directory in ("a", "b", "c"):
        for number in range(5):
            write(tmp_path / directory / f"f{number}.txt", f"{directory} {number}")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    scanned_then_changed(tmp_path, cache, {"a/f1.txt": "changed a", "b/new.txt": "new in b"})
    assert set(db.deltas()) == {"a/f1.txt", "b/new.txt"}
    before = blob_bytes(db)
    written = changes(db)

    snapshot = run(tmp_path, cache)
    cache.flush()

    assert snapshot.hashed_count == 0  # the deltas answered
    assert db.deltas() == {}
    # a's and b's blobs rewritten with their deltas (2 rows), their 2 deltas deleted;
    # c had nothing new: untouched.
    assert changes(db) - written == 4
    after = blob_bytes(db)
    assert after["c"] == before["c"]
    assert decode(after["a"])["f1.txt"][4] == digest("changed a")  # type: ignore[index]
    assert decode(after["b"])["new.txt"][4] == digest("new in b")  # type: ignore[index]
    assert set(db.cached()) == set(snapshot.files)
    # Nothing new since: a scan writes nothing.
    written = changes(db)
    assert run(tmp_path, cache).hashed_count == 0
    cache.flush()
    assert changes(db) == written


def test_a_dry_runs_scan_folds_nothing(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    db = MemoryDatabase()
    backing = SqliteHashCache(db)
    scanned_then_changed(tmp_path, backing, {"d/a.txt": "changed"})
    written = changes(db)

    snapshot = run(tmp_path, ReadThroughCache(backing))
    backing.flush()

    assert snapshot.hashed_count == 0  # the blob and the delta both answered
    assert changes(db) == written
    assert set(db.deltas()) == {"d/a.txt"}


def test_a_damaged_blob_costs_a_re_hash_of_its_directory_and_is_rewritten(
    tmp_path: Path,
) -> None:
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
    # A damaged blob outside a scan: no row, not an error.
    db.conn.execute("UPDATE hashes SET entries = X'00' WHERE dir = 'c'")
    c = first.files["c/4.txt"]
    assert SqliteHashCache(db).lookup("c/4.txt", c.inode, c.size, c.mtime_ns, c.ctime_ns) is None


def test_a_damaged_delta_row_hides_the_blobs_row_and_costs_one_re_hash(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    db = MemoryDatabase()
    incremental = scanned_then_changed(tmp_path, SqliteHashCache(db), {"d/a.txt": "changed"})
    changed = incremental.files["d/a.txt"]
    key = (changed.inode, changed.size, changed.mtime_ns, changed.ctime_ns)
    db.conn.execute("UPDATE hash_deltas SET hash = X'00'")  # a blob where a digest was

    fresh = SqliteHashCache(db)
    assert fresh.lookup("d/a.txt", *key) is None
    snapshot = run(tmp_path, fresh)
    fresh.flush()

    assert snapshot.hashed_count == 1
    assert snapshot.files["d/a.txt"] == changed
    assert db.deltas() == {}
    assert db.cached()["d/a.txt"] == (*key, digest("changed"))


def test_prune_drops_a_damaged_blob_folds_deltas_and_counts_what_went() -> None:
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    with cache.scanning():
        for directory, names in (("a", "12"), ("b", "345"), ("", "6")):
            digests = cache.directory(directory)
            for name in names:
                digests.add(name, 1, 2, 3, 4, f"{directory}/{name}" if directory else name)
            digests.close()
    cache.flush()
    cache.store("a/7", 1, 2, 3, 4, "a/7")  # a delta, kept
    cache.store("c/8", 1, 2, 3, 4, "c/8")  # a delta, not kept
    cache.forget("6")  # gone, yet kept below: stays gone
    db.conn.execute("UPDATE hashes SET entries = X'00' WHERE dir = 'b'")

    assert cache.prune(["a/1", "a/7", "b/3", "6"]) == 1 + 3 + 1
    assert db.cached() == {"a/1": (1, 2, 3, 4, "a/1"), "a/7": (1, 2, 3, 4, "a/7")}
    assert db.deltas() == {}
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
    db.execute("DROP TABLE hash_deltas")
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
        assert columns == ["dir", "files", "newest", "entries"]
        columns = [row[1] for row in db.execute("PRAGMA table_info(hash_deltas)")]
        assert columns == ["dir", "name", "inode", "size", "mtime_ns", "ctime_ns", "hash"]
    finally:
        db.close()
    assert (first.hashed_count, second.hashed_count) == (1, 0)
    assert second.files["d/a.txt"].hash == digest("a")


# -- hashing keeps its guarantees ---------------------------------------------------


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
    snapshot = run(tmp_path, sqlite_cache())

    assert reads == []
    assert snapshot.files == {}
    assert snapshot.unreadable == ("a.txt",)
    assert "not a regular file" in snapshot.warnings[0].reason


@pytest.mark.parametrize("change", ["vanished", "changed"])
def test_a_file_that_vanishes_or_changes_while_hashed_is_dropped_or_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    # A directory the cache has rows of: its new files are lstat'ed, read, stat'ed again.
    write(tmp_path / "seen.txt", "seen")
    cache = sqlite_cache()
    run(tmp_path, cache)
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
    snapshot = run(tmp_path, cache)

    assert set(snapshot.files) == {"b.txt", "seen.txt"}
    assert snapshot.files["b.txt"].hash == digest(kept.read_text())
    assert snapshot.unstable == (("a.txt",) if change == "changed" else ())
    assert snapshot.unreadable == ()


def fstat_changing(monkeypatch: pytest.MonkeyPatch, target: str, change: Any) -> list[str]:
    """``os.fstat`` that calls ``change()`` before the second fstat of a descriptor of
    ``target`` (what a first scan's read of it asks after reading), and ``os.open``
    that records every path opened."""
    real_open, real_fstat = os.open, os.fstat
    opened: list[str] = []
    fds: dict[int, int] = {}

    def recording_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        opened.append(str(path))
        if str(path) == target:
            fds[fd] = 0
        return fd

    def fstat(fd: int) -> os.stat_result:
        if fd in fds:
            fds[fd] += 1
            if fds[fd] == 2:
                change()
        return real_fstat(fd)

    monkeypatch.setattr(os, "open", recording_open)
    monkeypatch.setattr(os, "fstat", fstat)
    return opened


# Guards figure 5 (README Performance, scan at 100k files, cold): a first scan opens a
# small file once (its stat from the descriptor); only a change sends it the long way.
@pytest.mark.perf_guard
def test_a_first_scan_reads_a_file_that_changes_while_read_again_the_long_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory the cache has no rows of: the descriptor's fstat before and after the
    # read stand in for the lstat and the stat; a change between them sends the file
    # the long way (lstat, read, stat), which finds it holding still and hashes that.
    target = write(tmp_path / "a.txt", "a")
    kept = write(tmp_path / "b.txt", "b")

    def rewrite() -> None:
        write(target, "rewritten")
        os.utime(target, ns=(OLD_NS + 10**9, OLD_NS + 10**9))

    opened = fstat_changing(monkeypatch, str(target), rewrite)
    snapshot = run(tmp_path, sqlite_cache())

    assert snapshot.files["a.txt"].hash == digest("rewritten")
    assert snapshot.files["a.txt"].size == len("rewritten")
    assert snapshot.files["b.txt"].hash == digest(kept.read_text())
    assert opened.count(str(target)) == 2  # the first read's, then the long way's
    assert opened.count(str(kept)) == 1
    assert snapshot.unstable == ()


def test_a_first_scan_drops_a_file_removed_while_it_was_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unlinking changes the inode's ctime, which the fstat after the read compares:
    # the long way then finds the path gone.
    target = write(tmp_path / "a.txt", "a")
    kept = write(tmp_path / "b.txt", "b")
    fstat_changing(monkeypatch, str(target), target.unlink)
    snapshot = run(tmp_path, sqlite_cache())
    assert set(snapshot.files) == {"b.txt"}
    assert snapshot.files["b.txt"].hash == digest(kept.read_text())
    assert (snapshot.unstable, snapshot.unreadable, snapshot.warnings) == ((), (), ())
