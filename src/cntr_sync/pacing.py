"""How fast requests go out: an adaptive pacer shared by every client of one endpoint.

Owns: the requests in flight and the rate they start at, for one API endpoint
and key in this process (``shared_pacer``). Nothing is limited until the server
pushes back. A 429 (or a 503) is a throttle: every request waits out the
server's retry hint, the concurrency is halved and a send rate is set to 0.7x
the rate measured over the last two seconds; while requests succeed the rate grows
again on a cubic curve around the rate that was throttled (as the AWS SDKs'
adaptive retry mode does) and the concurrency by one per window of successes
(AIMD, as rclone's pacer), until both limits are lifted. One throttle counts
once: requests that were already in flight when the rate was cut do not cut it
again. ``requests_per_second`` is an optional hard cap on top (``RateLimiter``).

Must not: know about HTTP, retries or the API's operations (``rest`` tells it
what happened), or keep the API key (the registry keys on a digest of it).

The token bucket is a few lines, so it is written here rather than added as a
dependency; clocks and sleep are injectable so tests need no real waiting. A
sleep may return early: the pacer then checks again, and the cap only lets
that request go sooner. A caller may pass its own ``stop`` event to
``acquire``: its waits are then ``stop.wait`` (the pacer is shared, the event
is the caller's), and once it is set the wait ends with ``StoppedError``.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from cntr_sync.errors import ConfigError, raise_if_stopped

#: After a throttle the send rate is this share of the rate measured before it.
BETA = 0.7
#: The cubic curve's scale: how fast the rate grows back. Half the AWS SDKs' 0.4: a
#: simulated server at 10 requests a second refused 2.9 % of requests, against 5.2 %.
CUBIC_SCALE = 0.2
#: The send rate never goes below this (requests a second).
MIN_RATE = 0.5
#: Sends are counted over this many seconds to measure the rate (1 s counts the burst
#: a server's bucket allows as if it were its rate).
WINDOW = 2.0
#: A wait is slept in pieces of at most this, with a liveness tick between them.
MAX_NAP = 1.0


class RateLimiter:
    """A token bucket shared by all threads: at most ``rate`` requests a second."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ConfigError("requests_per_second must be greater than 0")
        self.rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self._capacity
        self._monotonic = monotonic
        self._sleep = sleep
        self._last = monotonic()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event | None = None) -> None:
        """Take a token, waiting for it if need be (on ``stop``, when given)."""
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            (self._sleep if stop is None else stop.wait)(wait)
            raise_if_stopped(stop)


class Pacer:
    """Admits requests: ``ticket = acquire()`` before one, ``release(ticket, ...)`` after.

    Thread-safe; one per endpoint and key is shared by all clients of a process.
    """

    def __init__(
        self,
        *,
        rate_cap: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._cap = (
            RateLimiter(rate_cap, monotonic=monotonic, sleep=sleep)
            if rate_cap is not None
            else None
        )
        self._monotonic = monotonic
        self._sleep = sleep
        self._free = threading.Condition()
        self._in_flight = 0
        self._limit: float | None = None  # concurrency; None: not limited
        self._lift_at = 0  # the in-flight count when first throttled: the limit goes there
        self._rate: float | None = None  # sends a second; None: not limited
        self._tokens = 0.0
        self._refilled = monotonic()
        self._rate_at_throttle = 0.0
        self._throttled_at = 0.0
        self._epoch = 0
        self._paused_until = 0.0
        self._sent: deque[float] = deque()
        self.throttles = 0

    # -- what the requester calls

    def acquire(
        self, tick: Callable[[], None] | None = None, stop: threading.Event | None = None
    ) -> int:
        """Wait until a request may start; returns the ticket to release it with.

        ``stop``: the caller's event; its waits are ``stop.wait``, and once it is
        set, ``StoppedError`` (no ticket is taken).
        """
        raise_if_stopped(stop)
        nap = self._sleep if stop is None else stop.wait
        if self._cap is not None:
            self._cap.acquire(stop)
        while True:
            with self._free:
                while self._limit is not None and self._in_flight >= int(self._limit):
                    # Released requests notify; the timeout only bounds a missed one
                    # (and a set ``stop``: seen within MAX_NAP).
                    self._free.wait(timeout=MAX_NAP)
                    if tick is not None:
                        tick()
                    raise_if_stopped(stop)
                now = self._monotonic()
                wait = self._paused_until - now
                if wait <= 0 and self._rate is not None:
                    self._refill(now)
                    if self._tokens < 1.0 - 1e-9:  # float dust would make waits of 0 s
                        wait = (1.0 - self._tokens) / self._rate
                    else:
                        self._tokens -= 1.0
                if wait <= 0:
                    self._in_flight += 1
                    self._sent.append(now)
                    self._measured(now)  # drops what left the window: bounded memory
                    return self._epoch
            if tick is not None:
                tick()
            nap(min(wait, MAX_NAP))
            raise_if_stopped(stop)

    def release(self, ticket: int, *, throttled: bool, retry_after: float | None = None) -> None:
        """A request ended: ``throttled`` when the server pushed back, with its hint."""
        with self._free:
            self._in_flight -= 1
            now = self._monotonic()
            if throttled:
                self._throttle(ticket, now, retry_after)
            else:
                self._grow(now)
            self._free.notify()

    def forget(self, ticket: int) -> None:
        """A request ended without a verdict on the pace (a transport error, a 5xx)."""
        del ticket
        with self._free:
            self._in_flight -= 1
            self._free.notify()

    # -- state, for status and tests

    @property
    def rate(self) -> float | None:
        """The adaptive send rate (requests a second), or None while unlimited."""
        return self._rate

    @property
    def concurrency_limit(self) -> int | None:
        limit = self._limit
        return None if limit is None else int(limit)

    # -- the curves

    def _throttle(self, ticket: int, now: float, retry_after: float | None) -> None:
        self.throttles += 1
        if retry_after is not None:
            self._paused_until = max(self._paused_until, now + retry_after)
        if ticket != self._epoch:
            return  # sent before the last cut: the same signal, counted once
        self._epoch += 1
        measured = self._measured(now)
        base = measured if self._rate is None else min(measured, self._rate)
        self._rate_at_throttle = max(base, MIN_RATE)
        self._rate = max(self._rate_at_throttle * BETA, MIN_RATE)
        self._throttled_at = now
        self._tokens = 0.0
        self._refilled = now
        in_flight = self._in_flight + 1
        self._lift_at = max(self._lift_at, in_flight)
        self._limit = max(1.0, (self._limit if self._limit is not None else in_flight) / 2)

    def _grow(self, now: float) -> None:
        if self._rate is not None:
            top = self._rate_at_throttle
            k = (top * (1 - BETA) / CUBIC_SCALE) ** (1 / 3)
            cubic = CUBIC_SCALE * (now - self._throttled_at - k) ** 3 + top
            # Never more than twice what is being sent: no credit for idle time.
            self._rate = max(MIN_RATE, min(cubic, 2 * self._measured(now) + 1))
        if self._limit is not None:
            self._limit += 1 / self._limit
            if self._limit >= self._lift_at:
                self._limit = None

    def _measured(self, now: float) -> float:
        while self._sent and self._sent[0] < now - WINDOW:
            self._sent.popleft()
        return len(self._sent) / WINDOW

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        capacity = max(1.0, self._rate)
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now


_shared: weakref.WeakValueDictionary[tuple[str, str, float | None], Pacer] = (
    weakref.WeakValueDictionary()
)
_shared_lock = threading.Lock()


def shared_pacer(base_url: str, api_key: str, rate_cap: float | None = None) -> Pacer:
    """The process's pacer for this endpoint and key (made on first use, kept while used)."""
    digest = hashlib.sha256(api_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    key = (base_url.rstrip("/"), digest, rate_cap)
    with _shared_lock:
        pacer = _shared.get(key)
        if pacer is None:
            pacer = Pacer(rate_cap=rate_cap)
            _shared[key] = pacer
        return pacer


__all__ = ["Pacer", "RateLimiter", "shared_pacer"]
