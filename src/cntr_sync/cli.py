"""The ``cntr-sync`` command line: parses, calls, prints. Nothing else.

Exit codes (also in README and ``--help``):
  0    in sync (or, for --dry-run, the plan was computed); for status: a sync
       would change nothing
  1    partial: some actions failed after retries; the next run retries them;
       for status: a sync would change something (as ``git diff --exit-code``)
  2    usage, configuration or authentication error, or no quota
  3    a safety brake stopped it (missing or emptied root, mass deletion, lock held)
  4    the API cannot be reached (connection refused, DNS, timeouts after retries)
  130  interrupted (Ctrl-C)
  141  the reader of stdout went away (``cntr-sync ls | head``): ended quietly

Errors print as one line on stderr; ``--debug`` adds the traceback. What a pass
printed is ``cli_output``'s business; settings come from ``config``; passes run
through ``session`` (the same wiring as the library and the daemon).

Start-up is part of every command's cost, so this module imports at the top only
typer, the flag table and the error tree: each command imports what it uses
(settings and pydantic, the engine and httpx, rich, the daemon, the emulator)
when it runs. ``--version`` and ``--help`` load none of them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer

from cntr_sync import cli_flags
from cntr_sync._version import __version__
from cntr_sync.cli_common import (
    COMMANDS,
    CONTEXT_SETTINGS,
    EXIT_CHANGES,
    EXIT_CODES_HELP,
    EXIT_OK,
    EXIT_PARTIAL,
    STATUS_EXIT_CODES_HELP,
    ConfigOpt,
    ContainerOpt,
    DebugOpt,
    DryRunOpt,
    ExcludeOpt,
    ForceOpt,
    IncludeOpt,
    JsonOpt,
    LogFormatOpt,
    ProgressOpt,
    QuietOpt,
    StatsOpt,
    VerboseOpt,
    api_command,
    command,
    config_app,
    config_file_of,
    configure_logs,
    exit_code_for,
    load_settings,
    reporter_for,
    reporting,
    with_patterns,
)
from cntr_sync.cli_history import backups, log, restore  # their @command adds them
from cntr_sync.errors import ConfigError, redact

if TYPE_CHECKING:
    from cntr_sync.config import Settings


def _version(value: bool) -> None:
    if value:
        print(f"cntr-sync {__version__}")
        raise typer.Exit(EXIT_OK)


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Mirror a local directory into an OpenAI container."""


@command("sync", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(cli_flags.CONNECTION, cli_flags.SYNC)
def sync(
    directory: Annotated[
        Path | None,
        typer.Argument(help="The local directory to mirror (default: 'local' in the settings)."),
    ] = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    dry_run: DryRunOpt = False,
    json_output: JsonOpt = False,
    force: ForceOpt = False,
    exclude: ExcludeOpt = None,
    include: IncludeOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    progress: ProgressOpt = None,
    stats: StatsOpt = 60.0,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Make the container mirror DIRECTORY (and, with --direction, bring files home), then exit."""
    reporter = reporter_for(
        dry_run=dry_run,
        verbose=verbose,
        quiet=quiet,
        progress=progress,
        json=json_output,
        stats_every=stats or None,
    )
    with api_command(
        reporter, config, flags, debug=debug, verbose=verbose, quiet=quiet, log_format=log_format
    ) as loaded:
        from cntr_sync.session import run_pass  # noqa: PLC0415 - see the docstring

        settings = with_patterns(loaded, exclude, include)
        pair = settings.one_shot_pair(directory, container)
        with reporter:
            result = run_pass(settings, pair, progress=reporter, dry_run=dry_run, force=force)
        code = EXIT_OK if result.in_sync or dry_run else EXIT_PARTIAL
        reporter.report(result, code)
        raise typer.Exit(code)


@command("ls", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(cli_flags.CONNECTION, cli_flags.PATH_MAPPING)
def ls(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="The local directory of the pair: show where each file maps and whether "
            "the index tracks it (default: 'local' in the settings)."
        ),
    ] = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """List the files in a container: source, bytes, path (names escaped), id, and
    with a DIRECTORY the local path each maps to and whether it is tracked."""
    reporter = reporter_for("ls", json=json_output, quiet=quiet)
    with api_command(
        reporter, config, flags, debug=debug, verbose=verbose, quiet=quiet, log_format=log_format
    ) as settings:
        from cntr_sync.containers import find_container  # noqa: PLC0415 - see the docstring
        from cntr_sync.session import build_client  # noqa: PLC0415

        spec = container or settings.container
        if not spec:
            raise ConfigError(
                "no container given: use --container NAME_OR_ID or 'container' in the settings"
            )
        with build_client(settings) as client:
            found = find_container(client, spec)
            if found is None:
                raise ConfigError(f"no running container with id or name {spec!r}")
            files = list(client.iter_files(found.id))
        local = None
        if directory is not None or settings.local is not None:
            from cntr_sync.cli_listing import local_places  # noqa: PLC0415

            pair = settings.one_shot_pair(directory, spec)
            local = local_places(settings, pair, found, files)
        from cntr_sync import cli_views  # noqa: PLC0415 - see the docstring

        cli_views.listing(reporter, found, files, local)


@command("containers", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(cli_flags.CONNECTION, ("state_dir",))
def containers(
    name: Annotated[
        str | None, typer.Option("--name", help="Only the containers with this name.")
    ] = None,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """The containers the key can see, newest first: name, id, status, created, last
    active, and the local directory whose index points at it."""
    reporter = reporter_for("containers", json=json_output, quiet=quiet)
    with api_command(
        reporter, config, flags, debug=debug, verbose=verbose, quiet=quiet, log_format=log_format
    ) as settings:
        from cntr_sync import cli_views  # noqa: PLC0415 - see the docstring
        from cntr_sync.cli_listing import indexed_roots  # noqa: PLC0415
        from cntr_sync.session import build_client  # noqa: PLC0415

        with build_client(settings) as client:
            seen = list(client.iter_containers(name=name))
        cli_views.containers(reporter, seen, indexed_roots(settings))


@command("status", epilog=STATUS_EXIT_CODES_HELP)
@cli_flags.setting_flags(cli_flags.CONNECTION, cli_flags.SYNC)
def status(
    directory: Annotated[
        Path | None, typer.Argument(help="The local directory (default: 'local' in the settings).")
    ] = None,
    container: ContainerOpt = None,
    config: ConfigOpt = None,
    exclude: ExcludeOpt = None,
    include: IncludeOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """What the index knows, and what a sync would do (nothing is transferred).

    Exits 0 when a sync would change nothing, 1 when it would change something
    (with -q, that is all it says: as ``git diff --quiet``).
    """
    reporter = reporter_for("status", json=json_output, quiet=quiet)
    with api_command(
        reporter, config, flags, debug=debug, verbose=verbose, quiet=quiet, log_format=log_format
    ) as loaded:
        from cntr_sync import cli_views  # noqa: PLC0415 - see the docstring
        from cntr_sync.cli_output import planned_counts  # noqa: PLC0415
        from cntr_sync.result import iter_planned  # noqa: PLC0415
        from cntr_sync.session import PairSession  # noqa: PLC0415

        settings = with_patterns(loaded, exclude, include)
        pair = settings.one_shot_pair(directory, container)
        # Reads only, so it works beside a running sync or daemon (no lock).
        with PairSession(settings, pair, lock=False) as session:
            index = session.index
            keeps = index.server_keeps_names
            known: dict[str, Any] = {
                "root": str(pair.local),
                "container": pair.container,
                "direction": pair.direction,
                "container_id": index.container_id,
                "tracked_files": index.entry_count(),
                "pending_uploads": len(index.intents()),
                "pending_deletes": len(index.pending_deletes()),
                "failed_downloads": len(index.pull_failures()),
                "server_keeps_names": keeps,
                "index_path": str(index.path),
            }
            result = session.engine().run_pass(dry_run=True)
        known["conflict_copies"] = [
            {"path": c.path, "copy": c.copy, "holds": c.holds} for c in result.open_conflicts
        ]
        # Counted one action at a time: a tree never pushed plans an upload a file
        # (100,000 files: ~20 MB of action dicts, had the whole summary been built).
        would = planned_counts(iter_planned(result.plan) if result.plan is not None else ())
        code = EXIT_OK if result.in_sync else EXIT_CHANGES
        cli_views.status(reporter, known, would, result.warnings, code)
        raise typer.Exit(code)


@config_app.callback(invoke_without_command=True)
def config_shown(
    ctx: typer.Context,
    config: ConfigOpt = None,
    json_output: JsonOpt = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which config file is read (--config, else $CNTR_SYNC_CONFIG, else
    $XDG_CONFIG_HOME/cntr-sync/config.toml), and the settings in effect with the
    environment, secrets redacted."""
    if ctx.invoked_subcommand is not None:
        return
    reporter = reporter_for("config", json=json_output, quiet=quiet)
    with reporting(reporter, debug=debug):
        configure_logs(None, verbose=verbose, quiet=quiet, debug=debug, log_format=None)
        found = config_file_of(config)
        settings = load_settings(config)
        from cntr_sync import cli_views  # noqa: PLC0415 - see the docstring

        cli_views.settings(reporter, found.describe(), found.origin, settings.redacted_dump())
    raise typer.Exit(EXIT_OK)


@config_app.command("check", context_settings=CONTEXT_SETTINGS)
def config_check(
    file: Annotated[Path, typer.Argument(help="The TOML settings file.")],
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Validate FILE and print the effective settings, secrets redacted (-q: only
    whether it is valid, by the exit code)."""
    reporter = reporter_for(quiet=quiet)
    with reporting(reporter, debug=debug):
        configure_logs(None, verbose=verbose, quiet=quiet, debug=debug, log_format=None)
        settings = load_settings(file)
        if not quiet:
            reporter.out.print_json(json.dumps(settings.redacted_dump(), default=str))


@command("run", epilog=EXIT_CODES_HELP)
@cli_flags.setting_flags(
    cli_flags.CONNECTION, cli_flags.SYNC, cli_flags.DAEMON, cli_flags.DAEMON_PAIR
)
def run(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Run one pair for this directory, without a config file."),
    ] = None,
    container: ContainerOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="TOML settings file with [[pairs]] (default: $CNTR_SYNC_CONFIG, else "
            "$XDG_CONFIG_HOME/cntr-sync/config.toml).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="The pair's name (one-pair mode).")
    ] = "default",
    exclude: ExcludeOpt = None,
    include: IncludeOpt = None,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = None,
    debug: DebugOpt = False,
    *,
    flags: dict[str, Any],
) -> None:
    """Keep pairs in sync until stopped (SIGTERM/SIGINT; SIGHUP reloads).

    With --config, every [[pairs]] table of the file; with DIRECTORY and
    --container, one pair configured by flags and environment alone.
    """
    reporter = reporter_for(quiet=quiet)
    with reporting(reporter, debug=debug):
        from cntr_sync.config import PairSettings  # noqa: PLC0415 - see the docstring

        if directory is None:
            # --config, CNTR_SYNC_CONFIG or the default file: the daemon reloads it on SIGHUP.
            config = config_file_of(config).path
        if directory is None and config is None:
            raise ConfigError(
                "give --config FILE (or set CNTR_SYNC_CONFIG, or write "
                "~/.config/cntr-sync/config.toml), or a DIRECTORY and --container"
            )
        top = {k: v for k, v in flags.items() if k not in cli_flags.DAEMON_PAIR}
        pair_flags = cli_flags.overrides(
            {k: v for k, v in flags.items() if k in cli_flags.DAEMON_PAIR}
        )
        if directory is None and pair_flags:
            given = ", ".join("--" + k.replace("_", "-") for k in pair_flags)
            raise ConfigError(f"flag {given}: set per pair in the config file's [[pairs]] tables")

        def load() -> Settings:
            settings = with_patterns(load_settings(config, top), exclude, include)
            if directory is None:
                return settings
            spec = container or settings.container
            if not spec:
                raise ConfigError("no container given: use --container NAME_OR_ID")
            table = PairSettings.model_validate(
                {
                    "name": name,
                    "local": str(directory.expanduser().absolute()),
                    "container": spec,
                    **pair_flags,
                }
            )
            return settings.with_overrides(pairs=[table])

        settings = load()
        # The daemon logs one line per pass on stdout: info by default, JSON off a terminal;
        # each retry's wait only with -v (a throttled pass would log one per request).
        configure_logs(
            settings,
            verbose=max(1, verbose),
            quiet=quiet,
            debug=debug,
            log_format=log_format,
            stream=sys.stdout,
            daemon=True,
            retries=verbose >= 1,
        )
        # Once more, now that lines can be logged: what loading noted at debug level
        # (Kubernetes service variables it ignored) shows on the first start too.
        settings = load()
        from cntr_sync.daemon import Daemon  # noqa: PLC0415 - only this command needs it

        daemon = Daemon(config, settings=settings, load=load)
        code = daemon.run()
    raise typer.Exit(code)


@command("emulator")
def emulator(
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 picks a free one).")] = 8000,
    control: Annotated[
        bool,
        typer.Option(
            "--control",
            help="Enable the /_emulator/ control surface: model-written files, faults, "
            "gateway styles, clock, counts (docs/emulator.md).",
        ),
    ] = False,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where uploads are spooled (default: temp).")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="Added before every answer.")
    ] = 0.0,
    error_rate: Annotated[
        float, typer.Option("--error-rate", help="Share of requests answered 500/502/503.")
    ] = 0.0,
    rate_limit: Annotated[
        float | None, typer.Option("--rate-limit", help="Requests a second before 429s.")
    ] = None,
    path_style: Annotated[
        Literal["hashed", "plain"],
        typer.Option(
            "--path-style",
            metavar="[hashed|plain]",
            help="hashed (/mnt/data/<32 hex>-name) or plain.",
        ),
    ] = "hashed",
    cursor_style: Annotated[
        Literal["id", "opaque"],
        typer.Option(
            "--cursor-style", metavar="[id|opaque]", help="id, or opaque (Bifrost's cursors)."
        ),
    ] = "id",
    drop_filenames: Annotated[
        bool, typer.Option("--drop-filenames", help="Store every upload as 'file' (Bifrost).")
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False, help="A line per request served."
        ),
    ] = 0,
    quiet: QuietOpt = False,  # not even the URL
) -> None:
    """Serve a local emulator of the Containers API (no API key needed).

    Point a client at the printed URL (OPENAI_BASE_URL); any key works. With
    --control, tests and demos drive it over HTTP under /_emulator/ (or with
    cntr_sync.emulator.EmulatorControl): add files "the model wrote" at any
    path, rewrite or break them, inject faults, expire containers, move the
    clock, read request counts.
    """
    reporter = reporter_for()
    with reporting(reporter, debug=False):
        from pydantic import ValidationError  # noqa: PLC0415 - see the docstring

        try:
            from cntr_sync.emulator import (  # noqa: PLC0415 - only this command needs it
                FaultConfig,
                GatewayStyle,
                serve,
            )
        except ModuleNotFoundError as exc:
            if exc.name != "python_multipart":
                raise
            raise ConfigError(
                "the emulator needs the 'emulator' extra: "
                "pip install 'cntr-sync[emulator]' (pipx install '.[emulator]' from a checkout)"
            ) from None

        try:
            faults = FaultConfig(
                latency_ms=latency_ms, error_rate=error_rate, rate_limit_per_s=rate_limit
            )
            gateway = GatewayStyle.model_validate(
                {
                    "path_style": path_style,
                    "cursor_style": cursor_style,
                    "drop_filenames": drop_filenames,
                }
            )
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            flag = "--" + str(first["loc"][0]).replace("_", "-")
            raise ConfigError(f"flag {flag}: {first['msg']}") from None
        serve(
            host,
            port,
            control=control,
            data_dir=data_dir,
            faults=faults,
            gateway=gateway,
            verbose=verbose > 0,
            quiet=quiet,
        )


# The variable typer's completion scripts set when they ask for completions.
COMPLETE_VAR = "_CNTR_SYNC_COMPLETE"


@command("completion")
def completion(
    shell: Annotated[
        Literal["bash", "zsh", "fish"],
        typer.Argument(help="The shell: bash, zsh or fish.", metavar="[bash|zsh|fish]"),
    ],
) -> None:
    """Print the shell completion script for SHELL (commands, options, their values).

    bash: eval "$(cntr-sync completion bash)" in ~/.bashrc; zsh: cntr-sync
    completion zsh > "${fpath[1]}/_cntr-sync"; fish: cntr-sync completion fish >
    ~/.config/fish/completions/cntr-sync.fish.
    """
    # The script is what typer's completion protocol answers to "source_SHELL":
    # the same path a shell's request for completions takes (see build_app).
    os.environ[COMPLETE_VAR] = f"source_{shell}"
    build_app()(args=[], prog_name="cntr-sync")


def _added_on_use(name: str, module: str) -> Callable[[typer.Typer], None]:
    """Adds the command ``name`` of ``module``, importing it first: the daemon
    commands' import (flag tables, typer options) cost 20 M instructions, 4 % of
    ``--version``, and a command nobody names need not be imported at all."""

    def add(app: typer.Typer) -> None:
        import_module(module)  # its @command replaces this entry
        COMMANDS[name](app)

    return add


# Imported when built: the commands that drive a running daemon, and the probe.
for _name in ("flush", "pause", "resume", "pair"):
    COMMANDS.setdefault(_name, _added_on_use(_name, "cntr_sync.cli_daemon"))
COMMANDS.setdefault("healthcheck", _added_on_use("healthcheck", "cntr_sync.cli_health"))


def build_app(command: str | None = None, *, commands: bool = True) -> typer.Typer:
    """The ``cntr-sync`` app: every command, or only ``command`` if that names one
    (``commands=False``: none, for ``--version``).

    typer turns every command of an app into a click command (signatures, type
    hints, one option object per flag) before it parses a word: 54 M instructions,
    3 % of a no-op ``sync`` (callgrind), for commands that will not run. So the
    console script builds an app holding only the command its arguments name.
    """
    app = typer.Typer(
        name="cntr-sync",
        help="Mirror a local directory into an OpenAI container, and bring back what the "
        "model writes.\n\n" + EXIT_CODES_HELP,
        no_args_is_help=True,
        # Completion is `cntr-sync completion SHELL` (typer's --install-completion and
        # --show-completion guess the shell from the parent process). typer answers a
        # completion script's requests (its variable set) with the classes that
        # add_completion registers; otherwise they cost every start-up.
        add_completion=bool(os.environ.get(COMPLETE_VAR)),
        context_settings=CONTEXT_SETTINGS,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(_root)
    for name in sorted(COMMANDS, key=_help_position):
        if commands and (command not in COMMANDS or name == command):
            COMMANDS[name](app)
    return app


# The order of ``--help``: a pass and what it shows, looking back, the daemon, the rest.
_HELP_ORDER = (
    *("sync", "ls", "containers", "status", "log", "backups", "restore"),
    *("run", "flush", "pause", "resume", "pair", "healthcheck"),
    *("emulator", "completion", "config"),
)


def _help_position(name: str) -> int:
    return _HELP_ORDER.index(name) if name in _HELP_ORDER else len(_HELP_ORDER)


def _command_named(argv: list[str]) -> str | None:
    """The command ``argv`` names: the root takes no option with a value, so it
    is the first word that is not an option. None with no such word (``--help``,
    ``--version``); a word that is no command gets the whole app, whose error
    lists the real ones."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> NoReturn:
    """The console script: runs the command and exits with its status; click's
    usage errors become one line too."""
    args = sys.argv[1:]
    named = _command_named(args)
    # --version alone needs no command: building all eleven would be most of its cost.
    app = build_app(named, commands=named is not None or "--version" not in args)
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
            # A key pasted where an argument goes must not be echoed back.
            message = redact(format_message())
            print(f"cntr-sync: error: {message} (see '{command} --help')", file=sys.stderr)
        sys.exit(exit_code)
    sys.exit(result if isinstance(result, int) else 0)


# The name pyproject.toml's console script and ``python -m cntr_sync`` call.
console = main


__all__ = [
    "backups",
    "build_app",
    "console",
    "exit_code_for",
    "log",
    "main",
    "restore",
]
