"""Turns of many pairs on a few threads: the daemon's scheduler.

Owns: ``TurnQueue``, the bookkeeping (each job's next turn in one heap, the
running set and its bound; a due job waits behind every job that was due
before it, so a pair whose pass just ended goes behind the pairs that waited
meanwhile), and ``Scheduler``, which runs it: one dispatcher thread sleeps
until the earliest turn or a wake-up, and hands due jobs to a pool of at most
``max_parallel`` daemon threads (started as they are needed; a hung pass must
not hold the process at exit). A job whose turn raised is rescheduled, not
lost.

Must not: decide when a pair's pass is due or what it does (the job's
``step`` says, ``worker.PairWorker``), or know what a pair is. An idle
process costs nothing here but the earliest timer: no per-job periodic
wake-ups.
"""

from __future__ import annotations

import heapq
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from cntr_sync.logs import get_logger

__all__ = ["CRASH_RETRY", "Job", "Scheduler", "TurnQueue"]

log = get_logger("cntr_sync.scheduler")

# A job whose turn raised gets its next turn this much later.
CRASH_RETRY = 1.0
# The dispatcher looks at the clock at least this often, so that a clock that
# jumps (an injected one, in tests) is noticed; a monotonic one never needs it.
LONGEST_SLEEP = 30.0


class Job(Protocol):
    """What the scheduler runs: a pair's worker."""

    @property
    def name(self) -> str: ...

    def step(self) -> float | None:
        """One turn: seconds until the next (0: as soon as it is this job's turn
        again), or None when the job has ended."""
        ...


class TurnQueue:
    """Which job runs next, on a clock the caller passes in (no threads, no clock
    of its own: the fairness tests drive it with plain numbers).

    ``take(now)`` gives the job that has been due the longest, while fewer than
    ``capacity`` run. A job is never running twice, and a wake-up that comes
    while it runs is kept for when it ends.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._heap: list[tuple[float, int, Job]] = []
        self._order = itertools.count()
        self._entry: dict[Job, tuple[float, int]] = {}  # a waiting job's live heap entry
        self._running: set[Job] = set()
        self._woken: dict[Job, float] = {}  # running jobs woken meanwhile, and when

    def add(self, job: Job, at: float) -> None:
        """Schedule ``job``'s next turn at ``at`` (replacing the one it had)."""
        if job in self._running:
            self._woken[job] = min(at, self._woken.get(job, at))
            return
        entry = (at, next(self._order))
        self._entry[job] = entry
        heapq.heappush(self._heap, (*entry, job))

    def wake(self, job: Job, now: float, *, first: bool = False) -> None:
        """Bring ``job``'s next turn forward to ``now`` (a change), or with ``first``
        ahead of every due job (a stop: its flush has a deadline)."""
        at = -math.inf if first else now
        entry = self._entry.get(job)
        if entry is not None and entry[0] <= at:
            return  # already due: it keeps its place in the line
        if entry is None and job not in self._running:
            return  # ended, or never added
        self.add(job, at)

    def take(self, now: float) -> Job | None:
        """The job due longest, if one is due and a slot is free; it is running then."""
        if len(self._running) >= self.capacity:
            return None
        while self._heap:
            at, order, job = self._heap[0]
            if self._entry.get(job) != (at, order):
                heapq.heappop(self._heap)  # replaced by a later add
                continue
            if at > now:
                return None
            heapq.heappop(self._heap)
            del self._entry[job]
            self._running.add(job)
            return job
        return None

    def done(self, job: Job, next_at: float | None) -> None:
        """``job``'s turn ended; its next turn at ``next_at`` (None: it has ended),
        or sooner if it was woken meanwhile."""
        self._running.discard(job)
        woken = self._woken.pop(job, None)
        if next_at is None:
            return
        self.add(job, next_at if woken is None else min(next_at, woken))

    def remove(self, job: Job) -> None:
        """Forget a waiting job (a running one ends through ``done``)."""
        self._entry.pop(job, None)

    def next_due(self) -> float | None:
        """When the earliest waiting turn is due (None: none waits)."""
        while self._heap:
            at, order, job = self._heap[0]
            if self._entry.get(job) == (at, order):
                return at
            heapq.heappop(self._heap)
        return None

    @property
    def running(self) -> frozenset[Job]:
        return frozenset(self._running)

    @property
    def full(self) -> bool:
        return len(self._running) >= self.capacity

    def __contains__(self, job: object) -> bool:
        return job in self._entry or job in self._running


class Scheduler:
    """Runs jobs' turns when they are due, at most ``max_parallel`` at once."""

    def __init__(
        self,
        max_parallel: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        crash_retry: float = CRASH_RETRY,
    ) -> None:
        self.max_parallel = max(1, max_parallel)
        self._clock = clock
        self._crash_retry = crash_retry
        self._queue = TurnQueue(self.max_parallel)
        self._cond = threading.Condition()
        self._closed = False
        self._handoff: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._pool: list[threading.Thread] = []
        self._idle = 0
        self._dispatcher = threading.Thread(target=self._dispatch, name="scheduler", daemon=True)

    # -- what the daemon calls --------------------------------------------------------------

    def start(self) -> None:
        self._dispatcher.start()

    def add(self, job: Job, delay: float = 0.0) -> None:
        """Give ``job`` turns from now (its first one ``delay`` seconds from now)."""
        with self._cond:
            self._queue.add(job, self._clock() + delay)
            self._cond.notify()

    def wake(self, job: Job, *, first: bool = False) -> None:
        """``job`` should look again now (its tracker turned dirty, a flush), or
        before every other due job (``first``: a stop, whose flush has a deadline)."""
        with self._cond:
            self._queue.wake(job, self._clock(), first=first)
            self._cond.notify()

    def resize(self, max_parallel: int) -> None:
        """Run at most ``max_parallel`` turns at once from now on (a reload)."""
        with self._cond:
            self.max_parallel = self._queue.capacity = max(1, max_parallel)
            self._cond.notify()

    def remove(self, job: Job) -> None:
        """No more turns for a waiting ``job`` (a running one ends through its step)."""
        with self._cond:
            self._queue.remove(job)

    def running(self) -> frozenset[Job]:
        """The jobs whose turn is under way."""
        with self._cond:
            return self._queue.running

    def scheduled(self, job: Job) -> bool:
        with self._cond:
            return job in self._queue

    @property
    def alive(self) -> bool:
        return self._dispatcher.is_alive()

    @property
    def threads(self) -> int:
        """Pool threads started so far (at most ``max_parallel``)."""
        return len(self._pool)

    def stop(self, timeout: float = 5.0) -> None:
        """End the dispatcher and the idle pool threads. A turn still running (a
        hung pass) is left behind on its daemon thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._dispatcher.is_alive():
            self._dispatcher.join(timeout)
        for _thread in self._pool:
            self._handoff.put(None)

    # -- the dispatcher and the pool -----------------------------------------------------------

    def _dispatch(self) -> None:
        with self._cond:
            while not self._closed:
                try:
                    self._hand_out()
                    self._cond.wait(self._sleep())
                except Exception:  # the dispatcher must outlive a bug
                    log.exception("scheduler error")
                    self._cond.wait(CRASH_RETRY)

    def _hand_out(self) -> None:
        """Give every due job a pool thread, while slots are free (lock held)."""
        now = self._clock()
        while (job := self._queue.take(now)) is not None:
            if self._idle == 0 and len(self._pool) < self.max_parallel:
                thread = threading.Thread(
                    target=self._serve, name=f"pass-{len(self._pool) + 1}", daemon=True
                )
                self._pool.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
            self._handoff.put(job)

    def _sleep(self) -> float | None:
        """How long the dispatcher may sleep: until the earliest turn, or until a
        slot frees (a notify) when all are taken."""
        if self._queue.full:
            return None
        due = self._queue.next_due()
        if due is None:
            return LONGEST_SLEEP
        return min(LONGEST_SLEEP, max(0.0, due - self._clock()))

    def _serve(self) -> None:
        while (job := self._handoff.get()) is not None:
            next_in: float | None = self._crash_retry
            try:
                next_in = job.step()
            except Exception:  # a pair's bug must not end the others' turns
                log.exception("a pair's turn crashed; it gets another", pair=job.name)
            finally:
                with self._cond:
                    now = self._clock()
                    self._queue.done(job, None if next_in is None else now + max(0.0, next_in))
                    self._idle += 1
                    self._cond.notify()
