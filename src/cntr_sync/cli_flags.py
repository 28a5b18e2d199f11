"""The flags that set settings: one table, one flag per setting, shared by the commands.

Each flag is named after the setting it sets (``--connect-timeout`` sets
``connect_timeout``), so error lines, README and ``config check`` speak of the
same thing. A command takes whole groups with :func:`setting_flags`; the values
reach it as one mapping, ``flags``, of setting name to value (None: not given),
ready for ``Settings.load(overrides=...)``.

Hand-written rather than a typer feature: typer has no option groups shared
between commands, and listing ~35 options in each signature would be the same
code three times.

Not a flag, on purpose: ``api_key`` (a secret in argv is readable by every user
of the machine in ``ps``: use ``OPENAI_API_KEY``, ``CNTR_SYNC_API_KEY`` or
``--api-key-file``), ``ignore`` (``--exclude``/``--include`` add to it),
``pairs`` (a file's job) and ``log_format`` (its own flag, shared by every command).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from cntr_sync.errors import ConfigError

_CONNECTION = "Connection"
_SYNC = "Sync"
_DAEMON = "Daemon"


def _opt(kind: Any, flag: str, help_text: str, panel: str, metavar: str | None = None) -> Any:
    option = typer.Option(flag, help=help_text, rich_help_panel=panel, metavar=metavar)
    return Annotated[kind | None, option]


#: Setting name -> the option that sets it. Panels group ``--help``.
FLAGS: dict[str, Any] = {
    # -- connection: where the API is and how to talk to it
    "base_url": _opt(
        str, "--base-url", "API root (default $OPENAI_BASE_URL or OpenAI).", _CONNECTION
    ),
    "auth_style": _opt(
        str, "--auth-style", "bearer, api-key (Azure), x-api-key, x-bf-vk or basic.", _CONNECTION
    ),
    "api_key_file": _opt(
        Path, "--api-key-file", "File holding the API key (re-read).", _CONNECTION
    ),
    "basic_username": _opt(
        str, "--basic-username", "User name for --auth-style basic.", _CONNECTION
    ),
    "organization": _opt(str, "--organization", "OpenAI-Organization header.", _CONNECTION),
    "project": _opt(str, "--project", "OpenAI-Project header.", _CONNECTION),
    "extra_headers": _opt(
        list[str],
        "--extra-headers",
        "NAME=VALUE header on every request (repeat).",
        _CONNECTION,
        "NAME=VALUE",
    ),
    "extra_query": _opt(
        list[str],
        "--extra-query",
        "NAME=VALUE query parameter on every request (repeat).",
        _CONNECTION,
        "NAME=VALUE",
    ),
    "timeout": _opt(
        float, "--timeout", "Seconds to wait for a response (default 60).", _CONNECTION
    ),
    "connect_timeout": _opt(
        float, "--connect-timeout", "Seconds to wait for a connection (default 10).", _CONNECTION
    ),
    "verify_tls": _opt(
        bool, "--verify-tls/--no-verify-tls", "Check the server's certificate.", _CONNECTION
    ),
    "ca_bundle": _opt(
        Path, "--ca-bundle", "PEM file of CAs to trust (a gateway's own).", _CONNECTION
    ),
    "max_retries": _opt(
        int, "--max-retries", "Retries of a failed request (default 4).", _CONNECTION
    ),
    "requests_per_second": _opt(
        float,
        "--requests-per-second",
        "Hard cap on requests a second (default: none, adaptive).",
        _CONNECTION,
    ),
    "request_deadline": _opt(
        float, "--request-deadline", "Give up one transfer after this many seconds.", _CONNECTION
    ),
    # -- what a pass does
    "state_dir": _opt(Path, "--state-dir", "Where the index lives.", _SYNC),
    "direction": _opt(
        str, "--direction", "push (default), pull (bring home what the model writes), both.", _SYNC
    ),
    "conflict": _opt(
        str, "--conflict", "Changed on both sides: keep-both, local-wins, remote-wins.", _SYNC
    ),
    "remote_delete": _opt(
        str, "--remote-delete", "Deleted in the container: restore or propagate.", _SYNC
    ),
    "remote_prefixes": _opt(
        list[str],
        "--remote-prefixes",
        "Container folder the mirror maps to (repeat).",
        _SYNC,
        "PREFIX",
    ),
    "outside_prefix": _opt(
        str, "--outside-prefix", "Model files outside the prefixes: subdir or skip.", _SYNC
    ),
    "outside_subdir": _opt(
        str, "--outside-subdir", "Local folder for model files outside the prefixes.", _SYNC
    ),
    "delete": _opt(
        bool, "--delete/--no-delete", "Delete remote files whose local file is gone.", _SYNC
    ),
    "delete_unknown": _opt(
        bool,
        "--delete-unknown/--no-delete-unknown",
        "Push: delete container files this tool never wrote.",
        _SYNC,
    ),
    "max_delete": _opt(
        str, "--max-delete", "Refuse passes deleting more: '10%' of tracked files, or 10.", _SYNC
    ),
    "follow_symlinks": _opt(
        bool, "--follow-symlinks/--no-follow-symlinks", "Follow symlinks.", _SYNC
    ),
    "adopt_verify_max_bytes": _opt(
        int,
        "--adopt-verify-max-bytes",
        "Download files up to this size to match them by content.",
        _SYNC,
    ),
    "concurrency": _opt(int, "--concurrency", "Parallel transfers (default 8).", _SYNC),
    "expires_after_minutes": _opt(
        int, "--expires-after-minutes", "Idle minutes before a new container expires.", _SYNC
    ),
    "memory_limit": _opt(
        str, "--memory-limit", "A new container's memory: 1g, 4g, 16g, 64g.", _SYNC
    ),
    "container_id_file": _opt(
        Path, "--container-id-file", "Write the container id in use to this file.", _SYNC
    ),
    # -- the daemon
    "http_listen": _opt(str, "--http-listen", "HOST:PORT of /livez /readyz /metrics.", _DAEMON),
    "flush_timeout": _opt(float, "--flush-timeout", "Seconds to flush on stop.", _DAEMON),
    "pass_deadline": _opt(
        float, "--pass-deadline", "Abandon a pass that runs longer (seconds).", _DAEMON
    ),
    # -- the daemon, per pair (one-pair mode: the pair's table)
    "quiet_period": _opt(
        float, "--quiet-period", "Seconds without changes before a pass.", _DAEMON
    ),
    "max_delay": _opt(float, "--max-delay", "Longest wait while changes keep coming.", _DAEMON),
    "rescan_interval": _opt(float, "--rescan-interval", "Seconds between full rescans.", _DAEMON),
    "remote_poll_interval": _opt(
        float, "--remote-poll-interval", "Seconds between container listings.", _DAEMON
    ),
    "watch": _opt(str, "--watch", "auto, native, poll or off.", _DAEMON),
    "keepalive": _opt(bool, "--keepalive/--no-keepalive", "Keep the container alive.", _DAEMON),
}

#: The groups a command takes, by setting name (every FLAGS key is in one).
CONNECTION = (
    "base_url",
    "auth_style",
    "api_key_file",
    "basic_username",
    "organization",
    "project",
    "extra_headers",
    "extra_query",
    "timeout",
    "connect_timeout",
    "verify_tls",
    "ca_bundle",
    "max_retries",
    "requests_per_second",
    "request_deadline",
)
SYNC = (
    "state_dir",
    "direction",
    "conflict",
    "remote_delete",
    "remote_prefixes",
    "outside_prefix",
    "outside_subdir",
    "delete",
    "delete_unknown",
    "max_delete",
    "follow_symlinks",
    "adopt_verify_max_bytes",
    "concurrency",
    "expires_after_minutes",
    "memory_limit",
    "container_id_file",
)
DAEMON = ("http_listen", "flush_timeout", "pass_deadline")
#: Settings of a ``[[pairs]]`` table only (one-pair mode builds that table).
DAEMON_PAIR = (
    "quiet_period",
    "max_delay",
    "rescan_interval",
    "remote_poll_interval",
    "watch",
    "keepalive",
)

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
