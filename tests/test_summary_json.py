"""The ``--json`` summary and ``SyncResult.to_json``: the same document as the
``asdict``-based one they replaced, written a batch of actions at a time, and the
per-action objects slotted (a cold push of 100,000 files makes 100,000 of each)."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from cntr_sync import cli
from cntr_sync import result as result_module
from cntr_sync.actions import (
    Adopt,
    Compare,
    Delete,
    DeleteLocal,
    Download,
    Plan,
    Upload,
)
from cntr_sync.cli_output import OutputMode, Reporter, planned_counts, summary, write_summary
from cntr_sync.emulator import EmulatorServer
from cntr_sync.models import IndexEntry, LocalFile, RemoteFile
from cntr_sync.result import ActionFailure, ConflictCopy, PassResult, PlannedAction, SyncResult


def _remote(number: int, size: int | None) -> RemoteFile:
    return RemoteFile(f"file-{number}", f"/mnt/data/r{number}", f"r{number}", size, "user", 1)


def _plan(uploads: int) -> Plan:
    state = LocalFile("c.txt", 5, 1, 2, "h")
    return Plan(
        uploads=tuple(
            Upload(f"d/f{n}", n, 1, "h", "new", f"old-{n}" if n % 7 == 0 else None)
            for n in range(uploads)
        ),
        deletes=(
            Delete("file-9", "/mnt/data/gone", "removed", "gone"),
            Delete("file-8", "/mnt/data/x", "unknown"),
        ),
        downloads=(
            Download(_remote(1, 10), "a\x1b.txt", "new"),
            Download(_remote(2, None), "b.txt", "remote-wins", move_aside_to="b (local).txt"),
        ),
        compares=(Compare(_remote(3, 4), "c.txt", state, "keep-both"),),
        local_deletes=(DeleteLocal("e.txt", state),),
        adopts=(
            Adopt(IndexEntry("f.txt", "file-4", "/mnt/data/f.txt", 6, 1, "h", 0.0), "lost-index"),
        ),
    )


def _result(uploads: int) -> SyncResult:
    return SyncResult.from_pass(
        PassResult(
            container_id="cntr_1",
            uploaded=uploads,
            local_files=uploads + 3,
            requests=uploads + 2,
            requests_by_operation={"create_file": uploads, "list_files": 2},
            failures=[ActionFailure("upload", "d/f1", "boom \u00e9")],
            warnings=["x: unreadable"],
            deferred=["y"],
            conflict_copies=[ConflictCopy("b.txt", "b (local).txt", "local")],
            seconds=1.5,
            plan=_plan(uploads),
        )
    )


def _reference_to_json(result: SyncResult) -> dict[str, Any]:
    """``SyncResult.to_json`` as it was: ``asdict`` and lists for tuples."""
    data = asdict(result)
    data["planned"] = [asdict(action) for action in result.planned]
    data["conflict_copies"] = [asdict(copy) for copy in result.conflict_copies]
    data["failures"] = [asdict(failure) for failure in result.failures]
    data["warnings"] = list(result.warnings)
    data["deferred"] = list(result.deferred)
    data["backups"] = [version.to_json() for version in result.backups]
    return data


def _reference_summary(result: SyncResult, exit_code: int) -> dict[str, Any]:
    """The ``--json`` document as it was made before it was written in batches."""
    data = _reference_to_json(result)
    planned = result.planned
    data["planned"] = {
        "upload": sum(1 for a in planned if a.action == "upload"),
        "replace": sum(1 for a in planned if a.action == "replace"),
        "delete": sum(1 for a in planned if a.action == "delete"),
        "adopt": sum(1 for a in planned if a.action == "adopt"),
        "download": sum(1 for a in planned if a.action == "download"),
        "compare": sum(1 for a in planned if a.action == "compare"),
        "delete_local": sum(1 for a in planned if a.action == "delete-local"),
        "bytes": sum(a.bytes or 0 for a in planned if a.action in ("upload", "replace")),
        "bytes_download": sum(a.bytes or 0 for a in planned if a.action in ("download", "compare")),
    }
    data["actions"] = [
        {"action": a.action, "path": a.path, "bytes": a.bytes, "reason": a.reason} for a in planned
    ]
    data["errors"] = data.pop("failures")
    data["exit_code"] = exit_code
    return data


@pytest.mark.parametrize("uploads", [0, 1, 999, 2500])
def test_summary_is_the_same_document_key_for_key_and_in_order(uploads: int) -> None:
    result = _result(uploads)
    expected = _reference_summary(result, 2)
    made = summary(result, 2)
    assert made == expected
    assert list(made) == list(expected)
    assert list(made["planned"]) == list(expected["planned"])
    assert result.to_json() == _reference_to_json(result)
    assert list(result.to_json()) == list(_reference_to_json(result))


@pytest.mark.parametrize("uploads", [0, 1, 999, 1000, 1001, 2500])
def test_written_summary_is_json_dumps_of_the_document_byte_for_byte(uploads: int) -> None:
    result = _result(uploads)
    out = io.StringIO()
    write_summary(result, 2, out)
    assert out.getvalue() == json.dumps(_reference_summary(result, 2)) + "\n"


def test_empty_result_written_as_dumped() -> None:
    result = SyncResult.from_pass(PassResult())
    out = io.StringIO()
    write_summary(result, 0, out)
    assert out.getvalue() == json.dumps(_reference_summary(result, 0)) + "\n"
    assert json.loads(out.getvalue())["actions"] == []


def test_reporter_json_prints_the_written_summary(capsys: pytest.CaptureFixture[str]) -> None:
    result = PassResult(container_id="cntr_1", uploaded=3, plan=_plan(3))
    Reporter(OutputMode(json=True), stderr=io.StringIO()).report(result, 0)
    printed = capsys.readouterr().out
    assert printed == json.dumps(_reference_summary(SyncResult.from_pass(result), 0)) + "\n"


def test_planned_counts_by_kind_and_bytes() -> None:
    counts = planned_counts(_result(14).planned)
    # 14 uploads, 2 of them (0 and 7) replacing an old id.
    assert counts == {
        "upload": 12,
        "replace": 2,
        "delete": 2,
        "adopt": 1,
        "download": 2,
        "compare": 1,
        "delete_local": 1,
        "bytes": sum(range(14)),
        "bytes_download": 10 + 4,
    }


# Pins __slots__: guards figure 5, the peak RSS of a cold push of 100k files
# (<= 150 MB), whose result holds a PlannedAction per upload.
@pytest.mark.perf_guard
def test_planned_action_is_slotted() -> None:
    action = PlannedAction("upload", "a", 1, "new")
    assert not hasattr(action, "__dict__")
    assert PlannedAction.__slots__ == ("action", "path", "bytes", "reason")
    assert action.to_json() == asdict(action)


def test_from_pass_without_planned_keeps_everything_else() -> None:
    result = PassResult(container_id="cntr_1", uploaded=3, plan=_plan(3))
    full = SyncResult.from_pass(result)
    bare = SyncResult.from_pass(result, planned=False)
    assert len(full.planned) == 3 + 7
    assert bare.planned == ()
    assert replace(full, planned=()) == bare


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many actions each call of ``result.planned_actions`` made, in order."""
    sizes: list[int] = []
    planned_actions = result_module.planned_actions

    def counting(plan: Plan) -> tuple[PlannedAction, ...]:
        actions = planned_actions(plan)
        sizes.append(len(actions))
        return actions

    monkeypatch.setattr(result_module, "planned_actions", counting)
    return sizes


@pytest.mark.parametrize(
    ("mode", "dry_run", "wanted"),
    [
        (OutputMode(), False, False),  # the summary line: counts only
        (OutputMode(quiet=True), False, False),
        (OutputMode(), True, True),  # a dry run prints the plan
        (OutputMode(json=True), False, True),
    ],
)
def test_reporter_makes_planned_actions_only_to_show_them(
    mode: OutputMode,
    dry_run: bool,
    wanted: bool,
    made: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = Reporter(mode, stderr=io.StringIO())
    reporter.report(PassResult(container_id="cntr_1", dry_run=dry_run, plan=_plan(3)), 0)
    assert made == ([3 + 7] if wanted else [])
    if dry_run:
        # The paths start in one column, after the widest label ("delete local").
        assert "\nupload       d/f1 (1 B, new)\n" in capsys.readouterr().out


@pytest.mark.usefixtures("logging_restored")  # main() configures logging, as the CLI does
def test_status_counts_what_a_sync_would_do_without_making_the_planned_actions(
    tmp_path: Path,
    made: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for number in range(4):
        (tree / "d" / f"f{number}.txt").write_bytes(b"x" * (number + 1))
    with EmulatorServer("127.0.0.1", 0, data_dir=tmp_path / "emulator") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        argv = ["cntr-sync", "status", str(tree), "--container", "never-pushed"]
        monkeypatch.setattr(sys, "argv", [*argv, "--state-dir", str(tmp_path / "state"), "--json"])
        with pytest.raises(SystemExit) as exit:
            cli.main()
    assert exit.value.code == 1  # a sync would change something
    would = json.loads(capsys.readouterr().out)["would"]
    assert (would["upload"], would["delete"], would["bytes"]) == (4, 0, 1 + 2 + 3 + 4)
    assert made == []
