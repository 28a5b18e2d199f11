"""PairWorker's scheduling on a fake clock: which pass comes when, and of what kind.

The worker's loop is driven here turn by turn, as its thread would drive it
(``turn()``, then a wait of ``seconds_to_wait()`` that a change cuts short), with
the clock moved through every wait and a fake engine that records each pass. No
threads, no sleeps: the times asserted are exact, not margins. The daemon's
real-time tests (test_daemon.py) check the same loop end to end.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from cntr_sync.config import Settings
from cntr_sync.daemon import Daemon
from cntr_sync.emulator import ManualClock
from cntr_sync.errors import CntrSyncError, StoppedError
from cntr_sync.metrics import Metrics
from cntr_sync.models import Pair
from cntr_sync.pair_status import TRANSFER_LINES, TransferLog
from cntr_sync.result import ConflictCopy, PassResult, TransferEvent
from cntr_sync.worker import BACKOFF_MAX, MIN_PASS_GAP, PairWorker, PassReason

# Loop turns allowed per test: a worker that keeps finding a pass due at the same
# moment (a spin) fails the test instead of hanging it.
MAX_TURNS = 100_000


@dataclass(frozen=True)
class Pass:
    """One pass the engine was asked for."""

    at: float
    paths: frozenset[str] | None  # None: a full pass (scan everything, list the container)
    sends_unsettled: bool  # overdue and flush passes send files still being written
    poll: bool = False  # the engine was asked to look at the container too


class FakeEngine:
    """Records passes and answers from a script (a ``PassResult`` or an error to
    raise; the default is a clean pass). Like the engine, a pass that scanned
    only the named paths did not list the container."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.passes: list[Pass] = []
        self.answers: list[PassResult | Exception] = []
        self.rescans: list[float] = []  # when has_local_changes was asked
        self.local_changes: list[bool] = []  # its answers, in order (then False)

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
        assert keep_grown_uploads == (not defer_unsettled)
        self.passes.append(
            Pass(
                self.clock.now,
                None if paths is None else frozenset(paths),
                not defer_unsettled,
                poll,
            )
        )
        answer = self.answers.pop(0) if self.answers else PassResult()
        if isinstance(answer, Exception):
            raise answer
        return replace(answer, container_id="cntr_1", listed=paths is None)

    def has_local_changes(self) -> bool:
        self.rescans.append(self.clock.now)
        return self.local_changes.pop(0) if self.local_changes else False


@dataclass
class Rig:
    worker: PairWorker
    clock: ManualClock
    engine: FakeEngine
    root: Path

    def run_until(
        self, until: float, changes: Iterable[tuple[float, str | None]] = ()
    ) -> list[tuple[float, PassReason]]:
        """Turn the loop until the clock reaches ``until``; ``changes``: (time, relpath)
        events (None: somewhere, as an overflow says), each ending the wait it falls in.
        Returns (time, reason) for every turn that found a pass due."""
        pending = sorted(changes, key=lambda change: change[0])
        ran: list[tuple[float, PassReason]] = []
        for _ in range(MAX_TURNS):
            reason = self.worker.turn()
            if reason is not None:
                ran.append((self.clock.now, reason))
                continue
            wake = self.clock.now + self.worker.seconds_to_wait()
            if pending and pending[0][0] <= min(wake, until):
                self.clock.now = max(self.clock.now, pending[0][0])
                while pending and pending[0][0] <= self.clock.now:
                    relpath = pending.pop(0)[1]
                    self.worker.tracker.mark(None if relpath is None else str(self.root / relpath))
            else:
                self.clock.now = min(wake, until)
            if self.clock.now >= until:
                return ran
        pytest.fail(f"the loop spun: {MAX_TURNS} turns before t={until}, passes: {ran[-5:]}")


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return make_rig(tmp_path)


def make_rig(tmp_path: Path, **pair_fields: Any) -> Rig:
    """A worker on a fake clock at t=0 whose passes go to a fake engine; quiet period
    1 s, max delay 10 s, and rescans and remote polls far away unless given."""
    fields: dict[str, Any] = {
        "quiet_period": 1.0,
        "max_delay": 10.0,
        "rescan_interval": 100_000.0,
        "remote_poll_interval": 100_000.0,
        "watch": "off",
        **pair_fields,
    }
    pair = Pair(name="docs", local=tmp_path, container="box", **fields)
    clock = ManualClock(start=0.0)
    engine = FakeEngine(clock)
    worker = PairWorker(pair, Settings(), Metrics(), clock=clock, engine=lambda: engine)
    return Rig(worker, clock, engine, tmp_path)


def every(start: float, stop: float, step: float, relpath: str) -> list[tuple[float, str]]:
    """A change of ``relpath`` every ``step`` seconds from ``start`` to ``stop``, both included."""
    count = round((stop - start) / step)
    return [(start + number * step, relpath) for number in range(count + 1)]


# -- the first pass -----------------------------------------------------------------------


def test_the_first_turn_runs_a_full_initial_pass_then_the_loop_waits(rig: Rig) -> None:
    assert rig.run_until(500.0) == [(0.0, "initial")]
    assert rig.engine.passes == [Pass(0.0, None, sends_unsettled=False)]
    assert rig.worker.status.first_sync_done
    assert rig.worker.status.state == "idle"


def test_a_failed_first_pass_is_retried_as_the_first_pass(rig: Rig) -> None:
    rig.engine.answers = [CntrSyncError("server down")]
    ran = rig.run_until(10.0)
    assert [reason for _, reason in ran] == ["initial", "initial"]
    # The first backoff: 1 s, give or take 20 % of jitter.
    assert 0.8 <= ran[1][0] <= 1.2
    assert rig.worker.status.first_sync_done


# -- quiet period and max delay ------------------------------------------------------------


def test_a_burst_of_changes_gets_one_pass_a_quiet_period_after_the_last(rig: Rig) -> None:
    burst = [(5.0 + number * 0.25, f"f{number}.txt") for number in range(9)]  # 5.0 .. 7.0

    ran = rig.run_until(30.0, burst)

    assert ran == [(0.0, "initial"), (8.0, "changes")]
    # Only the named files are scanned, and one still being written waits.
    expected = frozenset(f"f{number}.txt" for number in range(9))
    assert rig.engine.passes[1] == Pass(8.0, expected, sends_unsettled=False)


def test_changes_that_never_go_quiet_get_a_pass_every_max_delay(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, max_delay=4.0)

    ran = rig.run_until(40.0, every(10.0, 30.0, 0.5, "app.log"))

    # max_delay counts from the first change after each pass; once the writes
    # stop, the quiet period sends the rest.
    assert ran == [
        (0.0, "initial"),
        (14.0, "overdue"),
        (18.5, "overdue"),
        (23.0, "overdue"),
        (27.5, "overdue"),
        (31.0, "changes"),
    ]
    overdue = rig.engine.passes[1:5]
    assert all(p.sends_unsettled and p.paths == {"app.log"} for p in overdue)
    assert not rig.engine.passes[5].sends_unsettled


def test_a_change_somewhere_makes_a_full_pass(rig: Rig) -> None:
    ran = rig.run_until(30.0, [(5.0, "a.txt"), (5.5, None)])
    assert ran == [(0.0, "initial"), (6.5, "changes")]
    assert rig.engine.passes[1].paths is None


# -- deferred files ------------------------------------------------------------------------


def test_a_deferred_file_alone_is_retried_and_max_delay_counts_from_its_first_change(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, max_delay=3.0)
    still_written = PassResult(deferred=["b.txt"])
    rig.engine.answers = [PassResult(), still_written, still_written]

    ran = rig.run_until(30.0, [(10.0, "a.txt"), (10.0, "b.txt")])

    assert ran == [(0.0, "initial"), (11.0, "changes"), (12.0, "changes"), (13.0, "overdue")]
    assert [p.paths for p in rig.engine.passes[1:]] == [{"a.txt", "b.txt"}, {"b.txt"}, {"b.txt"}]
    assert rig.engine.passes[3].sends_unsettled


def test_after_a_deferring_pass_the_next_waits_at_least_the_minimum_gap(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, quiet_period=0.25)
    rig.engine.answers = [PassResult(), PassResult(deferred=["a.txt"])]

    ran = rig.run_until(30.0, [(10.0, "a.txt")])

    assert ran == [(0.0, "initial"), (10.25, "changes"), (10.25 + MIN_PASS_GAP, "changes")]


# -- remote polls ---------------------------------------------------------------------------


def test_the_container_is_polled_every_remote_poll_interval(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=30.0)
    ran = rig.run_until(100.0)
    assert ran == [(0.0, "initial"), (30.0, "poll"), (60.0, "poll"), (90.0, "poll")]
    assert all(p.paths is None for p in rig.engine.passes)


def test_a_pass_that_listed_the_container_moves_the_next_poll(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=30.0)
    # At 20: a change somewhere, so a full pass at 21 that lists; at 60, one file:
    # an incremental pass at 61 that does not list, so the poll at 81 still comes.
    ran = rig.run_until(100.0, [(20.0, None), (60.0, "a.txt")])
    assert ran == [
        (0.0, "initial"),
        (21.0, "changes"),
        (51.0, "poll"),
        (61.0, "changes"),
        (81.0, "poll"),
    ]


def test_a_poll_that_is_due_waits_for_changes_to_settle_then_rides_on_their_pass(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=30.0)
    ran = rig.run_until(100.0, [(29.5, "a.txt")])
    assert ran == [(0.0, "initial"), (30.5, "changes"), (60.5, "poll"), (90.5, "poll")]
    # The changed path, and a look at the container (the engine lists what it must).
    assert rig.engine.passes[1].paths == {"a.txt"} and rig.engine.passes[1].poll
    assert [p.poll for p in rig.engine.passes] == [False, True, True, True]


def test_a_due_poll_with_changes_everywhere_is_a_full_pass(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=30.0)
    ran = rig.run_until(100.0, [(29.5, None)])  # an overflow: anything may have changed
    assert ran == [(0.0, "initial"), (30.5, "changes"), (60.5, "poll"), (90.5, "poll")]
    assert rig.engine.passes[1].paths is None and not rig.engine.passes[1].poll


def test_polls_stop_on_a_push_containers_idle_spell_so_it_can_expire(tmp_path: Path) -> None:
    # Expiring after 5 minutes: no polls once nothing moved for 5 min - 120 s = 180 s.
    rig = make_rig(tmp_path, remote_poll_interval=60.0, expires_after_minutes=5)
    assert rig.worker.status.as_json()["remote_poll"] == "on"
    ran = rig.run_until(1000.0)
    assert ran == [(0.0, "initial"), (60.0, "poll"), (120.0, "poll")]
    # /status says the polls stopped on purpose, not that all is polled as usual.
    assert rig.worker.status.as_json()["remote_poll"] == "paused"
    assert rig.worker.status.state == "idle"


def test_the_systemd_status_line_says_when_a_push_pairs_polls_are_paused(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=60.0, expires_after_minutes=5)
    settings = Settings.model_validate(
        {"pairs": [{"name": "docs", "local": tmp_path, "container": "box"}]}
    )
    daemon = Daemon(None, settings=settings, environ={})
    daemon.workers["docs"] = rig.worker  # never started: its turns are driven here
    rig.run_until(10.0)
    assert daemon.summary_line() == "1 pairs: docs idle"
    rig.run_until(1000.0)
    assert daemon.summary_line() == (
        "1 pairs: docs idle (polls paused: the container is left to expire)"
    )


def test_a_local_change_ends_a_push_pairs_pause_and_the_polls_resume(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=60.0, expires_after_minutes=5)
    rig.engine.answers = [PassResult(), PassResult(), PassResult(), PassResult(uploaded=1)]
    ran = rig.run_until(450.0, [(299.0, "a.txt")])
    # The upload at 300 is use: a poll at once (the last was long ago), then on
    # the interval, until the container has been left alone for 180 s again.
    assert ran == [
        (0.0, "initial"),
        (60.0, "poll"),
        (120.0, "poll"),
        (300.0, "changes"),
        (300.0, "poll"),
        (360.0, "poll"),
        (420.0, "poll"),
    ]
    assert rig.worker.status.as_json()["remote_poll"] == "on"
    assert rig.run_until(1000.0) == []
    assert rig.worker.status.as_json()["remote_poll"] == "paused"


@pytest.mark.parametrize("direction", ["pull", "both"])
def test_a_pair_that_pulls_polls_through_an_idle_spell_longer_than_the_expiry(
    tmp_path: Path, direction: str
) -> None:
    """Issue 25, finding 3: a poll is how the model's writes are seen (and the
    model's use keeps the container alive), so a pair that pulls never stops."""
    rig = make_rig(
        tmp_path, remote_poll_interval=60.0, expires_after_minutes=5, direction=direction
    )
    ran = rig.run_until(3 * 5 * 60.0 + 1)  # three expiry spans without a transfer
    assert ran == [(0.0, "initial"), *((60.0 * n, "poll") for n in range(1, 16))]
    assert all(p.paths is None for p in rig.engine.passes)  # every poll lists
    assert rig.worker.status.as_json()["remote_poll"] == "on"


def test_a_pass_that_moved_a_file_keeps_the_polls_going(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=60.0, expires_after_minutes=5)
    rig.engine.answers = [PassResult(), PassResult(), PassResult(), PassResult(uploaded=1)]
    ran = rig.run_until(1000.0, [(149.0, "a.txt")])
    # The upload at 150 counts as use: polls go on until 150 + 180 s.
    assert ran == [
        (0.0, "initial"),
        (60.0, "poll"),
        (120.0, "poll"),
        (150.0, "changes"),
        (180.0, "poll"),
        (240.0, "poll"),
        (300.0, "poll"),
    ]


def test_with_keepalive_polls_go_on_at_half_the_expiry_at_most(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, remote_poll_interval=600.0, expires_after_minutes=2, keepalive=True)
    ran = rig.run_until(400.0)
    assert ran == [(0.0, "initial"), *((60.0 * n, "poll") for n in range(1, 7))]


# -- rescans ----------------------------------------------------------------------------------


def test_a_rescan_passes_only_when_the_tree_changed_unseen(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, rescan_interval=50.0)
    rig.engine.local_changes = [False, True, False]

    ran = rig.run_until(160.0)

    assert ran == [(0.0, "initial"), (50.0, "rescan"), (100.0, "rescan"), (150.0, "rescan")]
    assert rig.engine.rescans == [50.0, 100.0, 150.0]
    # A pass only for the rescan that found a change, and a full one.
    assert rig.engine.passes[1:] == [Pass(100.0, None, sends_unsettled=False)]


# -- backoff after failures -------------------------------------------------------------------


def test_failed_passes_back_off_doubling_to_the_cap_and_a_success_resets_it(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path, rescan_interval=50.0)
    failures = 11
    rig.engine.answers = [CntrSyncError("server down") for _ in range(failures)]
    rig.engine.local_changes = [True]  # the first rescan after recovery finds a change

    ran = rig.run_until(3000.0)

    starts = [at for at, _ in ran[: failures + 1]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    backoffs = [min(BACKOFF_MAX, 2.0**number) for number in range(failures)]
    assert backoffs[-2:] == [BACKOFF_MAX, BACKOFF_MAX]
    for gap, backoff in zip(gaps, backoffs, strict=True):
        assert 0.8 * backoff <= gap <= 1.2 * backoff, (gaps, backoffs)
    # Recovered: rescans resume on their interval (none came while backing off).
    assert all(reason == "initial" for _, reason in ran[: failures + 1])
    recovered = starts[-1]  # a jittered time: the clock's steps may round by an ulp
    rescans = [at for at, reason in ran if reason == "rescan"][:2]
    assert rescans == pytest.approx([recovered + 50, recovered + 100], abs=1e-9)
    assert rig.worker.status.state == "idle"


def test_a_failed_changes_pass_is_retried_in_full_after_the_backoff(rig: Rig) -> None:
    rig.engine.answers = [PassResult(), CntrSyncError("server down")]

    ran = rig.run_until(30.0, [(10.0, "a.txt")])

    assert [reason for _, reason in ran] == ["initial", "changes", "changes"]
    assert ran[1][0] == 11.0
    # Back off 1 s (±20 %), and the changes put back wait a quiet period too.
    assert 12.0 <= ran[2][0] <= 12.2
    # What the failed pass took is not known to be sent: everything is scanned.
    assert [p.paths for p in rig.engine.passes[1:]] == [{"a.txt"}, None]


def test_a_second_failure_after_a_success_starts_the_backoff_again(rig: Rig) -> None:
    down = CntrSyncError("server down")
    rig.engine.answers = [down, down, down, PassResult(), down]

    ran = rig.run_until(60.0, [(30.0, "a.txt")])

    starts = [at for at, _ in ran]
    assert [reason for _, reason in ran] == ["initial"] * 4 + ["changes"] * 2
    assert 3.2 <= starts[3] - starts[2] <= 4.8  # the third backoff: 4 s
    assert starts[4] == 31.0
    assert 0.8 <= starts[5] - starts[4] <= 1.2  # back to 1 s


def test_a_pass_told_to_stop_while_waiting_on_the_server_is_cut_short_not_failed(
    rig: Rig,
) -> None:
    """Issue 25, finding 8: a ``StoppedError`` (the flush bound passed during a
    retry wait) is no failure: no error in /status, no backoff, changes kept."""
    rig.engine.answers = [PassResult(), StoppedError("stopping: the request was not sent")]

    ran = rig.run_until(30.0, [(10.0, "a.txt")])

    assert [reason for _, reason in ran] == ["initial", "changes", "changes"]
    # What it took is pending again: the next pass is a full one, a quiet period
    # later, with no backoff on top.
    assert ran[2][0] == 12.0
    assert rig.engine.passes[2].paths is None
    assert rig.worker.status.passes == 2  # the stopped one is not counted as a pass
    assert rig.worker.status.last_error is None
    assert rig.worker.status.state == "idle"


def test_a_pass_that_crashed_is_a_failure_whose_message_has_no_secret(rig: Rig) -> None:
    """A bug's exception may carry a URL with a token in it: /status and the log
    show its type and text, redacted, and the worker lives on to retry."""
    rig.engine.answers = [
        ValueError("bad answer from https://gw.example/v1?api-key=hunter2secret"),
    ]

    ran = rig.run_until(0.5)  # before the retry, a backoff of about a second later

    assert [reason for _, reason in ran] == ["initial"]
    assert rig.worker.status.last_result == "error"
    error = rig.worker.status.last_error or ""
    assert error.startswith("unexpected ValueError: bad answer from https://gw.example/v1?api-key=")
    assert "hunter2secret" not in error


def test_status_lists_the_conflict_copies_a_full_pass_found(rig: Rig) -> None:
    """Issue 22, item 3: the daemon's /status names the conflict copies still in the tree."""
    copy = ConflictCopy("notes.md", "notes (container conflict 2026-12-07 120000).md", "container")
    rig.engine.answers.append(PassResult(open_conflicts=[copy]))
    rig.run_until(0.5)
    assert rig.worker.status.as_json()["conflict_copies"] == [
        {"path": "notes.md", "copy": copy.copy, "holds": "container"}
    ]
    rig.engine.answers.append(PassResult())
    rig.run_until(5.0, changes=[(1.0, None)])  # a full pass that found none left
    assert rig.worker.status.as_json()["conflict_copies"] == []


def test_the_daemon_logs_each_transfer_up_to_a_hundred_a_pass(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 22, item 2: each finished transfer is a line at the default (info) level;
    past ``TRANSFER_LINES`` in a pass, the rest are counted in one line."""
    transfers = TransferLog("docs")
    with caplog.at_level(logging.INFO, logger="cntr_sync.worker"):
        transfers.start(150, 0)
        for number in range(150):
            transfers.advance(TransferEvent("uploaded", f"f{number}.txt", 3))
    lines = [r for r in caplog.records if r.getMessage().startswith("transfer ")]
    assert len(lines) == TRANSFER_LINES
    assert lines[0].getMessage() == "transfer pair=docs action=uploaded path=f0.txt bytes=3"
    assert transfers.unlisted() == 50
    transfers.start(1, 0)
    assert transfers.unlisted() == 0  # counted afresh each pass


class TimedEvent(threading.Event):
    """An event that remembers when it was set."""

    set_at: float | None = None

    def set(self) -> None:
        self.set_at = time.monotonic()
        super().set()


class StuckWorker:
    """A worker past its flush bound: its thread ends ``linger`` seconds after ``cancel``."""

    def __init__(self, linger: float) -> None:
        self.cancel = TimedEvent()
        self.linger = linger

    def stop(self, flush_deadline: float) -> None:
        pass

    def join(self, timeout: float) -> bool:
        if not self.cancel.wait(max(0.0, timeout)) or self.cancel.set_at is None:
            return False
        ends_at = self.cancel.set_at + self.linger
        time.sleep(max(0.0, min(ends_at - time.monotonic(), timeout)))
        return time.monotonic() >= ends_at


def test_late_pairs_are_all_cancelled_at_once_and_share_one_grace_period(
    tmp_path: Path,
) -> None:
    """Four pairs each needing 1 s after the cancel: stopping takes about 1 s past the
    flush bound, not 4 (each one cancelled only when the one before had ended)."""
    settings = Settings.model_validate(
        {"pairs": [{"name": "docs", "local": tmp_path, "container": "box"}]}
    )
    daemon = Daemon(None, settings=settings, environ={})
    stuck = {f"p{number}": StuckWorker(linger=1.0) for number in range(4)}
    daemon.workers.update(stuck)  # type: ignore[arg-type]
    started = time.monotonic()
    daemon._stop_workers(list(stuck), timeout=0.1)
    assert time.monotonic() - started < 3.0
    assert all(worker.cancel.is_set() for worker in stuck.values())
    assert daemon.workers == {}
