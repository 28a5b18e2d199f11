"""The Python API: ``sync``, ``Mirror`` and their async flavours, for code around agents;
``kept_versions`` and ``restore`` to undo what a pass replaced.

Owns turning keyword arguments (and an optional ``openai.OpenAI`` client) into
settings and a pair, running passes through the same wiring as the command
line (``session.run_pass``: same engine, same brakes, same index), and giving
back a frozen ``SyncResult``, or ``IncompleteSyncError`` carrying it when the
pass left work undone. The async flavours run the same code in a worker
thread, so the event loop is never blocked; cancelling one stops its pass at
the next action and waits for the thread, so the pair's lock is free when
``CancelledError`` reaches the caller.

Must not: print, configure logging (the ``cntr_sync`` logger has a
``NullHandler``; the application decides), or import ``openai`` (a client is
read by duck typing, so the package stays optional).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from cntr_sync.api import ContainersClient
from cntr_sync.backups import KeptVersion, versions
from cntr_sync.config import PairSettings, Settings
from cntr_sync.errors import ConfigError, IncompleteSyncError
from cntr_sync.logs import get_logger
from cntr_sync.models import Direction, Pair
from cntr_sync.remote_paths import restorable_relpath
from cntr_sync.restoring import restore_kept
from cntr_sync.result import PassResult, SyncResult, TransferEvent
from cntr_sync.session import backup_dir_of, run_pass

OnProgress = Callable[[TransferEvent], None]
T = TypeVar("T")

log = get_logger("cntr_sync.library")


class _Callback:
    """A ``Progress`` that hands each finished transfer to ``on_progress``."""

    def __init__(self, on_progress: OnProgress) -> None:
        self._on_progress = on_progress

    def start(self, files: int, total_bytes: int) -> None:
        pass

    def advance(self, event: TransferEvent) -> None:
        self._on_progress(event)


def settings_from_openai_client(client: Any) -> dict[str, Any]:
    """Connection settings read from an ``openai.OpenAI`` (or ``AsyncOpenAI``) instance.

    Takes its base URL, key, organization, project and the default headers
    and query it was built with, so nothing is configured twice; only public
    attributes are read. Azure clients authenticate with the ``api-key`` header.
    """
    api_key = getattr(client, "api_key", None)
    base_url = getattr(client, "base_url", None)
    if not api_key or base_url is None:
        raise ConfigError("client= must be an openai.OpenAI client with an api_key and base_url")
    query = getattr(client, "default_query", None) or {}
    settings: dict[str, Any] = {
        "api_key": str(api_key),
        "base_url": str(base_url).rstrip("/"),
        "organization": getattr(client, "organization", None) or None,
        "project": getattr(client, "project", None) or None,
        "extra_headers": _headers_given(client),
        "extra_query": {str(k): str(v) for k, v in query.items() if v is not None},
    }
    if type(client).__name__.startswith(("AzureOpenAI", "AsyncAzureOpenAI")):
        settings["auth_style"] = "api-key"
    return settings


#: Headers an SDK client's ``default_headers`` carries that are never copied: the key,
#: organization and project (read from their own attributes), and a body's type
#: (cntr-sync's bodies are its own: JSON or a multipart upload).
_NOT_COPIED = frozenset(
    {"authorization", "api-key", "openai-organization", "openai-project", "content-type"}
)


def _headers_given(client: Any) -> dict[str, str]:
    """The headers ``client`` was built with (``default_headers=``): its
    ``default_headers`` without those the SDK adds itself (its ``X-Stainless-*``
    headers, its ``Accept`` and its user agent, unless the caller chose others)."""
    sdk_values = {"accept": "application/json", "user-agent": getattr(client, "user_agent", None)}
    given: dict[str, str] = {}
    for name, value in (getattr(client, "default_headers", None) or {}).items():
        lowered = str(name).lower()
        if (
            not isinstance(value, str)  # openai.Omit: a header the SDK leaves out
            or lowered in _NOT_COPIED
            or lowered.startswith("x-stainless-")
            or sdk_values.get(lowered) == value
        ):
            continue
        given[str(name)] = value
    return given


def _prepare(
    local: str | os.PathLike[str],
    container: str,
    *,
    direction: Direction,
    client: Any,
    settings: Settings | None,
    overrides: Mapping[str, Any],
) -> tuple[Settings, Pair, ContainersClient | None]:
    given = {key: value for key, value in overrides.items() if value is not None}
    given["direction"] = direction
    own_client = client if isinstance(client, ContainersClient) else None
    if client is not None and own_client is None:
        given = {**settings_from_openai_client(client), **given}
    if settings is None:
        settings = Settings.load(overrides=given, env=os.environ)
    else:
        settings = settings.with_overrides(**given)
    root = Path(local).expanduser().absolute()
    pair = settings.pair(PairSettings(name="library", local=root, container=container))
    return settings, pair, own_client


def sync(
    local: str | os.PathLike[str],
    container: str,
    *,
    direction: Direction = "push",
    delete: bool = True,
    dry_run: bool = False,
    force: bool = False,
    client: Any = None,
    settings: Settings | None = None,
    on_progress: OnProgress | None = None,
    raise_on_incomplete: bool = True,
    **overrides: Any,
) -> SyncResult:
    """One sync pass of ``local`` with ``container`` (a name or an id); the same
    engine and guarantees as ``cntr-sync sync``.

    ``direction``: ``"push"`` (the container mirrors the directory), ``"pull"``
    (bring home what the model wrote) or ``"both"``. ``client``: an
    ``openai.OpenAI``/``AsyncOpenAI`` whose base URL, key and headers are used,
    or a ``cntr_sync.api.ContainersClient``. ``settings``: a ``Settings`` to
    start from (else the environment: ``OPENAI_API_KEY``, ``CNTR_SYNC_*``).
    ``overrides``: any other setting by name (``conflict="remote-wins"``,
    ``max_delete="10%"``, ``ignore=["*.log"]``, ``state_dir=...``).
    ``on_progress`` is called with a ``TransferEvent`` after each transfer.

    Raises the ``cntr_sync`` errors: ``SafetyBrakeError`` when a brake refused
    the pass (its ``would_delete`` lists the files), ``ConfigError``,
    ``AuthenticationError``, ... and ``IncompleteSyncError`` (its ``result`` is
    the pass's ``SyncResult``) when the pass left work undone: an action failed,
    a file was deferred (it changed during the pass) or the pass was cut short.
    With ``raise_on_incomplete=False`` such a pass returns its result instead.

    ``in_sync`` is True only when nothing was planned and nothing was left
    undone. So a real pass raises exactly when its ``in_sync`` would be False; a
    dry run, which carries nothing out, says False when it planned any action
    and raises only for the reasons above, never for what it planned.
    """
    return _one_pass(
        local,
        container,
        cancel=None,
        direction=direction,
        dry_run=dry_run,
        force=force,
        client=client,
        settings=settings,
        on_progress=on_progress,
        raise_on_incomplete=raise_on_incomplete,
        overrides={"delete": delete, **overrides},
    )


def _one_pass(
    local: str | os.PathLike[str],
    container: str,
    *,
    cancel: threading.Event | None,
    direction: Direction,
    dry_run: bool,
    force: bool,
    client: Any,
    settings: Settings | None,
    on_progress: OnProgress | None,
    raise_on_incomplete: bool,
    overrides: Mapping[str, Any],
) -> SyncResult:
    """``sync``, stopped at its next action once ``cancel`` is set."""
    resolved, pair, own_client = _prepare(
        local,
        container,
        direction=direction,
        client=client,
        settings=settings,
        overrides=overrides,
    )
    progress = _Callback(on_progress) if on_progress is not None else None
    result = run_pass(
        resolved,
        pair,
        progress=progress,
        dry_run=dry_run,
        force=force,
        client=own_client,
        cancel=cancel,
    )
    synced = SyncResult.from_pass(result)
    if raise_on_incomplete:
        _raise_if_undone(result, synced)
    return synced


def _raise_if_undone(result: PassResult, synced: SyncResult) -> None:
    """``IncompleteSyncError`` carrying ``synced`` when ``result`` left work undone
    (``PassResult.left_work_undone``)."""
    if not result.left_work_undone:
        return
    undone: list[str] = []
    if result.failures:
        first = result.failures[0]
        count = len(result.failures)
        undone.append(
            f"{count} action{'' if count == 1 else 's'} failed"
            f" (the first: {first.action} {first.target}: {first.message})"
        )
    if result.deferred:
        count = len(result.deferred)
        undone.append(f"{count} file{'' if count == 1 else 's'} changed during the pass")
    if result.cancelled:
        undone.append("the pass was cut short")
    raise IncompleteSyncError(
        f"the pass left work undone, for the next pass to finish: {'; '.join(undone)}",
        result=synced,
    )


async def _off_the_loop(work: Callable[[threading.Event], T]) -> T:
    """``work(cancel)`` in a worker thread, awaited without blocking the event loop.

    Cancelling the awaiting task sets ``cancel`` (a pass then starts no further
    action) and waits for the thread, through further cancellations too: the
    pass's lock is released, and the thread gone, before ``CancelledError``
    reaches the caller. What the cut-short work returned or raised is dropped.
    """
    cancel = threading.Event()
    call = functools.partial(contextvars.copy_context().run, work, cancel)
    running = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        # Shielded: cancelling the awaiting task must not drop ``running``'s outcome.
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        cancel.set()
        while not running.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({running})
        if not running.cancelled():
            running.exception()  # retrieved: the cancellation is what the caller sees
        raise


class Mirror:
    """A container kept in step with a directory for one agent run.

    On enter: a pass (creating the container if needed); pass ``.container_id``
    to the code interpreter tool. ``.sync()`` runs a pass at any time. On exit:
    a final pass that brings home what the model wrote (``direction="both"``
    by default). Errors of a pass are raised (as ``cntr_sync`` errors), except
    on exit when the block itself is raising: its exception is not replaced.
    A pass that left work undone (an action failed, a file was deferred, the pass
    was cut short) raises ``IncompleteSyncError`` with its result, on enter,
    ``.sync()`` and exit alike (``.last_result`` is that result too), unless
    ``raise_on_incomplete=False``.

        with cntr_sync.Mirror("work", "analysis", client=openai_client) as mirror:
            response = openai_client.responses.create(
                model="gpt-4.1",
                tools=[{"type": "code_interpreter", "container": mirror.container_id}],
                input="Plot data.csv into plot.png",
            )
        # work/plot.png is on disk now
    """

    def __init__(
        self,
        local: str | os.PathLike[str],
        container: str,
        *,
        direction: Direction = "both",
        client: Any = None,
        settings: Settings | None = None,
        on_progress: OnProgress | None = None,
        raise_on_incomplete: bool = True,
        **overrides: Any,
    ) -> None:
        self._raise_on_incomplete = raise_on_incomplete
        self._settings, self._pair, self._client = _prepare(
            local,
            container,
            direction=direction,
            client=client,
            settings=settings,
            overrides=overrides,
        )
        self._progress = _Callback(on_progress) if on_progress is not None else None
        self.last_result: SyncResult | None = None

    @property
    def container_id(self) -> str:
        """The id of the container in use (after the first pass)."""
        if self.last_result is None or self.last_result.container_id is None:
            raise RuntimeError("the mirror has not synced yet: use it in a with block")
        return self.last_result.container_id

    def sync(self, *, force: bool = False) -> SyncResult:
        """One pass now; returns what it did (``IncompleteSyncError`` as ``cntr_sync.sync``)."""
        return self._pass(None, force=force)

    def _pass(self, cancel: threading.Event | None, *, force: bool = False) -> SyncResult:
        """One pass, stopped at its next action once ``cancel`` is set."""
        result = run_pass(
            self._settings,
            self._pair,
            progress=self._progress,
            force=force,
            client=self._client,
            cancel=cancel,
        )
        self.last_result = SyncResult.from_pass(result)
        if self._raise_on_incomplete:
            _raise_if_undone(result, self.last_result)
        return self.last_result

    def _final_pass(self, cancel: threading.Event | None, *, block_failed: bool) -> None:
        """The pass on exit; its error is logged, not raised, over the block's own."""
        if not block_failed:
            self._pass(cancel)
            return
        try:
            self._pass(cancel)
        except Exception as error:  # noqa: BLE001 - the block's own exception is the one to see
            log.warning("the final sync after a failing block failed too", error=str(error))

    def __enter__(self) -> Mirror:
        self._pass(None)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._final_pass(None, block_failed=exc_type is not None)


async def async_sync(
    local: str | os.PathLike[str],
    container: str,
    *,
    direction: Direction = "push",
    delete: bool = True,
    dry_run: bool = False,
    force: bool = False,
    client: Any = None,
    settings: Settings | None = None,
    on_progress: OnProgress | None = None,
    raise_on_incomplete: bool = True,
    **overrides: Any,
) -> SyncResult:
    """``sync`` without blocking the event loop (the pass runs in a worker thread).

    Cancelled (``asyncio.wait_for``, a task's ``cancel()``), the pass starts no
    further action; ``CancelledError`` is raised once it has stopped and released
    the pair, so the next call can start at once.
    """

    def one_pass(cancel: threading.Event) -> SyncResult:
        return _one_pass(
            local,
            container,
            cancel=cancel,
            direction=direction,
            dry_run=dry_run,
            force=force,
            client=client,
            settings=settings,
            on_progress=on_progress,
            raise_on_incomplete=raise_on_incomplete,
            overrides={"delete": delete, **overrides},
        )

    return await _off_the_loop(one_pass)


class AsyncMirror:
    """``Mirror`` for ``async with``: every pass runs in a worker thread (cancelled,
    it stops at its next action and releases the pair, as ``async_sync``)."""

    def __init__(
        self,
        local: str | os.PathLike[str],
        container: str,
        *,
        direction: Direction = "both",
        client: Any = None,
        settings: Settings | None = None,
        on_progress: OnProgress | None = None,
        raise_on_incomplete: bool = True,
        **overrides: Any,
    ) -> None:
        self._mirror = Mirror(
            local,
            container,
            direction=direction,
            client=client,
            settings=settings,
            on_progress=on_progress,
            raise_on_incomplete=raise_on_incomplete,
            **overrides,
        )

    @property
    def container_id(self) -> str:
        """The id of the container in use (after the first pass)."""
        return self._mirror.container_id

    @property
    def last_result(self) -> SyncResult | None:
        return self._mirror.last_result

    async def sync(self, *, force: bool = False) -> SyncResult:
        """One pass now, in a worker thread; returns what it did."""
        return await _off_the_loop(functools.partial(self._mirror._pass, force=force))

    async def __aenter__(self) -> AsyncMirror:
        await self.sync()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        final = functools.partial(self._mirror._final_pass, block_failed=exc_type is not None)
        await _off_the_loop(final)


def kept_versions(
    local: str | os.PathLike[str],
    container: str,
    *,
    path: str | None = None,
    client: Any = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> list[KeptVersion]:
    """The versions of local files that passes replaced or deleted because of the
    container, kept in the pair's backup directory, oldest first (``path``: of that
    relpath only). Reads the pair's state only: no request is made."""
    kept_in, _ = _backups_of(local, container, client, settings, overrides)
    return versions(kept_in, None if path is None else restorable_relpath(path))


def restore(
    local: str | os.PathLike[str],
    container: str,
    path: str,
    *,
    at: float | str | None = None,
    client: Any = None,
    settings: Settings | None = None,
    **overrides: Any,
) -> KeptVersion:
    """Put the newest kept version of ``path`` (a relpath), or the newest kept at or
    before ``at`` (Unix seconds; or text: a pass folder's name, ``KeptVersion.folder``,
    an ISO 8601 time, or ``1h``/``30m``/``2d`` ago) back into ``local``; the file it
    replaces is kept too, and the next pass pushes the restored file as any local
    edit. Returns the version restored; ``LocalError`` when none is kept or it
    cannot be put back, ``ConfigError`` for an ``at`` that is no time."""
    kept_in, pair = _backups_of(local, container, client, settings, overrides)
    return restore_kept(kept_in, pair.local, path, at, now=time.time())


def _backups_of(
    local: str | os.PathLike[str],
    container: str,
    client: Any,
    settings: Settings | None,
    overrides: Mapping[str, Any],
) -> tuple[Path, Pair]:
    """The pair's backup directory, and the pair, as ``sync`` would name them."""
    resolved, pair, own_client = _prepare(
        local, container, direction="both", client=client, settings=settings, overrides=overrides
    )
    base_url = own_client.base_url if own_client is not None else None
    return backup_dir_of(resolved, pair, base_url=base_url), pair
