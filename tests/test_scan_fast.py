"""scan's fast path: what it takes from the hash cache, and when it hands an entry on.

Most entries of a tree are regular files with plain names: ``_Walk._visit_all`` decides
them with one lstat and the cache's digests of their directory
(``HashCache.directory``). Every other entry, and any that fails on the way, goes to
``_visit_entry``. These tests pin both halves: a cached digest is used only when the
whole stat key matches, and an entry that leaves the fast path ends up exactly where
the full checks put it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from cntr_sync.hashcache import (
    HASH_BATCH,
    MemoryHashCache,
    ReadThroughCache,
    SqliteHashCache,
)
from cntr_sync.hashing import HASH_CHUNK, hash_file, hash_listed_file
from cntr_sync.ignore import IgnoreRules
from cntr_sync.models import LocalFile
from cntr_sync.scan import TICK_EVERY, Snapshot, _Walk, scan
from cntr_sync.tree_names import PARTIAL_PREFIX
from helpers import MemoryDatabase

OLD_NS = time.time_ns() - 3600 * 10**9


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(path, ns=(OLD_NS, OLD_NS))  # past the racy window: cacheable
    return path


def digest(data: bytes) -> str:
    return xxhash.xxh3_128(data).hexdigest()


def run(root: Path, cache: Any, patterns: tuple[str, ...] = ()) -> Snapshot:
    return scan(root, rules=IgnoreRules.load(root, patterns), hash_cache=cache)


# -- the cache's digests ---------------------------------------------------------------


@pytest.mark.parametrize("column", [0, 1, 2, 3])  # inode, size, mtime_ns, ctime_ns
def test_a_row_is_used_only_when_its_whole_stat_key_matches(tmp_path: Path, column: int) -> None:
    write(tmp_path / "same.txt", "same")
    write(tmp_path / "d" / "off.txt", "off")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    run(tmp_path, cache)
    cache.flush()
    # A digest no file has: a scan that takes it read the row, not the file.

    def change(relpath: str, row: list[Any]) -> None:
        row[4] = "from-the-row"
        if relpath == "d/off.txt":
            row[column] += 1

    db.rewrite(change)

    snapshot = run(tmp_path, cache)

    assert snapshot.files["same.txt"].hash == "from-the-row"
    assert snapshot.files["d/off.txt"].hash == digest(b"off")
    assert snapshot.hashed_count == 1


def test_rows_of_vanished_files_and_buffered_rows_are_taken_as_the_cache_says(
    tmp_path: Path,
) -> None:
    write(tmp_path / "a.txt", "a")
    gone = write(tmp_path / "gone.txt", "gone")
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    first = run(tmp_path, cache)
    cache.flush()
    gone.unlink()
    write(tmp_path / "new.txt", "new")
    second = run(tmp_path, cache)  # new.txt's row is buffered, not yet written
    third = run(tmp_path, cache)

    assert set(second.files) == {"a.txt", "new.txt"}
    assert (first.hashed_count, second.hashed_count, third.hashed_count) == (2, 1, 0)
    assert third.files["new.txt"].hash == digest(b"new")


def test_a_read_through_cache_asks_its_own_writes_before_the_rows(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    backing = SqliteHashCache(MemoryDatabase())
    cache = ReadThroughCache(backing)

    first = run(tmp_path, cache)
    second = run(tmp_path, cache)  # the backing table is still empty

    assert first.hashed_count == 2
    assert second.hashed_count == 0
    assert backing.count() == 0
    assert second.files == first.files


# Counts stored digests: guards issue 23's lost-index figure at 100,000 files (a dry
# run's scan kept each digest it hashed, ~11 MiB, though nothing asked for it again).
@pytest.mark.perf_guard
def test_a_read_through_cache_for_one_scan_keeps_no_write(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    backing = SqliteHashCache(MemoryDatabase())
    cache = ReadThroughCache(backing, keep_writes=False)

    first = run(tmp_path, cache)
    second = run(tmp_path, cache)

    assert (first.hashed_count, second.hashed_count) == (2, 2)  # nothing kept to ask
    assert backing.count() == 0
    assert second.files == first.files


def test_a_memory_cache_is_asked_through_lookup(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    cache = MemoryHashCache()
    first = run(tmp_path, cache)
    second = run(tmp_path, cache)
    assert (first.hashed_count, second.hashed_count) == (1, 0)


# -- entries that leave the fast path -----------------------------------------------


def test_partial_files_are_never_files_at_any_depth(tmp_path: Path) -> None:
    write(tmp_path / f"{PARTIAL_PREFIX}abc", "partial")
    write(tmp_path / "d" / f"{PARTIAL_PREFIX}def", "partial")
    write(tmp_path / "d" / "kept.txt", "kept")
    snapshot = run(tmp_path, MemoryHashCache())
    assert set(snapshot.files) == {"d/kept.txt"}
    assert sorted(snapshot.partials) == [f"{PARTIAL_PREFIX}abc", f"d/{PARTIAL_PREFIX}def"]


def test_a_pattern_with_a_slash_is_checked_with_the_entrys_real_kind(tmp_path: Path) -> None:
    # "/tmp/" matches a directory "tmp" only: the fast path's prefilter, asked as of a
    # directory, cannot tell a file "tmp" from it, so the file is decided by the full
    # checks, and kept.
    write(tmp_path / "tmp", "a file named tmp")
    write(tmp_path / "d" / "tmp" / "x.txt", "not at the root: kept")
    write(tmp_path / "e" / "y.txt", "y")
    kept_file = run(tmp_path, MemoryHashCache(), patterns=("/tmp/",))
    assert set(kept_file.files) == {"tmp", "d/tmp/x.txt", "e/y.txt"}

    (tmp_path / "tmp").unlink()
    write(tmp_path / "tmp" / "z.txt", "under an ignored directory")
    ignored_dir = run(tmp_path, MemoryHashCache(), patterns=("/tmp/",))
    assert set(ignored_dir.files) == {"d/tmp/x.txt", "e/y.txt"}
    assert ignored_dir.ignored_count == 1


class _Entry:
    """An ``os.DirEntry`` stand-in whose answers a test chooses (a race, an error)."""

    def __init__(
        self,
        path: Path,
        *,
        is_file: bool | OSError = True,
        lstat: os.stat_result | OSError | None = None,
    ) -> None:
        self.path = str(path)
        self.name = path.name
        self._is_file = is_file
        self._lstat = lstat

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        if isinstance(self._is_file, OSError):
            raise self._is_file
        return self._is_file

    def is_symlink(self) -> bool:
        return False

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        return False

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        if isinstance(self._lstat, OSError):
            raise self._lstat
        return self._lstat if self._lstat is not None else os.lstat(self.path)


def visit(root: Path, *entries: _Entry, first_scan: bool = False) -> Snapshot:
    """``entries`` visited as the root's listing, against an SQLite cache that knows the
    directory (a digest of another file), or with ``first_scan`` an empty one: the
    digests a first whole-tree scan has, where small files are read before any stat."""
    cache = SqliteHashCache(MemoryDatabase())
    if not first_scan:
        cache.store("someone-else", 1, 2, 3, 4, "digest")
    walk = _Walk(root, IgnoreRules.load(root), cache, None, False, time.time_ns, _no_tick, False)
    with cache.scanning():
        walk._visit_all("", list(entries), names_ruled_out=True)  # type: ignore[arg-type]
    return walk.snapshot()


def _no_tick() -> None:
    pass


def test_an_lstat_that_fails_makes_the_file_unreadable_or_gone(tmp_path: Path) -> None:
    denied = write(tmp_path / "denied.txt")
    gone = write(tmp_path / "gone.txt")
    snapshot = visit(
        tmp_path,
        _Entry(denied, lstat=PermissionError(13, "Permission denied")),
        _Entry(gone, lstat=FileNotFoundError(2, "No such file or directory")),
    )
    assert snapshot.files == {}
    assert snapshot.unreadable == ("denied.txt",)
    assert [(w.relpath, w.reason) for w in snapshot.warnings] == [
        ("denied.txt", "cannot be read: Permission denied")
    ]


@pytest.mark.parametrize("first_scan", [False, True])
def test_an_entry_listed_as_a_file_but_now_a_fifo_is_skipped_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_scan: bool
) -> None:
    fifo = tmp_path / "was-a-file"
    os.mkfifo(fifo)
    real_pread = os.pread
    reads: list[int] = []

    def pread(fd: int, size: int, offset: int) -> bytes:
        reads.append(fd)
        return real_pread(fd, size, offset)

    monkeypatch.setattr(os, "pread", pread)
    # The listing said "regular file".
    snapshot = visit(tmp_path, _Entry(fifo), first_scan=first_scan)
    assert reads == []
    assert snapshot.files == {}
    assert [(w.relpath, w.reason) for w in snapshot.warnings] == [("was-a-file", "FIFO skipped")]


@pytest.mark.parametrize("first_scan", [False, True])
def test_an_entry_listed_as_a_file_but_now_a_symlink_is_not_followed(
    tmp_path: Path, first_scan: bool
) -> None:
    root = tmp_path / "root"
    secret = write(tmp_path / "outside" / "secret.txt", "not for the container")
    link = root / "was-a-file"
    root.mkdir()
    link.symlink_to(secret)
    # The listing said "regular file": a first scan opens it before any stat, and must
    # not follow the link it has become.
    snapshot = visit(root, _Entry(link), first_scan=first_scan)
    assert snapshot.files == {}
    assert snapshot.hashed_count == 0
    assert [(w.relpath, w.reason) for w in snapshot.warnings] == [
        ("was-a-file", "special file skipped")  # the lstat's word for a link here
    ]


# Guards a first scan's cost (README Performance, scan scale, cold: about 2k
# instructions a file of its ~40k): a small file's stat comes from its descriptor,
# with no lstat.
@pytest.mark.perf_guard
def test_a_first_scan_takes_a_small_files_stat_from_its_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory the cache has no rows of: no lstat (nothing to look up with it),
    # and what the fstat said is what the snapshot and the cache's new rows hold.
    files = {
        "a.txt": write(tmp_path / "a.txt", "a"),
        "empty": write(tmp_path / "empty", b""),
        "big.bin": write(tmp_path / "big.bin", b"b" * (HASH_CHUNK + 1)),
    }
    lstats: list[str] = []
    real_lstat = os.lstat

    def lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if os.path.dirname(path) == str(tmp_path):
            lstats.append(os.path.basename(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    # _Entry.stat is an os.lstat, as DirEntry.stat(follow_symlinks=False) is.
    snapshot = visit(tmp_path, *(_Entry(path) for path in files.values()), first_scan=True)

    assert lstats == ["big.bin"]  # larger than a chunk: the long way
    for relpath, path in files.items():
        seen = real_lstat(path)
        assert snapshot.files[relpath] == LocalFile(
            relpath,
            seen.st_size,
            seen.st_mtime_ns,
            seen.st_ino,
            digest(path.read_bytes()),
            seen.st_ctime_ns,
        )
    assert snapshot.hashed_count == 3


def test_an_entry_whose_type_cannot_be_read_is_decided_by_the_full_checks(
    tmp_path: Path,
) -> None:
    plain = write(tmp_path / "plain.txt", "plain")
    snapshot = visit(tmp_path, _Entry(plain, is_file=OSError(5, "Input/output error")))
    assert snapshot.files["plain.txt"].hash == digest(b"plain")
    assert snapshot.warnings == ()


def test_local_files_are_values(tmp_path: Path) -> None:
    one = LocalFile("a.txt", 1, 2, 3, "h", 4)
    same = LocalFile("a.txt", 1, 2, 3, "h", 4)
    assert one == same
    assert hash(one) == hash(same)
    assert one != LocalFile("a.txt", 1, 2, 3, "h", 5)
    assert len({one, same}) == 1


# -- hashing in the scan --------------------------------------------------------------


def listed(path: Path) -> os.DirEntry[str]:
    """``path``'s entry in its directory's listing."""
    with os.scandir(path.parent) as listing:
        return next(entry for entry in listing if entry.name == path.name)


@pytest.mark.parametrize("size", [0, 1, 4096, HASH_CHUNK, HASH_CHUNK + 1, 2 * HASH_CHUNK + 5])
def test_the_scans_hashing_is_hash_file_for_any_size(tmp_path: Path, size: int) -> None:
    path = write(tmp_path / "f.bin", os.urandom(size))
    ticks: list[None] = []
    assert hash_file(path, tick=lambda: ticks.append(None), limit=size) == hash_file(path)
    assert len(ticks) == -(-size // HASH_CHUNK)  # one a chunk read
    # A first scan's read of a small file: the same digest, and the stat it was read at.
    read = hash_listed_file(listed(path))
    if size > HASH_CHUNK:
        assert read is None  # the long way
    else:
        assert read is not None
        assert read[1] == hash_file(path)
        assert read[0].st_ino == path.stat().st_ino


def test_the_scans_hashing_reads_what_the_stat_saw_or_what_is_left(tmp_path: Path) -> None:
    path = write(tmp_path / "f.bin", b"0123456789")
    # Grown since the stat: its first bytes only. Shrunk: what is there (the scan's
    # identity check then finds the change).
    assert hash_file(path, limit=4) == digest(b"0123")
    assert hash_file(path, limit=20) == digest(b"0123456789")


def test_the_scans_hashing_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(str(fifo), limit=10)
    # Listed as a FIFO: a first scan's read does not even open it.
    assert hash_listed_file(listed(fifo)) is None


# -- the SQLite cache's writes ------------------------------------------------------


def test_buffered_rows_are_written_as_deltas_and_answer_before_and_after(tmp_path: Path) -> None:
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    rows = [(f"d{n % 3}/f{n}", n, n * 10, n * 100, n * 1000, f"h{n}") for n in range(30, 0, -1)]
    rows.append(("top", 1, 2, 3, 4, "h-top"))
    for row in rows:
        cache.store(*row)
    assert cache.lookup("d1/f7", 7, 70, 700, 7000) == "h7"  # buffered
    assert cache.lookup("d1/f7", 7, 70, 700, 7001) is None
    cache.flush()
    assert db.deltas() == {row[0]: row[1:] for row in rows}  # a row each, no blob
    assert db.blobs() == {}
    assert cache.lookup("d1/f7", 7, 70, 700, 7000) == "h7"  # from the table
    cache.store("d1/f7", 8, 80, 800, 8000, "again")
    with cache.scanning():
        d1 = cache.directory("d1")
        assert d1.digest("f7", 8, 80, 800, 8000) == "again"  # the buffer wins
        assert d1.digest("f7", 7, 70, 700, 7000) is None
        assert d1.digest("f1", 1, 10, 100, 1000) == "h1"
        d1.close()
    cache.flush()
    # d1 was folded: its blob holds all its rows, its deltas are gone; d0 and d2 wait.
    assert set(db.blobs()) == {"d1"}
    assert len(db.blobs()["d1"]) == 10
    assert {relpath.partition("/")[0] for relpath in db.deltas()} == {"d0", "d2", "top"}
    assert cache.lookup("d1/f7", 8, 80, 800, 8000) == "again"


def test_a_cold_scan_is_written_in_batches_of_whole_directories(tmp_path: Path) -> None:
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    with cache.scanning():
        for number in range(3):
            directory = cache.directory(f"d{number}")
            assert directory.empty
            for n in range(HASH_BATCH // 2 + 1):
                directory.add(f"f{n}", n, 1, 2, 3, "h")
            directory.close()
        # Two directories made a batch: written while the scan runs, not held to its end.
        assert set(db.blobs()) == {"d0", "d1"}
    cache.flush()
    assert set(db.blobs()) == {"d0", "d1", "d2"}
    assert db.deltas() == {}
    assert cache.count() == 3 * (HASH_BATCH // 2 + 1)


def test_names_that_start_or_end_like_a_pattern_are_checked_in_full(tmp_path: Path) -> None:
    # Same first or last character as a default pattern's literal, yet no match: kept.
    for name in (".gitx/a", "_dar/b", "#c", "Thumbs.dbx", "x.swpx", "y.part.txt", "z.crdownloadd"):
        write(tmp_path / name, name)
    for name in (".git/config", "_darcs/d", "#e#", "Thumbs.db", "f.swp", "g.part", "h~"):
        write(tmp_path / name, name)
    snapshot = run(tmp_path, MemoryHashCache())
    assert set(snapshot.files) == {
        ".gitx/a",
        "_dar/b",
        "#c",
        "Thumbs.dbx",
        "x.swpx",
        "y.part.txt",
        "z.crdownloadd",
    }
    assert snapshot.ignored_count == 7


def test_an_own_name_that_is_empty_sends_every_entry_to_the_full_checks(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "a")
    write(tmp_path / "d" / "b.txt", "b")
    rules = IgnoreRules.load(tmp_path)
    rules.always_ignore(["d/"])  # its last component is "": a prefix of every name
    snapshot = scan(tmp_path, rules=rules, hash_cache=MemoryHashCache())
    assert set(snapshot.files) == {"a.txt", "d/b.txt"}


def test_a_scan_ticks_before_every_run_of_entries_and_for_every_hashed_file(
    tmp_path: Path,
) -> None:
    for index in range(2 * TICK_EVERY + 1):
        write(tmp_path / f"f{index}.txt", str(index))
    write(tmp_path / "d" / "one.txt", "one")
    cache = MemoryHashCache()
    cold: list[None] = []
    scan(
        tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=cache, tick=lambda: cold.append(None)
    )
    warm: list[None] = []
    scan(
        tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=cache, tick=lambda: warm.append(None)
    )
    # The root lists 2 * TICK_EVERY + 2 entries (three runs), "d" one (one run).
    assert len(warm) == 3 + 1
    assert len(cold) == 3 + 1 + 2 * TICK_EVERY + 2  # and one a file read


# Issue 23, third round: a lost index's sync hashed 100,000 files into batches of
# 25,000 before a write, ~6 MiB more at its peak (of 143 MiB) than a dry run. A cold
# scan of small directories is written in batches of at most HASH_BATCH files (and
# one directory), each written while the scan runs.
@pytest.mark.perf_guard
def test_a_cold_scan_buffers_at_most_a_small_batch_of_new_digests() -> None:
    assert HASH_BATCH <= 2_000
    db = MemoryDatabase()
    cache = SqliteHashCache(db)
    written: list[int] = []
    with cache.scanning():
        for number in range(5 * HASH_BATCH // 4):
            directory = cache.directory(f"d{number}")
            for n in range(4):
                directory.add(f"f{n}", n, 1, 2, 3, "h")
            directory.close()
            written.append(db.conn.execute("SELECT count(*) FROM hashes").fetchone()[0])
    cache.flush()
    files = 4 * (5 * HASH_BATCH // 4)
    assert cache.count() == files
    # Never more than a batch (and the directory that made it one) waited for a write.
    assert all(
        4 * (number + 1) - 4 * blobs <= HASH_BATCH + 4 for number, blobs in enumerate(written)
    )
