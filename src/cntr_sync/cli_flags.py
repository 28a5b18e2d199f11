"""The flags that set settings: one table, one flag per setting, shared by the commands.

Each flag is named after the setting it sets (``--connect-timeout`` sets
``connect_timeout``), so error lines, README and ``config check`` speak of the
same thing. A command takes whole groups with :func:`setting_flags`; the values
reach it as one mapping, ``flags``, of setting name to value (None: not given),
ready for ``Settings.load(overrides=...)``.

Hand-written rather than a typer feature: typer has no option groups shared
between commands, and listing ~35 options in each signature would be the same
code three times.

A setting's type, checks and default are declared once, in ``config`` and
``models``; this table holds only what the command line adds (the help text,
the panel, what typer parses), so that ``--help`` and ``--version`` start
without importing pydantic. ``tests/test_config.py`` checks that the two agree:
every setting has a flag of a matching kind, or is listed here as not a flag.

Not a flag, on purpose: ``api_key`` (a secret in argv is readable by every user
of the machine in ``ps``: use ``OPENAI_API_KEY``, ``CNTR_SYNC_API_KEY`` or
``--api-key-file``), ``ignore`` (``--exclude``/``--include`` add to it),
``pairs`` (a file's job), ``log_format`` (its own flag, shared by every command),
``container`` (its own ``--container`` flag), ``local`` (the DIRECTORY argument)
and a pair's ``name`` (``run --name``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import typer

from cntr_sync.errors import ConfigError


class _Flag(NamedTuple):
    """How one setting looks on the command line (its spelling is its name's).

    ``choices``: the values of a setting that is one of a few words (a ``Literal``
    in ``models``; ``tests/test_config.py`` checks they agree). ``--help`` shows
    them as the metavar (``[push|pull|both]``) and completion offers them; they
    are parsed as text, so a wrong one gets the settings' own one-line error.
    ``panel``: the group of ``--help`` it is listed in, when not its table's.
    """

    kind: Any  # what typer parses: str, int, float, bool (an on/off pair), Path, list[str]
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    panel: str | None = None


# The groups of ``sync --help``, in the order they are listed (see cli_common.GroupedCommand).
CONNECTION_PANEL = "Connection"
WHAT_PANEL = "What to sync"
SAFETY_PANEL = "Safety"
OUTPUT_PANEL = "Output"
DAEMON_PANEL = "Daemon"
PANELS = (WHAT_PANEL, SAFETY_PANEL, CONNECTION_PANEL, OUTPUT_PANEL, DAEMON_PANEL)

# Each table is what a command takes with setting_flags, and (but for a flag's own
# ``panel``) a group of ``--help``.
_CONNECTION_FLAGS = {
    "base_url": _Flag(str, "API root (default $OPENAI_BASE_URL or OpenAI)."),
    "auth_style": _Flag(
        str,
        "How the key is sent: Authorization: Bearer, or a gateway's header (api-key: Azure).",
        choices=("bearer", "api-key", "x-api-key", "x-bf-vk", "basic"),
    ),
    "api_key_file": _Flag(Path, "File holding the API key (re-read)."),
    "basic_username": _Flag(str, "User name for --auth-style basic."),
    "organization": _Flag(str, "OpenAI-Organization header."),
    "project": _Flag(str, "OpenAI-Project header."),
    "extra_headers": _Flag(list[str], "NAME=VALUE header on every request (repeat).", "NAME=VALUE"),
    "extra_query": _Flag(
        list[str], "NAME=VALUE query parameter on every request (repeat).", "NAME=VALUE"
    ),
    "timeout": _Flag(float, "Seconds to wait for a response (default 60)."),
    "connect_timeout": _Flag(float, "Seconds to wait for a connection (default 10)."),
    "verify_tls": _Flag(bool, "Check the server's certificate."),
    "ca_bundle": _Flag(Path, "PEM file of CAs to trust (a gateway's own)."),
    "max_retries": _Flag(int, "Retries of a failed request (default 4)."),
    "requests_per_second": _Flag(float, "Hard cap on requests a second (default: none, adaptive)."),
    "request_deadline": _Flag(float, "Give up one transfer after this many seconds."),
}
# What a pass does.
_SYNC_FLAGS = {
    "state_dir": _Flag(Path, "Where the index lives."),
    "direction": _Flag(
        str,
        "push (default), pull (bring home what the model writes), both.",
        choices=("push", "pull", "both"),
    ),
    "conflict": _Flag(
        str,
        "Changed on both sides: which version wins (keep-both keeps the other as a copy).",
        choices=("keep-both", "local-wins", "remote-wins", "newer"),
    ),
    "remote_delete": _Flag(
        str,
        "Deleted in the container: restore it, or delete it here.",
        choices=("restore", "propagate"),
    ),
    "remote_prefixes": _Flag(list[str], "Container folder the mirror maps to (repeat).", "PREFIX"),
    "outside_prefix": _Flag(
        str,
        "Model files outside the prefixes: into --outside-subdir, or left alone.",
        choices=("subdir", "skip"),
    ),
    "outside_subdir": _Flag(str, "Local folder for model files outside the prefixes."),
    "delete": _Flag(bool, "Delete remote files whose local file is gone.", panel=SAFETY_PANEL),
    "delete_unknown": _Flag(
        bool, "Push: delete container files this tool never wrote.", panel=SAFETY_PANEL
    ),
    "delete_excluded": _Flag(
        bool, "Delete our container copies of excluded paths.", panel=SAFETY_PANEL
    ),
    "max_delete": _Flag(
        str, "Refuse passes deleting more: '10%' of tracked files, or 10.", panel=SAFETY_PANEL
    ),
    "create": _Flag(
        bool,
        "Create the container when none has its name (--no-create: exit 2 instead).",
        panel=SAFETY_PANEL,
    ),
    "follow_symlinks": _Flag(bool, "Follow symlinks."),
    "adopt_verify_max_bytes": _Flag(
        int, "Download files up to this size to match them by content."
    ),
    "concurrency": _Flag(int, "Parallel transfers (default 8)."),
    "expires_after_minutes": _Flag(int, "Idle minutes before a new container expires."),
    "memory_limit": _Flag(str, "A new container's memory.", choices=("1g", "4g", "16g", "64g")),
    "container_id_file": _Flag(Path, "Write the container id in use to this file."),
    "backup_dir": _Flag(
        Path, "Keep local files a pass replaced or deleted here.", panel=SAFETY_PANEL
    ),
    "backup_keep_days": _Flag(float, "Days a backup is kept (default 30).", panel=SAFETY_PANEL),
    "backup_max_bytes": _Flag(
        int, "Bytes of backups kept at most (default 1 GiB).", panel=SAFETY_PANEL
    ),
    "journal_keep_days": _Flag(
        float, "Days the journal of actions is kept (default 30).", panel=SAFETY_PANEL
    ),
    "verify_per_listing": _Flag(int, "Files a full listing checks by content (default 5)."),
}
_DAEMON_FLAGS = {
    "http_listen": _Flag(str, "HOST:PORT of /livez /readyz /metrics."),
    "flush_timeout": _Flag(float, "Seconds to flush on stop."),
    "pass_deadline": _Flag(float, "Abandon a pass that runs longer (seconds)."),
    "max_parallel_passes": _Flag(int, "Passes of different pairs run at once (default 4)."),
    "control_socket": _Flag(Path, "The control socket (flush, pause, events)."),
    "control_token_file": _Flag(Path, "Bearer token opening the control routes on HTTP."),
    "pairs_dir": _Flag(Path, "One TOML file per pair, watched (default: STATE/pairs.d)."),
}
# The settings of a [[pairs]] table only (models.PairDaemonSettings); in
# one-pair mode, ``run`` builds that table from them.
_DAEMON_PAIR_FLAGS = {
    "quiet_period": _Flag(float, "Seconds without changes before a pass."),
    "max_delay": _Flag(float, "Longest wait while changes keep coming."),
    "rescan_interval": _Flag(float, "Seconds between full rescans."),
    "remote_poll_interval": _Flag(float, "Seconds between container polls."),
    "full_listing_interval": _Flag(float, "Seconds between full container listings."),
    "watch": _Flag(
        str,
        "How changes are noticed: inotify & co (native), polling, or not at all.",
        choices=("auto", "native", "poll", "off"),
    ),
    "keepalive": _Flag(bool, "Keep the container alive."),
    "exec_hook": _Flag(list[str], "After a pass that changed something: run this (repeat).", "ARG"),
    "webhook_url": _Flag(str, "After a pass that changed something: POST its summary here."),
    "hook_timeout": _Flag(float, "Seconds a hook may take (default 30)."),
}

#: The groups a command takes, by setting name.
CONNECTION = tuple(_CONNECTION_FLAGS)
SYNC = tuple(_SYNC_FLAGS)
DAEMON = tuple(_DAEMON_FLAGS)
DAEMON_PAIR = tuple(_DAEMON_PAIR_FLAGS)
#: What ``ls DIRECTORY`` needs to say where a container's files map locally.
PATH_MAPPING = ("state_dir", "remote_prefixes", "outside_prefix", "outside_subdir")


def choices_metavar(choices: tuple[str, ...]) -> str:
    """``[push|pull|both]``: how ``--help`` shows an option that takes one of a few words."""
    return "[" + "|".join(choices) + "]"


def completing(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """Shell completion of one of ``choices`` (typer calls it with the word so far)."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def _option(name: str, flag: _Flag, panel: str) -> Any:
    spelling = "--" + name.replace("_", "-")
    if flag.kind is bool:
        spelling += "/--no-" + name.replace("_", "-")
    option = typer.Option(
        spelling,
        help=flag.help,
        rich_help_panel=flag.panel or panel,
        metavar=choices_metavar(flag.choices) if flag.choices else flag.metavar,
        autocompletion=completing(flag.choices) if flag.choices else None,
    )
    return Annotated[flag.kind | None, option]


#: Setting name -> the option that sets it.
FLAGS: dict[str, Any] = {
    name: _option(name, flag, panel)
    for panel, group in (
        (CONNECTION_PANEL, _CONNECTION_FLAGS),
        (WHAT_PANEL, _SYNC_FLAGS),
        (DAEMON_PANEL, _DAEMON_FLAGS),
        (DAEMON_PANEL, _DAEMON_PAIR_FLAGS),
    )
    for name, flag in group.items()
}

#: Setting name -> the values it takes, for the settings that take one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    name: flag.choices
    for group in (_CONNECTION_FLAGS, _SYNC_FLAGS, _DAEMON_FLAGS, _DAEMON_PAIR_FLAGS)
    for name, flag in group.items()
    if flag.choices
}

#: Flags taking NAME=VALUE, gathered into a mapping.
_MAPPINGS = frozenset({"extra_headers", "extra_query"})


def setting_flags(*groups: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the flags of ``groups``; they arrive as its ``flags`` argument."""
    names = [name for group in groups for name in group]

    def wrap(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command, eval_str=True)
        kept = [p for p in own.parameters.values() if p.name != "flags"]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=FLAGS[name]
            )
            for name in names
        ]

        @functools.wraps(command)
        def with_flags(**kwargs: Any) -> Any:
            flags = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, flags=flags)

        # typer reads the signature and the annotations: show it the flags, not ``flags``.
        parameters = [*kept, *added]
        with_flags.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
        return with_flags

    return wrap


def overrides(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Flag values as settings overrides; NAME=VALUE lists become mappings.

    Raises ConfigError naming the flag when a NAME=VALUE is malformed.
    """
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None or (isinstance(value, list) and not value):
            continue
        out[name] = _mapping(name, value) if name in _MAPPINGS else value
    return out


def _mapping(name: str, items: list[str]) -> dict[str, str]:
    flag = "--" + name.replace("_", "-")
    mapping: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"flag {flag}: {item!r} is not NAME=VALUE")
        mapping[key.strip()] = value
    return mapping
