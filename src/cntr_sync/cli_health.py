"""``cntr-sync healthcheck``: is the daemon these settings describe alive?

Owns the one command a container runtime's health check runs (the Dockerfile's
HEALTHCHECK): it reads the settings as ``run`` does (``--config``, the
``CNTR_SYNC_*`` environment), asks ``/livez`` at ``http_listen`` and exits 0 when
the daemon answers 200, 1 otherwise. Never 2: Docker reserves that code, so a
settings error is one line and 1 too.

``--absent-ok`` is for an image that runs one-shot commands as well as the daemon
(ours): a ``cntr-sync sync`` container has no daemon, so nothing listens and the
connection is refused at once; that is healthy (the one-shot's own exit status
tells how it went). A daemon answers as soon as it starts (before its first
pass), and a daemon whose main loop hangs still answers, with 503, so a refusal
means no daemon in this container, not a sick one.

Must not start, change or stop anything, or import httpx: a probe every 30 s
pays only for the settings and one stdlib request. Like ``cli``, it imports at
the top only typer and what the command table needs.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cntr_sync.cli_common import (
    ConfigOpt,
    QuietOpt,
    VerboseOpt,
    command,
    config_file_of,
    load_settings,
)
from cntr_sync.errors import CntrSyncError

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
PROBE_TIMEOUT = 4.0
"""Seconds for the whole request; the Dockerfile's HEALTHCHECK allows 5."""

# A daemon bound to every address is asked on the loopback of the same family.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - read, not bound


def livez_url(host: str, port: int) -> str:
    """The URL of ``/livez`` for a daemon listening on ``host:port``."""
    host = _LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/livez"


def probe(
    host: str,
    port: int,
    *,
    absent_ok: bool,
    timeout: float = PROBE_TIMEOUT,
    quiet: bool = False,
) -> int:
    """Ask ``/livez`` once; print one line saying what came back (``quiet``: none,
    the exit status says); the exit status."""
    # Here, not at the top: cli imports this module whenever it builds the whole app
    # (--help, a mistyped command), and http.client brings email and ssl.
    import http.client  # noqa: PLC0415

    url = livez_url(host, port)

    def say(line: str, healthy: bool) -> int:
        if not quiet:
            print(line, file=sys.stdout if healthy else sys.stderr)
        return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY

    connection = http.client.HTTPConnection(_LOOPBACK.get(host, host), port, timeout=timeout)
    try:
        connection.request("GET", "/livez")
        status = connection.getresponse().status
    except ConnectionRefusedError:
        if absent_ok:
            return say(f"healthy: no daemon listens at {url} (a one-shot command)", True)
        return say(f"unhealthy: no daemon listens at {url}", False)
    except (OSError, http.client.HTTPException) as exc:
        return say(f"unhealthy: {url}: {type(exc).__name__}: {exc}", False)
    finally:
        connection.close()
    if status == 200:
        return say(f"healthy: {url} answered 200", True)
    return say(f"unhealthy: {url} answered {status}", False)


@command("healthcheck")
def healthcheck(
    config: ConfigOpt = None,
    absent_ok: Annotated[
        bool,
        typer.Option(
            "--absent-ok",
            help="Healthy when no daemon listens at all (an image that also runs one-shot "
            "commands).",
        ),
    ] = False,
    verbose: VerboseOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Exit 0 if the daemon at http_listen answers /livez with 200, else 1 (for HEALTHCHECK).

    Reads the settings as 'run' does: give the same --config (or CNTR_SYNC_* variables).
    -q prints nothing (the exit status says); -v also names the settings file read.
    """
    try:
        if verbose and not quiet:
            path = config_file_of(config).path
            print(f"settings: {path or 'no file (the environment and defaults)'}")
        host, port = load_settings(config).listen_address
    except CntrSyncError as exc:
        if not quiet:
            print(f"unhealthy: {exc.message}", file=sys.stderr)
        raise typer.Exit(EXIT_UNHEALTHY) from None
    raise typer.Exit(probe(host, port, absent_ok=absent_ok, quiet=quiet))
