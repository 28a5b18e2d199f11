"""What the command line prints: progress, transfer lines, plans, summaries, listings.

Owns every line the CLI writes about a pass: the progress bar (on a terminal),
off a terminal a stats line every ``--stats`` interval (as rclone's ``--stats``),
one line per transfer with ``-v``, the dry-run plan, warnings
and failures on stderr, the one-line human summary (always on stderr, terminal
or not: CI logs are read by people; a dry run's says what a sync would do)
followed by one line per conflict copy, and the ``--json`` document on stdout.
``-q`` leaves only errors. Sizes are IEC units everywhere (KiB, MiB:
``human_size``). What ``ls``, ``containers``, ``status`` and ``config`` print
is ``cli_views``'s.

A command's ``--json`` document has one shape whatever happens: the same keys
on success and on an error that stopped it (a brake, an unreachable API, bad
settings), ``exit_code`` and ``errors`` (a list, each with at least a
``message``) always among them.

Must not: run passes, load settings or decide exit codes (``cli`` does); every
name that came from a remote server is printed escaped (``printable``), never
as markup. rich is imported only when a bar, a dry-run plan or a table may be
drawn: plain lines are plain writes, so a command that prints a summary does
not pay for it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TextIO

from cntr_sync.remote_paths import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

    from cntr_sync.result import (
        ConflictCopy,
        PassResult,
        PlannedAction,
        SyncResult,
        TransferEvent,
    )

PREFIX = "cntr-sync"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def progress_columns() -> tuple[ProgressColumn, ...]:
    """The bar's columns; sizes and speed in IEC units, as every other line."""
    from rich.progress import (  # noqa: PLC0415 - only a bar needs rich
        BarColumn,
        DownloadColumn,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text  # noqa: PLC0415

    class SpeedColumn(ProgressColumn):
        """rich's TransferSpeedColumn speaks SI units (MB/s) only."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_size(int(speed))}/s")

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(binary_units=True),
        SpeedColumn(),
        TimeRemainingColumn(),
    )


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``: an elapsed time in a stats line."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass(frozen=True)
class OutputMode:
    """How much to print: ``verbose`` lists transfers, ``quiet`` only errors."""

    verbose: int = 0
    quiet: bool = False
    progress: bool | None = None  # None: a bar on a terminal only
    json: bool = False
    # Off a terminal, a stats line this often (seconds) during a pass; None: never.
    stats_every: float | None = None


JsonCommand = Literal["sync", "status", "ls", "containers", "config", "log", "backups", "restore"]


class Reporter:
    """Prints one command's output; also the ``Progress`` a pass reports to.

    ``command`` and ``dry_run``: which ``--json`` document an error prints.
    """

    def __init__(
        self,
        mode: OutputMode,
        *,
        stderr: TextIO | None = None,
        command: JsonCommand = "sync",
        dry_run: bool = False,
    ) -> None:
        self.mode = mode
        self.command: JsonCommand = command
        self.dry_run = dry_run
        self._stderr = stderr
        self._err: Console | None = None
        self._out: Console | None = None
        self._bar: Progress | None = None
        self._task: Any = None
        self._files_total = 0
        self._files_done = 0
        self._bytes_total = 0
        self._bytes_done = 0
        self._started = time.monotonic()
        self._planned = False
        self._stats_stop: threading.Event | None = None
        self._stats_thread: threading.Thread | None = None

    @property
    def err(self) -> Console:
        """stderr as a rich console (made on first use: a bar, or a test, wants one)."""
        if self._err is None:
            self._err = _console(self._stderr or sys.stderr)
        return self._err

    @err.setter
    def err(self, console: Console) -> None:
        self._err = console

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console(None)
        return self._out

    def _print_err(self, text: str) -> None:
        """One line on stderr: through the console once there is one (it keeps a bar
        whole), else a plain write."""
        if self._err is not None:
            self._err.print(text, markup=False)
            return
        stream = self._stderr or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    # -- the Progress protocol ------------------------------------------------------

    def _on_terminal(self) -> bool:
        if self._err is not None:
            return self._err.is_terminal
        return (self._stderr or sys.stderr).isatty()

    @property
    def wants_bar(self) -> bool:
        """A bar needs a terminal (off one it would draw only a blank line at the end):
        on a terminal unless --no-progress; off one, --progress means stats lines."""
        if self.mode.quiet or self.mode.json or self.mode.progress is False:
            return False
        return self._on_terminal()

    @property
    def wants_stats(self) -> bool:
        """Stats lines: off a terminal, every ``stats_every`` seconds, unless -q or --json."""
        return (
            self.mode.stats_every is not None
            and not (self.mode.quiet or self.mode.json)
            and not self._on_terminal()
        )

    def __enter__(self) -> Reporter:
        self._started = time.monotonic()
        if self.wants_bar:
            from rich.progress import Progress  # noqa: PLC0415 - only a bar needs rich

            self._bar = Progress(*progress_columns(), console=self.err, transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task("syncing", total=None, files="0/0")
        elif self.wants_stats:
            self._stats_stop = threading.Event()
            self._stats_thread = threading.Thread(
                target=self._stats_loop, name="cntr-sync-stats", daemon=True
            )
            self._stats_thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        if self._stats_stop is not None and self._stats_thread is not None:
            self._stats_stop.set()
            self._stats_thread.join(timeout=5.0)
            self._stats_stop = self._stats_thread = None

    def _stats_loop(self) -> None:
        assert self._stats_stop is not None and self.mode.stats_every is not None
        while not self._stats_stop.wait(self.mode.stats_every):
            self._print_err(self.stats_line())

    def stats_line(self) -> str:
        """``cntr-sync: stats: 3/10 transfers, 1.2 MiB/4.0 MiB (30%), 512.0 KiB/s, 2m05s
        elapsed, ETA 5s``: where a pass is, for a log read while it runs (the bytes
        of finished transfers)."""
        elapsed = time.monotonic() - self._started
        if not self._planned:
            return f"{PREFIX}: stats: scanning and listing, {duration(elapsed)}"
        share = self._bytes_done * 100 // self._bytes_total if self._bytes_total else 100
        speed = self._bytes_done / elapsed if elapsed > 0 else 0.0
        left = self._bytes_total - self._bytes_done
        eta = f", ETA {duration(left / speed)}" if speed > 0 and left > 0 else ""
        return (
            f"{PREFIX}: stats: {self._files_done}/{self._files_total} transfers, "
            f"{human_size(self._bytes_done)}/{human_size(self._bytes_total)} ({share}%), "
            f"{human_size(int(speed))}/s, {duration(elapsed)} elapsed{eta}"
        )

    def start(self, files: int, total_bytes: int) -> None:
        self._files_total, self._files_done = files, 0
        self._bytes_total, self._bytes_done = total_bytes, 0
        self._planned = True
        if self._bar is not None:
            self._bar.update(self._task, total=max(total_bytes, 1), files=f"0/{files}")

    def advance(self, event: TransferEvent) -> None:
        self._files_done += 1
        self._bytes_done += event.bytes
        if self._bar is not None:
            self._bar.update(
                self._task,
                advance=event.bytes,
                files=f"{self._files_done}/{self._files_total}",
            )
        if self.mode.verbose and not self.mode.quiet and not self.mode.json:
            self._print_err(transfer_line(event))

    # -- after the pass ---------------------------------------------------------------

    def report(self, result: PassResult, exit_code: int) -> None:
        from cntr_sync.result import SyncResult  # noqa: PLC0415 - with the pass, not at start-up

        # The planned actions are shown only by --json and a dry run.
        synced = SyncResult.from_pass(result, planned=self.mode.json or result.dry_run)
        if self.mode.json:
            write_summary(synced, exit_code, sys.stdout)
            return
        if result.dry_run and not self.mode.quiet:
            print_plan(self.out, synced, result)
        for failure in synced.failures:
            self.line(f"{failure.action} {printable(failure.target)}: {failure.message}")
        if self.mode.quiet:
            return
        for warning in synced.warnings:
            self.line(f"warning: {warning}")
        if synced.deferred and not synced.dry_run:
            changed = plural(len(synced.deferred), "file")
            self.line(f"{changed} changed during the sync; run again")
        if synced.dry_run:
            self._print_err(dry_run_summary(synced))
            return
        self._print_err(human_summary(synced))
        for copy in synced.conflict_copies:
            self._print_err(conflict_line(copy))

    def line(self, text: str) -> None:
        self._print_err(f"{PREFIX}: {text}")

    def error(
        self,
        message: str,
        exit_code: int,
        *,
        target: str | None = None,
        would_delete: tuple[str, ...] = (),
    ) -> None:
        """The error that stopped the command: one line on stderr, and with ``--json``
        the command's document (no counts to give: zeros) with it under ``errors``.
        ``would_delete``: a brake's files, all of them in the document."""
        if self.mode.json:
            error: dict[str, Any] = {"action": self.command, "target": target, "message": message}
            if would_delete:
                error["would_delete"] = list(would_delete)
            print(json.dumps(error_document(self.command, exit_code, error, dry_run=self.dry_run)))
        self.line(f"error: {message}")


def _console(stream: TextIO | None) -> Console:
    """A plain console (None: whatever sys.stdout is when it prints)."""
    from rich.console import Console  # noqa: PLC0415 - a bar or a plan only

    return Console(file=stream, highlight=False, soft_wrap=True)


def plural(count: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def transfer_line(event: TransferEvent) -> str:
    """``uploaded notes/a.md (4.2 KiB)``: one finished transfer, for ``-v``."""
    size = f" ({human_size(event.bytes)})" if event.action in _SIZED else ""
    return f"{event.action} {printable(event.path)}{size}"


_SIZED = frozenset({"uploaded", "replaced", "downloaded"})


def conflict_line(copy: ConflictCopy) -> str:
    """``conflict: notes.md: the container's version is kept as notes (container conflict
    ...).md``: one conflict a pass resolved, by name."""
    whose = "the container's version" if copy.holds == "container" else "the local version"
    return f"conflict: {printable(copy.path)}: {whose} is kept as {printable(copy.copy)}"


def dry_run_summary(result: SyncResult) -> str:
    """``dry run, nothing changed: a sync would upload 6, delete 1 (4.2 KiB to send,
    0 B to receive)``: the last line of a dry run."""
    counts = planned_counts(result.planned)
    would = [f"{verb} {counts[kind]}" for kind, verb in _VERBS.items() if counts[kind]]
    if result.container_id is None or result.container_recreated:
        would.insert(0, "create a container")
    if result.conflicts:
        would.append(f"resolve {plural(result.conflicts, 'conflict')}")
    sizes = (
        f" ({human_size(counts['bytes'])} to send, "
        f"{human_size(counts['bytes_download'])} to receive)"
        if result.planned
        else ""
    )
    return f"dry run, nothing changed: a sync would {', '.join(would) or 'do nothing'}{sizes}"


# What a dry run's summary calls each kind of ``planned_counts``.
_VERBS: dict[str, str] = {
    "upload": "upload",
    "replace": "replace",
    "delete": "delete",
    "adopt": "adopt",
    "download": "download",
    "compare": "compare",
    "delete_local": "delete locally",
}


def human_summary(result: SyncResult) -> str:
    done = [
        f"{count} {what}"
        for what, count in (
            ("uploaded", result.uploaded),
            ("replaced", result.replaced),
            ("deleted", result.deleted),
            ("adopted", result.adopted),
            ("downloaded", result.downloaded),
            ("deleted locally", result.local_deleted),
            ("conflict" if result.conflicts == 1 else "conflicts", result.conflicts),
            ("failed", len(result.failures)),
        )
        if count
    ]
    state = "in sync" if result.in_sync else "NOT in sync"
    created = " (new container)" if result.container_created else ""
    received = (
        f", {human_size(result.bytes_downloaded)} received" if result.bytes_downloaded else ""
    )
    return (
        f"{state}: {plural(result.local_files, 'file')} -> {result.container_id}{created}; "
        f"{', '.join(done) or 'nothing to do'}; {human_size(result.bytes_uploaded)} sent"
        f"{received} in {plural(result.requests, 'request')}, {result.seconds:.1f} s"
    )


def summary(result: SyncResult, exit_code: int) -> dict[str, Any]:
    """The ``--json`` document: counts, bytes, requests, every planned action, errors."""
    head, tail = _summary_parts(result, exit_code)
    return {**head, "actions": [action.to_json() for action in result.planned], **tail}


def planned_counts(planned: Iterable[PlannedAction]) -> dict[str, int]:
    """The ``--json`` document's ``planned``: actions by kind, bytes up and down."""
    counts = dict.fromkeys(_COUNTED.values(), 0)
    sent = received = 0
    for action in planned:
        counts[_COUNTED[action.action]] += 1
        if action.action in ("upload", "replace"):
            sent += action.bytes or 0
        elif action.action in ("download", "compare"):
            received += action.bytes or 0
    return {**counts, "bytes": sent, "bytes_download": received}


_COUNTED: dict[str, str] = {
    "upload": "upload",
    "replace": "replace",
    "delete": "delete",
    "adopt": "adopt",
    "download": "download",
    "compare": "compare",
    "delete-local": "delete_local",
}


def write_summary(result: SyncResult, exit_code: int, stream: TextIO) -> None:
    """``print(json.dumps(summary(result, exit_code)), file=stream)``, the same bytes,
    written as it is made: the planned actions go out a batch at a time.

    A cold push of 100,000 files plans 100,000 uploads; the whole document as
    dicts and then as one string was ~37 MiB on top of everything else at the
    command's peak (its peak RSS: 117 MiB before the summary, 154 MiB after).
    """
    head, tail = _summary_parts(result, exit_code)
    planned = result.planned
    stream.write(json.dumps(head)[:-1] + ', "actions": [')
    for start in range(0, len(planned), _ACTIONS_A_WRITE):
        batch = [action.to_json() for action in planned[start : start + _ACTIONS_A_WRITE]]
        # A list's items come out as json.dumps puts them: ", " between them.
        stream.write((", " if start else "") + json.dumps(batch)[1:-1])
    stream.write("], " + json.dumps(tail)[1:] + "\n")


# Planned actions turned into JSON at a time by ``write_summary`` (~100 KB of text).
_ACTIONS_A_WRITE = 1000


def error_document(
    command: JsonCommand, exit_code: int, error: dict[str, Any], *, dry_run: bool = False
) -> dict[str, Any]:
    """The ``--json`` document of ``command`` when ``error`` stopped it: the keys of
    its document on success, nothing counted (``in_sync`` false), ``error`` alone
    under ``errors``."""
    if command == "ls":
        return {"container_id": None, "files": [], "exit_code": exit_code, "errors": [error]}
    if command == "containers":
        return {"containers": [], "exit_code": exit_code, "errors": [error]}
    if command == "config":
        return {
            "config_file": None,
            "config_origin": None,
            "settings": None,
            "exit_code": exit_code,
            "errors": [error],
        }
    if command in ("log", "backups", "restore"):
        empty: dict[str, dict[str, Any]] = {
            "log": {"entries": []},
            "backups": {"versions": []},
            "restore": {"restored": None},
        }
        return {**empty[command], "exit_code": exit_code, "errors": [error]}
    if command == "status":
        return {
            "index": None,
            "would": None,
            "warnings": [],
            "exit_code": exit_code,
            "errors": [error],
        }
    from cntr_sync.result import PassResult, SyncResult  # noqa: PLC0415 - not at start-up

    nothing = replace(SyncResult.from_pass(PassResult(dry_run=dry_run)), in_sync=False)
    return {**summary(nothing, exit_code), "errors": [error]}


def _summary_parts(result: SyncResult, exit_code: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``--json`` document but for ``actions``: what comes before it, what after."""
    head = result.json_fields(planned_counts(result.planned))
    return head, {"errors": head.pop("failures"), "exit_code": exit_code}


def print_plan(console: Console, synced: SyncResult, result: PassResult) -> None:
    if result.container_id is None or result.container_recreated:
        console.print("create container (none running with this name)", markup=False)
    labels = [action.action.replace("-", " ") for action in synced.planned]
    # The paths start in one column: the labels padded to the widest this plan uses
    # (at least "replace", so a plan of uploads reads "upload  a.txt" as it always has).
    width = max((len(label) for label in labels), default=0)
    width = max(width, len("replace"))
    for label, action in zip(labels, synced.planned, strict=True):
        size = "" if action.bytes is None else f"{human_size(action.bytes)}, "
        if action.action == "download" and action.bytes is None:
            size = "size unknown, "
        line = f"{label.ljust(width)} {printable(action.path)} ({size}{action.reason})"
        console.print(line, markup=False)
    if not synced.planned:
        console.print("nothing to do: both sides are in sync", markup=False)
