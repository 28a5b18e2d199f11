"""The commands that drive a running daemon: ``flush``, ``pause``, ``resume``, ``pair``.

They talk to the daemon's control socket (docs/control.md) through
``control_client.ControlClient``: ``--socket PATH``, else where the daemon
puts it for these settings (``control_socket``; else ``$RUNTIME_DIRECTORY``;
else the state directory). No daemon there: one line saying so, exit 4.
``flush`` prints each pair's pass as ``sync`` does (its summary line on
stderr; ``--json``: ``{"exit_code": N, "pairs": {NAME: sync's document}}``)
and exits with ``sync``'s codes. ``follow_events`` is ``log --follow``.

Must not: read or write a pair's state itself (the daemon does), or import
the daemon's modules (the client's httpx is all they need).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from cntr_sync import cli_flags
from cntr_sync.cli_common import (
    COMMANDS,
    EXIT_CODES_HELP,
    EXIT_OK,
    ConfigOpt,
    ContainerOpt,
    DebugOpt,
    JsonOpt,
    QuietOpt,
    VerboseOpt,
    command,
    load_settings,
    reporter_for,
    reporting,
)
from cntr_sync.errors import ConfigError

if TYPE_CHECKING:
    from cntr_sync.cli_output import Reporter
    from cntr_sync.control_client import ControlClient

SocketOpt = Annotated[
    Path | None,
    typer.Option("--socket", help="The daemon's control socket (default: from the settings)."),
]
PairsArg = Annotated[
    list[str] | None, typer.Argument(help="The pairs (default: every pair).", show_default=False)
]
# The settings a [[pairs]] table takes that have a flag (the rest: state_dir, concurrency).
_PAIR_FLAGS = (
    *(name for name in cli_flags.SYNC if name not in ("state_dir", "concurrency")),
    *cli_flags.DAEMON_PAIR,
)


def _client(
    config: Path | None, socket: Path | None, reporter: Reporter | None = None, verbose: int = 0
) -> ControlClient:
    """The daemon's control client; with ``verbose``, a line saying which socket."""
    from cntr_sync.control_client import ControlClient, socket_path  # noqa: PLC0415

    if socket is None:
        socket = socket_path(load_settings(config), os.environ)
    if verbose and reporter is not None:
        reporter.line(f"asking the daemon at {socket}")
    return ControlClient(socket)


def _done(reporter: Reporter, text: str, *, quiet: bool) -> NoReturn:
    """The one line a command that changes the daemon prints (none with -q); exit 0."""
    if not quiet:
        reporter.line(text)
    raise typer.Exit(EXIT_OK)


@command("flush", epilog=EXIT_CODES_HELP)
def flush(
    pairs: PairsArg = None,
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Ask for the passes and return at once.")
    ] = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Have the running daemon sync PAIRS now (push, and pull per direction); wait for it.

    Prints each pass's summary as sync does and exits with sync's codes.
    """
    reporter = reporter_for("sync", json=json_output, quiet=quiet)
    with (
        reporting(reporter, debug=debug),
        _client(config, socket, reporter, verbose) as daemon,
    ):
        outcomes = daemon.flush(*(pairs or []), wait=not no_wait)
        if no_wait:
            raise typer.Exit(EXIT_OK)
        code = max((o.exit_code for o in outcomes.values()), default=EXIT_OK)
        if json_output:
            documents = {name: o.summary for name, o in outcomes.items()}
            print(json.dumps({"exit_code": code, "pairs": documents}))
        elif not quiet:
            for name, outcome in outcomes.items():
                for line in outcome.lines:
                    print(f"{name}: {line}" if len(outcomes) > 1 else line, file=sys.stderr)
    raise typer.Exit(code)


@command("pause", epilog=EXIT_CODES_HELP)
def pause(
    pairs: PairsArg = None,
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Stop the running daemon's passes of PAIRS (changes are still noted) until resume.

    A pause lasts until resume or a restart of the daemon; a reload (SIGHUP) keeps it.
    """
    _hold_or_release("pause", pairs, config, socket, verbose=verbose, quiet=quiet, debug=debug)


@command("resume", epilog=EXIT_CODES_HELP)
def resume(
    pairs: PairsArg = None,
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Let the running daemon sync PAIRS again: a full pass first, over all that changed."""
    _hold_or_release("resume", pairs, config, socket, verbose=verbose, quiet=quiet, debug=debug)


def _hold_or_release(
    verb: Literal["pause", "resume"],
    pairs: list[str] | None,
    config: Path | None,
    socket: Path | None,
    *,
    verbose: int,
    quiet: bool,
    debug: bool,
) -> NoReturn:
    """``pause`` or ``resume``: ask the daemon, say which pairs it did that to."""
    reporter = reporter_for()
    with reporting(reporter, debug=debug), _client(config, socket, reporter, verbose) as daemon:
        ask = daemon.pause if verb == "pause" else daemon.resume
        names = ask(*(pairs or []))
    _done(reporter, f"{verb}d: " + ", ".join(names), quiet=quiet)


pair_app = typer.Typer(
    help="The running daemon's pairs: list, add and remove (its pairs directory).",
    no_args_is_help=True,
)
COMMANDS["pair"] = lambda app: app.add_typer(pair_app, name="pair")


@pair_app.command("list")
def pair_list(
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The pairs the daemon runs (and the pair files it refused)."""
    reporter = reporter_for()
    with reporting(reporter, debug=debug), _client(config, socket, reporter, verbose) as daemon:
        listed = daemon.pairs()
        if json_output:
            print(json.dumps(listed))
            raise typer.Exit(EXIT_OK)
        for name, about in sorted(listed["pairs"].items()):
            settings = about["settings"]
            state = "paused" if about["paused"] else about["state"]
            print(
                f"{name}\t{settings['local']}\t{settings['container']}\t{about['source']}\t{state}"
            )
        for file, reason in sorted(listed["refused"].items()) if not quiet else ():
            reporter.line(f"refused {file}: {reason}")
    raise typer.Exit(EXIT_OK)


@pair_app.command("add")
@cli_flags.setting_flags(_PAIR_FLAGS)
def pair_add(
    name: Annotated[str, typer.Argument(help="The pair's name (its file: NAME.toml).")],
    directory: Annotated[Path, typer.Argument(help="The local directory to mirror.")],
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Add (or replace) a pair in the daemon's pairs directory; it starts at once."""
    reporter = reporter_for()
    with reporting(reporter, debug=debug):
        if not container:
            raise ConfigError("no container given: use --container NAME_OR_ID")
        settings = {
            key: str(value) if isinstance(value, Path) else value
            for key, value in cli_flags.overrides(flags).items()
        }
        with _client(config, socket, reporter, verbose) as daemon:
            added = daemon.add_pair(name, directory.expanduser(), container, **settings)
    _done(reporter, f"added {name}: {added['local']} -> {added['container']}", quiet=quiet)


@pair_app.command("remove")
def pair_remove(
    name: Annotated[str, typer.Argument(help="The pair to remove (a pairs directory's).")],
    config: ConfigOpt = None,
    socket: SocketOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Remove a pair's file from the daemon's pairs directory; the pair stops."""
    reporter = reporter_for()
    with reporting(reporter, debug=debug), _client(config, socket, reporter, verbose) as daemon:
        daemon.remove_pair(name)
    _done(reporter, f"removed {name}", quiet=quiet)


# -- log --follow ---------------------------------------------------------------------------


def follow_events(config: Path | None, *, json_output: bool) -> None:
    """Print the running daemon's events as they come, until it stops (``log --follow``)."""
    with _client(config, None) as daemon:
        for event in daemon.events():
            print(json.dumps(event) if json_output else event_line(event), flush=True)


def event_line(event: dict[str, Any]) -> str:
    """One event as a line: its time, its pair, what happened."""
    from cntr_sync.cli_output import human_size  # noqa: PLC0415
    from cntr_sync.remote_paths import printable  # noqa: PLC0415

    kind = event.get("type")
    when = datetime.fromtimestamp(event.get("time") or 0, UTC).strftime("%Y-%m-%d %H:%M:%S")
    if kind == "lost":
        return f"(lost {event['count']} events: this reader fell behind)"
    head = f"{when}  {event.get('pair') or event.get('file')}"
    if kind == "action":
        size = f" ({human_size(event['bytes'])})" if event.get("bytes") is not None else ""
        outcome = "" if event["outcome"] == "done" else f" {event['outcome']}"
        return f"{head}  {event['action']} {printable(event['path'])}{size}{outcome}"
    if kind == "pass-start":
        return f"{head}  pass started ({event['reason']})"
    if kind == "pass-end":
        error = f": {event['error']}" if event.get("error") else ""
        return f"{head}  pass ended: {event['result']}{error}"
    if kind == "pair":
        error = f": {event['error']}" if event.get("error") else ""
        return f"{head}  pair {event['change']}{error}"
    return f"{head}  {kind}"
