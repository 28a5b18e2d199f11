"""The CLI's output pieces, rendered in-process (the subprocess tests are in test_cli)."""

from __future__ import annotations

import io
import json
import threading

import pytest

from cntr_sync.actions import Delete, DeleteLocal, Download, Plan, Upload
from cntr_sync.brakes import BRAKE_NAMED, check_brakes
from cntr_sync.cli_output import (
    OutputMode,
    Reporter,
    conflict_line,
    dry_run_summary,
    error_document,
    human_size,
    human_summary,
    summary,
    transfer_line,
)
from cntr_sync.models import LocalFile, RemoteFile
from cntr_sync.plan_inputs import Policy
from cntr_sync.result import ActionFailure, ConflictCopy, PassResult, SyncResult, TransferEvent


def test_progress_bar_renders_files_and_bytes() -> None:
    out = io.StringIO()
    reporter = Reporter(OutputMode(progress=True), stderr=out)
    reporter.err = reporter.err.__class__(file=out, force_terminal=True, width=120)
    with reporter:
        assert reporter._bar is not None
        reporter._bar.refresh()  # before start(): must render, not fail on a missing field
        reporter.start(3, 3000)
        reporter.advance(TransferEvent("uploaded", "a", 1000))
        reporter.advance(TransferEvent("uploaded", "b", 1000))
        reporter._bar.refresh()
    assert "2/3" in out.getvalue()


def test_the_bar_speaks_iec_units_as_every_other_line() -> None:
    out = io.StringIO()
    reporter = Reporter(OutputMode(), stderr=out)
    reporter.err = reporter.err.__class__(file=out, force_terminal=True, width=120)
    with reporter:
        reporter.start(2, 4 * 1024 * 1024)
        reporter.advance(TransferEvent("uploaded", "a", 2 * 1024 * 1024))
        assert reporter._bar is not None
        reporter._bar.refresh()
    text = out.getvalue()
    assert "2.0/4.0 MiB" in text and "MB" not in text


def test_stats_lines_off_a_terminal_say_where_the_pass_is() -> None:
    out = io.StringIO()  # not a terminal
    reporter = Reporter(OutputMode(stats_every=0.01), stderr=out)
    assert not reporter.wants_bar and reporter.wants_stats
    assert reporter.stats_line().startswith("cntr-sync: stats: scanning and listing, ")
    with reporter:
        reporter.start(4, 4096)
        reporter.advance(TransferEvent("uploaded", "a", 1024))
        for _ in range(1000):  # bounded: the thread writes within a few ticks
            if "1/4 transfers" in out.getvalue():
                break
            threading.Event().wait(0.01)
    line = reporter.stats_line()
    assert line.startswith("cntr-sync: stats: 1/4 transfers, 1.0 KiB/4.0 KiB (25%), ")
    assert " elapsed" in line
    assert "cntr-sync: stats: 1/4 transfers" in out.getvalue()
    written = len(out.getvalue())
    threading.Event().wait(0.05)
    assert len(out.getvalue()) == written  # the thread stopped with the pass
    for mode in (
        OutputMode(),
        OutputMode(stats_every=1, quiet=True),
        OutputMode(stats_every=1, json=True),
    ):
        assert not Reporter(mode, stderr=io.StringIO()).wants_stats
    # --progress off a terminal: no bar (it would only draw a blank line at the end).
    assert not Reporter(OutputMode(progress=True), stderr=io.StringIO()).wants_bar


def test_verbose_prints_one_line_per_transfer_and_quiet_none() -> None:
    out = io.StringIO()
    reporter = Reporter(OutputMode(verbose=1, progress=False), stderr=out)
    reporter.advance(TransferEvent("uploaded", "notes/a.md", 4300))
    reporter.advance(TransferEvent("deleted", "old.txt"))
    reporter.advance(TransferEvent("downloaded", "plot\x1b[31m.png", 10))
    assert out.getvalue().splitlines() == [
        "uploaded notes/a.md (4.2 KiB)",
        "deleted old.txt",
        "downloaded plot\\x1b[31m.png (10 B)",  # a name from the server, escaped
    ]
    quiet = io.StringIO()
    Reporter(OutputMode(verbose=1, quiet=True), stderr=quiet).advance(
        TransferEvent("uploaded", "a", 1)
    )
    assert quiet.getvalue() == ""


def test_human_sizes() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(5 * 1024**3) == "5.0 GiB"
    assert transfer_line(TransferEvent("deleted locally", "x")) == "deleted locally x"


def test_summary_line_and_json_tell_partial_from_in_sync() -> None:
    ok = SyncResult.from_pass(
        PassResult(container_id="cntr_1", uploaded=2, bytes_uploaded=2048, local_files=2)
    )
    assert human_summary(ok).startswith("in sync: 2 files -> cntr_1")
    assert "2 uploaded" in human_summary(ok)
    one = SyncResult.from_pass(
        PassResult(container_id="cntr_1", uploaded=1, local_files=1, requests=1, conflicts=1)
    )
    assert human_summary(one).startswith("in sync: 1 file -> cntr_1; 1 uploaded, 1 conflict;")
    assert " in 1 request, " in human_summary(one)
    failed = SyncResult.from_pass(
        PassResult(container_id="cntr_1", failures=[ActionFailure("upload", "a", "boom")])
    )
    assert human_summary(failed).startswith("NOT in sync")
    data = summary(failed, 1)
    assert data["errors"] == [{"action": "upload", "target": "a", "message": "boom"}]
    assert data["exit_code"] == 1


def _planned(plan: Plan, **counts: int) -> SyncResult:
    return SyncResult.from_pass(
        PassResult(container_id="cntr_1", dry_run=True, plan=plan, **counts)
    )


def test_a_dry_run_summary_says_what_a_sync_would_do() -> None:
    remote = RemoteFile("file-1", "/mnt/data/r.txt", "r.txt", 2048, "assistant", 1)
    plan = Plan(
        uploads=(Upload("a", 1024, 1, "h", "new"), Upload("b", 10, 1, "h", "changed", "old")),
        deletes=(Delete("file-9", "/mnt/data/gone", "removed", "gone"),),
        downloads=(Download(remote, "r.txt", "new"),),
    )
    assert dry_run_summary(_planned(plan, conflicts=2)) == (
        "dry run, nothing changed: a sync would upload 1, replace 1, delete 1, download 1, "
        "resolve 2 conflicts (1.0 KiB to send, 2.0 KiB to receive)"
    )
    assert dry_run_summary(_planned(Plan())) == "dry run, nothing changed: a sync would do nothing"
    new = SyncResult.from_pass(PassResult(dry_run=True, plan=Plan()))
    assert dry_run_summary(new) == "dry run, nothing changed: a sync would create a container"


def test_a_dry_run_prints_its_summary_last_and_no_in_sync_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    err = io.StringIO()
    plan = Plan(uploads=(Upload("a", 3, 1, "h", "new"),))
    Reporter(OutputMode(), stderr=err).report(PassResult("cntr_1", dry_run=True, plan=plan), 0)
    assert err.getvalue().splitlines() == [
        "dry run, nothing changed: a sync would upload 1 (3 B to send, 0 B to receive)"
    ]
    assert "upload  a (3 B, new)" in capsys.readouterr().out


def test_the_plans_paths_start_in_one_column(capsys: pytest.CaptureFixture[str]) -> None:
    here = LocalFile("old.txt", 3, 1, 2, "h")
    plan = Plan(
        uploads=(Upload("a", 3, 1, "h", "new"),),
        deletes=(Delete("file-9", "/mnt/data/gone", "removed", "gone"),),
        local_deletes=(DeleteLocal("old.txt", here),),
    )
    Reporter(OutputMode(), stderr=io.StringIO()).report(
        PassResult("cntr_1", dry_run=True, plan=plan), 0
    )
    assert capsys.readouterr().out.splitlines() == [
        "delete local old.txt (3 B, deleted remotely)",
        "upload       a (3 B, new)",
        "delete       gone (removed)",
    ]


def test_in_sync_means_nothing_planned_and_nothing_left_undone() -> None:
    work = Plan(uploads=(Upload("a", 3, 1, "h", "new"),))
    bookkeeping_only = Plan(forgets=("gone.txt",))
    assert not PassResult(dry_run=True, plan=work).in_sync
    assert PassResult(dry_run=True, plan=bookkeeping_only).in_sync
    assert PassResult(dry_run=True, plan=Plan()).in_sync
    assert PassResult(plan=work, uploaded=1).in_sync  # carried out
    assert not PassResult(plan=work, deferred=["a"]).in_sync
    assert not PassResult(plan=work, cancelled=True).in_sync
    failed = ActionFailure("upload", "a", "boom")
    assert not PassResult(dry_run=True, plan=Plan(), failures=[failed]).in_sync


def test_every_conflict_copy_is_a_line_after_the_summary() -> None:
    err = io.StringIO()
    copies = [
        ConflictCopy("notes.md", "notes (container conflict 2025-01-02 030405).md", "container"),
        ConflictCopy("a\x1b.txt", "a\x1b (local conflict 2025-01-02 030405).txt", "local"),
    ]
    result = PassResult("cntr_1", downloaded=2, conflicts=2, local_files=4, conflict_copies=copies)
    Reporter(OutputMode(), stderr=err).report(result, 0)
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("in sync: 4 files -> cntr_1; 2 downloaded, 2 conflicts;")
    assert lines[1:] == [
        "conflict: notes.md: the container's version is kept as "
        "notes (container conflict 2025-01-02 030405).md",
        "conflict: a\\x1b.txt: the local version is kept as "
        "a\\x1b (local conflict 2025-01-02 030405).txt",  # names from the server, escaped
    ]
    assert conflict_line(copies[0]) == lines[1]
    quiet = io.StringIO()
    Reporter(OutputMode(quiet=True), stderr=quiet).report(result, 0)
    assert quiet.getvalue() == ""


def test_the_conflict_copies_downloads_make() -> None:
    remote = RemoteFile("file-1", "/mnt/data/n.txt", "n.txt", 3, "assistant", 1)
    here = LocalFile("n.txt", 3, 1, 2, "h")
    downloads = [
        Download(remote, "n (c).txt", "conflict-copy", copy_of="n.txt"),
        Download(remote, "n.txt", "remote-wins", expect=here, move_aside_to="n (l).txt"),
        Download(remote, "n.txt", "changed", expect=here),
    ]
    result = PassResult()
    result.conflict_copies.extend(
        copy for download in downloads if (copy := ConflictCopy.made_by(download)) is not None
    )
    assert result.conflict_copies == [
        ConflictCopy("n.txt", "n (c).txt", "container"),
        ConflictCopy("n.txt", "n (l).txt", "local"),
    ]
    assert summary(SyncResult.from_pass(result), 0)["conflict_copies"] == [
        {"path": "n.txt", "copy": "n (c).txt", "holds": "container"},
        {"path": "n.txt", "copy": "n (l).txt", "holds": "local"},
    ]


def test_an_error_document_has_the_keys_of_the_document_on_success(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ok = summary(SyncResult.from_pass(PassResult("cntr_1", uploaded=1)), 0)
    error = {"action": "sync", "target": None, "message": "boom"}
    failed = error_document("sync", 3, error, dry_run=True)
    assert list(failed) == list(ok)
    assert (failed["errors"], failed["exit_code"], failed["in_sync"]) == ([error], 3, False)
    assert failed["dry_run"] is True
    assert set(failed["planned"]) == set(ok["planned"])

    reporter = Reporter(OutputMode(json=True), stderr=io.StringIO(), command="status")
    reporter.error("refused", 3, would_delete=("a", "b"))
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["index", "would", "warnings", "exit_code", "errors"]
    assert printed["errors"] == [
        {"action": "status", "target": None, "message": "refused", "would_delete": ["a", "b"]}
    ]


def test_a_brake_names_removed_unknown_and_local_deletions_sorted_and_escaped() -> None:
    removed = [Delete(f"id-{n}", f"/mnt/data/x{n}", "removed", f"t/{n:02d}") for n in range(30)]
    unknown = Delete("id-u", "/mnt/data/model\x1b.csv", "unknown")
    replaced = Delete("id-r", "/mnt/data/old", "replaced", "kept.txt")  # not a loss
    local = DeleteLocal("a-local.txt", LocalFile("a-local.txt", 1, 1, 1, "h"))
    plan = Plan(deletes=(*removed, unknown, replaced), local_deletes=(local,), tracked=40)
    brake = check_brakes(plan, local_count=10, policy=Policy())
    assert brake is not None
    every = ("/mnt/data/model\x1b.csv", "a-local.txt", *(f"t/{n:02d}" for n in range(30)))
    assert brake.would_delete == every
    named = ", ".join(["/mnt/data/model\\x1b.csv", *every[1:BRAKE_NAMED]])
    assert brake.reason.endswith(f"; it would delete {named} and 12 more")
    assert "kept.txt" not in brake.reason
