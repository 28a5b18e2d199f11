"""PairWorker's control pieces on the fake clock: a requested flush and its waiters,
the pause, and the events around a pass (test_worker_schedule.py's rig)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cntr_sync.errors import CntrSyncError
from cntr_sync.result import PassResult
from test_worker_schedule import Pass, Rig, make_rig, rig

_ = rig  # a fixture


def test_a_flush_runs_a_full_pass_at_once_and_completes_every_waiter(rig: Rig) -> None:
    rig.run_until(100.0)
    first, second = rig.worker.request_flush(), rig.worker.request_flush()
    assert first is second  # asks before a pass takes them share it
    assert rig.worker.seconds_to_wait() == 0.0
    ran = rig.run_until(100.5)
    assert ran == [(100.0, "requested")]
    # Full (it lists: the model's files come home), and files still being written go too.
    assert rig.engine.passes[-1] == Pass(100.0, None, sends_unsettled=True)
    assert first.done and first.error is None
    assert first.result is not None and first.result.container_id == "cntr_1"


def test_a_flush_asked_during_a_pass_waits_for_the_next_one(rig: Rig) -> None:
    rig.run_until(10.0)
    asked: list[Any] = []
    original = rig.engine.run_pass

    def run_pass(**kwargs: Any) -> PassResult:
        if not asked:  # an ask that arrives while this pass runs
            asked.append(rig.worker.request_flush())
        return original(**kwargs)

    rig.engine.run_pass = run_pass  # type: ignore[method-assign]
    during_first = rig.worker.request_flush()
    ran = rig.run_until(11.0)
    assert [reason for _, reason in ran] == ["requested", "requested"]
    assert during_first.done and asked[0].done
    assert asked[0] is not during_first


def test_a_flush_comes_before_the_quiet_period_and_the_backoff(rig: Rig) -> None:
    rig.engine.answers = [PassResult(), CntrSyncError("server down")]
    rig.run_until(5.5, [(4.0, "a.txt")])  # the pass at 5.0 fails: a backoff of ~1 s follows
    assert rig.worker.status.last_result == "error"
    request = rig.worker.request_flush()
    ran = rig.run_until(5.6)
    assert ran == [(5.5, "requested")]
    assert request.done and request.error is None


def test_a_failed_flush_pass_hands_its_error_to_the_waiters(rig: Rig) -> None:
    rig.run_until(1.0)
    rig.engine.answers = [CntrSyncError("the server refused")]
    request = rig.worker.request_flush()
    rig.run_until(1.1)
    assert request.done and request.result is None
    assert request.error is not None and request.error.message == "the server refused"


def test_a_paused_pair_collects_changes_runs_nothing_and_resumes_with_a_full_pass(
    tmp_path: Path,
) -> None:
    rig = make_rig(tmp_path)
    rig.run_until(10.0)
    rig.worker.pause()
    ran = rig.run_until(
        500.0, [(20.0, "a.txt"), (30.0, "b.txt")]
    )  # quiet periods, max delays, all pass by
    assert ran == []
    assert rig.worker.status.paused
    assert rig.worker.tracker.pending == 2
    rig.worker.resume()
    ran = rig.run_until(502.0)
    # At once: the changes noted while paused are past max_delay.
    assert ran == [(500.0, "overdue")]
    assert rig.engine.passes[-1].paths is None  # everything, not only what the events named
    assert not rig.worker.status.paused


def test_a_paused_pair_does_not_flush_on_stop(rig: Rig) -> None:
    rig.run_until(10.0)
    rig.worker.pause()
    rig.worker.tracker.mark(str(rig.root / "late.txt"))
    rig.worker.stop(flush_deadline=1e9)
    rig.worker._flush()
    assert len(rig.engine.passes) == 1


def test_events_surround_each_pass(rig: Rig) -> None:
    events: list[dict[str, Any]] = []
    rig.worker.on_event = events.append
    rig.engine.answers = [PassResult(uploaded=1), CntrSyncError("broken")]
    rig.run_until(2.0)
    rig.worker.request_flush()
    rig.run_until(2.5)
    kinds = [(e["type"], e["reason"]) for e in events]
    assert kinds == [
        ("pass-start", "initial"),
        ("pass-end", "initial"),
        ("pass-start", "requested"),
        ("pass-end", "requested"),
    ]
    assert events[1]["result"] == "success" and events[1]["changed"] is True
    assert events[1]["summary"]["uploaded"] == 1
    assert events[3]["result"] == "error" and events[3]["error"] == "broken"
    assert events[3]["changed"] is False
