"""The CLI's output pieces, rendered in-process (the subprocess tests are in test_cli)."""

from __future__ import annotations

import io

from cntr_sync.cli_output import (
    OutputMode,
    Reporter,
    human_size,
    human_summary,
    summary,
    transfer_line,
)
from cntr_sync.result import ActionFailure, PassResult, SyncResult, TransferEvent


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
