"""The daemon's scheduler: fair turns, a bounded pool, wake-ups on change.

Fairness is checked on ``TurnQueue`` with a simulated clock (each turn takes a
scripted number of seconds; no threads, exact times). The ``Scheduler`` itself
is checked with real threads for what only threads show: at most
``max_parallel`` turns at once, a change waking a pair whose next turn is far
away, a crashed turn coming back, and a pair's stall counted only while its
turn runs. Every wait is bounded; no figure is timed.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cntr_sync.config import Settings
from cntr_sync.emulator import ManualClock
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair
from cntr_sync.result import PassResult
from cntr_sync.scheduler import Scheduler, TurnQueue
from cntr_sync.worker import PairWorker

WAIT = 10.0  # generous bound for a thread to get its turn on a loaded machine


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(0.005)


# -- fairness, on a simulated clock --------------------------------------------------------


@dataclass(eq=False)
class ScriptedJob:
    """A pair whose turns take the scripted seconds; after each it wants another
    ``gap`` seconds later (0: at once, as after a pass), and ends after its script."""

    name: str
    durations: list[float]
    gap: float = 0.0
    turns: list[tuple[float, float]] = field(default_factory=list)  # (start, end)

    def step(self) -> float | None:  # the simulation calls run() instead
        raise AssertionError("not run by threads here")


def simulate(capacity: int, jobs: list[ScriptedJob], until: float) -> list[tuple[float, str]]:
    """Run ``jobs`` on a TurnQueue of ``capacity`` slots, event by event; returns
    (start time, name) of every turn, and checks the bound at every moment."""
    turns = TurnQueue(capacity)
    for job in jobs:
        turns.add(job, 0.0)
    started: list[tuple[float, str]] = []
    ending: list[tuple[float, int, ScriptedJob]] = []  # (end time, order, job)
    now, order = 0.0, 0
    for _event in range(100_000):  # bounded: a queue that never empties fails below
        if now > until:
            break
        while (job := turns.take(now)) is not None:
            duration = job.durations[len(job.turns)]
            job.turns.append((now, now + duration))
            started.append((now, job.name))
            order += 1
            heapq.heappush(ending, (now + duration, order, job))
        assert len(turns.running) <= capacity
        # A due job waits for a slot while all are taken: then only an end moves time.
        due = None if turns.full else turns.next_due()
        moments = [t for t in (due, ending[0][0] if ending else None) if t is not None]
        if not moments:
            return started
        now = max(now, min(moments))
        while ending and ending[0][0] <= now:
            _end, _order, job = heapq.heappop(ending)
            more = len(job.turns) < len(job.durations)
            turns.done(job, now + job.gap if more else None)
    pytest.fail(f"the simulation did not end by t={until}")


def test_a_huge_first_sync_does_not_starve_the_small_pairs() -> None:
    """One slot. The huge pair's first sync comes in turns of 100 s (each one wants
    another at once, as a pass that deferred or was cut short does); nine small
    pairs, due at the same moment, get their turns between the huge one's, not
    after all of them."""
    huge = ScriptedJob("huge", [100.0] * 5)
    small = [ScriptedJob(f"small{n}", [1.0] * 3, gap=0.0) for n in range(9)]
    started = simulate(1, [huge, *small], until=10_000)

    order = [name for _at, name in started]
    # The huge pair was added first, so it went first: its pass runs to its end...
    assert order[0] == "huge"
    # ...then every small pair, each waiting since t=0, before the huge one's next turn.
    assert sorted(order[1:10]) == sorted(job.name for job in small)
    assert [at for at, _ in started[1:10]] == [100.0 + n for n in range(9)]
    # And so on, turn by turn: no pair waits more than one turn of every other.
    assert order[10] == "huge"
    assert all(len(job.turns) == 3 for job in small)
    assert len(huge.turns) == 5


def test_with_two_slots_the_small_pairs_go_on_beside_the_huge_pass() -> None:
    huge = ScriptedJob("huge", [100.0, 100.0])
    small = [ScriptedJob(f"small{n}", [1.0] * 5, gap=10.0) for n in range(5)]
    simulate(2, [huge, *small], until=10_000)

    huge_start, huge_end = huge.turns[0]
    during = [start for job in small for start, _end in job.turns if start < huge_end]
    # Every small pair had its first sync and its next turns while the huge one ran.
    assert all(job.turns[0][0] < 10.0 for job in small)
    assert len(during) == len(small) * 5
    assert huge_start == 0.0


def test_the_pair_waiting_longest_goes_first_and_a_wake_keeps_its_place() -> None:
    turns = TurnQueue(1)
    early, late, woken = (ScriptedJob(name, [1.0]) for name in ("early", "late", "woken"))
    turns.add(late, 5.0)
    turns.add(early, 2.0)
    turns.add(woken, 100.0)
    turns.wake(woken, 3.0)  # a change at t=3: due now, behind the one due since t=2
    turns.wake(early, 4.0)  # already due since t=2: keeps its place
    assert turns.take(1.0) is None  # nothing due yet
    assert turns.take(6.0) is early
    assert turns.take(6.0) is None  # one slot, taken
    turns.done(early, None)
    assert turns.take(6.0) is woken
    turns.done(woken, None)
    stopping = ScriptedJob("stopping", [1.0])
    turns.add(stopping, 50.0)
    turns.wake(stopping, 6.0, first=True)  # a stop: ahead of every due job
    assert turns.take(6.0) is stopping
    turns.done(stopping, None)
    assert turns.take(6.0) is late


def test_a_wake_while_running_brings_the_next_turn_forward() -> None:
    turns = TurnQueue(2)
    job = ScriptedJob("docs", [1.0])
    turns.add(job, 0.0)
    assert turns.take(0.0) is job
    assert turns.take(0.0) is None  # never running twice
    turns.wake(job, 0.5)  # a change while its pass runs
    turns.done(job, 60.0)  # the job itself would wait a minute
    assert turns.next_due() == 0.5
    ended = ScriptedJob("ended", [1.0])
    turns.add(ended, 0.0)
    assert turns.take(0.0) is ended
    turns.done(ended, None)
    turns.wake(ended, 1.0)  # an ended job is not brought back by a late wake
    assert ended not in turns


# -- the threads -----------------------------------------------------------------------------


class BlockingJob:
    """Each turn blocks until released; counts how many run at once."""

    def __init__(self, name: str, gate: threading.Event, gauge: Gauge) -> None:
        self.name = name
        self.gate = gate
        self.gauge = gauge
        self.turns = 0

    def step(self) -> float | None:
        with self.gauge.inside():
            self.gate.wait(WAIT)
            self.turns += 1
        return None


class Gauge:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def inside(self) -> Gauge:
        return self

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_exc: object) -> None:
        with self.lock:
            self.now -= 1


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    made = Scheduler(3, crash_retry=0.01)
    made.start()
    yield made
    made.stop()


def test_no_more_than_max_parallel_turns_run_at_once(scheduler: Scheduler) -> None:
    gate, gauge = threading.Event(), Gauge()
    jobs = [BlockingJob(f"p{n}", gate, gauge) for n in range(10)]
    for job in jobs:
        scheduler.add(job)
    wait_until(lambda: gauge.now == 3, "three turns under way")
    time.sleep(0.05)  # room for a fourth, were the bound not kept
    assert gauge.now == 3 and len(scheduler.running()) == 3
    gate.set()
    wait_until(lambda: all(job.turns == 1 for job in jobs), "every job's turn")
    assert gauge.most == 3
    assert scheduler.threads == 3  # the pool never grew past its bound
    wait_until(lambda: not scheduler.running(), "the pool to be idle")
    assert not any(scheduler.scheduled(job) for job in jobs)  # each ended (step gave None)


class CrashingJob:
    name = "crashes"

    def __init__(self) -> None:
        self.turns = 0

    def step(self) -> float | None:
        self.turns += 1
        if self.turns == 1:
            raise RuntimeError("a bug in a turn")
        return None


def test_a_turn_that_raised_is_given_another(scheduler: Scheduler) -> None:
    job = CrashingJob()
    scheduler.add(job)
    wait_until(lambda: job.turns == 2, "the turn after the crash")
    wait_until(lambda: not scheduler.scheduled(job), "the job to end")
    assert scheduler.alive


class RecordingEngine:
    """Records the paths of each pass (None: a full one)."""

    def __init__(self) -> None:
        self.passes: list[frozenset[str] | None] = []

    def run_pass(
        self,
        *,
        defer_unsettled: bool,
        keep_grown_uploads: bool,
        deadline: float | None,
        cancel: threading.Event | None,
        paths: Collection[str] | None,
        poll: bool = False,
    ) -> PassResult:
        self.passes.append(None if paths is None else frozenset(paths))
        return PassResult(container_id="cntr_1", listed=paths is None)

    def has_local_changes(self) -> bool:
        return False


def test_a_change_wakes_a_pair_whose_next_turn_is_far_away(
    scheduler: Scheduler, tmp_path: Path
) -> None:
    pair = Pair(
        name="docs",
        local=tmp_path,
        container="box",
        quiet_period=0.01,
        max_delay=10.0,
        rescan_interval=100_000.0,
        remote_poll_interval=100_000.0,
        watch="off",
    )
    engine = RecordingEngine()
    worker = PairWorker(pair, Settings(), Metrics(), engine=lambda: engine)
    worker.start(scheduler)
    wait_until(lambda: worker.status.first_sync_done, "the first pass")
    time.sleep(0.05)
    assert engine.passes == [None]  # idle: no turn until a deadline a day away, or a change

    worker.tracker.mark(str(tmp_path / "a.txt"))
    wait_until(lambda: len(engine.passes) == 2, "the pass the change asked for")
    assert engine.passes[1] == {"a.txt"}

    worker.stop(time.monotonic() + 5.0)
    assert worker.join(WAIT)
    assert worker.status.state == "stopped"
    wait_until(lambda: not scheduler.scheduled(worker), "the worker to leave the scheduler")


def test_a_pair_counts_as_stalled_only_while_its_turn_runs(tmp_path: Path) -> None:
    """Between turns a pair waits (for its deadline or a slot): not hung. During a
    turn, a pass that shows no progress is (the daemon's liveness reads this)."""
    clock = ManualClock(start=0.0)
    seen: list[float] = []

    class HangingEngine(RecordingEngine):
        def run_pass(self, **kwargs: object) -> PassResult:  # type: ignore[override]
            clock.advance(1000.0)  # a request that hangs for 1000 s
            seen.append(worker.stalled_for())
            return PassResult(container_id="cntr_1", listed=True)

    engine = HangingEngine()
    pair = Pair(name="docs", local=tmp_path, container="box", watch="off")
    worker = PairWorker(pair, Settings(), Metrics(), clock=clock, engine=lambda: engine)
    assert worker.stalled_for() == 0.0
    clock.advance(5000.0)  # waiting for a turn is not a stall
    assert worker.stalled_for() == 0.0
    assert worker.step() == 0.0  # the first pass ran: another turn at once
    assert seen == [1000.0]
    assert worker.stalled_for() == 0.0
