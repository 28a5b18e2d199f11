"""What the ``cntr-sync`` commands share: exit codes, the command table, options, and
turning every error into one line.

Owns the exit codes (also in README and ``--help``), the table of commands
(``command`` adds one; ``cli.build_app`` builds only the one that runs), how
``--help`` lists a command's options (in groups: ``GroupedCommand``), the
options several commands take, which config file a command reads
(``--config``, else ``CNTR_SYNC_CONFIG``, else the default file), and
``reporting``/``api_command``: the start of a command (its settings, its logs)
with every error as one stderr line and its code. Like ``cli``, it imports at
the top only typer, the flag table and the error tree.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TextIO, TypeVar

import typer
import typer.core

from cntr_sync import cli_flags
from cntr_sync.errors import (
    AuthenticationError,
    CntrSyncError,
    ConfigError,
    LocalError,
    LockedError,
    PermissionDeniedError,
    QuotaExceededError,
    SafetyBrakeError,
    TransportError,
    redact,
)

if TYPE_CHECKING:
    from cntr_sync.cli_output import JsonCommand, Reporter
    from cntr_sync.config import Settings
    from cntr_sync.config_sources import FoundConfig


EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_CHANGES = 1  # status: a sync would change something
EXIT_USAGE = 2
EXIT_BRAKE = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # as a shell reports a process that SIGPIPE ended

EXIT_CODES_HELP = (
    "Exit codes: 0 in sync; 1 some actions failed after retries (partial); "
    "2 usage, configuration or authentication error, or no quota; "
    "3 a safety brake stopped it (missing or emptied root, mass deletion, lock held); "
    "4 the API cannot be reached; 130 interrupted."
)
STATUS_EXIT_CODES_HELP = (
    "Exit codes: 0 a sync would change nothing; 1 a sync would change something "
    "(or an API call failed after retries: the error line says which); "
    "2 usage, configuration or authentication error, or no quota; "
    "3 a safety brake would stop a sync (missing or emptied root, mass deletion); "
    "4 the API cannot be reached; 130 interrupted."
)

# Every command by name, and how to add it to an app: see ``build_app``.
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {}
CommandT = TypeVar("CommandT", bound=Callable[..., None])


#: ``-h`` as well as ``--help``, on every command.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


class GroupedCommand(typer.core.TyperCommand):
    """A command whose ``--help`` lists its options in groups (each option's
    ``rich_help_panel``: connection, what to sync, safety, output, daemon).

    typer groups them only when it draws help with rich, which ``--help`` would
    then import (tests/test_startup.py); click's plain formatter does it here.
    """

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        panels: dict[str | None, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None), []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = [None, *cli_flags.PANELS, *(p for p in panels if p not in cli_flags.PANELS)]
        for panel in dict.fromkeys(order):
            if panel in panels:
                with formatter.section(panel or "Options"):
                    formatter.write_dl(panels[panel])


def command(name: str, **options: Any) -> Callable[[CommandT], CommandT]:
    """Make the function the command ``name``; ``options`` go to typer's ``Typer.command``
    (its options listed in groups, ``-h`` for help)."""
    options.setdefault("cls", GroupedCommand)
    options.setdefault("context_settings", CONTEXT_SETTINGS)

    def note(function: CommandT) -> CommandT:
        def add(app: typer.Typer) -> None:
            app.command(name, **options)(function)

        COMMANDS[name] = add
        return function

    return note


config_app = typer.Typer(
    help="The settings in effect, and which file they come from.",
    context_settings=CONTEXT_SETTINGS,
)
COMMANDS["config"] = lambda app: app.add_typer(config_app, name="config")

# -- options shared by the commands ------------------------------------------------------

_WHAT = cli_flags.WHAT_PANEL
_SAFETY = cli_flags.SAFETY_PANEL
_OUTPUT = cli_flags.OUTPUT_PANEL

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML settings file (default: $CNTR_SYNC_CONFIG, else "
        "$XDG_CONFIG_HOME/cntr-sync/config.toml if it exists).",
        dir_okay=False,
    ),
]
ContainerOpt = Annotated[
    str | None, typer.Option("--container", help="Container name or id.", rich_help_panel=_WHAT)
]
ExcludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        metavar="PATTERN",
        help="Leave out paths matching this gitignore pattern (repeat).",
        rich_help_panel=_WHAT,
    ),
]
IncludeOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="PATTERN",
        help="Mirror paths matching this pattern even if excluded (repeat).",
        rich_help_panel=_WHAT,
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", "-n", help="Print the plan; change nothing.", rich_help_panel=_SAFETY
    ),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Override the safety brakes.", rich_help_panel=_SAFETY)
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable document.", rich_help_panel=_OUTPUT),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="More: -v lists each transfer and retry; -vv debug logs.",
        rich_help_panel=_OUTPUT,
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors.", rich_help_panel=_OUTPUT)
]
ProgressOpt = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="A progress bar (default: on a terminal).",
        rich_help_panel=_OUTPUT,
    ),
]


def stats_interval(given: str | float) -> float:
    """``--stats``: ``30s``, ``1m``, ``1h`` or ``90`` (seconds) as seconds; 0 for none.
    (typer hands the default over as it is, a float.)"""
    text = str(given)
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):  # also NaN
        raise typer.BadParameter(f"{text!r} is not an interval such as 30s, 1m or 0")
    return seconds


StatsOpt = Annotated[
    float,
    typer.Option(
        "--stats",
        metavar="INTERVAL",
        parser=stats_interval,
        show_default=False,
        help="Without a bar (off a terminal), a progress line this often during a pass: "
        "30s, 1m (default), 0 for none.",
        rich_help_panel=_OUTPUT,
    ),
]
LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar=cli_flags.choices_metavar(("auto", "console", "json")),
        help="Log lines: auto (console, JSON for run off a terminal), console or json.",
        autocompletion=cli_flags.completing(("auto", "console", "json")),
        rich_help_panel=_OUTPUT,
    ),
]
DebugOpt = Annotated[
    bool, typer.Option("--debug", help="Debug logs and tracebacks.", rich_help_panel=_OUTPUT)
]


# -- helpers ------------------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    if isinstance(error, SafetyBrakeError | LockedError):
        return EXIT_BRAKE
    if isinstance(
        error,
        ConfigError | AuthenticationError | PermissionDeniedError | QuotaExceededError | LocalError,
    ):
        return EXIT_USAGE
    if isinstance(error, TransportError) and error.status is None:
        return EXIT_UNREACHABLE
    return EXIT_PARTIAL


class ErrorContext:
    """What an error line needs to know about the command that failed."""

    base_url: str | None = None


@contextmanager
def reporting(
    reporter: Reporter, *, debug: bool, context: ErrorContext | None = None
) -> Iterator[None]:
    """Turn any error into one stderr line and its exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except CntrSyncError as exc:
        message = exc.message
        code = exit_code_for(exc)
        if code == EXIT_UNREACHABLE and context is not None and context.base_url:
            message = f"cannot reach the API at {context.base_url}: {message}"
        fail(
            reporter,
            message,
            code,
            debug=debug,
            target=exc.path if isinstance(exc, LocalError) else None,
            would_delete=exc.would_delete if isinstance(exc, SafetyBrakeError) else (),
        )
    except KeyboardInterrupt:
        fail(reporter, "interrupted", EXIT_INTERRUPTED, debug=debug)
    except BrokenPipeError:
        # The reader went away (`cntr-sync ls | head`): stop quietly, as `ls` or `cat`
        # do. stdout points at /dev/null so that the exit's own flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        fail(
            reporter,
            f"unexpected {type(exc).__name__}: {redact(str(exc))} (run with --debug for details)",
            EXIT_PARTIAL,
            debug=debug,
        )


@contextmanager
def api_command(
    reporter: Reporter,
    config: Path | None,
    flags: Mapping[str, Any],
    *,
    debug: bool,
    verbose: int = 0,
    quiet: bool = False,
    log_format: str | None = None,
) -> Iterator[Settings]:
    """The start of a command that talks to the API: its settings and its logs,
    and every error as one line (an unreachable API named by its redacted URL)."""
    context = ErrorContext()
    with reporting(reporter, debug=debug, context=context):
        settings = load_settings(config, flags)
        configure_logs(settings, verbose=verbose, quiet=quiet, debug=debug, log_format=log_format)
        context.base_url = settings.redacted_dump()["base_url"]
        yield settings


def fail(
    reporter: Reporter,
    message: str,
    code: int,
    *,
    debug: bool,
    target: str | None = None,
    would_delete: tuple[str, ...] = (),
) -> NoReturn:
    if debug:
        traceback.print_exc()
    reporter.error(message, code, target=target, would_delete=would_delete)
    raise typer.Exit(code)


def reporter_for(command: JsonCommand = "sync", *, dry_run: bool = False, **mode: Any) -> Reporter:
    from cntr_sync.cli_output import OutputMode, Reporter  # noqa: PLC0415 - see the docstring

    return Reporter(OutputMode(**mode), command=command, dry_run=dry_run)


def load_settings(config: Path | None, flags: Mapping[str, Any] | None = None) -> Settings:
    """The settings of a command: ``config`` (``--config``), else the file
    ``config_file_of`` finds, the environment, and ``flags``."""
    from cntr_sync.config import Settings  # noqa: PLC0415 - see the docstring

    found = config_file_of(config)
    return Settings.load(found.path, overrides=cli_flags.overrides(flags or {}), env=os.environ)


def config_file_of(config: Path | None) -> FoundConfig:
    """Which config file a command reads: ``--config``, else ``CNTR_SYNC_CONFIG``,
    else ``$XDG_CONFIG_HOME/cntr-sync/config.toml`` (``~/.config/...``) if it exists."""
    from cntr_sync.config_sources import find_config_file  # noqa: PLC0415 - see the docstring

    return find_config_file(config, os.environ)


def with_patterns(
    settings: Settings, exclude: list[str] | None, include: list[str] | None
) -> Settings:
    """``--exclude`` and ``--include`` added after the ``ignore`` setting (includes last)."""
    extra = [*(exclude or []), *(f"!{pattern}" for pattern in include or [])]
    if not extra:
        return settings
    return settings.with_overrides(ignore=[*settings.ignore, *extra])


def configure_logs(
    settings: Settings | None,
    *,
    verbose: int,
    quiet: bool,
    debug: bool,
    log_format: str | None,
    stream: TextIO | None = None,
    daemon: bool = False,
    retries: bool = True,
) -> None:
    """Route logs; "auto" means JSON lines for a daemon off a terminal, console lines otherwise.
    ``retries``: each retry's wait at info level (else only with debug logs).

    A one-shot command's log lines sit among its human output (a CI log is read by
    people), so only the daemon, whose stdout goes to a log collector, picks JSON.
    """
    chosen = log_format or (settings.log_format if settings is not None else "auto")
    if chosen not in ("auto", "console", "json"):
        raise ConfigError(f"flag --log-format: {chosen!r} is not one of auto, console, json")
    if chosen == "auto" and not daemon:
        chosen = "console"
    from cntr_sync import logs  # noqa: PLC0415 - see the docstring

    logs.configure(
        verbose=2 if debug else verbose,
        quiet=quiet,
        log_format=chosen,  # type: ignore[arg-type]
        stream=stream,
        # A one-shot command's warnings read like the rest of its lines.
        cli_prefix=None if daemon else "cntr-sync",
        retries=retries or debug,
    )


# -- commands -----------------------------------------------------------------------------
