"""The listing kept as columns: the same files as a list of ``RemoteFile``, the same plans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cntr_sync.actions import AccountedIds
from cntr_sync.entry_table import EntryTable
from cntr_sync.listing import Listing
from cntr_sync.models import IndexEntry, LocalFile, PendingDelete, RemoteFile, UploadIntent
from cntr_sync.names import to_remote_file
from cntr_sync.plan import plan
from cntr_sync.plan_inputs import Policy
from plain_inputs import PlainEntries, PlainFiles

HASHED = "/mnt/data/0123456789abcdef0123456789abcdef-"


def test_a_listing_gives_back_the_files_it_was_given_in_order() -> None:
    files = [
        to_remote_file("f1", "/mnt/data/a.txt", 3, "user", 1_800_000_000),
        to_remote_file("f2", HASHED + "d/b.txt", None, "assistant", None),
        to_remote_file("f3", "/elsewhere/c", 0, "user", -5),
        # Beyond what a 64-bit column holds, and None's stand-in itself.
        to_remote_file("f4", "/mnt/data/big", 2**70, "user", -(2**63)),
        to_remote_file("f1", "/mnt/data/again", 9, "user", 7),
    ]
    listing = Listing(files)
    assert len(listing) == 5
    assert list(listing) == files
    assert [listing.file(row) for row in range(5)] == files
    assert listing.file(1).name == "d/b.txt"


def test_any_number_of_distinct_sources_comes_back() -> None:
    files = [to_remote_file(f"f{n}", f"/mnt/data/{n}", n, f"src{n}", n) for n in range(300)]
    files.append(to_remote_file("g", "/mnt/data/g", 1, "src3", 1))
    listing = Listing(files)
    assert list(listing) == files
    assert listing.file(300).source == "src3" and listing.file(299).source == "src299"


def test_by_id_keeps_the_first_row_of_an_id() -> None:
    listing = Listing()
    listing.add("f1", "/mnt/data/a", 1, "user", 10)
    listing.add("f2", "/mnt/data/b", 2, "user", 20)
    listing.add("f1", "/mnt/data/a2", 3, "user", 30)
    by_id = listing.by_id()
    assert len(by_id) == 2 and list(by_id) == ["f1", "f2"]
    assert by_id["f1"].path == "/mnt/data/a" and by_id["f1"].size == 1
    assert "f2" in by_id and "f3" not in by_id
    assert by_id.get("f3") is None
    assert set(by_id.keys()) == {"f1", "f2"}
    assert [f.id for f in by_id.values()] == ["f1", "f2"]
    assert dict(by_id) == {"f1": listing.file(0), "f2": listing.file(1)}
    with pytest.raises(KeyError):
        by_id["f3"]
    # Rows added after the first lookup by id are found too.
    listing.add("f5", "/mnt/data/e", 5, "user", 50)
    assert listing.by_id()["f5"].size == 5


# Object identity: guards figure 5, the peak RSS of a no-change `sync` at 100k
# files (<= 150 MB), where the index's entries share the listing's strings.
@pytest.mark.perf_guard
def test_shared_hands_out_the_listings_own_strings() -> None:
    listing = Listing()
    file_id, path = "".join(["cfile_", "1"]), "".join(["/mnt/data/", "a"])
    listing.add(file_id, path, 1, "user", 10)
    same_id, same_path = listing.shared("cfile_1", "/mnt/data/a")
    assert same_id is file_id and same_path is path
    # Another path under the same id: the id is shared, the path stays the caller's.
    other = "".join(["/mnt/data/", "b"])
    shared_id, kept = listing.shared("cfile_1", other)
    assert shared_id is file_id and kept is other
    unknown = "".join(["cfile_", "9"])
    assert listing.shared(unknown, path)[0] is unknown


NAMES = ["a", "b", "d/c", "d/e f"]
CONTENTS = ["v1", "v2", "longer"]
NOW_S = 1_800_000_000


def _local(relpath: str, content: str) -> LocalFile:
    return LocalFile(relpath, len(content), (NOW_S - 100) * 10**9, 1, f"h:{content}")


remote_files = st.builds(
    lambda n, name, content, source, hashed, age: to_remote_file(
        f"f{n}",
        (HASHED if hashed else "/mnt/data/") + name,
        len(content),
        source,
        NOW_S - age,
    ),
    st.integers(0, 6),
    st.sampled_from(NAMES),
    st.sampled_from(CONTENTS),
    st.sampled_from(["user", "assistant"]),
    st.booleans(),
    st.sampled_from([-10, 1000]),
)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(
    local=st.dictionaries(st.sampled_from(NAMES), st.sampled_from(CONTENTS), max_size=4),
    indexed=st.dictionaries(
        st.sampled_from(NAMES),
        st.tuples(st.integers(0, 6), st.sampled_from(CONTENTS)),
        max_size=4,
    ),
    remote=st.lists(remote_files, max_size=6),
    intents=st.lists(st.sampled_from(NAMES), max_size=2),
    pending=st.lists(st.integers(0, 6), max_size=2),
    direction=st.sampled_from(["push", "pull", "both"]),
    delete_unknown=st.booleans(),
    keeps_names=st.sampled_from([None, True, False]),
)
def test_a_plan_from_a_listing_is_the_plan_from_its_files(
    local: dict[str, str],
    indexed: dict[str, tuple[int, str]],
    remote: list[RemoteFile],
    intents: list[str],
    pending: list[int],
    direction: str,
    delete_unknown: bool,
    keeps_names: bool | None,
) -> None:
    files = {relpath: _local(relpath, content) for relpath, content in local.items()}
    index = {
        relpath: IndexEntry(
            relpath, f"f{n}", f"/mnt/data/{relpath}", len(c), (NOW_S - 100) * 10**9, f"h:{c}", 0.0
        )
        for relpath, (n, c) in indexed.items()
    }
    kwargs = {
        "intents": {r: UploadIntent(r, r, 2, "h:v1", 0.0) for r in intents},
        "pending_deletes": [PendingDelete(f"f{n}", "a") for n in pending],
        "policy": Policy(
            direction=direction,  # type: ignore[arg-type]
            delete_unknown=delete_unknown,
            server_keeps_names=keeps_names,
            now=NOW_S,
        ),
        "uncertain": lambda relpath: relpath == "b",
    }
    expected = plan(files, PlainEntries(index), PlainFiles(remote), **kwargs)  # type: ignore[arg-type]
    listing = Listing(remote).by_id()
    assert plan(files, PlainEntries(index), listing, **kwargs) == expected  # type: ignore[arg-type]
    table = EntryTable(index.values())
    assert plan(files, table, Listing(remote).by_id(), **kwargs) == expected  # type: ignore[arg-type]


def test_accounted_ids_flag_listed_rows_and_keep_other_ids_aside() -> None:
    listing = Listing()
    listing.add("f1", "/mnt/data/a", 1, "user", 10)
    listing.add("f2", "/mnt/data/b", 2, "user", 20)
    listing.add("f1", "/mnt/data/a2", 3, "user", 30)
    accounted = AccountedIds(listing.by_id())
    accounted.add("f2")
    accounted.update(["gone", "f1"])
    assert "f1" in accounted and "f2" in accounted and "gone" in accounted
    assert "f3" not in accounted and 7 not in accounted
    # Without a listing: ids alone.
    plain = AccountedIds()
    plain.add("f1")
    assert "f1" in plain and "f2" not in plain
    fresh = AccountedIds(listing.by_id())
    assert "f1" not in fresh and "f2" not in fresh


def _entry(relpath: str, remote_id: str, origin: str = "push") -> IndexEntry:
    return IndexEntry(
        relpath,
        remote_id,
        f"/mnt/data/{relpath}",
        3,
        1_000,
        "h",
        1.25,
        origin,
        None,
        7,  # type: ignore[arg-type]
    )


def test_an_entry_table_holds_the_entries_of_a_dict() -> None:
    entries = [_entry("b", "f2", "pull"), _entry("a", "f1"), _entry("d/c", "f3"), _entry("a", "f9")]
    table = EntryTable(entries)
    # Sorted by relpath; a relpath given twice: the last one, as a dict keeps it.
    expected = {e.relpath: e for e in entries}
    assert list(table) == ["a", "b", "d/c"] and len(table) == 3
    assert dict(table) == expected and table == expected
    assert table["a"].remote_id == "f9" and table["b"].origin == "pull"
    assert table.get("zz") is None and "d/c" in table and "zz" not in table and 5 not in table
    with pytest.raises(KeyError):
        table["zz"]
    assert list(table.values()) == [expected["a"], expected["b"], expected["d/c"]]
    assert list(table.remote_ids()) == ["f9", "f2", "f3"]
    assert EntryTable() == {} and list(EntryTable().values()) == []


def test_unaccounted_ids_read_rows_and_agree_with_membership() -> None:
    listing = Listing()
    for n in range(6):
        listing.add(f"f{n % 5}", f"/mnt/data/{n}", n, "user", n)  # f0 twice: its first row
    by_id = listing.by_id()
    accounted = AccountedIds(by_id)
    accounted.update(["f1", "f3", "gone"])
    walked = list(accounted.unaccounted(by_id))
    assert walked == ["f0", "f2", "f4"]
    assert walked == [file_id for file_id in by_id if file_id not in accounted]
    # Each id as it is when reached: one accounted for while walking is left out.
    seen = []
    for file_id in accounted.unaccounted(by_id):
        seen.append(file_id)
        accounted.add("f4")
    assert seen == ["f0", "f2"]
    # Counted against another listing (or none): each id is looked up instead.
    other = Listing([to_remote_file("f2", "/mnt/data/x", 1, "user", 1)]).by_id()
    assert list(AccountedIds().unaccounted(other)) == ["f2"]
    assert list(accounted.unaccounted(PlainFiles({}))) == []


def test_unaccounted_ids_of_plain_files_come_through_their_rows() -> None:
    files = PlainFiles([to_remote_file(f"f{n}", f"/mnt/data/{n}", n, "user", n) for n in range(4)])
    accounted = AccountedIds(files)
    accounted.add("f2")
    assert list(files.ids_and_rows()) == [("f0", 0), ("f1", 1), ("f2", 2), ("f3", 3)]
    assert list(accounted.unaccounted(files)) == ["f0", "f1", "f3"]
