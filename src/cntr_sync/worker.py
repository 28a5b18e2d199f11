"""One pair kept in sync: the per-pair half of the daemon.

Owns: ``PairWorker``, the decisions of one pair (observers first, then a full
reconcile, then passes on quiet periods, max delays, rescans and remote polls;
backoff after failures; the bounded flush on stop) taken in turns: ``step`` is
one turn as the daemon's scheduler runs it on a pool thread, and says when the
next is due; the ``PairStatus`` it reports; and its progress stamp
(``progress_at``): every turn, scanned entry, request, transfer chunk and
finished action moves it, so the daemon can tell a slow pair from a hung one.

The control surface's half lives here too, at the level of decisions only: a
flush asked for (``request_flush``: the waiters of one ``FlushRequest`` are
served by the next full pass, whoever runs it), the pause flag (a paused pair
keeps collecting changes and runs no pass), and ``on_event``, told of each pass's
start and end and of each action the journal records.

Must not: decide what to sync (``engine`` and ``plan`` do), talk HTTP to the
API itself, own a thread, or touch process-level things (signals, systemd
notifications, the health endpoint, other pairs, the pool; ``daemon`` and
``scheduler`` own those). Nothing a worker meets may stop the process. Each
pass is the same ``Engine.run_pass`` as the one-shot command.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from typing import Any, Literal, Protocol

from cntr_sync.config import Settings
from cntr_sync.engine import Engine
from cntr_sync.errors import CntrSyncError, StoppedError, redact
from cntr_sync.events import action_event, pass_end_event, pass_start_event
from cntr_sync.flush_request import FlushRequest
from cntr_sync.journal import JournalEntry
from cntr_sync.logs import get_logger
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair
from cntr_sync.pair_status import PairStatus, RemotePoll, TransferLog, pass_summary
from cntr_sync.refusals import RefusalWatch
from cntr_sync.rest import RequestOutcome
from cntr_sync.result import PassResult
from cntr_sync.session import PairSession
from cntr_sync.watch import ChangeTracker, ObserverHub, Watcher

log = get_logger("cntr_sync.worker")

# "overdue": changes kept coming past max_delay, so even files written a moment
# ago are sent now (a log file that never goes quiet still gets mirrored).
# "flush": the last pass on stop; "requested": a full pass the control surface asked for.
PassReason = Literal["initial", "changes", "overdue", "rescan", "poll", "flush", "requested"]

BACKOFF_MIN = 1.0
BACKOFF_MAX = 300.0
# A push pair without keepalive stops polling an idle container this long before
# it would expire, so that an unused container is allowed to expire.
EXPIRY_MARGIN = 120.0
POLL_INTERVAL_FOR_WATCH_POLL = 1.0
# The least time between a pass that deferred files and the next one.
MIN_PASS_GAP = 1.0


def _no_event(event: dict[str, Any]) -> None:
    return


class PassRunner(Protocol):
    """What a worker runs its passes with: an ``Engine`` (tests pass a fake)."""

    def run_pass(
        self,
        *,
        defer_unsettled: bool,
        keep_grown_uploads: bool,
        deadline: float | None,
        cancel: threading.Event | None,
        paths: Collection[str] | None,
        poll: bool,
    ) -> PassResult: ...

    def has_local_changes(self) -> bool: ...


class TurnRunner(Protocol):
    """What gives a worker its turns: the daemon's ``scheduler.Scheduler``."""

    def add(self, job: PairWorker, delay: float = 0.0) -> None: ...

    def wake(self, job: PairWorker, *, first: bool = False) -> None: ...


class PairWorker:
    """Keeps one pair in sync, a turn at a time. Nothing it meets stops the process."""

    def __init__(
        self,
        pair: Pair,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        engine: Callable[[], PassRunner] | None = None,
        hub: ObserverHub | None = None,
        transfers: Executor | None = None,
    ) -> None:
        """``engine``: what gives the pass runner before each pass (by default the
        pair's ``PairSession``, opened on first use and again after a failed pass).
        ``hub``: the observers the daemon's pairs share (by default one of its own);
        ``transfers``: the pool their passes' actions share (by default one a pass)."""
        self.pair = pair
        self._transfer_executor = transfers
        self.settings = settings
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
            hub=hub,
        )
        self._stop = threading.Event()
        self._flush_deadline: float | None = None
        self.cancel = threading.Event()
        self._started = False
        # Set while a turn runs: only then can the pair be hung (a waiting pair is not).
        self._in_turn = False
        self._finished = threading.Event()
        self._session: PairSession | None = None
        # Kept for the pair's life: a failed pass opens a new session and client,
        # and a run of refusals (429, 503) must not start counting again with it.
        self._refusals = RefusalWatch()
        self._engine = engine or self._session_engine
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_rescan = clock()
        self._last_poll = clock()
        self._last_activity = clock()
        self.progress_at = clock()
        self._transfers = TransferLog(pair.name)
        # Control: the flush asked for and not yet taken by a pass, the pause flag
        # (the daemon sets it), and who hears of passes and actions (the event bus).
        self._flush_lock = threading.Lock()
        self._flush_waiting: FlushRequest | None = None
        self.paused = False
        self.on_event: Callable[[dict[str, Any]], None] = _no_event

    # -- control -----------------------------------------------------------------------

    def request_flush(self) -> FlushRequest:
        """Ask for a full pass now (push, and pull per direction); the request is
        shared with every ask that comes before a pass takes it."""
        with self._flush_lock:
            if self._flush_waiting is None:
                self._flush_waiting = FlushRequest()
            request = self._flush_waiting
        self.tracker.wake()
        return request

    def pause(self) -> None:
        """Run no pass until ``resume``; changes are still collected."""
        self.paused = self.status.paused = True
        self._metrics.set_paused(self.pair.name, True)

    def resume(self) -> None:
        """Passes again; the next one scans and lists everything, since what the
        events named while paused may not be all (the model's side was not polled)."""
        self.paused = self.status.paused = False
        self._metrics.set_paused(self.pair.name, False)
        self.tracker.mark_full()
        self.tracker.wake()  # mark_full wakes the pair only if nothing was pending

    # -- lifecycle ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.pair.name

    def start(self, turns: TurnRunner) -> None:
        """Take turns from ``turns`` from now on: the first at once, the next when
        ``step`` says, or sooner when a change (or ``stop``) wakes the worker."""
        # A stopping pair goes first: its flush has a deadline.
        self.tracker.listener = lambda: turns.wake(self, first=self._stop.is_set())
        turns.add(self)

    def stop(self, flush_deadline: float) -> None:
        """Ask the worker to flush pending changes until ``flush_deadline``, then end."""
        self._flush_deadline = flush_deadline
        self._stop.set()
        self.tracker.wake()

    def join(self, timeout: float) -> bool:
        """Wait until the worker has ended (its last turn flushed and closed)."""
        return self._finished.wait(max(0.0, timeout))

    @property
    def alive(self) -> bool:
        """Not ended yet (waiting for a turn counts)."""
        return not self._finished.is_set()

    def beat(self) -> None:
        """A sign of progress (called from the pass's threads too): moves ``progress_at``."""
        self.progress_at = self._clock()

    def stalled_for(self) -> float:
        """Seconds since the last sign of progress while a turn runs; 0 between turns
        (a pair waiting for its turn or its next change is not hung)."""
        if not self._in_turn:
            return 0.0
        return max(0.0, self._clock() - self.progress_at)

    # -- turns ------------------------------------------------------------------------

    def step(self) -> float | None:
        """One turn as the scheduler runs it: seconds until the next turn (0: another
        at once, after the pairs waiting meanwhile), or None once the worker has ended."""
        self.progress_at = self._clock()
        self._in_turn = True
        try:
            if self._stop.is_set():
                self._finish()
                return None
            if not self._started:
                self._started = True
                log.info("pair starting", pair=self.pair.name, local=str(self.pair.local))
                # Observers first, then the full pass: no change between the two is missed.
                self._start_watcher()
            if self.turn() is not None:
                return 0.0
            return self.seconds_to_wait()
        finally:
            self._in_turn = False

    def _finish(self) -> None:
        try:
            if self._started:
                self._flush()
        finally:
            self.watcher.stop()
            self._close_session()
            self.status.state = "stopped"
            if self._started:
                log.info("pair stopped", pair=self.pair.name)
            self._finished.set()

    def _start_watcher(self) -> None:
        try:
            self.watcher.start()
        except CntrSyncError as exc:
            log.warning(
                "watching failed; relying on rescans", pair=self.pair.name, error=exc.message
            )
        self.status.watch = self.watcher.kind

    def turn(self) -> PassReason | None:
        """One turn, without its wait: note the observer's state, then run the pass
        that is due, if any, and say which (a rescan may find nothing to do)."""
        self.beat()
        self._supervise()
        reason = self._due()
        if reason is not None:
            self._pass(reason)
        return reason

    def _supervise(self) -> None:
        # The daemon's loop checks every watcher (ObserverHub.check); a restart
        # asks for a full rescan, which wakes this pair for a turn.
        if self.watcher.restarts != self.status.observer_restarts:
            self.status.observer_restarts = self.watcher.restarts
            log.warning("observer died and was restarted", pair=self.pair.name)
        self.status.watch = self.watcher.kind
        self.status.pending_changes = self.tracker.pending
        self._metrics.set_pending(self.pair.name, self.tracker.pending)
        polling: RemotePoll = "on" if self._container_wanted(self._clock()) else "paused"
        if polling != self.status.remote_poll:
            self.status.remote_poll = polling
            if polling == "paused":
                log.info(
                    "remote polls paused: the idle container is left to expire", pair=self.pair.name
                )
            else:
                log.info("remote polls resumed", pair=self.pair.name)

    def _due(self) -> PassReason | None:
        if self.paused:
            return None
        if self._flush_waiting is not None:
            return "requested"  # asked for now: no quiet period, no backoff
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
        if self._poll_due(now):
            return "poll"
        return None

    def _poll_due(self, now: float) -> bool:
        return now - self._last_poll >= self._poll_interval() and self._container_wanted(now)

    def _poll_interval(self) -> float:
        interval = self.pair.remote_poll_interval
        if self.pair.keepalive:
            # A call well within the expiry window keeps the container alive.
            interval = min(interval, self.pair.expires_after_minutes * 60 / 2)
        return interval

    def _container_wanted(self, now: float) -> bool:
        """Whether the remote polls go on. A pair that pulls always polls: a poll is
        how the model's writes are seen (and the model's own use keeps the container
        alive). A push pair without keepalive stops touching a container nobody has
        used for nearly its expiry, so that it can expire (a later change recreates
        and refills it)."""
        wanted_until = self._container_wanted_until()
        return wanted_until is None or now < wanted_until

    def _container_wanted_until(self) -> float | None:
        """When the remote polls pause (None: never, for this pair)."""
        if self.pair.keepalive or self.pair.direction != "push":
            return None
        return self._last_activity + self.pair.expires_after_minutes * 60 - EXPIRY_MARGIN

    def seconds_to_wait(self) -> float:
        """How long the worker may wait for a change before its next turn: until the
        earliest of its own deadlines. Nothing else wakes an idle pair (a change, a
        stop, a flush asked for or a resume does, through its tracker), so 500 idle
        pairs cost no periodic turns."""
        if self.paused:
            return BACKOFF_MAX  # nothing is due until resumed (which wakes it)
        if self._flush_waiting is not None:
            return 0.0
        now = self._clock()
        deadlines = [self._retry_at, self._last_rescan + self.pair.rescan_interval]
        if self._container_wanted(now):
            deadlines.append(self._last_poll + self._poll_interval())
            # The moment the polls pause is shown in /status then, not at the next pass.
            wanted_until = self._container_wanted_until()
            if wanted_until is not None:
                deadlines.append(wanted_until)
        first, last = self.tracker.first_at, self.tracker.last_at
        if first is not None and last is not None:
            deadlines += [last + self.pair.quiet_period, first + self.pair.max_delay]
        return min((d - now for d in deadlines if d > now), default=MIN_PASS_GAP)

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

    def _session_engine(self) -> Engine:
        if self._session is None:
            self._session = PairSession(
                self.settings,
                self.pair,
                on_request=self._observe,
                tick=self.beat,
                # Past the flush bound, a retry or pacing wait ends at once: a stop
                # is never held up by a server's Retry-After.
                stop=self.cancel,
                refusals=self._refusals,
                transfer_executor=self._transfer_executor,
            )
        else:
            self._session.refresh_client()  # re-reads api_key_file
        engine = self._session.engine(progress=self._transfers)
        engine.journal_listener = self._journal_entry
        return engine

    def _journal_entry(self, entry: JournalEntry) -> None:
        self.on_event(action_event(self.pair.name, entry))

    def _observe(self, outcome: RequestOutcome) -> None:
        self._metrics.record_request(outcome.operation, outcome.status)

    def _run_pass(self, reason: PassReason) -> PassResult | None:
        """Run one pass; the flush waiters it takes (a requested pass takes them
        all) and the event listener hear how it ended."""
        flushes: FlushRequest | None = None
        if reason == "requested":
            with self._flush_lock:
                flushes, self._flush_waiting = self._flush_waiting, None
        self.on_event(pass_start_event(self.pair.name, reason))
        result: PassResult | None = None
        error: CntrSyncError | None = None
        try:
            result, error = self._carry_pass(reason)
        finally:
            if flushes is not None:
                if result is None and error is None:
                    error = StoppedError("the pass was stopped before it ended")
                flushes.complete(result, error)
            label = self.status.last_result if result is not None or error else "stopped"
            summary = self.status.last_summary if result is not None else {}
            self.on_event(pass_end_event(self.pair.name, reason, label, result, error, summary))
        return result

    def _carry_pass(self, reason: PassReason) -> tuple[PassResult | None, CntrSyncError | None]:
        # When the oldest pending change happened: a pass that defers or fails
        # puts it back, so max_delay still counts from the first change.
        pending_since = self.tracker.first_at
        taken_paths, taken_full = self.tracker.take()
        self.status.state = "syncing"
        started = self._clock()
        # Changes the events named: the engine scans only them when it can trust its
        # index; start-up and rescans scan everything and list the container, a poll
        # lists what the engine decides (the newest files, or all of them).
        # A poll that is due rides on this pass: under steady changes the poll
        # itself would never come, and with it what the model writes. A poll covers
        # the paths events named (none, or some that came as it started); when
        # anything may have changed, its pass is the full one. A requested pass is
        # full: it lists, so the model's files come home too.
        due_poll = reason == "poll" or (
            reason in ("changes", "overdue") and self._poll_due(started)
        )
        incremental = reason in ("flush", "changes", "overdue", "poll")
        only = self._relpaths(taken_paths) if incremental and not taken_full else None
        poll = due_poll and only is not None
        if poll:
            self._last_poll = started
        try:
            engine = self._engine()
            # Overdue, flush and requested passes send what they see, as it is now.
            must_go_now = reason in ("overdue", "flush", "requested")
            result = engine.run_pass(
                cancel=self.cancel,
                defer_unsettled=not must_go_now,
                keep_grown_uploads=must_go_now,
                deadline=self.settings.pass_deadline,
                paths=only or None,
                # The engine decides what a poll lists: the newest files, or all.
                poll=poll,
            )
        except StoppedError:
            # Stopped past the flush bound while it waited on the server: cut short,
            # not failed (no backoff, no error); what it took is pending again.
            if taken_paths or taken_full:
                self.tracker.mark_full(since=pending_since)
            self.status.state = "idle"
            log.info("sync pass stopped", pair=self.pair.name, reason=reason)
            return None, None
        except CntrSyncError as exc:
            self._failed(
                reason,
                exc.message,
                started,
                dirty=bool(taken_paths) or taken_full,
                pending_since=pending_since,
            )
            return None, exc
        except Exception as exc:  # a bug must not end the pair's turns
            log.exception("pass crashed", pair=self.pair.name)
            message = f"unexpected {type(exc).__name__}: {redact(str(exc))}"
            self._failed(reason, message, started, dirty=True, pending_since=pending_since)
            return None, CntrSyncError(message)
        self._succeeded(reason, result, started, pending_since=pending_since)
        return result, None

    @property
    def _root_prefix(self) -> str:
        """The root as event paths begin with it, slash included."""
        return os.fspath(self.pair.local).rstrip("/") + "/"

    def _relpaths(self, paths: frozenset[str]) -> frozenset[str] | None:
        """The event paths relative to the root, or None when one is not below it
        (the root itself included: that takes a full pass)."""
        prefix = self._root_prefix
        if not all(path.startswith(prefix) for path in paths):
            return None
        return frozenset(path[len(prefix) :] for path in paths)

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
        if result.listed:  # a full pass: it listed and scanned everything
            self._last_poll = self._last_rescan = self._clock()
            status.conflict_copies = [
                {"path": c.path, "copy": c.copy, "holds": c.holds} for c in result.open_conflicts
            ]
        self._backoff = 0.0
        self._retry_at = 0.0
        if result.deferred or result.cancelled:
            # Files still being written, or a cut-short pass: try again after a
            # quiet period. After an overdue pass, max_delay counts afresh (else
            # every later pass would be overdue at once and spin), and no pass
            # comes sooner than MIN_PASS_GAP after one that deferred.
            since = None if reason == "overdue" else pending_since
            if result.cancelled:
                self.tracker.mark_full(since=since)
            else:
                # The pass named its deferred files: only they wait (after a full
                # pass too: the index it leaves is trusted, no listing is needed).
                prefix = self._root_prefix
                self.tracker.mark_again((prefix + r for r in result.deferred), since=since)
            self._retry_at = self._clock() + max(MIN_PASS_GAP, self.pair.quiet_period)
        moved = result.changed_anything
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
        status.last_summary = pass_summary(reason, result)
        self._metrics.record_pass(
            self.pair.name,
            label,
            self._clock() - started,
            uploaded_files=result.uploaded + result.replaced,
            deleted_files=result.deleted,
            uploaded_bytes=result.bytes_uploaded,
            downloaded_files=result.downloaded,
            deleted_local_files=result.local_deleted,
            downloaded_bytes=result.bytes_downloaded,
            conflicts=result.conflicts,
        )
        self._metrics.set_pair_up(self.pair.name, not result.failures)
        if result.container_recreated:
            self._metrics.record_recreation(self.pair.name)
        if self._transfers.unlisted():
            log.info("more transfers", pair=self.pair.name, count=self._transfers.unlisted())
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
        self._close_session()

    def _schedule_retry(self) -> None:
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
        self._retry_at = self._clock() + self._backoff * random.uniform(0.8, 1.2)

    def _flush(self) -> None:
        """On stop: one last pass for pending changes, if the flush bound allows."""
        deadline = self._flush_deadline
        if self.paused:
            return  # a paused pair transfers nothing, on stop either
        if deadline is None or not self.status.first_attempt_done or self._clock() >= deadline:
            return
        # The last events may still be on their way: the scan decides, not the events.
        if not self.tracker.pending and not self._local_changes():
            return
        log.info("flushing pending changes before stopping", pair=self.pair.name)
        # Files written a moment ago are sent too: there is no later pass to wait for.
        self._run_pass("flush")

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # noqa: BLE001 - closing must not end the pair's turns
                log.warning(
                    "closing the pair's session failed", pair=self.pair.name, error=str(exc)
                )
