"""A pass that finds nothing to do writes nothing to the state directory.

Each check takes the state directory's picture (every file's size, times and
inode, and the directory's own times, which a file made and removed in between
moves) before and after the pass: one write, sync, create or unlink anywhere in
it changes the picture.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import Pair
from helpers import NoSleep
from pass_rig import BASE_URL, pass_rig

StatePicture = dict[str, tuple[int, int, int, int]]
OLD = 1_600_000_000  # file times well in the past: every digest is cached


def picture(state: Path) -> StatePicture:
    """Size, mtime, ctime and inode of the state directory and everything in it."""
    paths = [state, *sorted(state.iterdir())]
    return {
        path.name: (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        for path in paths
        for info in [path.stat()]
    }


def no_wal_files(state: StatePicture) -> bool:
    """No -wal or -shm beside the index: reads of a WAL file write its -shm through
    a shared mapping, which no file time shows; between passes there is none."""
    return not any(name.endswith(("-wal", "-shm")) for name in state)


def settle_clock() -> None:
    # File times move in the kernel's clock ticks (a few ms): a write in the same
    # tick as the picture would not show. Past the tick, any write moves them.
    time.sleep(0.05)


def write_tree(root: Path, count: int = 5) -> None:
    for number in range(count):
        path = root / f"dir{number % 2}" / f"f{number}.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"file {number}\n")
        os.utime(path, (OLD, OLD))


def test_a_no_op_one_shot_pass_writes_nothing(tmp_path: Path) -> None:
    with pass_rig(tmp_path, "both") as rig:
        write_tree(rig.root)
        rig.model_writes("/mnt/data/from-model.txt", b"model\n")
        rig.sync()  # uploads and downloads: writes
        os.utime(rig.root / "from-model.txt", (OLD, OLD))
        rig.sync()  # caches the digests of the files it just wrote
        before = picture(rig.state)
        settle_clock()
        result = rig.sync()
        assert result.in_sync and not result.changed_anything
        assert picture(rig.state) == before


@pytest.fixture
def kept_engine(tmp_path: Path) -> Iterator[tuple[Engine, Emulator, Path]]:
    """One engine kept across passes, as the daemon keeps it."""
    root = tmp_path / "tree"
    root.mkdir()
    write_tree(root)
    state = tmp_path / "state"
    with (
        Emulator(data_dir=tmp_path / "emulator") as emu,
        ContainersClient(
            "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
        ) as client,
        Index.open(state, base_url=BASE_URL, root=root, container_spec="box") as index,
    ):
        pair = Pair(name="t", local=root, container="box", direction="both")  # type: ignore[arg-type]
        engine = Engine(client, index, pair)
        assert engine.run_pass().uploaded == 5
        yield engine, emu, state


def test_the_daemons_no_op_incremental_pass_writes_nothing(
    kept_engine: tuple[Engine, Emulator, Path],
) -> None:
    engine, _emu, state = kept_engine
    before = picture(state)
    assert no_wal_files(before)
    settle_clock()
    result = engine.run_pass(paths={"dir0/f0.txt", "dir1"}, defer_unsettled=True)
    assert not result.listed and not result.changed_anything
    assert picture(state) == before


def test_a_pass_that_wrote_leaves_the_next_no_op_pass_nothing_to_write(
    kept_engine: tuple[Engine, Emulator, Path],
) -> None:
    engine, _emu, state = kept_engine
    new = engine.pair.local / "dir0" / "new.txt"
    new.write_text("new\n")
    os.utime(new, (OLD, OLD))
    assert engine.run_pass(paths={"dir0/new.txt"}).uploaded == 1
    before = picture(state)
    assert no_wal_files(before)
    settle_clock()
    assert not engine.run_pass(paths={"dir0/new.txt"}).changed_anything
    assert picture(state) == before
