"""Backups of local files a pass replaced or deleted (issue 22, item 1).

A model's edit of a file unchanged here, a propagated remote deletion and a
``remote-wins`` conflict each remove local bytes: the previous file is kept
under the pair's backup directory, one folder per pass named by its UTC time,
the file at its relpath, and can be put back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync import backups, fileio, local_side
from cntr_sync.api import ContainersClient
from cntr_sync.backups import PassBackups, folder_time, prune, version_at, versions
from cntr_sync.emulator import Emulator
from cntr_sync.models import Pair
from cntr_sync.transfer import restore_version
from helpers import local_tree
from pass_rig import BASE_URL, PassRig, pass_rig

DAY = 86_400.0


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[PassRig]:
    with pass_rig(tmp_path) as made:
        yield made


def write(root: Path, relpath: str, content: bytes) -> None:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def test_a_model_rewrite_of_an_unchanged_file_keeps_the_old_bytes_and_restore_brings_them_back(
    rig: PassRig,
) -> None:
    write(rig.root, "notes/plan.md", b"my careful plan")
    rig.sync()
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("notes/plan.md"), b"the model's mistake!")
    result = rig.sync()
    assert local_tree(rig.root) == {"notes/plan.md": b"the model's mistake!"}
    (kept,) = result.backups
    assert kept.relpath == "notes/plan.md" and kept.size == len(b"my careful plan")
    # A layout a person restores from with cp: <backup dir>/<UTC time>/<relpath>.
    assert kept.path == rig.backup_dir / kept.folder / "notes" / "plan.md"
    assert folder_time(kept.folder) is not None
    assert kept.path.read_bytes() == b"my careful plan"
    assert rig.backup_dir.parent == rig.state  # the state directory, per pair

    restore_version(rig.root, "notes/plan.md", kept.path, PassBackups(rig.backup_dir, 2e9).keep)
    assert (rig.root / "notes/plan.md").read_bytes() == b"my careful plan"
    # The restore is an edit like any other: the next pass pushes it.
    pushed = rig.sync()
    assert pushed.replaced == 1
    # And the mistake it undid is kept too: a restore can be undone.
    assert sorted(v.path.read_bytes() for v in versions(rig.backup_dir, "notes/plan.md")) == [
        b"my careful plan",
        b"the model's mistake!",
    ]


def test_a_propagated_remote_deletion_is_backed_up(rig: PassRig) -> None:
    write(rig.root, "data.csv", b"1,2,3")
    rig.sync()
    with ContainersClient("k", base_url=BASE_URL, transport=rig.emu.transport()) as client:
        client.delete_file(rig.container_id, rig.entry_id("data.csv"))
    result = rig.sync(remote_delete="propagate")
    assert result.local_deleted == 1 and local_tree(rig.root) == {}
    (kept,) = result.backups
    assert kept.path.read_bytes() == b"1,2,3"


def test_a_remote_wins_conflict_keeps_the_local_version_in_the_backups_too(rig: PassRig) -> None:
    write(rig.root, "a.txt", b"base")
    rig.sync()
    write(rig.root, "a.txt", b"local edit")
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("a.txt"), b"remote edit!")
    result = rig.sync(conflict="remote-wins")
    (kept,) = result.backups
    assert kept.path.read_bytes() == b"local edit"
    assert (rig.root / "a.txt").read_bytes() == b"remote edit!"


def test_a_pass_that_only_brings_new_files_keeps_nothing(rig: PassRig) -> None:
    rig.emu.add_assistant_file(rig.container_id, "/mnt/data/new.txt", b"new")
    assert rig.sync().backups == []
    assert not rig.backup_dir.exists()


def test_a_backup_directory_inside_the_root_is_never_uploaded(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    with Emulator(data_dir=tmp_path / "emulator") as emu:
        rig = PassRig(
            emu,
            root,
            root / ".state",
            Pair(name="t", local=root, container="box", direction="both"),
        )
        write(root, "a.txt", b"v1")
        rig.sync()
        rig.emu.rewrite_file(rig.container_id, rig.entry_id("a.txt"), b"v2 from the model")
        assert len(rig.sync().backups) == 1
        assert rig.backup_dir.is_relative_to(root)
        again = rig.sync()
        assert again.uploaded == 0
        with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
            paths = [f.path for f in client.iter_files(rig.container_id)]
        assert len(paths) == 1 and paths[0].endswith("a.txt")


# -- the backup directory itself ----------------------------------------------------------


def keep_file(directory: Path, root: Path, relpath: str, started_at: float) -> Path:
    backups_of_pass = PassBackups(directory, started_at)
    fd = os.open(root / relpath.rpartition("/")[0] if "/" in relpath else root, os.O_RDONLY)
    try:
        version = backups_of_pass.keep(fd, relpath.rpartition("/")[2], relpath, "copy")
    finally:
        os.close(fd)
    return version.path


def test_versions_are_listed_oldest_first_and_chosen_by_time(tmp_path: Path) -> None:
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    for n, at in enumerate((1_000 * DAY, 1_001 * DAY, 1_002 * DAY)):
        write(root, "d/f.txt", f"version {n}".encode())
        keep_file(kept, root, "d/f.txt", at)
    found = versions(kept, "d/f.txt")
    assert [v.path.read_bytes() for v in found] == [b"version 0", b"version 1", b"version 2"]
    chosen = version_at(kept, "d/f.txt", 1_001.5 * DAY)
    assert chosen is not None and chosen.path.read_bytes() == b"version 1"
    assert version_at(kept, "d/f.txt", 999 * DAY) is None
    assert version_at(kept, "other.txt") is None


def test_one_pass_keeping_a_relpath_twice_keeps_both(tmp_path: Path) -> None:
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    one_pass = PassBackups(kept, 1_000 * DAY)
    fd = os.open(root, os.O_RDONLY)
    try:
        write(root, "f", b"first")
        one_pass.keep(fd, "f", "f", "copy")
        write(root, "f", b"second")
        one_pass.keep(fd, "f", "f", "move")
    finally:
        os.close(fd)
    assert [v.path.read_bytes() for v in versions(kept, "f")] == [b"first", b"second"]
    assert not (root / "f").exists()


def test_retention_removes_the_oldest_first_and_never_the_newest_version(tmp_path: Path) -> None:
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    now = 2_000 * DAY
    for age_days, relpath in ((90, "old.txt"), (60, "a.txt"), (40, "a.txt"), (1, "a.txt")):
        write(root, relpath, b"x" * 100)
        keep_file(kept, root, relpath, now - age_days * DAY)
    # Past 30 days: a.txt's two older versions go; old.txt's only version stays.
    gone = prune(kept, keep_days=30, max_bytes=10**9, now=now)
    assert sorted((v.relpath, round((now - v.kept_at) / DAY)) for v in gone) == [
        ("a.txt", 40),
        ("a.txt", 60),
    ]
    assert sorted(v.relpath for v in versions(kept)) == ["a.txt", "old.txt"]
    # Over the byte budget: the oldest goes first, and never a file's newest version.
    write(root, "a.txt", b"y" * 100)
    keep_file(kept, root, "a.txt", now)
    gone = prune(kept, keep_days=1_000, max_bytes=150, now=now)
    assert [(v.relpath, v.kept_at) for v in gone] == [("a.txt", now - DAY)]
    assert sorted(v.relpath for v in versions(kept)) == ["a.txt", "old.txt"]
    # Emptied pass folders are removed.
    assert all(any(folder.iterdir()) for folder in kept.iterdir())


def test_a_file_that_cannot_be_kept_is_not_removed(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    write(root, "f", b"precious")
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")
    fd = os.open(root, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            PassBackups(blocked, 0.0).keep(fd, "f", "f", "move")
    finally:
        os.close(fd)
    assert (root / "f").read_bytes() == b"precious"
    assert backups.versions(blocked) == []


def test_backup_dir_chooses_where_versions_are_kept(rig: PassRig, tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere"
    write(rig.root, "a.txt", b"v1")
    rig.sync(backup_dir=chosen)
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("a.txt"), b"v2 from the model")
    (kept,) = rig.sync(backup_dir=chosen).backups
    assert kept.path.is_relative_to(chosen) and kept.path.read_bytes() == b"v1"


def test_a_folder_name_picks_that_version_among_passes_of_one_second(tmp_path: Path) -> None:
    """Two passes in one second keep their versions in ``...Z`` and ``...Z-2``: a time
    cannot tell them apart, the folder's name can."""
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    for content in (b"first", b"second"):
        write(root, "f.txt", content)
        keep_file(kept, root, "f.txt", 1_000 * DAY)
    first, second = versions(kept, "f.txt")
    assert first.kept_at == second.kept_at and first.folder != second.folder
    assert version_at(kept, "f.txt", first.folder) == first
    assert version_at(kept, "f.txt", second.folder) == second
    assert version_at(kept, "f.txt", 1_000 * DAY) == second  # the newest of that second


def test_short_writes_are_written_on_and_a_write_of_nothing_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.write`` may take fewer bytes than it is given (a full disk, a quota): a
    copy that ignored the count would keep a file cut short, then delete the original."""
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    content = bytes(range(256)) * 5_000  # more than one chunk
    write(root, "big.bin", content)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:1000])))
    kept_path = keep_file(kept, root, "big.bin", 1_000 * DAY)
    assert kept_path.read_bytes() == content

    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="took no more bytes"):
            fileio.write_all(fd, b"abc")
    finally:
        os.close(fd)


def test_a_file_written_to_while_it_is_copied_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup directory on another file system means a copy, then an unlink: a
    file that changed during the copy keeps its place, and no torn copy is kept."""
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    write(root, "f", b"before")

    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(18, "Invalid cross-device link")  # EXDEV

    real_copy = backups.copy_fd

    def copy_then_append(source: int, target: int) -> int:
        copied = real_copy(source, target)
        with (root / "f").open("ab") as appended:
            appended.write(b" and after")
        return copied

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(backups, "copy_fd", copy_then_append)
    fd = os.open(root, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="changed while it was copied"):
            PassBackups(kept, 1_000 * DAY).keep(fd, "f", "f", "move")
    finally:
        os.close(fd)
    assert (root / "f").read_bytes() == b"before and after"
    assert versions(kept) == []


def test_a_copied_version_and_its_restore_keep_the_files_mode(tmp_path: Path) -> None:
    """A restored script runs again: the execute bit survives the copy and the restore."""
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    write(root, "run.sh", b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o750)
    kept_path = keep_file(kept, root, "run.sh", 1_000 * DAY)
    assert kept_path.stat().st_mode & 0o777 == 0o750
    (root / "run.sh").unlink()
    restore_version(root, "run.sh", kept_path, PassBackups(kept, 2_000 * DAY).keep)
    assert (root / "run.sh").stat().st_mode & 0o777 == 0o750
    assert (root / "run.sh").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_a_version_that_cannot_be_removed_stays_and_the_rest_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, kept = tmp_path / "tree", tmp_path / "kept"
    root.mkdir()
    now = 2_000 * DAY
    for age_days in (90, 80, 1):
        write(root, "a.txt", f"{age_days} days old".encode())
        keep_file(kept, root, "a.txt", now - age_days * DAY)
    stuck = versions(kept, "a.txt")[0].path
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if path == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        real_unlink(path, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    gone = prune(kept, keep_days=30, max_bytes=10**9, now=now)
    assert [round((now - v.kept_at) / DAY) for v in gone] == [80]
    left = versions(kept, "a.txt")
    assert len(left) == 2 and left[0].path == stuck


def test_retention_that_fails_does_not_fail_the_pass(
    rig: PassRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention is housekeeping after a pass that went well: an unreadable backup
    directory is a warning, not a failed pass (nor, in the daemon, a pair in error)."""
    write(rig.root, "a.txt", b"v1")
    rig.sync()
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("a.txt"), b"v2 from the model")

    def unreadable(*args: object, **kwargs: object) -> list[backups.KeptVersion]:
        raise PermissionError(13, "Permission denied", "backups")

    monkeypatch.setattr(local_side, "prune", unreadable)
    result = rig.sync()
    assert result.downloaded == 1 and result.in_sync
    assert (rig.root / "a.txt").read_bytes() == b"v2 from the model"
