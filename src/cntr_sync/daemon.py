"""The long-running sync: the process around the pair workers.

Owns: the registry of pair workers (``worker.PairWorker``: started, stopped
with a bounded flush), the one ``scheduler.Scheduler`` that runs their turns
on at most ``max_parallel_passes`` threads, the one ``watch.ObserverHub`` all
their roots are watched through (checked every ``SUPERVISE_EVERY`` seconds),
liveness (the main loop's heartbeat, the scheduler, and the progress of every
pair whose turn is under way, within ``stall_limit``), signals (stop with a
bounded flush, reload on SIGHUP), systemd notifications, the rate limit all
pairs share (one account) and the status the HTTP endpoint serves. And what
the control surface asks (``control``): a flush, a pause (kept across a
reload, not a restart), the pairs of the pairs directory (``pairs_dir``,
checked on every turn of the main loop), the event bus and the pairs' hooks.

Must not: decide what to sync (``engine`` and ``plan`` do), talk HTTP to the
API itself, or decide when a pair's pass is due (its worker does).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from cntr_sync._version import __version__
from cntr_sync.apply import transfer_pool
from cntr_sync.config import Settings
from cntr_sync.control import ControlRoutes, PairConflictError
from cntr_sync.control_client import socket_path
from cntr_sync.errors import CntrSyncError, ConfigError, UnknownPairError, redact_url
from cntr_sync.events import EventBus
from cntr_sync.flush_request import FlushRequest
from cntr_sync.health import HealthServer, SocketServer, read_token
from cntr_sync.hooks import HookRunner
from cntr_sync.logs import get_logger
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair
from cntr_sync.pairs_dir import PairsDir, pairs_dir_path, validate_table
from cntr_sync.retries import MAX_RETRY_AFTER
from cntr_sync.scheduler import Scheduler
from cntr_sync.sdnotify import Notifier
from cntr_sync.watch import ObserverHub
from cntr_sync.worker import PairWorker

__all__ = ["HEARTBEAT_TIMEOUT", "STALL_MARGIN", "Daemon", "running", "stall_limit"]

log = get_logger("cntr_sync.daemon")

# The main loop beats every 0.5 s; this long without a beat means it is stuck.
HEARTBEAT_TIMEOUT = 30.0
# Added to the longest quiet moment a healthy pass can have.
STALL_MARGIN = 30.0
# Seconds between two checks of every pair's watch (one sweep for all pairs).
SUPERVISE_EVERY = 2.0
# How long ``pair add`` and ``pair remove`` wait for the main loop to act on the file.
PAIR_CHANGE_WAIT = 5.0


def stall_limit(settings: Settings) -> float:
    """Seconds a pair may go without any sign of progress before it counts as hung.

    A healthy pass is never quiet for longer than the longest of: a retry wait
    the server asked for (capped at 120 s), one HTTP read or connect that gets
    no bytes (``timeout``, ``connect_timeout``), or a turn at a ``requests_per_second``
    cap with every transfer slot waiting (``concurrency / requests_per_second``; the
    adaptive pacer's own waits tick).
    Every scanned entry, hashed MiB, request, transferred chunk, finished
    action and idle loop turn counts as progress.
    """
    quiet = max(
        MAX_RETRY_AFTER,
        settings.timeout,
        settings.connect_timeout,
        settings.concurrency / settings.requests_per_second if settings.requests_per_second else 0,
    )
    return quiet + STALL_MARGIN


class Daemon:
    """All pairs, the health endpoint, systemd notifications and signals."""

    def __init__(
        self,
        config_file: Path | None,
        *,
        environ: dict[str, str] | None = None,
        settings: Settings | None = None,
        clock: Callable[[], float] = time.monotonic,
        load: Callable[[], Settings] | None = None,
    ) -> None:
        """``load`` makes the settings (at start and on SIGHUP); by default from
        ``config_file`` and the environment. ``cntr-sync run DIR`` passes one that
        builds its single pair from flags."""
        self.config_file = config_file
        self._loader = load
        # Monotonic seconds, for heartbeats, progress and every pair's timers.
        self.clock = clock
        self._environ = environ if environ is not None else dict(os.environ)
        self.settings = settings or self._load()
        self.metrics = Metrics()
        self.notifier = Notifier(self._environ)
        self.workers: dict[str, PairWorker] = {}
        self.scheduler = Scheduler(self.settings.max_parallel_passes, clock=clock)
        self.observers = ObserverHub()
        # Every pair's passes run their transfers on this one pool (threads: the
        # settings' concurrency, not that many per running pass).
        self.transfers = transfer_pool(self.settings.concurrency)
        self.started_at = time.time()
        self.heartbeat = clock()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._signals = 0
        self._ready_sent = False
        self._stalled: set[str] = set()
        self._scheduler_started = False
        # The control surface's state: names paused (kept across reloads), the pairs
        # of the pairs directory that run and the files it refused.
        self.events = EventBus()
        self.hooks = HookRunner(self.metrics)
        self.paused: set[str] = set()
        self.pairs_dir = PairsDir(pairs_dir_path(self.settings))
        self.dir_pairs: dict[str, Pair] = {}
        self.refused_pairs: dict[str, str] = {}
        self._dir_files: dict[str, Path] = {}
        self._flush_owners: weakref.WeakKeyDictionary[FlushRequest, PairWorker] = (
            weakref.WeakKeyDictionary()
        )
        self._dir_settings: dict[str, Any] = {}
        self._dir_settings_source: Settings | None = None
        self.control = ControlRoutes(self)
        token_file = self.settings.control_token_file
        if token_file is not None:
            read_token(token_file)  # a missing or empty token file stops the start
        host, port = self.settings.listen_address
        self.health = HealthServer(
            host, port, self, self.metrics, control=self.control, token_file=token_file
        )
        self.socket = SocketServer(
            socket_path(self.settings, self._environ), self, self.metrics, self.control
        )

    def _load(self) -> Settings:
        if self._loader is not None:
            settings = self._loader()
        else:
            settings = Settings.load(self.config_file, env=self._environ)
        if not settings.pairs and not pairs_dir_path(settings).is_dir():
            where = self.config_file or "the settings"
            raise ConfigError(f"{where}: no [[pairs]] to sync (and no pairs directory)")
        return settings

    # -- StatusProvider ---------------------------------------------------------------------

    def live(self) -> bool:
        """The main loop beats, the scheduler runs, and no pair's turn has gone
        ``stall_limit`` without progress (a pass hung on the pool shows here)."""
        if self.clock() - self.heartbeat >= HEARTBEAT_TIMEOUT:
            return False
        if self._scheduler_started and not self.scheduler.alive:
            return False
        limit = stall_limit(self.settings)
        return all(w.stalled_for() < limit for w in list(self.workers.values()))

    def stalled_pairs(self) -> list[str]:
        limit = stall_limit(self.settings)
        return [n for n, w in list(self.workers.items()) if w.stalled_for() >= limit]

    def ready(self) -> bool:
        return bool(self.workers) and all(w.status.first_sync_done for w in self.workers.values())

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "started_at": self.started_at,
            "live": self.live(),
            "ready": self.ready(),
            "stall_limit_seconds": stall_limit(self.settings),
            "pairs": {
                name: {
                    **w.status.as_json(),
                    # Read now: the worker's own copy is as of its last turn.
                    "pending_changes": w.tracker.pending,
                    "seconds_since_progress": round(w.stalled_for(), 1),
                    "source": "pairs_dir" if name in self.dir_pairs else "config",
                    "hooks": self.hooks.status(name),
                }
                for name, w in list(self.workers.items())
            },
            "refused_pairs": dict(self.refused_pairs),
            "control_socket": str(self.socket.path),
        }

    def summary_line(self) -> str:
        parts = []
        for name, worker in self.workers.items():
            s = worker.status
            text = f"{name} {s.state}"
            if worker.stalled_for() >= stall_limit(self.settings):
                text += " (no progress: hung?)"
            elif s.state == "error" and s.last_error:
                text += f" ({s.last_error[:80]})"
            elif s.paused:
                text += " (paused)"
            elif s.remote_poll == "paused":
                text += " (polls paused: the container is left to expire)"
            parts.append(text)
        return f"{len(self.workers)} pairs: " + "; ".join(parts)

    # -- running ----------------------------------------------------------------------------

    def run(self, *, install_signals: bool = True) -> int:
        """Serve until stopped by a signal; returns the exit code."""
        if install_signals:
            self._install_signals()
        self.health.start()
        try:
            self.socket.start()
        except BaseException:
            self.health.stop()
            raise
        log.info(
            "daemon started",
            pairs=len(self.settings.pairs),
            http=self.health.url,
            control_socket=str(self.socket.path),
            version=__version__,
        )
        self.scheduler.start()
        self._scheduler_started = True
        for pair in self.settings.resolved_pairs():
            self._start_worker(pair)
        self._check_pairs_dir()
        watchdog_every = self.notifier.watchdog_interval()
        last_watchdog = 0.0
        last_supervised = time.monotonic()
        last_status = ""
        try:
            while not self._stop.is_set():
                self.heartbeat = self.clock()
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                if time.monotonic() - last_supervised >= SUPERVISE_EVERY:
                    last_supervised = time.monotonic()
                    self.observers.check()
                self._check_pairs_dir()
                self._report_stalls()
                if not self._ready_sent and all(
                    w.status.first_attempt_done for w in self.workers.values()
                ):
                    self._ready_sent = True
                    self.notifier.ready()
                if self.notifier.enabled:
                    # Built only for systemd: at 500 pairs it is long, twice a second.
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

    def _start_worker(self, pair: Pair) -> None:
        worker = self._new_worker(pair)
        self.workers[pair.name] = worker
        worker.start(self.scheduler)

    def _new_worker(self, pair: Pair) -> PairWorker:
        """A pair's worker wired to the control surface: events, hooks, the pause."""
        worker = PairWorker(
            pair,
            self.settings,
            self.metrics,
            clock=self.clock,
            hub=self.observers,
            transfers=self.transfers,
        )

        def on_event(event: dict[str, Any]) -> None:
            self.events.publish(event)
            if event["type"] == "pass-end" and event["changed"]:
                self.hooks.submit(pair, event)

        worker.on_event = on_event
        if pair.name in self.paused:
            worker.pause()
        return worker

    def _report_stalls(self) -> None:
        """Log once when a pair stops making progress, and once when it recovers."""
        stalled = set(self.stalled_pairs())
        for name in sorted(stalled - self._stalled):
            log.error(
                "pair made no progress; reporting not live",
                pair=name,
                stall_limit=stall_limit(self.settings),
            )
        for name in sorted(self._stalled - stalled):
            log.info("pair is making progress again", pair=name)
        self._stalled = stalled

    def _stop_workers(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            self.workers[name].stop(deadline)
        late = [name for name in names if not self.workers[name].join(deadline - time.monotonic())]
        # Past the flush bound: in-flight actions may finish, no more start. Every
        # late pair is told at once and all get the same 5 s, however many they are.
        for name in late:
            self.workers[name].cancel.set()
        cancel_deadline = time.monotonic() + 5.0
        for name in late:
            if not self.workers[name].join(cancel_deadline - time.monotonic()):
                log.warning("pair did not stop in time; leaving it behind", pair=name)
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
        # The pool's size is the scheduler's alone: no pair restarts for it.
        process_only = {"pairs", "max_parallel_passes"}
        connection_changed = new.model_dump(exclude=process_only) != self.settings.model_dump(
            exclude=process_only
        )
        changed = [
            name
            for name in old_pairs
            if name not in new_pairs or new_pairs[name] != old_pairs[name] or connection_changed
        ]
        self.notifier.reloading()
        self._stop_workers([n for n in changed if n in self.workers], self.settings.flush_timeout)
        if new.concurrency != self.settings.concurrency:
            # Every pair restarted (a connection setting changed): the new pool's
            # size; a pass left behind finishes on the old one, which then ends.
            old, self.transfers = self.transfers, transfer_pool(new.concurrency)
            old.shutdown(wait=False)
        self.settings = new
        self.scheduler.resize(new.max_parallel_passes)
        for name, pair in new_pairs.items():
            if name not in self.workers:
                self._start_worker(pair)
        log.info("settings reloaded", pairs=sorted(new_pairs), restarted=sorted(changed))
        self.notifier.ready()

    def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping: flushing pending changes", timeout=self.settings.flush_timeout)
        self._stop_workers(list(self.workers), self.settings.flush_timeout)
        self.scheduler.stop()
        self.transfers.shutdown()  # after the flushes: no pass hands it work now
        self.events.close()
        self.hooks.close()
        self.socket.stop()
        self.health.stop()
        log.info("daemon stopped")

    # -- the control surface (control.py) -----------------------------------------------------

    def _workers_named(self, names: list[str]) -> dict[str, PairWorker]:
        """The workers of ``names`` (all when empty); UnknownPairError for a name none runs."""
        workers = dict(self.workers)
        for name in names:
            if name not in workers:
                raise UnknownPairError(f"no pair named {name!r} is running")
        return {n: workers[n] for n in names} if names else workers

    def flush(self, names: list[str]) -> dict[str, FlushRequest]:
        """Ask each pair for a full pass now; a paused pair refuses (PairConflictError)."""
        workers = self._workers_named(names)
        paused = sorted(n for n, w in workers.items() if w.paused)
        if paused:
            raise PairConflictError(f"pair {paused[0]!r} is paused: resume it first")
        requests = {}
        for name, worker in workers.items():
            requests[name] = request = worker.request_flush()
            self._flush_owners[request] = worker
        return requests

    def flush_abandoned(self, name: str, request: FlushRequest) -> bool:
        """Whether nobody will run the pass ``request`` waits for: the daemon stops,
        or the worker that took the request stopped or was replaced (a reload)."""
        owner = self._flush_owners.get(request)
        worker = self.workers.get(name)
        return self._stop.is_set() or worker is None or worker is not owner or not worker.alive

    def pause(self, names: list[str]) -> list[str]:
        workers = self._workers_named(names)
        for name, worker in workers.items():
            self.paused.add(name)
            worker.pause()
            log.info("pair paused", pair=name)
        return sorted(workers)

    def resume(self, names: list[str]) -> list[str]:
        workers = self._workers_named(names)
        for name, worker in workers.items():
            self.paused.discard(name)
            worker.resume()
            log.info("pair resumed", pair=name)
        return sorted(workers)

    def pairs_info(self) -> dict[str, Any]:
        """Every running pair (its settings, source and state) and every refused file."""
        pairs = {}
        for name, worker in list(self.workers.items()):
            settings = worker.pair.as_json()
            if settings.get("webhook_url"):
                settings["webhook_url"] = redact_url(settings["webhook_url"])
            pairs[name] = {
                "settings": settings,
                "source": "pairs_dir" if name in self.dir_pairs else "config",
                "state": worker.status.state,
                "paused": worker.paused,
            }
        return {
            "pairs": pairs,
            "refused": dict(self.refused_pairs),
            "pairs_dir": str(self.pairs_dir.path),
        }

    def add_pair(self, table: dict[str, Any]) -> dict[str, Any]:
        """Write ``table`` as a file of the pairs directory (replacing one of the
        same name) and wait for the main loop to start it."""
        checked = validate_table(table, "pair")
        if not checked.local.is_absolute():
            raise ConfigError(f"pair {checked.name!r}: local must be an absolute path")
        if any(p.name == checked.name for p in self.settings.pairs):
            raise PairConflictError(
                f"pair {checked.name!r} is in the config file: change it there and reload"
            )
        path = self.pairs_dir.write(checked)
        log.info("pair file written", pair=checked.name, file=str(path))
        wanted = self.settings.pair(checked)
        self._wait_for(
            lambda: (w := self.workers.get(checked.name)) is not None and w.pair == wanted
        )
        return wanted.as_json()

    def remove_pair(self, name: str) -> None:
        """Remove the pair's file from the pairs directory and wait for it to stop."""
        if any(p.name == name for p in self.settings.pairs):
            raise PairConflictError(
                f"pair {name!r} is in the config file: remove it there and reload"
            )
        file = self._dir_files.get(name)
        if name not in self.dir_pairs or file is None or not self.pairs_dir.remove(file):
            raise UnknownPairError(f"no pair named {name!r} in {self.pairs_dir.path}")
        self._wait_for(lambda: name not in self.workers, self.settings.flush_timeout + 10)

    def _wait_for(self, done: Callable[[], bool], timeout: float = PAIR_CHANGE_WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.05)

    def _check_pairs_dir(self) -> None:
        """Start, restart and stop the pairs of the pairs directory as its files say."""
        # The settings object is replaced only by a reload: compare their values then.
        reloaded = self.settings is not self._dir_settings_source
        if not self.pairs_dir.changed() and not reloaded:
            return
        self._dir_settings_source = self.settings
        top = self.settings.model_dump(exclude={"pairs"})
        found = self.pairs_dir.read()
        self._dir_files = dict(found.files)
        configured = {p.name for p in self.settings.pairs}
        refused = dict(found.refused)
        wanted: dict[str, Pair] = {}
        for name, table in found.tables.items():
            if name in configured:
                refused[found.files[name].name] = (
                    f"{found.files[name]}: pair {name!r} is in the config file already"
                )
            else:
                wanted[name] = self.settings.pair(table)
        for file, reason in sorted(refused.items()):
            if self.refused_pairs.get(file) != reason:
                log.error("pair file refused", file=file, error=reason)
                self.events.publish(
                    {
                        "type": "pair",
                        "change": "refused",
                        "file": file,
                        "error": reason,
                        "time": time.time(),
                    }
                )
        self.refused_pairs = refused
        settings_changed = top != self._dir_settings
        self._dir_settings = top
        gone = [
            name
            for name, pair in self.dir_pairs.items()
            if settings_changed or wanted.get(name) != pair
        ]
        self._stop_workers([n for n in gone if n in self.workers], self.settings.flush_timeout)
        for name in gone:
            del self.dir_pairs[name]
            if name not in wanted:
                self.paused.discard(name)
                self.hooks.forget(name)
                log.info("pair removed", pair=name)
                self.events.publish(
                    {"type": "pair", "change": "removed", "pair": name, "time": time.time()}
                )
        for name, pair in wanted.items():
            if name not in self.workers:
                self.dir_pairs[name] = pair
                self._start_worker(pair)
                log.info("pair added", pair=name, file=str(found.files[name]))
                self.events.publish(
                    {"type": "pair", "change": "added", "pair": name, "time": time.time()}
                )

    # -- signals ------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)

    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            # A second signal means "now": skip the flush and die of the signal,
            # as if it had never been handled (a shell and Kubernetes show 128 + N).
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
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
