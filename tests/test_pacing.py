"""The adaptive pacer: unlimited until the server pushes back, then AIMD on rate and concurrency.

Every test runs on a fake clock: time moves only when the pacer (or the
simulated server) sleeps, so nothing here waits for real.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from cntr_sync.errors import ConfigError, StoppedError
from cntr_sync.pacing import BETA, WINDOW, Pacer, RateLimiter, shared_pacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def pacer(clock: FakeClock, rate_cap: float | None = None) -> Pacer:
    return Pacer(rate_cap=rate_cap, monotonic=clock.time, sleep=clock.sleep)


class Bucket:
    """A server's token bucket: ``rate`` requests a second, a burst of as many."""

    def __init__(self, clock: FakeClock, rate: float) -> None:
        self.clock = clock
        self.rate = rate
        self.tokens = rate
        self.last = clock.now

    def admit(self) -> float | None:
        """None when let through, else the seconds until the next token (retry-after)."""
        now = self.clock.now
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return None
        return (1 - self.tokens) / self.rate


def test_nothing_is_limited_until_the_server_pushes_back() -> None:
    clock = FakeClock()
    p = pacer(clock)
    tickets = [p.acquire() for _ in range(50)]  # 50 at once, none waits
    for ticket in tickets:
        p.release(ticket, throttled=False)
    assert clock.sleeps == []
    assert (p.rate, p.concurrency_limit) == (None, None)


def test_a_throttle_pauses_everyone_for_the_hint_and_cuts_rate_and_concurrency() -> None:
    clock = FakeClock()
    p = pacer(clock)
    tickets = [p.acquire() for _ in range(8)]
    p.release(tickets[0], throttled=True, retry_after=0.5)
    # 8 sent in the window: the rate is cut to 0.7 x 8 / window, the concurrency to 8 / 2.
    assert p.rate == pytest.approx(8 / WINDOW * BETA)
    assert p.concurrency_limit == 4
    for ticket in tickets[1:]:
        p.release(ticket, throttled=False)
    before = clock.now
    p.release(p.acquire(), throttled=False)
    assert clock.now - before >= 0.5  # nobody goes before the server's hint


def test_requests_in_flight_at_the_cut_do_not_cut_again() -> None:
    clock = FakeClock()
    p = pacer(clock)
    tickets = [p.acquire() for _ in range(8)]
    for ticket in tickets:  # all eight answered 429: one signal
        p.release(ticket, throttled=True, retry_after=0.1)
    assert p.rate == pytest.approx(8 / WINDOW * BETA)
    assert p.concurrency_limit == 4
    assert p.throttles == 8
    # A request sent after the cut and throttled too is a new signal.
    p.release(p.acquire(), throttled=True, retry_after=0.1)
    assert p.rate is not None and p.rate < 8 / WINDOW * BETA
    assert p.concurrency_limit == 2


def throttle_one_of(p: Pacer, in_flight: int) -> None:
    """``in_flight`` requests at once; the first is throttled (no hint), the rest succeed."""
    tickets = [p.acquire() for _ in range(in_flight)]
    p.release(tickets[0], throttled=True)
    for ticket in tickets[1:]:
        p.release(ticket, throttled=False)


def test_after_a_throttle_requests_are_spaced_at_the_new_rate() -> None:
    clock = FakeClock()
    p = pacer(clock)
    throttle_one_of(p, 10)
    rate = p.rate
    assert rate is not None
    start = clock.now
    for _ in range(5):
        p.forget(p.acquire())  # no verdict: the rate stays where it is
    assert p.rate == rate
    assert clock.now - start == pytest.approx(5 / rate)


def test_successes_grow_the_rate_back_and_lift_both_limits() -> None:
    clock = FakeClock()
    p = pacer(clock)
    throttle_one_of(p, 8)
    assert p.rate is not None
    rates = []
    for _ in range(400):
        p.release(p.acquire(), throttled=False)
        clock.now += 0.01
        if p.rate is not None:
            rates.append(p.rate)
    assert p.concurrency_limit is None  # back to where it was before the throttle
    assert max(rates) > 8  # grown past the rate that was throttled (probing)
    assert rates[0] < 8 <= rates[-1]


def test_a_sequential_client_against_a_rate_limited_server_is_refused_rarely() -> None:
    """Issue 13's target 2 in miniature: a server at 10 a second, 25 ms a request."""
    clock = FakeClock()
    p = pacer(clock)
    server = Bucket(clock, 10.0)
    done = refused = 0
    start = clock.now
    while done < 600:
        ticket = p.acquire()
        clock.now += 0.025
        hint = server.admit()
        if hint is None:
            done += 1
            p.release(ticket, throttled=False)
        else:
            refused += 1
            p.release(ticket, throttled=True, retry_after=hint)
    elapsed = clock.now - start
    assert refused / (done + refused) < 0.05, (refused, done)
    assert elapsed < 1.3 * 600 / 10, elapsed


def test_eight_threads_share_the_concurrency_limit() -> None:
    clock = FakeClock()
    p = pacer(clock)
    first = [p.acquire() for _ in range(4)]
    p.release(first[0], throttled=True)  # limit: 2 (half of 4)
    assert p.concurrency_limit == 2
    # Three still in flight, over the limit: a fourth waits until two have ended.
    admitted = threading.Event()

    def fourth() -> None:
        p.release(p.acquire(), throttled=False)
        admitted.set()

    thread = threading.Thread(target=fourth, daemon=True)
    thread.start()
    assert not admitted.wait(0.2)
    p.release(first[1], throttled=False)
    assert not admitted.wait(0.2)
    p.release(first[2], throttled=False)
    assert admitted.wait(5.0)
    thread.join(5.0)
    p.release(first[3], throttled=False)


def test_a_hard_cap_spaces_requests_even_without_throttles() -> None:
    clock = FakeClock()
    p = pacer(clock, rate_cap=2.0)
    for _ in range(6):
        p.release(p.acquire(), throttled=False)
    # Two go at once (the burst), then one every half second.
    assert clock.sleeps == [pytest.approx(0.5)] * 4


def test_a_zero_cap_is_refused() -> None:
    with pytest.raises(ConfigError, match="requests_per_second"):
        RateLimiter(0)


def test_one_pacer_per_endpoint_and_key_while_it_is_used() -> None:
    a = shared_pacer("http://x.test/v1/", "sk-one")
    assert shared_pacer("http://x.test/v1", "sk-one") is a
    assert shared_pacer("http://x.test/v1", "sk-two") is not a
    assert shared_pacer("http://y.test/v1", "sk-one") is not a
    assert shared_pacer("http://x.test/v1", "sk-one", 5.0) is not a
    del a
    gc.collect()
    # Unused, it is gone: a later client starts unthrottled.
    fresh = shared_pacer("http://x.test/v1", "sk-one")
    assert fresh.rate is None
    assert "sk-one" not in repr(vars(fresh))


# Reads the pacer's window of sends: guards figure 7, the soak's flat RSS over
# 60 minutes of a change a second.
@pytest.mark.perf_guard
def test_what_it_remembers_stays_within_the_window() -> None:
    clock = FakeClock()
    p = pacer(clock)
    for _ in range(10_000):  # a long-running daemon that is never throttled
        p.release(p.acquire(), throttled=False)
        clock.now += 0.01
    # Only the sends of the last window are kept to measure the rate.
    assert len(p._sent) <= WINDOW / 0.01 + 1


def test_a_sleep_that_returns_early_only_makes_the_pacer_look_again() -> None:
    # A sleep may be an Event.wait, woken before its time: the pause still holds.
    clock = FakeClock()

    def early(seconds: float) -> bool:
        clock.sleeps.append(seconds)
        clock.now += min(seconds, 0.3)
        return True

    p = Pacer(monotonic=clock.time, sleep=early)
    p.release(p.acquire(), throttled=True, retry_after=2.0)
    paused_from = clock.now
    p.release(p.acquire(), throttled=False)
    assert clock.now >= paused_from + 2.0
    assert len(clock.sleeps) > 2


# -- a stop ends every wait (issue 25, finding 8) ---------------------------------------
# These wait on a real event (the pacer's waits are ``stop.wait`` then), set by a
# timer thread; every wait is bounded.


def stop_soon(seconds: float = 0.2) -> tuple[threading.Event, threading.Timer]:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    return stop, timer


def test_a_stop_ends_the_pause_a_throttle_set_at_once() -> None:
    clock = FakeClock()  # frozen: only the stop can end this wait
    p = pacer(clock)
    p.release(p.acquire(), throttled=True, retry_after=60.0)
    stop, timer = stop_soon()
    started = time.monotonic()
    with pytest.raises(StoppedError):
        p.acquire(stop=stop)
    timer.cancel()
    assert time.monotonic() - started < 5.0
    assert clock.sleeps == []  # waited on the event, not the pacer's own sleep
    # No ticket was taken: the next request (after the pause) still goes.
    clock.now += 60.0
    p.release(p.acquire(), throttled=False)


def test_a_stop_ends_a_wait_for_a_concurrency_slot() -> None:
    clock = FakeClock()
    p = pacer(clock)
    first = [p.acquire() for _ in range(2)]
    p.release(first[0], throttled=True)  # limit: 1, and one still in flight
    stop, timer = stop_soon()
    started = time.monotonic()
    with pytest.raises(StoppedError):
        p.acquire(stop=stop)
    timer.cancel()
    assert time.monotonic() - started < 5.0
    p.release(first[1], throttled=False)


def test_a_stop_set_before_the_call_takes_no_ticket_and_no_token() -> None:
    clock = FakeClock()
    p = pacer(clock, rate_cap=1.0)
    stop = threading.Event()
    stop.set()
    with pytest.raises(StoppedError):
        p.acquire(stop=stop)
    p.release(p.acquire(), throttled=False)
    assert clock.sleeps == []  # the cap's one token was still there
