"""What hashing in a whole-tree scan keeps (never reading a non-regular file,
dropping a vanished one, deferring a changed one), and the cyclic collector's
pause while a scan runs."""

from __future__ import annotations

import gc
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import xxhash

from cntr_sync.hashcache import SqliteHashCache
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


def sqlite_cache() -> SqliteHashCache:
    """An SQLite cache in memory, loaded in bulk by a whole-tree scan."""
    return SqliteHashCache(MemoryDatabase())


def run(root: Path, cache: Any) -> Snapshot:
    return scan(root, rules=IgnoreRules.load(root), hash_cache=cache)


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
    snapshot = run(tmp_path, sqlite_cache())

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
    scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=sqlite_cache(), hasher=hasher)
    assert seen == [False]
    assert gc.isenabled()

    def broken(path: Path) -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=sqlite_cache(), hasher=broken)
    assert gc.isenabled()

    gc.disable()
    try:
        scan(tmp_path, rules=IgnoreRules.load(tmp_path), hash_cache=sqlite_cache())
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
