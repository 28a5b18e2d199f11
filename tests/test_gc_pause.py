"""gc_pause: the cyclic collector off while whole-tree scans run, as it was after."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from cntr_sync.gc_pause import collector_paused
from cntr_sync.hashcache import SqliteHashCache
from cntr_sync.hashing import hash_file
from cntr_sync.ignore import IgnoreRules
from cntr_sync.scan import scan
from helpers import MemoryDatabase

OLD_NS = time.time_ns() - 3600 * 10**9


# Guards figure 5 (README Performance, scan at 100k files; gc_pause: the collector's
# passes cost 0.8k instructions a file of a warm scan, 1.6k of a cold one).
@pytest.mark.perf_guard
def test_the_collector_is_paused_during_a_scan_and_as_it_was_after(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    os.utime(tmp_path / "a.txt", ns=(OLD_NS, OLD_NS))
    seen: list[bool] = []

    def hasher(path: Path) -> str:  # called while the scan runs
        seen.append(gc.isenabled())
        return hash_file(path)

    def run(hasher: object = None) -> None:
        scan(
            tmp_path,
            rules=IgnoreRules.load(tmp_path),
            hash_cache=SqliteHashCache(MemoryDatabase()),
            hasher=hasher,  # type: ignore[arg-type]
        )

    assert gc.isenabled()
    run(hasher)
    assert seen == [False]
    assert gc.isenabled()

    def broken(path: Path) -> str:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run(broken)
    assert gc.isenabled()

    gc.disable()
    try:
        run()
        assert not gc.isenabled()  # a caller's choice stays
    finally:
        gc.enable()


def test_overlapping_pauses_end_with_the_last() -> None:
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


def test_a_pause_that_raises_still_ends() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError, match="inside"), collector_paused():
        assert not gc.isenabled()
        raise ValueError("inside")
    assert gc.isenabled()
