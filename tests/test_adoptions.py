"""A plan's adoptions (``actions.Adoptions``): kept as columns, each ``Adopt`` made when read."""

from __future__ import annotations

import gc

import pytest

from cntr_sync.actions import Adopt, Adoptions, mirror_entry
from cntr_sync.models import IndexEntry, LocalFile
from cntr_sync.names import to_remote_file
from cntr_sync.plan import plan
from cntr_sync.plan_inputs import Policy
from plain_inputs import PlainEntries, PlainFiles

NOW_S = 1_800_000_000


def _local(relpath: str, size: int = 2) -> LocalFile:
    return LocalFile(relpath, size, (NOW_S - 1000) * 10**9, 7, f"h:{relpath}")


def test_each_adoption_reads_as_the_entry_mirror_entry_makes() -> None:
    a, b, c = _local("a"), _local("d/b"), _local("c", size=0)
    timed = to_remote_file("f1", "/mnt/data/a", 2, "user", NOW_S - 5)
    untimed = to_remote_file("f2", "/mnt/data/d/b", 2, "user", None)
    unsized = to_remote_file("f3", "/mnt/data/c", None, "user", NOW_S)
    adoptions = Adoptions()
    adoptions.add("a", a, timed, "lost-index", 123.5)
    adoptions.add("d/b", b, untimed, "ambiguous-upload", 123.5)
    adoptions.add("c", c, unsized, "lost-index", 123.5)
    expected = (
        Adopt(mirror_entry("a", a, timed, origin="push", synced_at=NOW_S - 5.0), "lost-index"),
        Adopt(mirror_entry("d/b", b, untimed, origin="push", synced_at=123.5), "ambiguous-upload"),
        Adopt(mirror_entry("c", c, unsized, origin="push", synced_at=float(NOW_S)), "lost-index"),
    )
    assert len(adoptions) == 3
    assert tuple(adoptions) == expected and adoptions == expected
    assert adoptions[-1] == expected[-1] and adoptions[1:] == expected[1:]
    assert adoptions[2].entry.remote_size is None  # listed without a size: kept unknown
    assert adoptions[0].entry.size is a.size  # the scan's objects, not copies
    assert Adoptions() == () and adoptions != expected[:2]
    with pytest.raises(IndexError):
        adoptions[3]


# Counts objects: guards issue 23's lost-index figure at 100,000 files (an Adopt, an
# IndexEntry and a float each were ~21 MiB at the pass's peak): a plan holds none.
@pytest.mark.perf_guard
def test_a_lost_index_plan_holds_no_entry_per_adoption() -> None:
    local = {f"d{n % 3}/f{n:03d}.txt": _local(f"d{n % 3}/f{n:03d}.txt") for n in range(300)}
    listing = [
        to_remote_file(f"file-{n}", f"/mnt/data/{relpath}", 2, "user", NOW_S - n)
        for n, relpath in enumerate(local)
    ]
    policy = Policy(now=float(NOW_S))
    lost = plan(local, PlainEntries({}), PlainFiles(listing), policy=policy)
    gc.collect()
    held = sum(1 for thing in gc.get_objects() if isinstance(thing, IndexEntry | Adopt))
    assert (len(lost.adopts), lost.transfers) == (300, 0)
    assert held == 0, held  # was two per adoption
    assert {a.entry.relpath for a in lost.adopts} == set(local)
