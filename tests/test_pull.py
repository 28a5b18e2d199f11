"""Pull and two-way sync against the in-process emulator, with real files in tmp_path.

The emulator's control surface plays the model: it writes files into the
container (at any path, however hostile), rewrites them in place, and serves
broken content. Every pass goes through a fresh engine, as the CLI and the
daemon run it.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from cntr_sync import conflict_copies, transfer
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator, GatewayStyle
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import DeleteLimit, IndexEntry, Pair
from cntr_sync.remote_paths import FileSystemTraits, is_conflict_copy
from cntr_sync.result import PassResult
from helpers import NoSleep, local_tree
from spec_validation import ValidatingTransport

BASE_URL = "http://emulator.test/v1"


@dataclass
class Rig:
    """One pair (root <-> container "box"), a fresh engine for every pass."""

    emu: Emulator
    root: Path
    state: Path
    pair: Pair
    traits: FileSystemTraits | None = None
    container_id: str = ""

    def sync(self, *, force: bool = False, **pair: object) -> PassResult:
        spec = self.pair.model_copy(update=pair)
        validating = ValidatingTransport(self.emu.transport(), allow_null_bytes=True)
        try:
            with (
                ContainersClient(
                    "sk-test", base_url=BASE_URL, transport=validating, sleep=NoSleep()
                ) as client,
                Index.open(
                    self.state, base_url=BASE_URL, root=self.root, container_spec="box"
                ) as index,
            ):
                result = Engine(client, index, spec, concurrency=4, fs_traits=self.traits).run_pass(
                    force=force
                )
        finally:
            validating.assert_clean()
        assert result.container_id is not None
        self.container_id = result.container_id
        return result

    def entries(self) -> dict[str, IndexEntry]:
        with Index.open(
            self.state, base_url=BASE_URL, root=self.root, container_spec="box", lock=False
        ) as index:
            return index.entries()

    def model_writes(self, path: str, content: bytes, **kwargs: object) -> str:
        """The model writes a file into the container; returns its id."""
        made = self.emu.add_assistant_file(self.container_id, path, content, **kwargs)  # type: ignore[arg-type]
        return str(made["id"])

    def remote(self) -> dict[str, bytes]:
        """Every remote file's path -> content."""
        out = {}
        with ContainersClient("k", base_url=BASE_URL, transport=self.emu.transport()) as client:
            for item in client.iter_files(self.container_id):
                blob = self.emu.blob_path(self.container_id, item.id)
                out[item.path] = blob.read_bytes() if blob is not None else b""
        return out

    def remote_ids(self) -> set[str]:
        with ContainersClient("k", base_url=BASE_URL, transport=self.emu.transport()) as client:
            return {item.id for item in client.iter_files(self.container_id)}


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path / "emulator") as emulator:
        yield emulator


def make_rig(emu: Emulator, tmp_path: Path, direction: str, **pair: object) -> Rig:
    root = tmp_path / "tree"
    root.mkdir(exist_ok=True)
    spec = Pair(name="t", local=root, container="box", direction=direction, **pair)  # type: ignore[arg-type]
    rig = Rig(emu, root, tmp_path / "state", spec)
    rig.sync()  # creates the container
    return rig


def write(root: Path, relpath: str, content: bytes | str) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# -- pull: what the model writes comes home --------------------------------------------------


def test_pull_brings_home_nested_files_byte_for_byte_then_costs_only_the_listing(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    written = {
        "plots/2026/fig 1.png": os.urandom(70_000),
        "report.md": b"# Findings\n",
        "data/out.csv": b"a,b\n1,2\n",
        "ünïcode/naïve.txt": "é".encode(),
        "empty-but-listed.txt": b"",
    }
    for number in range(145):
        written[f"many/f{number:03}.txt"] = f"{number}\n".encode()
    for relpath, content in written.items():
        rig.model_writes(f"/mnt/data/{relpath}", content)
    first = rig.sync()
    assert first.in_sync, first.failures
    assert first.downloaded == len(written)
    assert local_tree(rig.root) == written
    pulled = rig.entries()
    assert set(pulled) == set(written)
    assert {e.origin for e in pulled.values()} == {"pull"}
    emu.reset_counts()
    second = rig.sync()
    assert (second.downloaded, second.uploaded, second.deleted) == (0, 0, 0)
    counts = {op: n for op, n in emu.counts().items() if n}
    # The listing, and the content of the files checked this pass (verify_per_listing).
    assert counts == {"list_files": math.ceil(len(written) / 100), "file_content": 5}
    emu.reset_counts()
    unchecked = rig.sync(verify_per_listing=0)
    assert unchecked.downloaded == 0
    assert {op: n for op, n in emu.counts().items() if n} == {
        "list_files": math.ceil(len(written) / 100)
    }


def test_pull_uploads_and_deletes_nothing_remotely(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    write(rig.root, "mine.txt", "local only")
    rig.model_writes("/mnt/data/theirs.txt", b"remote")
    result = rig.sync()
    assert result.downloaded == 1
    assert set(rig.remote()) == {"/mnt/data/theirs.txt"}
    (rig.root / "theirs.txt").unlink()
    assert rig.sync().downloaded == 0  # deleted here, unchanged there: not pulled again
    assert set(rig.remote()) == {"/mnt/data/theirs.txt"}
    counts = emu.counts()
    assert counts["create_file"] == 0 and counts["delete_file"] == 0


def test_a_deleted_pulled_file_comes_back_only_when_it_changes_remotely(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    file_id = rig.model_writes("/mnt/data/notes.txt", b"v1")
    rig.sync()
    (rig.root / "notes.txt").unlink()
    assert rig.sync().downloaded == 0
    assert not (rig.root / "notes.txt").exists()
    emu.rewrite_file(rig.container_id, file_id, b"version two")
    assert rig.sync().downloaded == 1
    assert (rig.root / "notes.txt").read_bytes() == b"version two"


def test_our_own_uploads_are_never_pulled_back(emu: Emulator, tmp_path: Path) -> None:
    # Uploads come back as /mnt/data/<32 hex>-name; they are ours by id.
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, "dir/a.txt", "pushed")
    first = rig.sync()
    assert first.uploaded == 1
    second = rig.sync()
    assert (second.downloaded, second.uploaded) == (0, 0)
    assert local_tree(rig.root) == {"dir/a.txt": b"pushed"}
    assert rig.entries()["dir/a.txt"].origin == "push"


def test_files_outside_the_prefix_go_to_a_subdirectory_or_are_skipped(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/tmp/scratch/out.txt", b"outside")
    rig.model_writes("/mnt/data/in.txt", b"inside")
    assert rig.sync().downloaded == 2
    assert local_tree(rig.root) == {
        "_container/tmp/scratch/out.txt": b"outside",
        "in.txt": b"inside",
    }


def test_outside_prefix_skip_leaves_them_alone_quietly(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull", outside_prefix="skip")
    rig.model_writes("/tmp/scratch/out.txt", b"outside")
    result = rig.sync()
    assert result.downloaded == 0 and result.warnings == []
    assert local_tree(rig.root) == {}


def test_a_remote_rewrite_in_place_comes_home(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "both")
    file_id = rig.model_writes("/mnt/data/table.csv", b"a\n")
    rig.sync()
    emu.rewrite_file(rig.container_id, file_id, b"a\nb\n")
    result = rig.sync()
    assert result.downloaded == 1 and result.uploaded == 0
    assert (rig.root / "table.csv").read_bytes() == b"a\nb\n"
    assert rig.entries()["table.csv"].remote_size == 4


def test_the_ignore_rules_keep_the_model_out_of_ignored_paths(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/mnt/data/.git/hooks/post-checkout", b"#!/bin/sh\nrm -rf ~\n")
    rig.model_writes("/mnt/data/build.tmp", b"scratch")
    assert rig.sync().downloaded == 0
    assert local_tree(rig.root) == {}


# -- hostile remote paths ----------------------------------------------------------------------


HOSTILE = [
    "/mnt/data/../escaped.txt",
    "/mnt/data/a/../../escaped.txt",
    "/mnt/data//etc/passwd",
    "/mnt/data/a\x00b.txt",
    "/mnt/data/bell\x07.txt",
    "/mnt/data/new\nline.txt",
    "/mnt/data/" + "x" * 300 + ".txt",
    "/mnt/data/a.png/mnt/data/b.png",
    "/mnt/data/.cntrsync/index",
    "/mnt/data/",
    "/mnt/data/trailing/",
]


def test_hostile_remote_paths_are_refused_with_one_warning_each(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    for path in HOSTILE:
        rig.model_writes(path, b"payload")
    rig.model_writes("/mnt/data/fine.txt", b"fine")
    for _ in range(2):
        result = rig.sync()
        assert len(result.warnings) == len(HOSTILE), result.warnings
        assert all("not pulled" in w for w in result.warnings)
        assert result.failures == []
    assert local_tree(rig.root) == {"fine.txt": b"fine"}
    assert not (tmp_path / "escaped.txt").exists()
    everything = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert not [p for p in everything if "escaped" in p or "passwd" in p]


def test_a_symlink_in_the_tree_is_never_written_through(emu: Emulator, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    rig = make_rig(emu, tmp_path, "pull")
    (rig.root / "link").symlink_to(outside, target_is_directory=True)
    (rig.root / "inner").mkdir()
    (rig.root / "inner" / "self").symlink_to(rig.root / "inner", target_is_directory=True)
    rig.model_writes("/mnt/data/link/pwned.txt", b"payload")
    rig.model_writes("/mnt/data/inner/self/deep.txt", b"payload")
    result = rig.sync()
    assert list(outside.iterdir()) == []
    assert not (rig.root / "inner" / "deep.txt").exists()
    assert len([w for w in result.warnings if "not written" in w]) == 2, result.warnings
    assert result.downloaded == 0


# -- collisions on this file system ----------------------------------------------------------


def test_names_that_collide_on_a_case_insensitive_file_system_keep_both(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.traits = FileSystemTraits(case_insensitive=True, normalization_insensitive=True)
    write(rig.root, "Readme.md", "local readme")
    rig.model_writes("/mnt/data/README.md", b"remote readme")
    rig.model_writes("/mnt/data/caf\u00e9.txt", b"nfc")
    rig.model_writes("/mnt/data/cafe\u0301.txt", b"nfd")
    result = rig.sync()
    assert result.downloaded == 3
    tree = local_tree(rig.root)
    assert tree["Readme.md"] == b"local readme"
    assert tree["README (2).md"] == b"remote readme"
    assert sorted(v for k, v in tree.items() if k.startswith("caf")) == [b"nfc", b"nfd"]
    assert len([w for w in result.warnings if "would overwrite" in w]) == 2
    assert rig.sync().downloaded == 0  # the index keeps the names stable


def test_two_remote_files_at_one_path_both_come_home(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/mnt/data/out.txt", b"first")
    rig.model_writes("/mnt/data/out.txt", b"second")
    assert rig.sync().downloaded == 2
    tree = local_tree(rig.root)
    # Created in the same second: which one keeps the plain name is the id's call.
    assert sorted(tree) == ["out (2).txt", "out.txt"]
    assert sorted(tree.values()) == [b"first", b"second"]


# -- broken content ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"content_missing": True}, "404"),
        ({"bytes_null": True, "content": b""}, "empty body"),
        ({"announced_bytes": 3}, "longer than the listed 3 bytes"),
        ({"announced_bytes": 99}, "where the listing says 99"),
    ],
    ids=["404", "empty-null", "longer", "shorter"],
)
def test_broken_content_is_skipped_retried_later_and_never_fatal(
    emu: Emulator, tmp_path: Path, kwargs: dict[str, object], fragment: str
) -> None:
    # No content checks (verify_per_listing): this test counts the downloads' requests.
    rig = make_rig(emu, tmp_path, "pull", verify_per_listing=0)
    content = kwargs.pop("content", b"the content")
    rig.model_writes("/mnt/data/broken.bin", content, **kwargs)  # type: ignore[arg-type]
    rig.model_writes("/mnt/data/good.txt", b"good")
    first = rig.sync()
    assert first.downloaded == 1 and not first.in_sync
    assert [f.target for f in first.failures] == ["broken.bin"]
    assert fragment in first.failures[0].message and "retried in 60 s" in first.failures[0].message
    assert local_tree(rig.root) == {"good.txt": b"good"}
    assert not [p for p in rig.root.iterdir() if p.name.startswith(".cntrsync-partial")]
    emu.reset_counts()
    waiting = rig.sync()  # within the backoff: not asked again, still reported
    assert emu.counts()["file_content"] == 0
    assert [f.target for f in waiting.failures] == ["broken.bin"]


def test_a_download_whose_backoff_passed_is_tried_again(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    file_id = rig.model_writes("/mnt/data/late.txt", b"", bytes_null=True)
    assert not rig.sync().in_sync
    emu.rewrite_file(rig.container_id, file_id, b"arrived")
    # The retry time is stored; pretend it passed.
    with Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index:
        (failure,) = index.pull_failures().values()
        index.record_pull_failure(replace(failure, retry_at=time.time() - 1))
    result = rig.sync()
    assert result.in_sync and result.downloaded == 1
    assert (rig.root / "late.txt").read_bytes() == b"arrived"


# -- both: the index is the common ancestor ---------------------------------------------------


def test_both_carries_a_change_on_either_side_over(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, "mine.txt", "v1")
    remote_id = rig.model_writes("/mnt/data/theirs.txt", b"r1")
    first = rig.sync()
    assert (first.uploaded, first.downloaded) == (1, 1)
    write(rig.root, "theirs.txt", "edited here")  # a pulled file edited locally: pushed
    emu.rewrite_file(rig.container_id, rig.entries()["mine.txt"].remote_id, b"edited there")
    second = rig.sync()
    assert (second.replaced, second.downloaded, second.conflicts) == (1, 1, 0)
    assert local_tree(rig.root) == {"mine.txt": b"edited there", "theirs.txt": b"edited here"}
    remote = rig.remote()
    assert sorted(remote.values()) == [b"edited here", b"edited there"]
    assert remote_id not in rig.remote_ids()  # the model's old version was replaced
    entries = rig.entries()
    assert entries["theirs.txt"].origin == "push" and entries["mine.txt"].origin == "pull"
    third = rig.sync()
    assert (third.uploaded, third.replaced, third.downloaded) == (0, 0, 0)


def both_changed(rig: Rig, emu: Emulator) -> str:
    """notes.txt in sync, then changed on both sides; returns the remote id."""
    file_id = rig.model_writes("/mnt/data/notes.txt", b"base")
    rig.sync()
    write(rig.root, "notes.txt", "local edit")
    emu.rewrite_file(rig.container_id, file_id, b"remote edit!")
    return file_id


def test_both_keep_both_saves_the_remote_version_beside_and_pushes_the_local(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both")
    both_changed(rig, emu)
    result = rig.sync()
    assert result.conflicts == 1
    tree = local_tree(rig.root)
    (copy,) = [name for name in tree if is_conflict_copy(name)]
    assert copy.startswith("notes (container conflict ") and copy.endswith(").txt")
    assert tree == {"notes.txt": b"local edit", copy: b"remote edit!"}
    assert list(rig.remote().values()) == [b"local edit"]
    again = rig.sync()
    assert (again.uploaded, again.downloaded, again.conflicts) == (0, 0, 0)  # never pushed back
    assert local_tree(rig.root) == tree


def test_both_local_wins_pushes_the_local_version(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "both", conflict="local-wins")
    both_changed(rig, emu)
    assert rig.sync().conflicts == 1
    assert local_tree(rig.root) == {"notes.txt": b"local edit"}
    assert list(rig.remote().values()) == [b"local edit"]


def test_both_remote_wins_keeps_the_local_version_as_a_copy(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "both", conflict="remote-wins")
    both_changed(rig, emu)
    assert rig.sync().conflicts == 1
    tree = local_tree(rig.root)
    (copy,) = [name for name in tree if is_conflict_copy(name)]
    assert copy.startswith("notes (local conflict ")
    assert tree == {"notes.txt": b"remote edit!", copy: b"local edit"}
    assert list(rig.remote().values()) == [b"remote edit!"]
    assert rig.sync().uploaded == 0


def test_remote_wins_moves_the_local_version_aside_on_a_file_system_without_hard_links(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exFAT, FAT and many FUSE mounts answer ``link`` with EPERM: the local version
    is renamed aside instead (checked not to exist first), not a failure every pass."""
    rig = make_rig(emu, tmp_path, "both", conflict="remote-wins")
    both_changed(rig, emu)

    def no_hard_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    result = rig.sync()
    assert result.conflicts == 1 and not result.failures
    tree = local_tree(rig.root)
    (copy,) = [name for name in tree if is_conflict_copy(name)]
    assert tree == {"notes.txt": b"remote edit!", copy: b"local edit"}
    assert [v.path.read_bytes() for v in result.backups] == [b"local edit"]


@pytest.mark.parametrize("policy", ["keep-both", "local-wins", "remote-wins"])
def test_pull_mode_conflicts_never_push(emu: Emulator, tmp_path: Path, policy: str) -> None:
    rig = make_rig(emu, tmp_path, "pull", conflict=policy)
    both_changed(rig, emu)
    result = rig.sync()
    assert result.conflicts == 1
    assert list(rig.remote().values()) == [b"remote edit!"]
    contents = sorted(local_tree(rig.root).values())
    expected = {"keep-both": [b"local edit", b"remote edit!"], "local-wins": [b"local edit"]}
    assert contents == expected.get(policy, [b"local edit", b"remote edit!"])
    again = rig.sync()
    assert (again.downloaded, again.conflicts) == (0, 0)
    assert emu.counts()["create_file"] == 0


def test_a_local_deletion_in_both_deletes_remotely_within_the_brake(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, "stays.txt", "so the root is not empty")
    for number in range(4):
        rig.model_writes(f"/mnt/data/f{number}.txt", b"x")
    rig.sync()
    (rig.root / "f0.txt").unlink()
    assert rig.sync().deleted == 1
    # The model's files only: our upload of stays.txt has a random 32-hex prefix,
    # which may begin with "f" too.
    pulled = sorted(path for path in rig.remote() if re.fullmatch(r"/mnt/data/f\d\.txt", path))
    assert pulled == ["/mnt/data/f1.txt", "/mnt/data/f2.txt", "/mnt/data/f3.txt"]
    for number in (1, 2, 3):
        (rig.root / f"f{number}.txt").unlink()
    with pytest.raises(Exception, match="max_delete"):
        rig.sync(max_delete=DeleteLimit(percent=50))


@pytest.mark.parametrize("direction", ["both", "pull"])
def test_a_remote_deletion_is_restored_by_default(
    emu: Emulator, tmp_path: Path, direction: str
) -> None:
    rig = make_rig(emu, tmp_path, direction)
    file_id = rig.model_writes("/mnt/data/keep.txt", b"keep me")
    rig.sync()
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        client.delete_file(rig.container_id, file_id)
    result = rig.sync()
    assert (rig.root / "keep.txt").read_bytes() == b"keep me"
    if direction == "both":
        assert result.uploaded == 1
        assert list(rig.remote().values()) == [b"keep me"]
    else:
        assert result.uploaded == 0 and rig.remote() == {}
        assert "keep.txt" not in rig.entries()


def test_propagate_deletes_an_unchanged_local_file_and_keeps_a_changed_one(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both", remote_delete="propagate")
    gone = rig.model_writes("/mnt/data/gone.txt", b"unchanged")
    kept = rig.model_writes("/mnt/data/kept.txt", b"base")
    rig.sync()
    write(rig.root, "kept.txt", "changed here")
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        client.delete_file(rig.container_id, gone)
        client.delete_file(rig.container_id, kept)
    result = rig.sync()
    assert result.local_deleted == 1 and result.uploaded == 1
    assert local_tree(rig.root) == {"kept.txt": b"changed here"}
    assert list(rig.remote().values()) == [b"changed here"]
    assert set(rig.entries()) == {"kept.txt"}


def test_unrelated_files_with_the_same_content_are_adopted_not_copied(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    write(rig.root, "same.txt", "identical")
    write(rig.root, "differs.txt", "mine")
    rig.model_writes("/mnt/data/same.txt", b"identical")
    rig.model_writes("/mnt/data/differs.txt", b"theirs")  # same size: compared by content
    result = rig.sync()
    assert result.adopted == 1 and result.conflicts == 1
    tree = local_tree(rig.root)
    assert tree["same.txt"] == b"identical" and tree["differs.txt"] == b"mine"
    (copy,) = [name for name in tree if is_conflict_copy(name)]
    assert tree[copy] == b"theirs"
    assert rig.entries()["same.txt"].origin == "pull"
    assert rig.sync().downloaded == 0


def test_dry_run_plans_downloads_and_writes_nothing(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/mnt/data/a.txt", b"a")
    spec = rig.pair
    with (
        ContainersClient("sk", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        result = Engine(client, index, spec).run_pass(dry_run=True)
    assert result.plan is not None and [d.relpath for d in result.plan.downloads] == ["a.txt"]
    assert local_tree(rig.root) == {}
    assert emu.counts()["file_content"] == 0


def test_a_leftover_partial_file_is_removed_by_the_next_pass(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    with Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index:
        tag = index.path.stem[:12]
    leftover = write(rig.root, f"sub/.cntrsync-partial-{tag}-deadbeef", b"half")
    foreign = write(rig.root, ".cntrsync-partial-otherpair000-cafe", b"someone else's")
    result = rig.sync()
    assert not leftover.exists() and foreign.exists()
    assert result.uploaded == 0


def test_a_transport_failure_on_content_is_a_failure_not_a_crash(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/mnt/data/a.txt", b"a")
    emu.fail_next("file_content", "drop", count=5)  # every attempt of this pass
    result = rig.sync()
    assert not result.in_sync and result.failures[0].action == "download"
    assert local_tree(rig.root) == {}
    assert rig.sync().downloaded == 1
    assert local_tree(rig.root) == {"a.txt": b"a"}


# -- found in review: each of these failed before its fix --------------------------------------


def test_the_model_cannot_re_include_git_through_a_pulled_cntrignore(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, ".git/config", "[core]\n\tbare = false\n")
    rig.model_writes("/mnt/data/.cntrignore", b"!.git\n!.git/**\n")
    rig.model_writes("/mnt/data/sub/.cntrignore", b"!*\n")
    rig.model_writes("/mnt/data/.git/hooks/pre-commit", b"#!/bin/sh\necho pwned\n")
    for _ in range(3):
        result = rig.sync()
    assert not (rig.root / ".cntrignore").exists() and not (rig.root / "sub").exists()
    assert not (rig.root / ".git" / "hooks").exists()
    assert ".git/config" not in rig.entries()
    assert sum("cntrignore" in w for w in result.warnings) == 2
    assert not [p for p in rig.remote() if p.endswith(".git/config")]


def test_keep_both_saves_one_copy_while_the_upload_keeps_failing(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both")
    both_changed(rig, emu)
    for _ in range(3):
        emu.fail_next("create_file", 400)
        assert not rig.sync().in_sync
    copies = [name for name in local_tree(rig.root) if is_conflict_copy(name)]
    assert len(copies) == 1
    done = rig.sync()
    assert done.in_sync and done.replaced == 1 and done.conflicts == 0
    assert sorted(rig.remote().values()) == [b"local edit"]


@pytest.mark.parametrize("blocker", ["symlink", "fifo", "directory"])
def test_a_target_taken_by_something_the_scan_skips_is_not_downloaded_every_pass(
    emu: Emulator, tmp_path: Path, blocker: str
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    write(rig.root, "real.txt", "mine")
    target = rig.root / "out.txt"
    if blocker == "symlink":
        target.symlink_to("real.txt")
    elif blocker == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    rig.model_writes("/mnt/data/out.txt", b"x" * 100_000)
    emu.reset_counts()
    for _ in range(3):
        result = rig.sync()
    assert emu.counts()["file_content"] == 0
    assert (rig.root / "real.txt").read_bytes() == b"mine"
    assert any("symlink, directory or special file" in w for w in result.warnings)


def test_in_both_a_colleagues_same_name_upload_is_a_conflict_not_deleted(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "both")
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        client.create_file(rig.container_id, b"colleague's version, longer", filename="notes.md")
    write(rig.root, "notes.md", "my version")
    result = rig.sync()
    assert result.conflicts == 1 and result.deleted == 0
    tree = local_tree(rig.root)
    assert tree["notes.md"] == b"my version"
    assert b"colleague's version, longer" in tree.values()
    assert b"colleague's version, longer" in rig.remote().values()


@pytest.mark.parametrize(
    "gateway",
    [GatewayStyle(drop_filenames=True), GatewayStyle(base_name_only=True)],
    ids=["no-names", "base-names"],
)
def test_a_lost_index_in_both_never_pulls_our_own_uploads_back(
    emu: Emulator, tmp_path: Path, gateway: GatewayStyle
) -> None:
    emu.set_gateway(gateway)
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, "dir/a.txt", "alpha")
    write(rig.root, "dir/b.txt", "bravo")
    rig.sync()
    rig.state = tmp_path / "fresh-state"
    result = rig.sync()
    assert sorted(local_tree(rig.root)) == ["dir/a.txt", "dir/b.txt"]
    assert (result.uploaded, result.downloaded, result.adopted) == (0, 0, 2)
    assert len(rig.remote()) == 2


def test_a_rescan_in_pull_mode_finds_nothing_to_do(emu: Emulator, tmp_path: Path) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    write(rig.root, "my-own-notes.txt", "never uploaded in pull mode")
    rig.sync()
    with (
        ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        assert not Engine(client, index, rig.pair).has_local_changes()
        both = Engine(client, index, rig.pair.model_copy(update={"direction": "both"}))
        copy = "x (container conflict 2026-01-01 000000).txt"
        write(rig.root, copy, "a copy")
        conflict_copies.record(index, [(copy, "x.txt")], 0.0)  # as a pass makes one
        assert both.has_local_changes()  # my-own-notes.txt would go up in both
        (rig.root / "my-own-notes.txt").unlink()
        assert not both.has_local_changes()  # a conflict copy alone is never uploaded


def test_content_that_cannot_be_decoded_is_a_failure_with_backoff_not_a_crash(
    emu: Emulator, tmp_path: Path
) -> None:
    rig = make_rig(emu, tmp_path, "pull")
    rig.model_writes("/mnt/data/a.txt", b"a")
    rig.model_writes("/mnt/data/b.txt", b"b")
    inner = emu.transport()

    class LyingEncoding(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            if request.url.path.endswith("/content"):
                response.read()
                return httpx.Response(
                    200, headers={"content-encoding": "gzip"}, content=b"not gzip at all"
                )
            return response

    with (
        ContainersClient(
            "k", base_url=BASE_URL, transport=LyingEncoding(), sleep=NoSleep()
        ) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        result = Engine(client, index, rig.pair).run_pass()
    assert sorted(f.target for f in result.failures) == ["a.txt", "b.txt"]
    assert all("cannot be decoded" in f.message for f in result.failures)
    assert "retried in 60 s" in result.failures[0].message


def test_a_conflict_on_a_file_with_a_very_long_name_is_resolved(
    emu: Emulator, tmp_path: Path
) -> None:
    """Reliability round two, finding 10: the copy's name passed 255 bytes and every
    pass failed with 'File name too long'; the local edit was never sent."""
    rig = make_rig(emu, tmp_path, "both")
    name = "n" * 240 + ".txt"
    write(rig.root, name, "base")
    rig.sync()
    file_id = rig.entries()[name].remote_id
    write(rig.root, name, "local edit")
    emu.rewrite_file(rig.container_id, file_id, b"remote edit!")
    result = rig.sync()
    assert not result.failures, result.failures
    tree = local_tree(rig.root)
    (copy,) = [relpath for relpath in tree if is_conflict_copy(relpath)]
    assert len(copy.encode()) <= 255 and copy.endswith(").txt")
    assert tree == {name: b"local edit", copy: b"remote edit!"}
    assert list(rig.remote().values()) == [b"local edit"]


@pytest.mark.parametrize("direction", ["pull", "both"])
def test_the_models_rewrite_at_our_own_path_is_an_edit_not_a_new_file(
    emu: Emulator, tmp_path: Path, direction: str
) -> None:
    """Reliability round two, finding 4: the model deletes our file and writes a new one
    at exactly our path (``/mnt/data/<32 hex>-b/f2.txt``): that is our file, edited."""
    rig = make_rig(emu, tmp_path, "both")
    write(rig.root, "b/f2.txt", "ours")
    rig.sync()
    entry = rig.entries()["b/f2.txt"]
    with ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client:
        client.delete_file(rig.container_id, entry.remote_id)
    rig.model_writes(entry.remote_path, b"the model's edit")
    result = rig.sync(direction=direction)
    assert not result.failures and result.uploaded == 0, result
    assert local_tree(rig.root) == {"b/f2.txt": b"the model's edit"}
    assert list(rig.remote().values()) == [b"the model's edit"]
    assert rig.sync(direction=direction).downloaded == 0


@pytest.mark.parametrize("direction", ["pull", "both"])
def test_a_dry_run_creates_nothing_in_the_root(
    emu: Emulator, tmp_path: Path, direction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reliability round two, finding 14: ``status`` and ``sync --dry-run`` made and
    removed a ``.cntrsync-partial-probe-*`` file to learn how the root compares names."""
    rig = make_rig(emu, tmp_path, direction)
    rig.model_writes("/mnt/data/new.txt", b"the model's")
    transfer._TRAITS.clear()  # the probe's answer is kept per device: ask it afresh
    created: list[str] = []
    real_open = os.open

    def spying_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if flags & os.O_CREAT:
            created.append(str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spying_open)
    with (
        ContainersClient("sk-test", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        result = Engine(client, index, rig.pair).run_pass(dry_run=True)
    assert result.plan is not None and len(result.plan.downloads) == 1
    assert [path for path in created if str(rig.root) in path] == []
    assert local_tree(rig.root) == {}


@pytest.mark.parametrize("direction", ["push", "both"])
def test_an_excluded_path_is_left_alone_in_the_container(
    emu: Emulator, tmp_path: Path, direction: str
) -> None:
    """Excluded means left alone (issue 22, item 5): ``--exclude`` for one run deleted
    the excluded files from the container."""
    rig = make_rig(emu, tmp_path, direction)
    write(rig.root, "a.txt", "kept")
    write(rig.root, "big/f2.bin", "a large file")
    rig.sync()
    result = rig.sync(ignore=("*.bin",))
    assert result.plan is not None and result.plan.deletes == ()
    assert result.deleted == 0 and not result.failures
    assert sorted(rig.remote().values()) == [b"a large file", b"kept"]
    again = rig.sync()  # and back without the pattern: still in sync
    assert (again.uploaded, again.deleted, again.downloaded) == (0, 0, 0)


def test_an_ignore_pattern_added_in_both_never_deletes_the_models_files(
    emu: Emulator, tmp_path: Path
) -> None:
    """Reliability round two, finding 5: '*.csv' added to .cntrignore after the model's
    out0.csv and out1.csv were pulled deleted them from the container."""
    rig = make_rig(emu, tmp_path, "both")
    rig.model_writes("/mnt/data/out0.csv", b"0")
    rig.model_writes("/mnt/data/out1.csv", b"1")
    assert rig.sync().downloaded == 2
    write(rig.root, ".cntrignore", "*.csv\n")
    result = rig.sync()
    assert (result.deleted, result.local_deleted, result.downloaded) == (0, 0, 0)
    assert sorted(rig.remote().values()) == [b"*.csv\n", b"0", b"1"]
    assert local_tree(rig.root) == {".cntrignore": b"*.csv\n", "out0.csv": b"0", "out1.csv": b"1"}


def test_only_copies_this_tool_made_are_held_back(emu: Emulator, tmp_path: Path) -> None:
    """Reliability round two, finding 11: a user's file named like a conflict copy was
    never uploaded, with in_sync true. Copies are recorded when made; a deleted copy's
    record goes; an index from before the records adopts the copies in the tree once."""
    rig = make_rig(emu, tmp_path, "both")
    mine = "notes (local conflict 2025-01-01 120000).md"
    write(rig.root, mine, "my own notes")
    assert rig.sync().uploaded == 1
    both_changed(rig, emu)
    rig.sync()
    (copy,) = [r for r in local_tree(rig.root) if is_conflict_copy(r) and r != mine]
    with Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index:
        assert conflict_copies.made(index) == {copy: "notes.txt"}
    assert rig.sync().uploaded == 0  # the copy stays home
    (rig.root / copy).unlink()
    rig.sync()
    with Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index:
        assert conflict_copies.made(index) == {}
        # An index from before copies were recorded: the copy-named files are adopted.
        with index.write() as db:
            db.execute("DROP TABLE conflict_copies")
    write(rig.root, "old (container conflict 2024-05-05 050505).txt", "an older copy")
    assert rig.sync().uploaded == 0
    with Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index:
        # (mine is tracked: a file like any other, not adopted as a copy)
        assert set(conflict_copies.made(index)) == {
            "old (container conflict 2024-05-05 050505).txt"
        }


def test_delete_excluded_removes_our_copies_of_excluded_paths(
    emu: Emulator, tmp_path: Path
) -> None:
    """Issue 22, item 5: rclone's ``--delete-excluded``, with the reason ``excluded``."""
    rig = make_rig(emu, tmp_path, "push")
    write(rig.root, "a.txt", "kept")
    write(rig.root, "big/f2.bin", "a large file")
    rig.sync()
    result = rig.sync(ignore=("*.bin",), delete_excluded=True)
    assert result.plan is not None
    assert [(d.relpath, d.reason) for d in result.plan.deletes] == [("big/f2.bin", "excluded")]
    assert list(rig.remote().values()) == [b"kept"]
    assert "big/f2.bin" not in rig.entries()
    assert local_tree(rig.root) == {"a.txt": b"kept", "big/f2.bin": b"a large file"}


@pytest.mark.parametrize("direction", ["pull", "both"])
def test_a_same_size_rewrite_in_place_comes_home_within_a_rotation(
    emu: Emulator, tmp_path: Path, direction: str
) -> None:
    """Reliability round two, finding 15: a rewrite in place with the same size shows in
    no listing; each full pass checks ``verify_per_listing`` files' content in
    rotation, so with N tracked files it is seen within ceil(N / verify_per_listing)."""
    rig = make_rig(emu, tmp_path, direction, verify_per_listing=1)
    for name in ("a.txt", "b.txt", "c.txt"):
        rig.model_writes(f"/mnt/data/{name}", b"model v1")
    rig.sync()
    emu.rewrite_file(rig.container_id, rig.entries()["b.txt"].remote_id, b"model v2")
    seen = []
    with (  # one engine, as the daemon keeps: it carries on from the last file checked
        ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        engine = Engine(client, index, rig.pair)
        for _ in range(3):
            result = engine.run_pass()
            assert not result.failures and result.uploaded == 0
            seen.append(result.downloaded)
    assert sorted(seen) == [0, 0, 1]
    assert local_tree(rig.root) == {
        "a.txt": b"model v1",
        "b.txt": b"model v2",
        "c.txt": b"model v1",
    }
    # A dry run (status) checks nothing and so plans nothing: a sync would do nothing.
    with (
        ContainersClient("k", base_url=BASE_URL, transport=emu.transport()) as client,
        Index.open(rig.state, base_url=BASE_URL, root=rig.root, container_spec="box") as index,
    ):
        emu.reset_counts()
        dry = Engine(client, index, rig.pair).run_pass(dry_run=True)
    assert dry.in_sync and emu.counts().get("file_content", 0) == 0
