"""The commands that look back: ``log``, ``backups`` and ``restore``.

``log`` prints the journal: every action passes carried out on a pair, oldest
first (``--json``: one object per line). ``backups`` lists the versions of local
files that passes replaced or deleted because of the container, kept in the
pair's backup directory. ``restore`` puts one back (the newest, or the one kept
at or before ``--at``); the file it replaces is kept too, and the next pass
pushes the restored file as any local edit.

None of them talks to the API or needs a key: they read the pair's state
directory. Like ``cli``, heavy imports wait until the command runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cntr_sync import cli_flags
from cntr_sync.cli_common import (
    EXIT_CODES_HELP,
    EXIT_OK,
    ConfigOpt,
    ContainerOpt,
    DebugOpt,
    JsonOpt,
    QuietOpt,
    VerboseOpt,
    command,
    configure_logs,
    load_settings,
    reporter_for,
    reporting,
)
from cntr_sync.errors import ConfigError

if TYPE_CHECKING:
    from cntr_sync.cli_output import Reporter
    from cntr_sync.config import Settings
    from cntr_sync.models import Pair

# What locates a pair's state: where the index is, and the API it talks to.
_STATE_FLAGS = ("state_dir", "base_url", "backup_dir")

DirectoryArg = Annotated[
    Path | None,
    typer.Argument(help="The local directory (default: 'local' in the settings)."),
]


def parse_time(text: str, now: float, *, flag: str) -> float:
    """``1h``, ``30m``, ``2d`` ago; an ISO 8601 time (UTC unless it says); a backup
    folder's name (its time). ConfigError naming ``flag`` otherwise."""
    from cntr_sync.backups import folder_time, parse_moment  # noqa: PLC0415

    try:
        moment = parse_moment(text, now)
    except ValueError as exc:
        raise ConfigError(f"flag {flag}: {exc}") from None
    return moment if isinstance(moment, float) else (folder_time(moment) or now)


@contextmanager
def _pair_state(
    reporter: Reporter,
    config: Path | None,
    flags: dict[str, Any],
    directory: Path | None,
    container: str | None,
    *,
    debug: bool,
    verbose: int,
) -> Iterator[tuple[Settings, Pair]]:
    """The start of a command that reads a pair's state: its settings and pair, its
    logs, and every error as one line."""
    with reporting(reporter, debug=debug):
        settings = load_settings(config, flags)
        configure_logs(
            settings, verbose=verbose, quiet=reporter.mode.quiet, debug=debug, log_format=None
        )
        yield settings, settings.one_shot_pair(directory, container)


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


@command("log", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(_STATE_FLAGS)
def log(
    directory: DirectoryArg = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only from then on: 1h, 2d, 2026-12-07T14:05.")
    ] = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Print the running daemon's events as they come."),
    ] = False,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """What passes did to DIRECTORY's mirror, oldest first: time, action, path, bytes, reason.

    With --follow, what the running daemon does, as it happens, until it stops.
    """
    reporter = reporter_for("log", json=json_output, quiet=quiet)
    if follow:
        from cntr_sync.cli_daemon import follow_events  # noqa: PLC0415 - only --follow

        with reporting(reporter, debug=debug):
            follow_events(config, json_output=json_output)
        raise typer.Exit(EXIT_OK)
    state = _pair_state(reporter, config, flags, directory, container, debug=debug, verbose=verbose)
    with state as (settings, pair):
        from cntr_sync import journal  # noqa: PLC0415 - see the module docstring
        from cntr_sync.cli_output import human_size  # noqa: PLC0415
        from cntr_sync.remote_paths import printable  # noqa: PLC0415
        from cntr_sync.session import open_index  # noqa: PLC0415

        start = parse_time(since, time.time(), flag="--since") if since else None
        with open_index(settings, pair, lock=False) as index:
            entries = journal.read(index, since=start)
        for entry in entries:
            if json_output:
                print(json.dumps(entry.to_json(), ensure_ascii=False))
                continue
            size = f" ({human_size(entry.bytes)})" if entry.bytes is not None else ""
            outcome = "" if entry.outcome == "done" else f" {entry.outcome}"
            reason = f" [{entry.reason}]" if entry.reason else ""
            what = f"{entry.action} {printable(entry.path)}"
            print(f"{_when(entry.time)}  {what}{size}{reason}{outcome}")
        raise typer.Exit(EXIT_OK)


@command("backups", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(_STATE_FLAGS)
def backups(
    directory: DirectoryArg = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """The versions of local files passes replaced or deleted, kept to be restored."""
    reporter = reporter_for("backups", json=json_output, quiet=quiet)
    state = _pair_state(reporter, config, flags, directory, container, debug=debug, verbose=verbose)
    with state as (settings, pair):
        from cntr_sync.backups import versions  # noqa: PLC0415 - see the module docstring
        from cntr_sync.cli_output import human_size  # noqa: PLC0415
        from cntr_sync.remote_paths import printable  # noqa: PLC0415
        from cntr_sync.session import backup_dir_of  # noqa: PLC0415

        kept_in = backup_dir_of(settings, pair)
        found = versions(kept_in)
        if json_output:
            document = {
                "backup_dir": str(kept_in),
                "versions": [version.to_json() for version in found],
                "exit_code": EXIT_OK,
                "errors": [],
            }
            print(json.dumps(document, ensure_ascii=False))
        else:
            for version in found:
                print(
                    f"{version.folder}  {printable(version.relpath)} ({human_size(version.size)})"
                )
            if not quiet:
                reporter.line(f"{len(found)} kept in {kept_in}")
        raise typer.Exit(EXIT_OK)


@command("restore", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(_STATE_FLAGS)
def restore(
    directory: Annotated[Path, typer.Argument(help="The local directory.")],
    path: Annotated[str, typer.Argument(help="The file to put back, relative to DIRECTORY.")],
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="The version kept then or before: 1h, 2026-12-07T14:05, ..."),
    ] = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Put a kept version of PATH back in DIRECTORY; the next sync pushes it."""
    reporter = reporter_for("restore", json=json_output, quiet=quiet)
    state = _pair_state(reporter, config, flags, directory, container, debug=debug, verbose=verbose)
    with state as (settings, pair):
        from cntr_sync.remote_paths import printable  # noqa: PLC0415
        from cntr_sync.restoring import restore_kept  # noqa: PLC0415
        from cntr_sync.session import backup_dir_of  # noqa: PLC0415

        version = restore_kept(
            backup_dir_of(settings, pair), pair.local, path, at, now=time.time(), name="--at"
        )
        relpath = version.relpath
        if json_output:
            restored = {"path": relpath, "kept": version.folder, "bytes": version.size}
            print(json.dumps({"restored": restored, "exit_code": EXIT_OK, "errors": []}))
        elif not quiet:
            reporter.line(
                f"restored {printable(relpath)} as kept at {version.folder}; "
                "the next sync pushes it"
            )
        raise typer.Exit(EXIT_OK)
