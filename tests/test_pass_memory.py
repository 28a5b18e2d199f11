"""What a full pass keeps while it carries its plan out: the plan, not the scan.

A cold push of 100,000 files holds 100,000 ``Upload`` actions while it uploads; the
scan's ``LocalFile`` objects (and the listing) are gone by then, so their memory
serves the pass's own work. Checked by structure: no ``LocalFile`` is alive while
the actions run (the actions share the scan's strings, not its objects).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync import apply as apply_module
from cntr_sync.actions import Plan
from cntr_sync.api import ContainersClient
from cntr_sync.emulator import Emulator
from cntr_sync.engine import Engine
from cntr_sync.index import Index
from cntr_sync.models import LocalFile, Pair
from helpers import NoSleep

BASE_URL = "http://emulator.test/v1"
FILES = 40


def _alive(kind: type) -> int:
    return sum(1 for obj in gc.get_objects() if type(obj) is kind)


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    with Emulator(data_dir=tmp_path / "emulator") as emulator:
        yield emulator


def _push(emu: Emulator, root: Path, state: Path) -> int:
    with (
        ContainersClient(
            "sk-test", base_url=BASE_URL, transport=emu.transport(), sleep=NoSleep()
        ) as client,
        Index.open(state, base_url=BASE_URL, root=root, container_spec="box") as index,
    ):
        pair = Pair(name="t", local=root, container="box")
        result = Engine(client, index, pair, concurrency=2).run_pass()
        assert not result.failures
        return result.uploaded


# A gc census of LocalFile objects: guards figure 5, the peak RSS of a cold push
# of 100k files (<= 150 MB), which the scan's objects must not add to.
@pytest.mark.perf_guard
def test_the_scan_is_gone_while_the_actions_run(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "tree"
    for n in range(FILES):
        path = root / f"d{n % 3}" / f"f{n}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content {n}\n")
    seen: list[tuple[int, int]] = []
    run = apply_module.Applier.run

    def counting_run(self: apply_module.Applier, plan: Plan) -> None:
        # LocalFile is slotted and refers to other objects: the collector tracks it.
        seen.append((len(plan.uploads), _alive(LocalFile)))
        run(self, plan)

    monkeypatch.setattr(apply_module.Applier, "run", counting_run)
    assert _push(emu, root, tmp_path / "state") == FILES
    assert seen == [(FILES, 0)]

    # The same holds for a pass with something to compare against: edits and a listing.
    (root / "d0" / "f0.txt").write_text("changed\n")
    (root / "d1" / "f1.txt").unlink()
    seen.clear()
    _push(emu, root, tmp_path / "state")
    assert seen == [(1, 0)]
