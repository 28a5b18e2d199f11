"""The planner with plain values: no file system, no server."""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cntr_sync.actions import Plan
from cntr_sync.brakes import BRAKE_MIN_DELETES, check_brakes
from cntr_sync.models import (
    DeleteLimit,
    IndexEntry,
    LocalFile,
    PendingDelete,
    RemoteFile,
    UploadIntent,
)
from cntr_sync.name_match import UploadsByName, shared_names, unindexed_uploads_by_name
from cntr_sync.names import canonical, names_dropped, remote_names, to_remote_file, upload_name
from cntr_sync.plan import plan as plan_pass
from cntr_sync.plan_inputs import Policy
from plain_inputs import PlainEntries, PlainFiles

NOW_S = 1_800_000_000


def local(relpath: str, content: str = "v1", mtime_s: int = NOW_S - 1000) -> LocalFile:
    return LocalFile(relpath, len(content), mtime_s * 1_000_000_000, 1, f"h:{content}")


def remote(
    file_id: str,
    name: str,
    size: int | None = 2,
    source: str = "user",
    created_at: int = NOW_S,
    hashed: bool = False,
) -> RemoteFile:
    prefix = "0123456789abcdef0123456789abcdef-" if hashed else ""
    return to_remote_file(file_id, f"/mnt/data/{prefix}{name}", size, source, created_at)


def entry(relpath: str, remote_id: str, content: str = "v1") -> IndexEntry:
    f = local(relpath, content)
    return IndexEntry(relpath, remote_id, f"/mnt/data/{relpath}", f.size, f.mtime_ns, f.hash, 0.0)


def intent(relpath: str, content: str = "v1") -> UploadIntent:
    return UploadIntent(relpath, relpath, len(content), f"h:{content}", 0.0)


def plan(
    local: Mapping[str, LocalFile],
    index: Mapping[str, IndexEntry],
    remote: Iterable[RemoteFile],
    **kwargs: Any,
) -> Plan:
    """``plan.plan`` over plain values."""
    return plan_pass(local, PlainEntries(index), PlainFiles(remote), **kwargs)


def ids(p: Plan) -> tuple[list[str], list[str]]:
    return [u.relpath for u in p.uploads], sorted(d.remote_id for d in p.deletes)


# -- names --------------------------------------------------------------------------


def test_remote_names_strip_the_mount_and_the_hash_prefix() -> None:
    assert remote_names("/mnt/data/a/b.txt") == ("a/b.txt",)
    hashed = "/mnt/data/88e12fa445d32636f190a0b33daed6cb-tsconfig.json"
    assert remote_names(hashed) == (
        "tsconfig.json",
        "88e12fa445d32636f190a0b33daed6cb-tsconfig.json",
    )
    assert remote_names("/elsewhere/x") == ("/elsewhere/x",)


# -- the basic decisions --------------------------------------------------------------


def test_new_files_are_uploaded() -> None:
    p = plan({"a": local("a"), "d/b": local("d/b")}, {}, [])
    assert [(u.relpath, u.reason) for u in p.uploads] == [("a", "new"), ("d/b", "new")]
    assert p.deletes == () and p.upload_bytes == 4


def test_unchanged_files_cost_nothing() -> None:
    p = plan({"a": local("a")}, {"a": entry("a", "f1")}, [remote("f1", "a")])
    assert p.is_noop


def test_touched_but_unchanged_file_only_refreshes_the_stat() -> None:
    touched = local("a", mtime_s=NOW_S)
    p = plan({"a": touched}, {"a": entry("a", "f1")}, [remote("f1", "a")])
    assert p.transfers == 0
    assert [(r.relpath, r.mtime_ns) for r in p.refreshes] == [("a", touched.mtime_ns)]


def test_changed_file_is_uploaded_then_the_old_id_replaced() -> None:
    p = plan({"a": local("a", "v2")}, {"a": entry("a", "f1")}, [remote("f1", "a")])
    assert [(u.relpath, u.reason, u.replaces) for u in p.uploads] == [("a", "changed", "f1")]
    assert p.deletes == ()  # the old id goes only after the new one is recorded


def test_removed_local_file_deletes_its_remote() -> None:
    p = plan({}, {"a": entry("a", "f1")}, [remote("f1", "a")])
    assert [(d.remote_id, d.reason, d.relpath) for d in p.deletes] == [("f1", "removed", "a")]


def test_no_delete_keeps_files_deleted_locally_but_still_replaces_edits() -> None:
    policy = Policy(delete=False, delete_unknown=True)
    p = plan(
        {"b": local("b", "v2")},
        {"a": entry("a", "f1"), "b": entry("b", "f2")},
        [remote("f1", "a"), remote("f2", "b"), remote("x", "model.csv", source="assistant")],
        policy=policy,
    )
    assert p.deletes == ()  # neither the removed "a" nor the unknown file
    # An edit is still a replace: the old version must not linger beside the new.
    assert [(u.relpath, u.replaces) for u in p.uploads] == [("b", "f2")]


def test_no_delete_still_removes_superseded_copies_of_ours() -> None:
    p = plan(
        {"a": local("a", "v2")},
        {},
        [remote("f9", "a")],
        intents={"a": intent("a", "v1")},
        pending_deletes=[PendingDelete("old", "a")],
        policy=Policy(delete=False),
    )
    assert sorted((d.remote_id, d.reason) for d in p.deletes) == [("f9", "stale-upload")]
    p = plan(
        {"a": local("a")},
        {"a": entry("a", "f1")},
        [remote("f1", "a"), remote("old", "a")],
        pending_deletes=[PendingDelete("old", "a")],
        policy=Policy(delete=False),
    )
    assert [(d.remote_id, d.reason) for d in p.deletes] == [("old", "pending")]


def test_index_entry_missing_from_listing_is_uploaded_again_or_forgotten() -> None:
    p = plan({"a": local("a")}, {"a": entry("a", "gone"), "b": entry("b", "gone2")}, [])
    assert [(u.relpath, u.reason) for u in p.uploads] == [("a", "missing-remote")]
    assert p.forgets == ("b",)


# -- strangers are left alone -----------------------------------------------------------


def test_assistant_and_unknown_files_are_left_alone_by_default() -> None:
    listing = [remote("x", "report.csv", source="assistant"), remote("y", "other.txt")]
    p = plan({"a": local("a")}, {}, listing)
    assert p.deletes == () and p.unknown_kept == 2


def test_delete_unknown_removes_them() -> None:
    listing = [remote("x", "report.csv", source="assistant", size=None), remote("y", "o")]
    p = plan({}, {}, listing, policy=Policy(delete_unknown=True))
    assert sorted(d.remote_id for d in p.deletes) == ["x", "y"]
    assert {d.reason for d in p.deletes} == {"unknown"}


def test_assistant_file_with_a_local_name_is_never_adopted_or_deleted() -> None:
    p = plan({"a": local("a")}, {}, [remote("x", "a", source="assistant")])
    assert ids(p) == (["a"], [])


# -- lost index: adoption ------------------------------------------------------------------


def test_lost_index_adopts_by_name_and_size_in_both_path_styles() -> None:
    for hashed in (False, True):
        listing = [remote("f1", "a", hashed=hashed), remote("f2", "d/b", hashed=hashed)]
        p = plan({"a": local("a"), "d/b": local("d/b")}, {}, listing)
        assert p.transfers == 0
        adopted = {a.entry.relpath: a.entry.remote_id for a in p.adopts}
        assert adopted == {"a": "f1", "d/b": "f2"}
        assert {a.reason for a in p.adopts} == {"lost-index"}


def test_lost_index_does_not_adopt_a_different_size_and_replaces_it() -> None:
    p = plan({"a": local("a", "longer")}, {}, [remote("f1", "a", size=2)])
    assert ids(p) == (["a"], ["f1"])
    assert p.adopts == ()


def test_lost_index_does_not_adopt_an_upload_older_than_the_local_change() -> None:
    fresh_edit = local("a", mtime_s=NOW_S + 3600)
    p = plan({"a": fresh_edit}, {}, [remote("f1", "a", created_at=NOW_S)])
    assert ids(p) == (["a"], ["f1"])


def test_lost_index_does_not_adopt_when_an_edit_put_the_mtime_back() -> None:
    # Same name, same size, an old mtime: only the ctime shows the file changed since.
    restored = replace(local("a", "v2"), ctime_ns=(NOW_S + 3600) * 1_000_000_000)
    p = plan({"a": restored}, {}, [remote("f1", "a", created_at=NOW_S)])
    assert ids(p) == (["a"], ["f1"])
    assert p.adopts == ()


def test_lost_index_with_duplicates_adopts_the_newest_and_deletes_the_rest() -> None:
    listing = [remote("old", "a", created_at=NOW_S - 10), remote("new", "a", created_at=NOW_S)]
    p = plan({"a": local("a")}, {}, listing)
    assert [a.entry.remote_id for a in p.adopts] == ["new"]
    assert [(d.remote_id, d.reason) for d in p.deletes] == [("old", "duplicate")]


def test_when_the_gateway_drops_names_nothing_is_matched_by_name() -> None:
    # Only content can tell: the same-size candidates are downloaded and compared.
    listing = [remote("f1", "file"), remote("f2", "file"), remote("f3", "file", "longer")]
    p = plan({"a.txt": local("a.txt")}, {}, listing, policy=Policy(server_keeps_names=False))
    assert ids(p) == ([], [])
    (verify,) = p.verifies
    assert verify.relpath == "a.txt" and verify.upload.relpath == "a.txt"
    assert sorted(c.id for c in verify.candidates) == ["f1", "f2"]
    assert p.unknown_kept == 1  # f3: another size, left alone


# -- ambiguous uploads and crashes -------------------------------------------------------------


def test_ambiguous_upload_that_was_stored_is_adopted_not_uploaded_twice() -> None:
    p = plan({"a": local("a")}, {}, [remote("f9", "a")], intents={"a": intent("a")})
    assert p.transfers == 0
    assert [(a.entry.remote_id, a.reason) for a in p.adopts] == [("f9", "ambiguous-upload")]
    assert p.cleared_intents == ("a",)


def test_ambiguous_upload_that_was_lost_is_uploaded_again() -> None:
    p = plan({"a": local("a")}, {}, [], intents={"a": intent("a")})
    assert ids(p) == (["a"], [])


def test_ambiguous_upload_of_an_older_content_is_deleted() -> None:
    p = plan({"a": local("a", "v2")}, {}, [remote("f9", "a")], intents={"a": intent("a", "v1")})
    assert ids(p) == (["a"], ["f9"])
    assert p.deletes[0].reason == "stale-upload"


def test_crash_after_replacing_upload_adopts_the_new_and_deletes_the_old() -> None:
    listing = [remote("old", "a"), remote("new", "a")]
    p = plan(
        {"a": local("a", "v2")}, {"a": entry("a", "old")}, listing, intents={"a": intent("a", "v2")}
    )
    assert p.uploads == ()
    assert [a.entry.remote_id for a in p.adopts] == ["new"]
    assert [(d.remote_id, d.reason) for d in p.deletes] == [("old", "replaced")]


def test_an_indexed_file_with_a_same_name_stranger_is_not_replaced_by_it() -> None:
    listing = [remote("f1", "a"), remote("dup", "a")]
    p = plan({"a": local("a")}, {"a": entry("a", "f1")}, listing)
    assert p.adopts == () and p.uploads == ()
    assert [(d.remote_id, d.reason) for d in p.deletes] == [("dup", "duplicate")]


def test_stale_intent_of_a_deleted_local_file_removes_its_upload() -> None:
    p = plan({}, {}, [remote("f9", "a")], intents={"a": intent("a")})
    assert ids(p) == ([], ["f9"])
    assert p.cleared_intents == ("a",)


def test_pending_deletes_are_deleted_when_listed_and_dropped_when_gone() -> None:
    pending = [PendingDelete("old", "a"), PendingDelete("vanished", "b")]
    p = plan(
        {"a": local("a")},
        {"a": entry("a", "f1")},
        [remote("f1", "a"), remote("old", "a")],
        pending_deletes=pending,
    )
    assert [(d.remote_id, d.reason) for d in p.deletes] == [("old", "pending")]
    assert p.obsolete_deletes == ("vanished",)


def test_uncertain_paths_are_never_taken_as_deleted() -> None:
    index = {"locked/a": entry("locked/a", "f1"), "busy": entry("busy", "f2")}
    listing = [remote("f1", "locked/a"), remote("f2", "busy"), remote("f3", "busy")]
    held = {"busy"}
    p = plan(
        {},
        index,
        listing,
        policy=Policy(delete_unknown=True),
        uncertain=lambda r: r in held or r.startswith("locked/"),
    )
    assert p.is_noop and p.deletes == ()
    assert p.unknown_kept == 0


# -- brakes -----------------------------------------------------------------------------


def tracked(n: int) -> tuple[dict[str, IndexEntry], list[RemoteFile]]:
    index = {f"f{i}": entry(f"f{i}", f"id{i}") for i in range(n)}
    return index, [remote(f"id{i}", f"f{i}") for i in range(n)]


def test_empty_root_with_tracked_files_trips_the_brake_unless_forced() -> None:
    index, listing = tracked(2)
    p = plan({}, index, listing)
    brake = check_brakes(p, local_count=0, policy=Policy())
    assert brake is not None and "empty" in brake.reason
    assert check_brakes(p, local_count=0, policy=Policy(), force=True) is None


def test_mass_deletion_trips_the_brake_at_the_configured_share() -> None:
    index, listing = tracked(10)
    keep = {f"f{i}": local(f"f{i}") for i in range(4)}
    p = plan(keep, index, listing)
    assert p.removals == 6
    brake = check_brakes(p, local_count=4, policy=Policy(max_delete=DeleteLimit(percent=50)))
    assert brake is not None and "6 of 10" in brake.reason
    assert check_brakes(p, local_count=4, policy=Policy(max_delete=DeleteLimit(percent=60))) is None


def test_deleting_unknown_files_is_braked_too() -> None:
    # A fresh index and an empty root (an unmounted disk) with delete_unknown:
    # the model's files must not all go.
    listing = [remote(f"m{i}", f"out{i}.csv", source="assistant") for i in range(50)]
    policy = Policy(delete_unknown=True)
    p = plan({}, {}, listing, policy=policy)
    assert p.destructive == 50
    brake = check_brakes(p, local_count=0, policy=policy)
    assert brake is not None and "empty" in brake.reason
    mostly_unknown = plan({"a": local("a")}, {}, listing, policy=policy)
    brake = check_brakes(mostly_unknown, local_count=1, policy=policy)
    assert brake is not None and "50 of 50" in brake.reason


def test_a_directory_rename_is_not_a_mass_deletion() -> None:
    index = {f"old/f{i}": entry(f"old/f{i}", f"id{i}", f"c{i}") for i in range(10)}
    listing = [remote(f"id{i}", f"old/f{i}") for i in range(10)]
    renamed = {f"new/f{i}": local(f"new/f{i}", f"c{i}") for i in range(10)}
    p = plan(renamed, index, listing)
    assert p.removals == 10 and p.moves == 10 and p.destructive == 0
    assert check_brakes(p, local_count=10, policy=Policy()) is None
    # Moving in content nobody had before does not hide real losses.
    swapped = {f"new/f{i}": local(f"new/f{i}", f"other{i}") for i in range(10)}
    p = plan(swapped, index, listing)
    assert p.moves == 0
    assert check_brakes(p, local_count=10, policy=Policy()) is not None


def test_small_deletions_do_not_trip_the_brake() -> None:
    index, listing = tracked(3)
    p = plan({"f0": local("f0")}, index, listing)
    assert p.removals == BRAKE_MIN_DELETES - 1
    assert check_brakes(p, local_count=1, policy=Policy()) is None


# -- model-based: applying a plan converges ----------------------------------------------


@dataclass
class World:
    """A remote container and an index, with the content each remote id holds."""

    remote: dict[str, RemoteFile] = field(default_factory=dict)
    content: dict[str, str] = field(default_factory=dict)
    index: dict[str, IndexEntry] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def upload(self, relpath: str, file: LocalFile) -> str:
        new_id = f"u{next(self.counter)}"
        self.remote[new_id] = remote(new_id, relpath, size=file.size, created_at=NOW_S + 10)
        self.content[new_id] = file.hash
        return new_id

    def apply(self, p: Plan, files: dict[str, LocalFile]) -> None:
        for a in p.adopts:
            self.index[a.entry.relpath] = a.entry
        for r in p.refreshes:
            old = self.index[r.relpath]
            self.index[r.relpath] = IndexEntry(
                r.relpath, old.remote_id, old.remote_path, r.size, r.mtime_ns, old.hash, 0.0
            )
        for relpath in p.forgets:
            self.index.pop(relpath, None)
        for u in p.uploads:
            new_id = self.upload(u.relpath, files[u.relpath])
            f = files[u.relpath]
            self.index[u.relpath] = IndexEntry(u.relpath, new_id, "", f.size, f.mtime_ns, f.hash, 0)
            if u.replaces:
                self.remote.pop(u.replaces, None)
        for d in p.deletes:
            self.remote.pop(d.remote_id, None)
            for relpath, e in list(self.index.items()):
                if e.remote_id == d.remote_id:
                    del self.index[relpath]


names = st.sampled_from(["a", "b", "d/c", "d/e f", "ü"])
contents = st.sampled_from(["v1", "v2", "longer"])
trees = st.dictionaries(names, contents, max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    before=trees,
    after=trees,
    strangers=st.lists(
        st.tuples(names, contents, st.sampled_from(["user", "assistant"])), max_size=3
    ),
    lose_index=st.booleans(),
)
def test_any_history_converges_to_an_exact_mirror(
    before: dict[str, str],
    after: dict[str, str],
    strangers: list[tuple[str, str, str]],
    lose_index: bool,
) -> None:
    world = World()
    first = {r: local(r, c) for r, c in before.items()}
    world.apply(plan(first, world.index, world.remote.values()), first)
    for n, (name, content, source) in enumerate(strangers):
        sid = f"s{n}"
        world.remote[sid] = remote(
            sid, name, size=len(content), source=source, created_at=NOW_S - 5000
        )
        world.content[sid] = f"h:{content}"
    if lose_index:
        world.index.clear()

    # An edit after the first pass moves the mtime past the first uploads.
    second = {
        r: local(r, c, mtime_s=NOW_S - 1000 if before.get(r) == c else NOW_S + 100)
        for r, c in after.items()
    }
    world.apply(plan(second, world.index, world.remote.values()), second)

    # Exactly one user upload per local file, holding its content...
    user_files = [f for f in world.remote.values() if f.source == "user"]
    by_name: dict[str, list[RemoteFile]] = {}
    for f in user_files:
        by_name.setdefault(f.name, []).append(f)
    for relpath, file in second.items():
        held = by_name.get(relpath, [])
        assert len(held) == 1, (relpath, held)
        indexed = world.index[relpath]
        assert indexed.remote_id == held[0].id
        assert world.content[held[0].id] == file.hash
    # ...assistant files untouched, and a second pass is a no-op.
    assistants = {f"s{n}" for n, s in enumerate(strangers) if s[2] == "assistant"}
    assert assistants <= world.remote.keys()
    again = plan(second, world.index, world.remote.values())
    assert again.transfers == 0, again


def test_excluded_paths_are_left_alone_unless_delete_excluded() -> None:
    index = {"keep.txt": entry("keep.txt", "f1"), "big.bin": entry("big.bin", "f2")}
    listing = [remote("f1", "keep.txt"), remote("f2", "big.bin"), remote("f3", "other.bin")]
    excluded = {"big.bin", "other.bin"}
    local_files = {"keep.txt": local("keep.txt")}
    kept = plan(local_files, index, listing, ignored=excluded.__contains__)
    assert kept.is_noop and kept.deletes == ()
    gone = plan(
        local_files,
        index,
        listing,
        ignored=excluded.__contains__,
        policy=Policy(delete_excluded=True),
    )
    assert [(d.remote_id, d.reason) for d in gone.deletes] == [("f2", "excluded")]
    # A pull pair never deletes remotely, excluded or not.
    pulled = plan(
        local_files,
        index,
        listing,
        ignored=excluded.__contains__,
        policy=Policy(direction="pull", delete_excluded=True),
    )
    assert pulled.deletes == () and pulled.downloads == ()


def test_names_dropped_needs_every_upload_called_file() -> None:
    hashed = "/mnt/data/0123456789abcdef0123456789abcdef-"
    assert names_dropped(["/mnt/data/file", hashed + "file"])
    assert not names_dropped([])
    assert not names_dropped(["/mnt/data/file", "/mnt/data/a.txt", "/mnt/data/file"])


# A lost index at 100,000 files held a list of RemoteFile values per name (~45 MB at
# the pass's peak): the names hold ids, keyed by the scan's own relpath strings; a
# name one upload carries holds its id alone, not a tuple (~6 MiB at 100,000).
@pytest.mark.perf_guard
def test_uploads_by_name_hold_ids_under_the_local_relpath_strings() -> None:
    files = {relpath: local(relpath) for relpath in ("a.txt", "d/b.txt")}
    listing = [
        remote("f1", "a.txt", hashed=True),
        remote("f2", "d/b.txt", hashed=True),
        remote("f3", "d/b.txt", hashed=True, created_at=NOW_S - 5),
        remote("f4", "zzz", hashed=True),
    ]
    by_id = PlainFiles(listing)
    by_name = unindexed_uploads_by_name(by_id, listing, set(), Policy(), True, files)
    local_key = next(key for key in by_name._ranks[1] if key == "d/b.txt")
    assert local_key is files["d/b.txt"].relpath
    held = by_name._ranks[1]
    assert held["d/b.txt"] == ("f2", "f3")  # several uploads of a name: a tuple
    assert held["a.txt"] is listing[0].id and held["zzz"] is listing[3].id
    assert [r.id for r in by_name.take("d/b.txt")] == ["f2", "f3"]  # newest first
    assert by_name.get("d/b.txt") == []
    assert [r.id for r in by_name.get("a.txt")] == ["f1"]
    # The whole name outranks one a hash prefix hid.
    whole = UploadsByName(by_id, files)
    whole.add("a.txt", 1, "f1")
    whole.add("a.txt", 0, "f4")
    assert [r.id for r in whole.get("a.txt")] == ["f4"]


class CountingFiles(PlainFiles):
    """Listed files that count the ``RemoteFile`` values the planner asks for (a
    ``listing.Listing`` makes one, its name by a regular expression, for each)."""

    def __init__(self, files: Iterable[RemoteFile]) -> None:
        super().__init__(files)
        self.made = 0

    def __getitem__(self, file_id: str) -> RemoteFile:
        self.made += 1
        return super().__getitem__(file_id)

    def __contains__(self, file_id: object) -> bool:
        return isinstance(file_id, str) and self.row(file_id) is not None


# Issue 23, third round: a warm pass at 100,000 files made a RemoteFile for every listed
# file it compared (~0.2 s of its planning's 0.8 s of CPU). The plan looks a current
# file up by id only and makes a RemoteFile for the files it acts on.
@pytest.mark.perf_guard
def test_a_warm_plan_makes_no_remote_file_for_current_files() -> None:
    current = [f"d/f{n}" for n in range(5)]
    files = {relpath: local(relpath) for relpath in [*current, "changed"]}
    files["changed"] = local("changed", "v2")
    entries = [entry(relpath, f"id-{relpath}") for relpath in [*current, "changed", "gone"]]
    listed = CountingFiles(remote(e.remote_id, e.relpath) for e in entries)
    result = plan_pass(files, PlainEntries(entries), listed, policy=Policy(now=NOW_S, delete=True))
    assert [(u.relpath, u.replaces) for u in result.uploads] == [("changed", "id-changed")]
    assert [(d.relpath, d.remote_id) for d in result.deletes] == [("gone", "id-gone")]
    assert listed.made == 1  # the deleted file's only


FOLDING_NAMES = ["a", 'a"b', "a%22b", "\u00e9", "e\u0301", "d/x\n", "d/x%0A", "d/x%0a", "p"]


@given(st.lists(st.sampled_from(FOLDING_NAMES), unique=True))
def test_shared_names_are_the_names_more_than_one_relpath_has(relpaths: list[str]) -> None:
    # Counted over odd names only (a plain tree holds no set of every name): the same
    # answer as counting every name.
    counts = Counter(canonical(upload_name(relpath)) for relpath in relpaths)
    assert shared_names(sorted(relpaths)) == {name for name, n in counts.items() if n > 1}


# Issue 23, third round: after a lost index every relpath takes its name, and the dict
# of 100,000 names (~3.7 MiB) was held at its full size to the end of planning, the
# peak. Once a quarter of the names is left, the rest is copied into a smaller table.
@pytest.mark.perf_guard
def test_uploads_by_name_let_their_table_go_as_names_are_taken() -> None:
    names = [f"n{number:03d}" for number in range(200)]
    listing = [remote(f"id-{name}", name) for name in names]
    by_name = unindexed_uploads_by_name(PlainFiles(listing), listing, set(), Policy(), False, {})
    full = sys.getsizeof(by_name._ranks[0])
    for name in names[:160]:
        assert [r.id for r in by_name.take(name)] == [f"id-{name}"]
    assert len(by_name._ranks[0]) == 40
    assert sys.getsizeof(by_name._ranks[0]) < full / 2
    assert [r.id for r in by_name.get("n199")] == ["id-n199"]
