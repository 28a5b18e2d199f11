"""The two-way planner with plain values: no file system, no server.

Each case is one row of the decision table: what each side did since the
index entry (the common ancestor), and what a pass must do about it.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from cntr_sync.actions import Plan
from cntr_sync.models import IndexEntry, LocalFile, RemoteFile
from cntr_sync.plan import plan
from cntr_sync.plan_inputs import Policy
from plain_inputs import PlainEntries, PlainFiles

NOW = 1_800_000_000.0


def local(relpath: str, content: str = "base") -> LocalFile:
    return LocalFile(relpath, len(content), 1_000, 7, f"h:{content}")


def remote(
    file_id: str, relpath: str, content: str = "base", source: str = "assistant"
) -> RemoteFile:
    path = f"/mnt/data/{relpath}"
    return RemoteFile(file_id, path, relpath, len(content), source, 100)


def entry(relpath: str, file_id: str, content: str = "base", origin: str = "pull") -> IndexEntry:
    return IndexEntry(
        relpath,
        file_id,
        f"/mnt/data/{relpath}",
        len(content),
        1_000,
        f"h:{content}",
        1.0,
        origin,  # type: ignore[arg-type]
        len(content),
        100,
    )


def run(
    locals_: list[LocalFile],
    index: list[IndexEntry],
    remotes: list[RemoteFile],
    direction: str = "both",
    conflict_copies: frozenset[str] | set[str] = frozenset(),
    **policy: object,
) -> Plan:
    by_path: Mapping[str, LocalFile] = {f.relpath: f for f in locals_}
    return plan(
        by_path,
        PlainEntries(index),
        PlainFiles(remotes),
        policy=Policy(**{"direction": direction, "now": NOW, **policy}),  # type: ignore[arg-type]
        conflict_copies=conflict_copies,
    )


def test_in_sync_does_nothing() -> None:
    p = run([local("a")], [entry("a", "r1")], [remote("r1", "a")])
    assert p.is_noop


def test_a_remote_change_with_the_local_file_unchanged_comes_home() -> None:
    p = run([local("a")], [entry("a", "r1")], [remote("r1", "a", "longer base")])
    (download,) = p.downloads
    assert (download.relpath, download.reason, download.expect) == ("a", "changed", download.expect)
    assert download.expect is not None and download.expect.hash == "h:base"
    assert not p.uploads and not p.deletes


def test_a_rewrite_under_a_new_id_comes_home_too() -> None:
    p = run([local("a")], [entry("a", "r1")], [remote("r2", "a", "new")])
    assert [(d.remote.id, d.relpath) for d in p.downloads] == [("r2", "a")]
    assert not p.uploads


def test_a_local_change_goes_up_in_both_and_stays_in_pull() -> None:
    both = run([local("a", "edited")], [entry("a", "r1")], [remote("r1", "a")])
    assert [(u.relpath, u.replaces) for u in both.uploads] == [("a", "r1")]
    pulled = run([local("a", "edited")], [entry("a", "r1")], [remote("r1", "a")], "pull")
    assert pulled.is_noop


@pytest.mark.parametrize(
    ("policy", "downloads", "uploads"),
    [
        ("keep-both", ["a (container conflict 2027-01-15 080000).txt"], ["a.txt"]),
        ("local-wins", [], ["a.txt"]),
        ("remote-wins", ["a.txt"], []),
    ],
)
def test_a_change_on_both_sides_is_a_conflict(
    policy: str, downloads: list[str], uploads: list[str]
) -> None:
    p = run(
        [local("a.txt", "mine")],
        [entry("a.txt", "r1")],
        [remote("r1", "a.txt", "theirs!")],
        conflict=policy,
    )
    assert p.conflicts == 1
    assert [d.relpath for d in p.downloads] == downloads
    assert [u.relpath for u in p.uploads] == uploads
    if policy == "remote-wins":
        assert p.downloads[0].move_aside_to == "a (local conflict 2027-01-15 080000).txt"


@pytest.mark.parametrize(
    ("changed_there", "local_mtime_s", "winner"),
    [
        (500, 400, "container"),  # a rewrite under a new id after the local edit
        (500, 600, "here"),  # the local edit came after it
        (None, 400, "both"),  # a rewrite with no time of its own: nothing to order by
    ],
)
def test_newer_keeps_the_side_changed_last_and_a_copy_of_the_other(
    changed_there: int | None, local_mtime_s: int, winner: str
) -> None:
    """Issue 22, item 3: ``conflict = newer``, as rclone's ``--conflict-resolve newer``."""
    mine = LocalFile("a.txt", 4, local_mtime_s * 1_000_000_000, 7, "h:mine")
    theirs = RemoteFile("r2", "/mnt/data/a.txt", "a.txt", 7, "assistant", changed_there)
    p = run([mine], [entry("a.txt", "r1")], [theirs], conflict="newer")
    assert p.conflicts == 1
    if winner == "container":
        (download,) = p.downloads
        assert (download.relpath, download.reason) == ("a.txt", "remote-wins")
        assert download.move_aside_to == "a (local conflict 2027-01-15 080000).txt"
        assert not p.uploads
    else:
        (download,) = p.downloads
        assert download.reason == "conflict-copy" and download.copy_of == "a.txt"
        assert [u.relpath for u in p.uploads] == ["a.txt"]


@pytest.mark.parametrize("direction", ["both", "pull"])
def test_a_remote_deletion_restores_or_propagates(direction: str) -> None:
    restore = run([local("a")], [entry("a", "r1")], [], direction)
    propagate = run([local("a")], [entry("a", "r1")], [], direction, remote_delete="propagate")
    changed = run(
        [local("a", "edited")], [entry("a", "r1")], [], direction, remote_delete="propagate"
    )
    assert [d.relpath for d in propagate.local_deletes] == ["a"]
    assert propagate.destructive == 1  # weighed by the brakes
    assert not changed.local_deletes
    if direction == "both":
        assert [u.reason for u in restore.uploads] == ["missing-remote"]
        assert [u.relpath for u in changed.uploads] == ["a"]
    else:
        assert not restore.uploads and restore.forgets == ("a",)


def test_a_local_deletion_of_a_pulled_file() -> None:
    both = run([], [entry("a", "r1")], [remote("r1", "a")])
    assert [(d.remote_id, d.reason) for d in both.deletes] == [("r1", "removed")]
    pulled = run([], [entry("a", "r1")], [remote("r1", "a")], "pull")
    assert pulled.is_noop  # kept in the index: not pulled again while unchanged
    pushed = run([], [entry("a", "r1")], [remote("r1", "a")], "push")
    assert not pushed.deletes and not pushed.forgets


def test_a_local_deletion_against_a_remote_change_restores_the_change() -> None:
    p = run([], [entry("a", "r1")], [remote("r1", "a", "changed there")])
    assert [(d.relpath, d.reason) for d in p.downloads] == [("a", "restore")]
    assert not p.deletes


def test_new_remote_files_come_home_and_collisions_get_suffixes() -> None:
    p = run(
        [local("taken.txt")],
        [],
        [remote("r1", "new.txt"), remote("r2", "taken.txt", "other"), remote("r3", "new.txt")],
    )
    # Same name, no history, different size: a conflict, the remote version kept beside.
    assert sorted(d.relpath for d in p.downloads) == [
        "new (2).txt",
        "new.txt",
        "taken (container conflict 2027-01-15 080000).txt",
    ]
    assert p.conflicts == 1
    assert [u.relpath for u in p.uploads] == ["taken.txt"]  # both: the local version goes up


def test_same_name_same_size_without_history_is_compared_not_copied() -> None:
    p = run([local("a")], [], [remote("r1", "a")], "pull")
    assert [c.relpath for c in p.compares] == ["a"]
    assert not p.downloads and not p.uploads


def test_pull_mode_never_uploads_or_deletes() -> None:
    p = run(
        [local("new"), local("edited", "x")],
        [entry("edited", "r1"), entry("gone", "r2", origin="push")],
        [remote("r1", "edited"), remote("r2", "gone")],
        "pull",
        delete_unknown=True,
    )
    assert not p.uploads and not p.deletes


def test_conflict_copies_are_never_uploaded() -> None:
    copy = "a (container conflict 2027-01-15 080000).txt"
    for direction in ("push", "both"):
        p = run([local(copy, "theirs")], [], [], direction, conflict_copies={copy})
        assert not p.uploads and p.local_only == 1


def test_a_file_merely_named_like_a_conflict_copy_is_uploaded() -> None:
    """Reliability round two, finding 11: only copies this tool made (recorded in the
    index) are held back; a user's file is a user's file."""
    mine = "notes (local conflict 2025-01-01 120000).md"
    for direction in ("push", "both"):
        p = run([local(mine, "my notes")], [], [], direction)
        assert [u.relpath for u in p.uploads] == [mine] and p.local_only == 0


def test_uncertain_files_are_held() -> None:
    p = plan(
        {},
        PlainEntries([entry("a", "r1")]),
        PlainFiles([remote("r1", "a", "changed there")]),
        policy=Policy(direction="both", now=NOW),
        uncertain=lambda relpath: relpath == "a",
    )
    assert p.is_noop


def test_on_a_server_that_renames_uploads_only_the_models_files_are_pulled() -> None:
    # Our own upload whose answer was lost comes back as "file": never pulled.
    stray = RemoteFile("r1", "/mnt/data/file", "file", 4, "user", 100)
    model = remote("r2", "plot.png")
    p = run([], [], [stray, model], "pull", server_keeps_names=False)
    assert [d.relpath for d in p.downloads] == ["plot.png"]
    assert p.unknown_kept == 1


def test_content_checks_rotate_through_unchanged_files() -> None:
    """Reliability round two, finding 15: a same-size rewrite in place shows in no
    listing, so a full pass checks ``recheck_count`` files' content, in rotation."""
    names = [f"f{n:02}.txt" for n in range(12)]
    locals_ = [local(name) for name in names]
    index = [entry(name, f"r{n}") for n, name in enumerate(names)]
    remotes = [remote(f"r{n}", name) for n, name in enumerate(names)]

    def checked(after: str | None, **policy: object) -> list[str]:
        p = run(locals_, index, remotes, recheck_count=5, recheck_after=after, **policy)
        assert p.is_noop and p.transfers == 0  # a check is not a change
        return [check.relpath for check in p.rechecks]

    # With none checked yet, the clock's minute picks the start: passes of one-shot
    # runs a minute apart move through the tree too.
    assert checked(None, now=0.0) == names[:5]
    assert checked(None, now=60.0) == names[5:10]
    assert checked(None, now=120.0) == [*names[10:], *names[:3]]
    assert checked("f04.txt") == names[5:10]
    assert checked("f09.txt") == [*names[10:], *names[:3]]
    # Push has none; nor has a file changed on either side (the planner sees those).
    assert run(locals_, index, remotes, "push", recheck_count=5).rechecks == ()
    edited = [local("f00.txt", "edited"), *locals_[1:]]
    grown = [remote("r1", "f01.txt", "longer now"), *remotes[2:], remotes[0]]
    p = run(edited, index, grown, recheck_count=12)
    assert "f00.txt" not in [c.relpath for c in p.rechecks]
    assert "f01.txt" not in [c.relpath for c in p.rechecks]
