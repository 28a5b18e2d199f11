"""The one wiring: settings and a pair -> client, pacer, index and engine.

Owns how the parts of a sync are put together, for every caller (the CLI, the
daemon's worker, and the library): the connection pool size, the pacer
(one per endpoint and key in the process), the pair's index and lock, and
re-reading a rotated key. A
``PairSession`` is opened once per command (or once per worker, for the
daemon's life) and closed with everything it opened.

Must not: decide anything about syncing, print, or read the environment (the
settings did that).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from cntr_sync.api import ContainersClient, normalized_base_url
from cntr_sync.config import Settings
from cntr_sync.engine import Engine
from cntr_sync.hashing import no_tick
from cntr_sync.index import Index
from cntr_sync.index_file import index_path
from cntr_sync.local_side import default_backup_dir
from cntr_sync.models import DEFAULT_BASE_URL, Pair
from cntr_sync.pacing import Pacer, shared_pacer
from cntr_sync.refusals import RefusalWatch
from cntr_sync.rest import RequestOutcome
from cntr_sync.result import PassResult, Progress

# Requests a pass can have in flight beyond its transfers: a listing and a
# container lookup.
_EXTRA_CONNECTIONS = 2


def pool_size(settings: Settings) -> int:
    """Connections one pair's client keeps: one per transfer, plus a listing and a lookup."""
    return settings.concurrency + _EXTRA_CONNECTIONS


def pacer_for(settings: Settings, client_kwargs: dict[str, Any]) -> Pacer:
    """The process's pacer for the client's endpoint and key (shared by every pair on it)."""
    return shared_pacer(
        client_kwargs["base_url"] or DEFAULT_BASE_URL,
        client_kwargs["api_key"],
        settings.requests_per_second,
    )


def build_client(
    settings: Settings,
    *,
    pacer: Pacer | None = None,
    on_request: Callable[[RequestOutcome], None] | None = None,
    tick: Callable[[], None] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], object] | None = None,
    stop: threading.Event | None = None,
    refusals: RefusalWatch | None = None,
) -> ContainersClient:
    """A client from the settings (the key is read now: a rotated key file counts).

    ``stop``: once set, every retry and pacing wait ends and no request starts
    (``StoppedError``): the daemon sets a pair's when its flush bound has passed.
    ``refusals``: the pair's count of refused answers, kept across clients.
    """
    kwargs = settings.client_kwargs()
    return ContainersClient(
        **kwargs,
        max_connections=pool_size(settings),
        pacer=pacer or pacer_for(settings, kwargs),
        on_request=on_request,
        tick=tick,
        transport=transport,
        sleep=sleep,
        stop=stop,
        refusals=refusals,
    )


def open_index(settings: Settings, pair: Pair, *, lock: bool, base_url: str | None = None) -> Index:
    """The pair's index (``base_url``: the client's, else the settings'): what
    ``log``, ``backups`` and ``restore`` read without a client or a key."""
    return Index.open(
        settings.state_dir,
        base_url=base_url or normalized_base_url(settings.effective_base_url),
        root=pair.local,
        container_spec=pair.container,
        lock=lock,
    )


def backup_dir_of(settings: Settings, pair: Pair, *, base_url: str | None = None) -> Path:
    """Where ``pair`` keeps the local files passes replaced or deleted."""
    if pair.backup_dir is not None:
        return pair.backup_dir
    url = base_url or normalized_base_url(settings.effective_base_url)
    return default_backup_dir(index_path(settings.state_dir, url, pair.local, pair.container))


class PairSession:
    """A pair's client and index, open together; ``engine()`` makes a pass runner.

    ``lock=False`` opens the index for reading beside a running sync (``status``).
    The pacer is shared by all pairs of a process on one endpoint and key; the
    hooks see every request (metrics) and every sign of progress (liveness);
    ``stop`` ends the waits of every client the session builds (``build_client``),
    and ``refusals`` is the count of refused answers they all add to.
    """

    def __init__(
        self,
        settings: Settings,
        pair: Pair,
        *,
        lock: bool = True,
        pacer: Pacer | None = None,
        on_request: Callable[[RequestOutcome], None] | None = None,
        tick: Callable[[], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
        refusals: RefusalWatch | None = None,
        client: ContainersClient | None = None,
        transfer_executor: Executor | None = None,
    ) -> None:
        """``client``: use this one (the caller keeps and closes it) instead of building one.
        ``transfer_executor``: the pool every pass's actions run on, shared by the
        daemon's pairs (the caller shuts it down); by default each pass has its own."""
        self.settings = settings
        self._transfer_executor = transfer_executor
        self.pair = pair
        self._pacer = pacer
        self._hooks: dict[str, Any] = {
            "on_request": on_request,
            "tick": tick,
            "transport": transport,
            "sleep": sleep,
            "stop": stop,
            "refusals": refusals,
        }
        self._owns_client = client is None
        self._engine: Engine | None = None
        if client is None:
            self._client_kwargs = settings.client_kwargs()
            client = build_client(settings, pacer=self._pacer, **self._hooks)
        self.client = client
        try:
            self.index = open_index(settings, pair, lock=lock, base_url=self.client.base_url)
        except BaseException:
            if self._owns_client:
                self.client.close()
            raise

    def engine(self, *, progress: Progress | None = None) -> Engine:
        """The pass runner on this session's client and index.

        Kept between calls (while the client and ``progress`` stay the same): what it learnt
        in one pass (the index it may trust, the ignore rules) serves the next.
        """
        engine = self._engine
        if engine is not None and engine.client is self.client and engine.progress is progress:
            return engine
        engine = self._engine = Engine(
            self.client,
            self.index,
            self.pair,
            concurrency=self.settings.concurrency,
            progress=progress,
            tick=self._hooks["tick"] or no_tick,
            transfer_executor=self._transfer_executor,
        )
        return engine

    def refresh_client(self) -> None:
        """Rebuild the client when the key (re-read now) or connection settings changed.

        The index stays: it is keyed by the base URL, which a reload of
        connection settings restarts the pair for anyway.
        """
        if not self._owns_client:
            return
        kwargs = self.settings.client_kwargs()
        if kwargs == self._client_kwargs:
            return
        old = self.client
        self.client = build_client(self.settings, pacer=self._pacer, **self._hooks)
        self._client_kwargs = kwargs
        old.close()

    def close(self) -> None:
        try:
            self.index.close()
        finally:
            if self._owns_client:
                self.client.close()

    def __enter__(self) -> PairSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def run_pass(
    settings: Settings,
    pair: Pair,
    *,
    progress: Progress | None = None,
    dry_run: bool = False,
    force: bool = False,
    client: ContainersClient | None = None,
    lock: bool = True,
    cancel: threading.Event | None = None,
) -> PassResult:
    """One pass of ``pair``: what ``cntr-sync sync`` and ``cntr_sync.sync`` run.

    Setting ``cancel`` (from another thread) stops the pass at its next action,
    and ends the retry and pacing waits of the client this builds (a client
    passed in keeps its own); the pair's lock is released when this returns."""
    with PairSession(settings, pair, client=client, lock=lock, stop=cancel) as session:
        return session.engine(progress=progress).run_pass(
            dry_run=dry_run, force=force, cancel=cancel
        )


__all__ = ["PairSession", "build_client", "pacer_for", "pool_size", "run_pass"]
