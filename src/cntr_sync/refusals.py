"""When the server's refusals mean "stop trying": quota errors and long runs of 429s.

Owns two judgements ``rest.Requester`` makes about refused requests:

- ``quota_refusal``: an answer that no wait will cure. OpenAI answers an
  account without quota or billing with a 429 (or a 400) whose error ``code``
  or ``type`` is ``insufficient_quota``, ``billing_not_active`` or
  ``billing_hard_limit_reached``. Gateways keep the status but rewrite
  ``code``/``type`` (LiteLLM: ``throttling_error``, ``"429"``) and put the
  upstream text, sometimes the whole upstream JSON, in the message: so a 429's
  message is searched too (a 400's is not: it may echo a file name).
- ``RefusalWatch``: how long every answer has been a refusal (a 429 or a 503,
  the answers that throttle the pacer). Past ``REFUSAL_LIMIT`` without one
  other answer, a refused request is not retried and the pass stops
  (``RefusedTooLongError``): a permanent 429 the server does not name costs
  ten minutes, not the hours of retries a large tree would take.

Must not: send requests, sleep, or decide what is retried otherwise
(``rest`` and ``retries`` do).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

#: Seconds of nothing but refusals (429/503) after which a pass stops. A single
#: request may wait up to 4 x 120 s in its retries (``max_retries`` at the longest
#: ``Retry-After`` obeyed): 10 minutes is more than that, and more than any
#: per-minute rate limit needs to pass; a limit that lasts longer (a daily cap,
#: an unpaid bill) will not pass by retrying either.
REFUSAL_LIMIT = 600.0

#: Error codes and types that mean the account itself may not make requests.
QUOTA_CODES = frozenset({"insufficient_quota", "billing_not_active", "billing_hard_limit_reached"})
# Phrases of the same errors, as a gateway's message carries them, and their codes.
_QUOTA_PHRASES = (
    *((code, code) for code in sorted(QUOTA_CODES)),
    ("exceeded your current quota", "insufficient_quota"),
    ("billing hard limit", "billing_hard_limit_reached"),
)


def quota_refusal(status: int, body: object, message: str) -> str | None:
    """The quota code an error answer carries (``body``: its parsed JSON, or None),
    or None: the answer does not say the account lacks quota or billing."""
    if not 400 <= status < 500:
        return None
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping):
        for field in ("code", "type"):
            value = error.get(field)
            if isinstance(value, str) and value.strip().lower() in QUOTA_CODES:
                return value.strip().lower()
    if status != 429:
        return None
    lowered = message.lower()
    for phrase, code in _QUOTA_PHRASES:
        if phrase in lowered:
            return code
    return None


class RefusalWatch:
    """Since when every answer has been a refusal; thread-safe.

    One per pair is best (the daemon's worker keeps one for the pair's life, so a
    failed pass and a fresh client do not start the count again); a client makes
    its own when given none.
    """

    def __init__(
        self,
        limit: float = REFUSAL_LIMIT,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._refused_since: float | None = None

    def answered(self, *, refused: bool) -> None:
        """An answer came: a refusal (429, 503) extends the run, any other ends it."""
        with self._lock:
            if not refused:
                self._refused_since = None
            elif self._refused_since is None:
                self._refused_since = self._monotonic()

    def refused_for(self) -> float:
        """Seconds since the first of an unbroken run of refusals (0: none now)."""
        with self._lock:
            since = self._refused_since
        return 0.0 if since is None else max(0.0, self._monotonic() - since)

    def exceeded(self) -> bool:
        """Every answer for ``limit`` seconds was a refusal: stop retrying."""
        return self.refused_for() >= self.limit


__all__ = ["QUOTA_CODES", "REFUSAL_LIMIT", "RefusalWatch", "quota_refusal"]
