"""When a failed request is tried again, and how long to wait first.

Owns: the retry policy every attempt of a ``rest.Requester`` runs under, one
``tenacity.Retrying`` per client: at most ``max_retries`` retries; the
server's hint as the wait (``retry-after-ms``, ``Retry-After`` as seconds or
an HTTP date, each also with LiteLLM's ``llm_provider-`` prefix; at most
120 s), else exponential backoff with jitter; ``Retryable``, the failure
worth retrying.

Every wait is logged at info level (what ``-v`` shows) before it starts: which
request, what failed (the status, or the transport error), which attempt, and
how long the wait is (``retrying list files in container cntr_x after HTTP
503 (attempt 2 of 5): waiting 1.2 s``).

Must not: send requests or decide which statuses are worth retrying (``rest``
raises ``Retryable``); sleep anywhere but through the injected ``sleep``.

``sleep`` is called once per wait, with the whole wait, from the thread that
retries; it may return early. ``stop`` (an event; the daemon sets a pair's when
its flush bound has passed) is checked before every attempt: once it is set, no
attempt is made and ``StoppedError`` ends the retries. With ``sleep=stop.wait``
(what ``api.ContainersClient`` does when given ``stop``) a wait ends the moment
the event is set.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from cntr_sync.errors import raise_if_stopped
from cntr_sync.logs import RETRIES_LOGGER, get_logger

log = get_logger(RETRIES_LOGGER)

#: The longest server hint obeyed (seconds); longer ones are cut to this.
MAX_RETRY_AFTER = 120.0
#: Backoff without a server hint: BACKOFF_BASE * 2**(attempt - 1) plus up to
#: BACKOFF_JITTER at random, at most BACKOFF_MAX seconds.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
BACKOFF_JITTER = 0.5

# Retry hints, in the order they are trusted. LiteLLM forwards upstream hints
# with an ``llm_provider-`` prefix.
_MS_HINTS = ("retry-after-ms", "llm_provider-retry-after-ms")
_S_HINTS = ("retry-after", "llm_provider-retry-after")

_T = TypeVar("_T")


class Retryable(Exception):
    """An attempt failed in a way worth retrying; carries what the final error needs."""

    def __init__(
        self,
        *,
        status: int | None,
        message: str,
        headers: httpx.Headers | None = None,
        body_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or httpx.Headers()
        self.body_sent = body_sent


def parse_retry_after(headers: httpx.Headers, now: float) -> float | None:
    """Seconds the server asks us to wait, or None when it gives no usable hint.

    ``retry-after-ms`` first, then ``Retry-After`` as seconds or an HTTP date;
    each also with LiteLLM's ``llm_provider-`` prefix. Capped at 120 s.
    """
    for name in _MS_HINTS:
        value = headers.get(name)
        if value is not None:
            try:
                return _cap(float(value) / 1000.0)
            except ValueError:
                continue
    for name in _S_HINTS:
        value = headers.get(name)
        if value is None:
            continue
        try:
            return _cap(float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            continue
        return _cap(when.timestamp() - now)
    return None


def _cap(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class _Attempt(Generic[_T]):
    """One call's attempt, and how its request is named (tenacity hands the
    callable to ``before_sleep`` as ``state.fn``; one ``Retrying`` serves every call)."""

    __slots__ = ("_attempt", "describe")

    def __init__(self, attempt: Callable[[], _T], describe: Callable[[], str]) -> None:
        self._attempt = attempt
        self.describe = describe

    def __call__(self) -> _T:
        return self._attempt()


class RetryPolicy:
    """Runs attempts until one succeeds, one fails for good, or the retries are spent.

    Built once per client (a tenacity ``Retrying`` keeps each call's state in
    the calling thread, so threads share it). ``clock`` (wall time) reads
    ``Retry-After`` dates; ``tick`` is called on both sides of every wait.
    """

    def __init__(
        self,
        *,
        max_retries: int,
        sleep: Callable[[float], object],
        clock: Callable[[], float],
        tick: Callable[[], None],
        stop: threading.Event | None = None,
    ) -> None:
        self._sleep = sleep
        self._stop = stop
        self._clock = clock
        self._tick = tick
        self._attempts = max_retries + 1
        self._retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Retryable),
            sleep=self._sleep_ticking,
            before_sleep=self._log_wait,
            reraise=True,
        )

    def run(
        self,
        attempt: Callable[[], _T],
        *,
        may_repeat: Callable[[Retryable], bool],
        give_up: Callable[[Retryable], Exception],
        describe: Callable[[], str] = lambda: "a request",
    ) -> _T:
        """``attempt()`` under the policy. A ``Retryable`` failure that this call
        must not repeat (``may_repeat`` says no), or the last one when the retries
        are spent, is raised as ``give_up(failure)``. Once ``stop`` is set, the next
        attempt (the first, or the one after a wait) raises ``StoppedError`` instead.
        ``describe()`` names the request in the log line of a wait."""

        def once() -> _T:
            raise_if_stopped(self._stop)
            try:
                return attempt()
            except Retryable as exc:
                if may_repeat(exc):
                    raise
                raise give_up(exc) from None

        try:
            return self._retrying(_Attempt(once, describe))
        except Retryable as exc:
            raise give_up(exc) from None

    def _log_wait(self, state: RetryCallState) -> None:
        """The info line of a wait (tenacity's before_sleep): request, failure, attempt, wait."""
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        failure = f"HTTP {exc.status}" if isinstance(exc, Retryable) and exc.status else str(exc)
        what = state.fn.describe() if isinstance(state.fn, _Attempt) else "a request"
        wait = state.upcoming_sleep
        log.info(
            f"retrying {what} after {failure} (attempt {state.attempt_number + 1} of "
            f"{self._attempts}): waiting {wait:.1f} s",
        )

    def _wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the server's hint, else backoff after
        ``state.attempt_number`` failed attempts."""
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        assert isinstance(exc, Retryable)  # the retry rule lets only these through
        hinted = parse_retry_after(exc.headers, self._clock())
        if hinted is not None:
            return hinted
        try:
            backoff = BACKOFF_BASE * 2.0 ** (state.attempt_number - 1)
        except OverflowError:
            backoff = BACKOFF_MAX
        return min(backoff + random.uniform(0, BACKOFF_JITTER), BACKOFF_MAX)

    def _sleep_ticking(self, seconds: float) -> None:
        # A wait the server asked for is not a hang: tick on both sides of it.
        self._tick()
        self._sleep(seconds)
        self._tick()


__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "Retryable", "parse_retry_after"]
