"""The long-running sync: one worker thread per pair, debounced by events.

Owns: pair workers (observers first, then a full reconcile, then passes on
quiet periods, max delays, rescans and remote polls), per-pair isolation and
backoff, the main loop's heartbeat, signals (stop with a bounded flush,
reload on SIGHUP), systemd notifications and the status the HTTP endpoint
serves.

Must not: decide what to sync (``engine`` and ``plan`` do) or talk HTTP to
the API itself. Each pass is the same ``Engine.run_pass`` as the one-shot
command.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import structlog

from cntr_sync import __version__
from cntr_sync.api import ContainersClient, RateLimiter, RequestRecord
from cntr_sync.config import ResolvedPair, Settings
from cntr_sync.engine import Engine, PairSpec, PassResult
from cntr_sync.errors import CntrSyncError, ConfigError
from cntr_sync.http import HealthServer
from cntr_sync.index import Index
from cntr_sync.metrics import Metrics
from cntr_sync.sdnotify import Notifier
from cntr_sync.watch import ChangeTracker, Watcher

log = structlog.get_logger("cntr_sync.daemon")

PairState = Literal["starting", "syncing", "idle", "error", "stopped"]
# "overdue": changes kept coming past max_delay, so even files written a moment
# ago are sent now (a log file that never goes quiet still gets mirrored).
PassReason = Literal["initial", "changes", "overdue", "rescan", "poll", "flush"]

HEARTBEAT_TIMEOUT = 30.0
BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0
# Stop polling an idle container this long before it would expire, so that,
# without keepalive, an unused container is allowed to expire.
EXPIRY_MARGIN = 120.0
POLL_INTERVAL_FOR_WATCH_POLL = 1.0


@dataclass
class PairStatus:
    """What /status and STATUS= say about one pair. Written by its worker only."""

    name: str
    local: str
    container: str
    container_id: str | None = None
    state: PairState = "starting"
    watch: str = "off"
    first_sync_done: bool = False
    first_attempt_done: bool = False
    passes: int = 0
    last_sync_at: float | None = None
    last_success_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_summary: dict[str, Any] = field(default_factory=dict)
    pending_changes: int = 0
    observer_restarts: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "container": self.container,
            "container_id": self.container_id,
            "state": self.state,
            "watch": self.watch,
            "first_sync_done": self.first_sync_done,
            "passes": self.passes,
            "last_sync_at": self.last_sync_at,
            "last_success_at": self.last_success_at,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "last_pass": self.last_summary,
            "pending_changes": self.pending_changes,
            "observer_restarts": self.observer_restarts,
        }


class ClientFactory:
    """One ContainersClient for all pairs, rebuilt when the settings (or a rotated
    key file) change; the rate limit is shared, since all pairs use one account."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._lock = threading.Lock()
        self._client: ContainersClient | None = None
        self._kwargs: dict[str, Any] | None = None
        self._limiter = RateLimiter(settings.requests_per_second)

    def get(self) -> ContainersClient:
        kwargs = self._settings.client_kwargs()  # re-reads api_key_file
        with self._lock:
            if self._client is None or kwargs != self._kwargs:
                if self._client is not None:
                    self._client.close()
                self._client = ContainersClient(
                    **kwargs,
                    max_connections=self._settings.concurrency * 4,
                    rate_limiter=self._limiter,
                    on_request=self._observe,
                )
                self._kwargs = kwargs
            return self._client

    def _observe(self, record: RequestRecord) -> None:
        self._metrics.record_request(record.operation, record.status)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class PairWorker:
    """Keeps one pair in sync on its own thread. Nothing it meets stops the process."""

    def __init__(
        self,
        pair: ResolvedPair,
        settings: Settings,
        clients: ClientFactory,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pair = pair
        self.settings = settings
        self._clients = clients
        self._metrics = metrics
        self._clock = clock
        self.tracker = ChangeTracker(clock)
        self.status = PairStatus(pair.name, str(pair.local), pair.container)
        self.watcher = Watcher(
            pair.local,
            self.tracker,
            pair.watch,
            poll_interval=POLL_INTERVAL_FOR_WATCH_POLL,
            warn=lambda message: log.warning(message, pair=pair.name),
        )
        self._stop = threading.Event()
        self._flush_deadline: float | None = None
        self.cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pair-{pair.name}", daemon=True)
        self._index: Index | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_rescan = clock()
        self._last_poll = clock()
        self._last_activity = clock()
        self.heartbeat = clock()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_deadline: float) -> None:
        """Ask the worker to flush pending changes until ``flush_deadline``, then end."""
        self._flush_deadline = flush_deadline
        self._stop.set()
        self.tracker.wake()

    def join(self, timeout: float) -> bool:
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        log.info("pair starting", pair=self.pair.name, local=str(self.pair.local))
        # Observers first, then the full pass: no change between the two is missed.
        self._start_watcher()
        try:
            while not self._stop.is_set():
                self.heartbeat = self._clock()
                self._supervise()
                reason = self._due()
                if reason is None:
                    self.tracker.wait(self._sleep_for())
                    continue
                self._pass(reason)
            self._flush()
        finally:
            self.watcher.stop()
            self._close_index()
            self.status.state = "stopped"
            log.info("pair stopped", pair=self.pair.name)

    def _start_watcher(self) -> None:
        try:
            self.watcher.start()
        except CntrSyncError as exc:
            log.warning(
                "watching failed; relying on rescans", pair=self.pair.name, error=exc.message
            )
        self.status.watch = self.watcher.kind

    def _supervise(self) -> None:
        if self.watcher.check():
            self.status.observer_restarts = self.watcher.restarts
            log.warning("observer died and was restarted", pair=self.pair.name)
        self.status.watch = self.watcher.kind
        self.status.pending_changes = self.tracker.pending
        self._metrics.set_pending(self.pair.name, self.tracker.pending)

    def _due(self) -> PassReason | None:
        now = self._clock()
        if now < self._retry_at:
            return None
        first, last = self.tracker.first_at, self.tracker.last_at
        if first is not None and last is not None:
            if now - first >= self.pair.max_delay:
                return "overdue"
            if now - last >= self.pair.quiet_period:
                return "changes"
            # Changes are settling: everything else waits for them (max_delay bounds it).
            return None
        if not self.status.first_sync_done:
            # First pass, or a retry of one that failed. One that deferred files
            # re-marked the tracker, so it waits for quiet above instead of spinning.
            return "initial"
        if now - self._last_rescan >= self.pair.rescan_interval:
            return "rescan"
        if now - self._last_poll >= self._poll_interval() and self._container_wanted(now):
            return "poll"
        return None

    def _poll_interval(self) -> float:
        interval = self.pair.remote_poll_interval
        if self.pair.keepalive:
            # A call well within the expiry window keeps the container alive.
            interval = min(interval, self.pair.expires_after_minutes * 60 / 2)
        return interval

    def _container_wanted(self, now: float) -> bool:
        """Without keepalive, stop touching a container nobody has used for a while,
        so that it can expire (a later change recreates and refills it)."""
        if self.pair.keepalive:
            return True
        idle_limit = self.pair.expires_after_minutes * 60 - EXPIRY_MARGIN
        return now - self._last_activity < idle_limit

    def _sleep_for(self) -> float:
        now = self._clock()
        deadlines = [self._retry_at, self._last_rescan + self.pair.rescan_interval]
        if self._container_wanted(now):
            deadlines.append(self._last_poll + self._poll_interval())
        first, last = self.tracker.first_at, self.tracker.last_at
        if first is not None and last is not None:
            deadlines += [last + self.pair.quiet_period, first + self.pair.max_delay]
        # Wake at least once a second for the heartbeat and observer supervision.
        return min([1.0, *(d - now for d in deadlines if d > now)])

    # -- passes --------------------------------------------------------------------------

    def _pass(self, reason: PassReason) -> None:
        now = self._clock()
        if reason == "rescan":
            self._last_rescan = now
            if self.status.first_sync_done and not self._local_changes():
                return
        if reason == "poll":
            self._last_poll = now
        self._run_pass(reason)

    def _local_changes(self) -> bool:
        try:
            return self._engine().has_local_changes()
        except CntrSyncError as exc:
            log.warning("rescan failed", pair=self.pair.name, error=exc.message)
            return True

    def _engine(self, *, settle: bool = True) -> Engine:
        client = self._clients.get()
        if self._index is None:
            self._index = Index.open(
                self.settings.state_dir,
                base_url=client.base_url,
                root=self.pair.local.absolute(),
                container_spec=self.pair.container,
            )
        spec = PairSpec.from_settings(self.pair, settle=settle)
        return Engine(
            client,
            self._index,
            spec,
            concurrency=self.settings.concurrency,
        )

    def _run_pass(self, reason: PassReason) -> PassResult | None:
        # When the oldest pending change happened: a pass that defers or fails
        # puts it back, so max_delay still counts from the first change.
        pending_since = self.tracker.first_at
        taken_paths, taken_full = self.tracker.take()
        self.status.state = "syncing"
        started = self._clock()
        try:
            engine = self._engine(settle=reason not in ("overdue", "flush"))
            result = engine.run_pass(cancel=self.cancel)
        except CntrSyncError as exc:
            self._failed(
                reason,
                exc.message,
                started,
                dirty=bool(taken_paths) or taken_full,
                pending_since=pending_since,
            )
            return None
        except Exception as exc:  # a bug must not kill the pair thread
            log.exception("pass crashed", pair=self.pair.name)
            self._failed(
                reason,
                f"unexpected {type(exc).__name__}: {exc}",
                started,
                dirty=True,
                pending_since=pending_since,
            )
            return None
        self._succeeded(reason, result, started, pending_since=pending_since)
        return result

    def _succeeded(
        self,
        reason: PassReason,
        result: PassResult,
        started: float,
        *,
        pending_since: float | None,
    ) -> None:
        status = self.status
        status.passes += 1
        status.first_attempt_done = True
        status.container_id = result.container_id
        status.last_sync_at = time.time()
        status.last_error = None
        self._last_poll = self._clock()
        self._backoff = 0.0
        self._retry_at = 0.0
        if result.deferred or result.cancelled:
            # Files still being written, or a cut-short pass: try again after a quiet period.
            self.tracker.mark_full(since=pending_since)
        moved = result.uploaded + result.replaced + result.deleted + result.adopted
        if moved:
            self._last_activity = self._clock()
        label: Literal["success", "noop", "partial", "error"]
        if result.failures:
            label = "partial"
            status.last_error = result.failures[0].message
        elif moved:
            label = "success"
        else:
            label = "noop"
        if result.in_sync:
            status.first_sync_done = True
        if not result.failures:
            status.last_success_at = status.last_sync_at
            self._metrics.set_last_success(self.pair.name, status.last_sync_at)
        status.last_result = label
        status.state = "idle" if not result.failures else "error"
        if result.failures:
            self._schedule_retry()
        status.last_summary = {
            "reason": reason,
            "uploaded": result.uploaded,
            "replaced": result.replaced,
            "deleted": result.deleted,
            "adopted": result.adopted,
            "failed": len(result.failures),
            "deferred": len(result.deferred),
            "bytes": result.bytes_uploaded,
            "requests": result.requests,
            "seconds": round(result.seconds, 3),
        }
        self._metrics.record_pass(
            self.pair.name,
            label,
            self._clock() - started,
            uploaded_files=result.uploaded + result.replaced,
            deleted_files=result.deleted,
            uploaded_bytes=result.bytes_uploaded,
        )
        self._metrics.set_pair_up(self.pair.name, not result.failures)
        if result.container_recreated:
            self._metrics.record_recreation(self.pair.name)
        log.info(
            "sync pass",
            pair=self.pair.name,
            result=label,
            container_id=result.container_id,
            recreated=result.container_recreated,
            files=result.local_files,
            **status.last_summary,
        )

    def _failed(
        self,
        reason: PassReason,
        message: str,
        started: float,
        *,
        dirty: bool,
        pending_since: float | None,
    ) -> None:
        status = self.status
        status.passes += 1
        status.first_attempt_done = True
        status.state = "error"
        status.last_result = "error"
        status.last_error = message
        status.last_sync_at = time.time()
        if dirty:
            self.tracker.mark_full(since=pending_since)
        self._metrics.record_pass(self.pair.name, "error", self._clock() - started)
        self._metrics.set_pair_up(self.pair.name, False)
        self._schedule_retry()
        log.error(
            "sync pass failed",
            pair=self.pair.name,
            reason=reason,
            error=message,
            retry_in=round(self._backoff, 1),
        )
        # A broken state (lock, schema, missing root) is retried with a fresh open.
        self._close_index()

    def _schedule_retry(self) -> None:
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
        self._retry_at = self._clock() + self._backoff * random.uniform(0.8, 1.2)

    def _flush(self) -> None:
        """On stop: one last pass for pending changes, if the flush bound allows."""
        deadline = self._flush_deadline
        if deadline is None or not self.status.first_attempt_done or self._clock() >= deadline:
            return
        # The last events may still be on their way: the scan decides, not the events.
        if not self.tracker.pending and not self._local_changes():
            return
        log.info("flushing pending changes before stopping", pair=self.pair.name)
        # Files written a moment ago are sent too: there is no later pass to wait for.
        self._run_pass("flush")

    def _close_index(self) -> None:
        index, self._index = self._index, None
        if index is not None:
            with contextlib.suppress(Exception):
                index.close()


class Daemon:
    """All pairs, the health endpoint, systemd notifications and signals."""

    def __init__(
        self,
        config_file: Path | None,
        *,
        environ: dict[str, str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.config_file = config_file
        self._environ = environ if environ is not None else dict(os.environ)
        self.settings = settings or self._load()
        self.metrics = Metrics()
        self.notifier = Notifier(self._environ)
        self.clients = ClientFactory(self.settings, self.metrics)
        self.workers: dict[str, PairWorker] = {}
        self.started_at = time.time()
        self.heartbeat = time.monotonic()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals = 0
        self._ready_sent = False
        host, port = self.settings.listen_address
        self.http = HealthServer(host, port, self, self.metrics)

    def _load(self) -> Settings:
        settings = Settings.load(self.config_file, env=self._environ)
        if not settings.pairs:
            where = self.config_file or "the settings"
            raise ConfigError(f"{where}: no [[pairs]] to sync")
        return settings

    # -- StatusProvider ---------------------------------------------------------------------

    def live(self) -> bool:
        return time.monotonic() - self.heartbeat < HEARTBEAT_TIMEOUT

    def ready(self) -> bool:
        return bool(self.workers) and all(w.status.first_sync_done for w in self.workers.values())

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "started_at": self.started_at,
            "live": self.live(),
            "ready": self.ready(),
            "pairs": {name: w.status.as_json() for name, w in self.workers.items()},
        }

    def summary_line(self) -> str:
        parts = []
        for name, worker in self.workers.items():
            s = worker.status
            text = f"{name} {s.state}"
            if s.state == "error" and s.last_error:
                text += f" ({s.last_error[:80]})"
            parts.append(text)
        return f"{len(self.workers)} pairs: " + "; ".join(parts)

    # -- running ----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Serve until stopped by a signal; returns the exit code."""
        if install_signals:
            self._install_signals()
        self.http.start()
        log.info(
            "daemon started",
            pairs=len(self.settings.pairs),
            http=self.http.url,
            version=__version__,
        )
        for pair in self.settings.resolved_pairs():
            self._start_worker(pair)
        watchdog_every = self.notifier.watchdog_interval()
        last_watchdog = 0.0
        last_status = ""
        try:
            while not self._stop.is_set():
                self.heartbeat = time.monotonic()
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                self._revive_dead_workers()
                if not self._ready_sent and all(
                    w.status.first_attempt_done for w in self.workers.values()
                ):
                    self._ready_sent = True
                    self.notifier.ready()
                line = self.summary_line()
                if line != last_status:
                    self.notifier.status(line)
                    last_status = line
                if (
                    watchdog_every
                    and self.live()
                    and (time.monotonic() - last_watchdog >= watchdog_every)
                ):
                    self.notifier.watchdog()
                    last_watchdog = time.monotonic()
                self._stop.wait(0.5)
        finally:
            self._shutdown()
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    def _start_worker(self, pair: ResolvedPair) -> None:
        worker = PairWorker(pair, self.settings, self.clients, self.metrics)
        self.workers[pair.name] = worker
        worker.start()

    def _revive_dead_workers(self) -> None:
        for name, worker in list(self.workers.items()):
            if not worker.alive and not self._stop.is_set():
                log.error("pair worker died; restarting it", pair=name)
                self._start_worker(worker.pair)

    def _stop_workers(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            self.workers[name].stop(deadline)
        for name in names:
            worker = self.workers[name]
            if not worker.join(deadline - time.monotonic()):
                # Past the flush bound: let in-flight actions finish, start no more.
                worker.cancel.set()
                worker.join(5.0)
        for name in names:
            self.metrics.forget_pair(name)
            del self.workers[name]

    def reload(self) -> None:
        """SIGHUP: re-read the settings; start, stop or restart the pairs that changed."""
        try:
            new = self._load()
        except CntrSyncError as exc:
            log.error("reload failed; keeping the running settings", error=exc.message)
            return
        old_pairs = {p.name: p for p in self.settings.resolved_pairs()}
        new_pairs = {p.name: p for p in new.resolved_pairs()}
        connection_changed = new.model_dump(exclude={"pairs"}) != self.settings.model_dump(
            exclude={"pairs"}
        )
        changed = [
            name
            for name in old_pairs
            if name not in new_pairs or new_pairs[name] != old_pairs[name] or connection_changed
        ]
        self.notifier.reloading()
        self._stop_workers([n for n in changed if n in self.workers], self.settings.flush_timeout)
        if connection_changed:
            self.clients.close()
            self.clients = ClientFactory(new, self.metrics)
        self.settings = new
        for name, pair in new_pairs.items():
            if name not in self.workers:
                self._start_worker(pair)
        log.info("settings reloaded", pairs=sorted(new_pairs), restarted=sorted(changed))
        self.notifier.ready()

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: flushing pending changes", timeout=self.settings.flush_timeout)
        self._stop_workers(list(self.workers), self.settings.flush_timeout)
        self.http.stop()
        self.clients.close()
        log.info("daemon stopped")

    # -- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second signal means "now": skip the flush.
            os._exit(128 + signum)
        self._stop.set()

    def _on_reload_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload.set()


@contextlib.contextmanager
def running(daemon: Daemon) -> Iterator[Daemon]:
    """Run a daemon on a background thread (for tests); stops it on exit."""
    thread = threading.Thread(
        target=lambda: daemon.run(install_signals=False), name="daemon", daemon=True
    )
    thread.start()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        thread.join(daemon.settings.flush_timeout + 10)
