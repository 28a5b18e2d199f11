"""Every field of a listing is hostile input (reliability round two, findings 2 and 12).

The emulator shows chosen values instead of a file's real fields (``show_fields``),
as a broken server or gateway may: numbers out of range or of the wrong type,
strings that are not strings, fields left out. One such file must never wedge
the pair: the pass goes on, the file's odd field is taken as unknown, and a
warning names it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync.models import ContainerFile
from helpers import local_tree
from pass_rig import PassRig, pass_rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[PassRig]:
    with pass_rig(tmp_path) as made:
        yield made


@pytest.mark.parametrize(
    ("shown", "hidden", "field"),
    [
        ({"created_at": 1e23}, (), "created_at"),
        ({"created_at": -5}, (), "created_at"),
        ({"created_at": "yesterday"}, (), "created_at"),
        ({"bytes": 2**64}, (), "bytes"),
        ({"bytes": "12"}, (), "bytes"),
        ({"bytes": True}, (), "bytes"),
        ({"source": ["assistant"]}, (), "source"),
        ({}, ("bytes", "created_at", "source", "object", "container_id"), None),
    ],
)
def test_a_model_file_with_a_garbage_field_comes_home_and_the_pass_goes_on(
    rig: PassRig, shown: dict[str, object], hidden: tuple[str, ...], field: str | None
) -> None:
    file_id = rig.model_writes("/mnt/data/out.txt", b"the model's output")
    rig.emu.show_fields(rig.container_id, file_id, shown, hidden)
    (rig.root / "mine.txt").write_bytes(b"a local file after it")
    result = rig.sync()
    assert not result.failures, result.failures
    assert local_tree(rig.root) == {
        "out.txt": b"the model's output",
        "mine.txt": b"a local file after it",
    }
    assert result.uploaded == 1
    odd = [w for w in result.warnings if w.startswith("/mnt/data/out.txt:")]
    if field is None:
        assert odd == []  # fields left out are simply unknown
    else:
        assert len(odd) == 1 and field in odd[0] and "taken as unknown" in odd[0], odd
    # And again: nothing left over, nothing wedged.
    again = rig.sync()
    assert not again.failures and again.downloaded == again.uploaded == 0


def test_a_tracked_pulled_file_whose_size_turns_absurd_is_left_as_it_is(rig: PassRig) -> None:
    file_id = rig.model_writes("/mnt/data/data.csv", b"1,2,3\n")
    assert rig.sync().downloaded == 1
    rig.emu.show_fields(rig.container_id, file_id, {"bytes": 2**64, "created_at": 10**30})
    (rig.root / "later.txt").write_bytes(b"x")
    for _ in range(2):
        result = rig.sync()
        assert not result.failures, result.failures
    assert local_tree(rig.root) == {"data.csv": b"1,2,3\n", "later.txt": b"x"}


def test_the_wire_model_takes_garbage_as_unknown_and_says_so() -> None:
    item = ContainerFile.model_validate(
        {"id": "f", "bytes": 2**63, "created_at": 5e9, "path": 7, "source": None}
    )
    assert (item.bytes, item.created_at, item.path, item.source) == (None, None, "", "unknown")
    assert len(item.problems) == 4, item.problems  # bytes, created_at, path and source
    fine = ContainerFile.model_validate({"id": "f", "bytes": 3.0, "created_at": 1_700_000_000})
    assert (fine.bytes, fine.created_at, fine.problems) == (3, 1_700_000_000, ())


def test_a_file_rewritten_in_place_comes_home_newer_than_before(rig: PassRig) -> None:
    file_id = rig.model_writes("/mnt/data/report.md", b"first")
    rig.sync()
    before = os.stat(rig.root / "report.md").st_mtime_ns
    rig.emu.rewrite_file(rig.container_id, file_id, b"second, longer")
    assert rig.sync().downloaded == 1
    after = os.stat(rig.root / "report.md").st_mtime_ns
    # The rewrite keeps the file's created_at; the local copy must still move forward in
    # time, or make and friends take their outputs as up to date.
    assert after > before, (before, after)


def test_a_new_model_file_keeps_the_time_the_model_made_it(rig: PassRig) -> None:
    made = rig.emu.add_assistant_file(rig.container_id, "/mnt/data/plot.png", b"png")
    rig.sync()
    assert os.stat(rig.root / "plot.png").st_mtime == made["created_at"]
