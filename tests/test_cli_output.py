"""The CLI's terminal output pieces, rendered in-process (the subprocess tests are in test_cli)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from cntr_sync.cli import _human, _human_summary, _RichProgress, progress_columns, summary
from cntr_sync.result import ActionFailure, PassResult


def test_progress_bar_renders_files_and_bytes() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with Progress(*progress_columns(), console=console, auto_refresh=False) as bar:
        progress = _RichProgress(bar)
        bar.refresh()  # before start(): must render, not fail on a missing field
        progress.start(3, 3000)
        progress.advance(1, 1000)
        progress.advance(1, 1000)
        bar.refresh()
    assert "2/3" in out.getvalue()


def test_human_sizes() -> None:
    assert _human(0) == "0 B"
    assert _human(1536) == "1.5 KiB"
    assert _human(5 * 1024**3) == "5.0 GiB"


def test_summary_line_and_json_tell_partial_from_in_sync() -> None:
    ok = PassResult(container_id="cntr_1", uploaded=2, bytes_uploaded=2048, local_files=2)
    assert _human_summary(ok).startswith("in sync: 2 files -> cntr_1")
    assert "2 uploaded" in _human_summary(ok)
    failed = PassResult(container_id="cntr_1", failures=[ActionFailure("upload", "a", "boom")])
    assert _human_summary(failed).startswith("NOT in sync")
    data = summary(failed, 1)
    assert data["errors"] == [{"action": "upload", "target": "a", "message": "boom"}]
    assert data["exit_code"] == 1
