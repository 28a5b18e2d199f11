"""The ``cntr-sync`` command line: parses, calls, prints. Nothing else.

Exit codes (also in README and ``--help``):
  0  in sync (or, for --dry-run, the plan was computed)
  1  partial: some actions failed after retries; the next run retries them
  2  usage, configuration or authentication error
  3  a safety brake stopped it (missing or emptied root, mass deletion, lock held)

Errors print as one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import structlog
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from cntr_sync import __version__, logs
from cntr_sync.config import Settings
from cntr_sync.containers import find_container
from cntr_sync.errors import (
    AuthenticationError,
    CntrSyncError,
    ConfigError,
    LocalError,
    LockedError,
    NotFoundError,
    PermissionDeniedError,
    SafetyBrakeError,
)
from cntr_sync.result import PassResult
from cntr_sync.session import PairSession, build_client

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_BRAKE = 3

EXIT_CODES_HELP = (
    "Exit codes: 0 in sync; 1 some actions failed after retries (partial); "
    "2 usage, configuration or authentication error; "
    "3 a safety brake stopped it (missing or emptied root, mass deletion, lock held)."
)

app = typer.Typer(
    name="cntr-sync",
    help="Mirror a local directory into an OpenAI container.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
config_app = typer.Typer(help="Inspect configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
out_console = Console(highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file.", dir_okay=False)
]
StateDirOpt = Annotated[
    Path | None, typer.Option("--state-dir", help="Where the index lives.", file_okay=False)
]
ContainerOpt = Annotated[str | None, typer.Option("--container", help="Container name or id.")]
DirectionOpt = Annotated[
    str | None,
    typer.Option(
        "--direction",
        help="push (the default), pull (bring home what the model writes) or both.",
    ),
]
ConflictOpt = Annotated[
    str | None,
    typer.Option(
        "--conflict", help="pull/both, changed on both sides: keep-both, local-wins, remote-wins."
    ),
]
RemoteDeleteOpt = Annotated[
    str | None,
    typer.Option(
        "--remote-delete", help="pull/both, deleted in the container: restore or propagate."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More logs.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Debug logs and tracebacks.")]


def _version(value: bool) -> None:
    if value:
        out_console.print(f"cntr-sync {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Mirror a local directory into an OpenAI container."""


# -- helpers ----------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, SafetyBrakeError | LockedError):
        return EXIT_BRAKE
    if isinstance(error, ConfigError | AuthenticationError | PermissionDeniedError | LocalError):
        return EXIT_USAGE
    return EXIT_PARTIAL


@contextmanager
def _reporting(*, debug: bool, json_output: bool = False) -> Iterator[None]:
    """Turn any error into one stderr line and its exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except CntrSyncError as exc:
        _fail(exc.message, exit_code_for(exc), debug=debug, json_output=json_output)
    except KeyboardInterrupt:
        _fail("interrupted", 130, debug=debug, json_output=json_output)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        _fail(
            f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
            EXIT_PARTIAL,
            debug=debug,
            json_output=json_output,
        )


def _fail(message: str, code: int, *, debug: bool, json_output: bool) -> NoReturn:
    if debug:
        traceback.print_exc()
    if json_output:
        print(json.dumps({"exit_code": code, "error": message}))
    err_console.print(f"cntr-sync: error: {message}", markup=False)
    raise typer.Exit(code)


def _load_settings(config: Path | None, **overrides: Any) -> Settings:
    return Settings.load(config, overrides=overrides, env=os.environ)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def progress_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )


class _RichProgress:
    """Files and bytes on a terminal; the engine calls it from one thread."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task = progress.add_task("syncing", total=None, files="0/0")
        self._total_files = 0
        self._done_files = 0

    def start(self, files: int, total_bytes: int) -> None:
        self._total_files = files
        self._done_files = 0
        self._progress.update(self._task, total=max(total_bytes, 1), files=f"0/{files}")

    def advance(self, files: int, transferred_bytes: int) -> None:
        self._done_files += files
        self._progress.update(
            self._task,
            advance=transferred_bytes,
            files=f"{self._done_files}/{self._total_files}",
        )


def summary(result: PassResult, exit_code: int) -> dict[str, Any]:
    planned = result.plan
    return {
        "container_id": result.container_id,
        "container_created": result.container_created,
        "container_recreated": result.container_recreated,
        "dry_run": result.dry_run,
        "local_files": result.local_files,
        "uploaded": result.uploaded,
        "replaced": result.replaced,
        "deleted": result.deleted,
        "adopted": result.adopted,
        "downloaded": result.downloaded,
        "local_deleted": result.local_deleted,
        "conflicts": result.conflicts,
        "bytes_uploaded": result.bytes_uploaded,
        "bytes_downloaded": result.bytes_downloaded,
        "unknown_kept": result.unknown_kept,
        "planned": {
            "upload": sum(1 for u in planned.uploads if u.replaces is None) if planned else 0,
            "replace": sum(1 for u in planned.uploads if u.replaces) if planned else 0,
            "delete": len(planned.deletes) if planned else 0,
            "adopt": len(planned.adopts) if planned else 0,
            "download": len(planned.downloads) if planned else 0,
            "compare": len(planned.compares) if planned else 0,
            "delete_local": len(planned.local_deletes) if planned else 0,
            "conflict": planned.conflicts if planned else 0,
            "bytes": planned.upload_bytes if planned else 0,
            "bytes_download": planned.download_bytes if planned else 0,
        },
        "requests": result.requests,
        "requests_by_operation": result.requests_by_operation,
        "seconds": round(result.seconds, 3),
        "errors": [
            {"action": f.action, "target": f.target, "message": f.message} for f in result.failures
        ],
        "deferred": result.deferred,
        "warnings": result.warnings,
        "exit_code": exit_code,
    }


def _print_plan(result: PassResult) -> None:
    planned = result.plan
    if planned is None:
        return
    if result.container_id is None or result.container_recreated:
        out_console.print("create container (none running with this name)", markup=False)
    for upload in planned.uploads:
        verb = "replace" if upload.replaces else "upload "
        out_console.print(
            f"{verb} {upload.relpath} ({_human(upload.size)}, {upload.reason})", markup=False
        )
    for delete in planned.deletes:
        out_console.print(
            f"delete  {delete.relpath or delete.path} ({delete.reason}, id {delete.remote_id})",
            markup=False,
        )
    for adopt in planned.adopts:
        out_console.print(f"adopt   {adopt.entry.relpath} ({adopt.reason})", markup=False)
    for download in planned.downloads:
        size = "size unknown" if download.remote.size is None else _human(download.remote.size)
        aside = (
            f", local version kept as {download.move_aside_to}" if download.move_aside_to else ""
        )
        out_console.print(
            f"download {download.relpath} ({size}, {download.reason}{aside})", markup=False
        )
    for compare in planned.compares:
        out_console.print(
            f"compare {compare.relpath} (a remote file of the same name; same content is adopted)",
            markup=False,
        )
    for removal in planned.local_deletes:
        out_console.print(f"delete local {removal.relpath} (deleted remotely)", markup=False)
    if not planned.transfers and not planned.adopts:
        out_console.print("nothing to do: both sides are in sync", markup=False)


# -- commands -----------------------------------------------------------------------


@app.command(epilog=EXIT_CODES_HELP)
def sync(
    directory: Annotated[
        Path | None,
        typer.Argument(help="The local directory to mirror (default: 'local' in the settings)."),
    ] = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    direction: DirectionOpt = None,
    conflict: ConflictOpt = None,
    remote_delete: RemoteDeleteOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change nothing.")
    ] = False,
    json_output: JsonOpt = False,
    delete: Annotated[
        bool | None,
        typer.Option("--delete/--no-delete", help="Delete remote files whose local file is gone."),
    ] = None,
    max_delete: Annotated[
        float | None,
        typer.Option("--max-delete", help="Refuse to delete more than this % of tracked files."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Override the safety brakes.")] = False,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", help="Parallel transfers (default 8).")
    ] = None,
    container_id_file: Annotated[
        Path | None,
        typer.Option("--container-id-file", help="Write the container id in use to this file."),
    ] = None,
    verbose: VerboseOpt = 0,
    debug: DebugOpt = False,
) -> None:
    """Make the container an exact mirror of DIRECTORY, then exit."""
    logs.configure(verbose=2 if debug else verbose)
    with _reporting(debug=debug, json_output=json_output):
        settings = _load_settings(
            config,
            state_dir=state_dir,
            direction=direction,
            conflict=conflict,
            remote_delete=remote_delete,
            delete=delete,
            max_delete=max_delete,
            concurrency=concurrency,
            container_id_file=container_id_file,
        )
        pair = settings.one_shot_pair(directory, container)
        with PairSession(settings, pair) as session:
            result = _run_pass(session, dry_run=dry_run, force=force, json_output=json_output)
        code = EXIT_OK if result.in_sync or dry_run else EXIT_PARTIAL
        _report(result, code, json_output=json_output)
        raise typer.Exit(code)


def _run_pass(session: PairSession, *, dry_run: bool, force: bool, json_output: bool) -> PassResult:
    interactive = sys.stderr.isatty() and not json_output and not dry_run
    if not interactive:
        return session.engine().run_pass(dry_run=dry_run, force=force)
    with Progress(*progress_columns(), console=err_console, transient=True) as bar:
        engine = session.engine(progress=_RichProgress(bar))
        return engine.run_pass(dry_run=dry_run, force=force)


def _report(result: PassResult, code: int, *, json_output: bool) -> None:
    data = summary(result, code)
    if json_output:
        print(json.dumps(data))
        return
    if result.dry_run:
        _print_plan(result)
        for warning in result.warnings:
            err_console.print(f"cntr-sync: warning: {warning}", markup=False)
        return
    for failure in result.failures:
        err_console.print(
            f"cntr-sync: {failure.action} {failure.target}: {failure.message}", markup=False
        )
    for warning in result.warnings:
        err_console.print(f"cntr-sync: warning: {warning}", markup=False)
    if result.deferred:
        err_console.print(
            f"cntr-sync: {len(result.deferred)} files changed during the sync; run again",
            markup=False,
        )
    if err_console.is_terminal:
        err_console.print(_human_summary(result), markup=False)
        return
    listed = ("errors", "warnings", "deferred", "planned")
    event = {k: v for k, v in data.items() if k not in listed}
    event["errors"] = len(result.failures)
    structlog.get_logger("cntr_sync").info("sync pass", **event)


def _human_summary(result: PassResult) -> str:
    done = [
        f"{count} {what}"
        for what, count in (
            ("uploaded", result.uploaded),
            ("replaced", result.replaced),
            ("deleted", result.deleted),
            ("adopted", result.adopted),
            ("downloaded", result.downloaded),
            ("deleted locally", result.local_deleted),
            ("conflicts", result.conflicts),
            ("failed", len(result.failures)),
        )
        if count
    ]
    state = "in sync" if result.in_sync else "NOT in sync"
    created = " (new container)" if result.container_created else ""
    received = f", {_human(result.bytes_downloaded)} received" if result.bytes_downloaded else ""
    return (
        f"{state}: {result.local_files} files -> {result.container_id}{created}; "
        f"{', '.join(done) or 'nothing to do'}; {_human(result.bytes_uploaded)} sent{received} "
        f"in {result.requests} requests, {result.seconds:.1f} s"
    )


@app.command(epilog=EXIT_CODES_HELP)
def ls(
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List the files in a container: source, bytes, path."""
    logs.configure(verbose=2 if debug else 0)
    with _reporting(debug=debug, json_output=json_output):
        settings = _load_settings(config)
        spec = container or settings.container
        if not spec:
            raise ConfigError(
                "no container given: use --container NAME_OR_ID or 'container' in the settings"
            )
        with build_client(settings) as client:
            found = find_container(client, spec)
            if found is None:
                raise NotFoundError(
                    f"no running container with id or name {spec!r}",
                    operation="list_containers",
                )
            files = list(client.iter_files(found.id))
        if json_output:
            print(
                json.dumps(
                    {
                        "container_id": found.id,
                        "files": [
                            {
                                "id": f.id,
                                "source": f.source,
                                "bytes": f.bytes,
                                "path": f.path,
                                "created_at": f.created_at,
                            }
                            for f in files
                        ],
                    }
                )
            )
            return
        rows = [
            (f.source, "-" if f.bytes is None else str(f.bytes), f.path, f.id)
            for f in sorted(files, key=lambda f: f.path)
        ]
        if not out_console.is_terminal:
            # Pipes get whole, tab-separated lines: easy to cut and grep.
            for row in rows:
                print("\t".join(row))
            return
        table = Table(box=None, title=f"{found.name} ({found.id}): {len(rows)} files")
        table.add_column("source")
        table.add_column("bytes", justify="right")
        table.add_column("path", overflow="fold")
        table.add_column("id", no_wrap=True)
        for row in rows:
            # Paths come from the model: never let rich read them as markup.
            table.add_row(*(Text(cell) for cell in row))
        out_console.print(table)


@app.command(epilog=EXIT_CODES_HELP)
def status(
    directory: Annotated[
        Path | None, typer.Argument(help="The local directory (default: 'local' in the settings).")
    ] = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    state_dir: StateDirOpt = None,
    direction: DirectionOpt = None,
    json_output: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """What the index knows, and what a sync would do (nothing is transferred)."""
    logs.configure(verbose=2 if debug else 0)
    with _reporting(debug=debug, json_output=json_output):
        settings = _load_settings(config, state_dir=state_dir, direction=direction)
        pair = settings.one_shot_pair(directory, container)
        # Reads only, so it works beside a running sync or daemon (no lock).
        with PairSession(settings, pair, lock=False) as session:
            index = session.index
            known = {
                "root": str(pair.local),
                "container": pair.container,
                "container_id": index.container_id,
                "tracked_files": index.entry_count(),
                "pending_uploads": len(index.intents()),
                "pending_deletes": len(index.pending_deletes()),
                "server_keeps_names": index.server_keeps_names,
                "index_path": str(index.path),
            }
            result = _run_pass(session, dry_run=True, force=False, json_output=True)
        would = summary(result, EXIT_OK)["planned"]
        if json_output:
            print(json.dumps({"index": known, "would": would, "warnings": result.warnings}))
            return
        for key, value in known.items():
            out_console.print(f"{key}: {value}", markup=False)
        out_console.print(
            "a sync would: "
            + ", ".join(f"{n} {what}" for what, n in would.items() if not what.startswith("bytes"))
            + f" ({_human(would['bytes'])} to upload, "
            + f"{_human(would['bytes_download'])} to download)",
            markup=False,
        )


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="The TOML settings file.")],
    debug: DebugOpt = False,
) -> None:
    """Validate FILE and print the effective settings, secrets redacted."""
    with _reporting(debug=debug):
        settings = _load_settings(file)
        out_console.print_json(json.dumps(settings.redacted_dump(), default=str))


@app.command(epilog=EXIT_CODES_HELP)
def run(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="TOML settings file with [[pairs]].")
    ],
    verbose: VerboseOpt = 0,
    debug: DebugOpt = False,
) -> None:
    """Keep every configured pair in sync until stopped (SIGTERM/SIGINT; SIGHUP reloads)."""
    logs.configure(verbose=2 if debug else verbose, stream=sys.stdout)
    with _reporting(debug=debug):
        from cntr_sync.daemon import Daemon  # noqa: PLC0415 - only this command needs it

        daemon = Daemon(config)
        code = daemon.run()
    raise typer.Exit(code)


@app.command()
def emulator(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8000,
    control: Annotated[
        bool, typer.Option("--control", help="Enable the /_emulator/ control surface.")
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where uploads are spooled (default: temp).")
    ] = None,
) -> None:
    """Serve a local emulator of the Containers API (no API key needed)."""
    from cntr_sync.emulator import serve  # noqa: PLC0415 - only this command needs it

    serve(host, port, control=control, data_dir=data_dir)


def main() -> None:
    """The console script: click's usage errors become one line too."""
    try:
        result = app(standalone_mode=False)
    except Exception as exc:
        # typer bundles its own click privately; its exceptions keep click's
        # public interface (exit_code, format_message, show), so match on that.
        exit_code = getattr(exc, "exit_code", None)
        format_message = getattr(exc, "format_message", None)
        if not isinstance(exit_code, int) or not callable(format_message):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined]
        else:
            command = getattr(getattr(exc, "ctx", None), "command_path", "cntr-sync")
            err_console.print(
                f"cntr-sync: error: {format_message()} (see '{command} --help')", markup=False
            )
        sys.exit(exit_code)
    sys.exit(result if isinstance(result, int) else 0)


__all__ = ["app", "exit_code_for", "main"]
