"""The journal (issue 22, item 2): every action a pass carried out, with time, pass id,
action, path, bytes, reason and outcome, kept per pair."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cntr_sync import journal
from cntr_sync.backups import versions
from cntr_sync.errors import QuotaExceededError
from cntr_sync.index import Index
from pass_rig import BASE_URL, PassRig, pass_rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[PassRig]:
    with pass_rig(tmp_path) as made:
        yield made


def read_journal(rig: PassRig, since: float | None = None) -> list[journal.JournalEntry]:
    with rig.index() as index:
        return journal.read(index, since=since)


def test_each_action_of_a_push_and_a_pull_is_named_with_its_path(rig: PassRig) -> None:
    (rig.root / "a.txt").write_bytes(b"alpha")
    (rig.root / "b.txt").write_bytes(b"bravo")
    pushed = rig.sync()
    (rig.root / "a.txt").write_bytes(b"alpha, edited")
    (rig.root / "b.txt").unlink()
    rig.emu.add_assistant_file(rig.container_id, "/mnt/data/out.csv", b"1,2")
    mixed = rig.sync()
    entries = read_journal(rig)
    rows = [(e.action, e.path, e.bytes, e.outcome) for e in entries]
    # Transfers run in a pool: within a pass the order is the order they ended in,
    # but the local side (downloads) always before the remote side.
    assert sorted(rows[:2]) == [("upload", "a.txt", 5, "done"), ("upload", "b.txt", 5, "done")]
    assert rows[2] == ("download", "out.csv", 3, "done")
    assert sorted(rows[3:]) == [("delete", "b.txt", None, "done"), ("replace", "a.txt", 13, "done")]
    assert {e.pass_id for e in entries[:2]} == {pushed.pass_id}
    assert {e.pass_id for e in entries[2:]} == {mixed.pass_id}
    assert entries == sorted(entries, key=lambda e: e.time)
    assert entries[2].reason == "new"
    assert {e.reason for e in entries if e.action == "delete"} == {"removed"}


def test_a_model_rewrite_journals_the_download_and_the_backup(rig: PassRig) -> None:
    (rig.root / "plan.md").write_bytes(b"mine")
    rig.sync()
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("plan.md"), b"the model's, longer")
    result = rig.sync()
    latest = [e for e in read_journal(rig) if e.pass_id == result.pass_id]
    assert [(e.action, e.path) for e in latest] == [("download", "plan.md"), ("backup", "plan.md")]
    assert latest[1].reason == result.backups[0].folder


def test_a_backup_is_journaled_even_when_a_fatal_error_ends_the_pass(rig: PassRig) -> None:
    """The local side runs first: a file it kept is in the backup folder, and the
    journal says so, even when the remote side then stops the pass (no quota)."""
    (rig.root / "plan.md").write_bytes(b"mine")
    rig.sync()
    rig.emu.rewrite_file(rig.container_id, rig.entry_id("plan.md"), b"the model's, longer")
    (rig.root / "new.txt").write_bytes(b"to upload")
    rig.emu.fail_next("create_file", 429, 1, code="insufficient_quota")
    with pytest.raises(QuotaExceededError):
        rig.sync()
    (backup,) = [e for e in read_journal(rig) if e.action == "backup"]
    assert backup.path == "plan.md"
    (kept,) = versions(rig.backup_dir, "plan.md")
    assert kept.folder == backup.reason and kept.path.read_bytes() == b"mine"


def test_a_failed_action_is_journaled_with_its_reason(rig: PassRig) -> None:
    (rig.root / "a.txt").write_bytes(b"alpha")
    rig.emu.fail_next("create_file", 503, 20)
    assert rig.sync().failures
    rig.emu.clear_faults()
    (failed,) = [e for e in read_journal(rig) if e.outcome != "done"]
    assert (failed.action, failed.path) == ("upload", "a.txt")
    assert failed.outcome.startswith("failed: ")


def test_a_pass_that_does_nothing_writes_no_journal(rig: PassRig) -> None:
    before = read_journal(rig)
    assert rig.sync().pass_id is None or read_journal(rig) == before
    with sqlite3.connect(next(rig.state.glob("*.sqlite"))) as db:
        assert db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'journal'"
        ).fetchone() == (0,)


def test_rows_past_their_age_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    clock = [1_000_000.0]
    with Index.open(
        tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box"
    ) as index:
        pass_journal = journal.Journal(index, "p1", lambda: clock[0])
        pass_journal.record("upload", "old.txt", size=1)
        clock[0] += 40 * 86_400
        pass_journal.record("upload", "new.txt", size=1)
        assert journal.prune(index, before=clock[0] - 30 * 86_400) == 1
        assert [e.path for e in journal.read(index)] == ["new.txt"]
        assert journal.prune(index, before=clock[0] - 30 * 86_400) == 0
        assert [e.path for e in journal.read(index, since=clock[0] + 1)] == []


# Counts references: guards issue 23's lost-index figure at 100,000 files (a pass
# journals an adoption a file; the journal kept each row in memory too, ~10 MiB):
# a recorded row is on disk only.
@pytest.mark.perf_guard
def test_the_journal_keeps_no_row_in_memory(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    with Index.open(
        tmp_path / "state", base_url=BASE_URL, root=root, container_spec="box"
    ) as index:
        pass_journal = journal.Journal(index, "p1", lambda: 1_000_000.0)
        rows = [pass_journal.record("adopt", f"f{n}.txt", size=n) for n in range(50)]
        # Each row is referred to as often as a row the journal never saw: not by it.
        loose = [journal.JournalEntry(0.0, "p1", "adopt", "x", 1, "", "done") for _ in rows]
        assert {sys.getrefcount(row) for row in rows} == {sys.getrefcount(row) for row in loose}
        assert len(journal.read(index)) == 50
