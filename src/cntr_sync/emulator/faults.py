"""Fault injection: which request fails, and how.

Owns the scripted faults (``fail_next``), the seeded random faults of a
``FaultConfig``, the token-bucket rate limit and the retry hints a 429 carries.
It only decides: the ``Emulator`` applies the decision (sleeps, drops, answers, or
stores an upload and then hides the outcome). Not thread-safe on its own; called
with the emulator's lock held.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from .settings import API_OPERATIONS, FaultConfig, RetryHeader
from .wire import ApiError, server_error

ScriptedStatus = int | Literal["drop", "ambiguous", "ambiguous_drop"]
"""An HTTP status to answer with, ``drop`` (no response), ``ambiguous`` (the operation
is carried out, then answered 500) or ``ambiguous_drop`` (carried out, then dropped)."""

ANY_OPERATION = "*"
SERVER_ERRORS = (500, 502, 503)


@dataclass(frozen=True)
class ScriptedFault:
    operation: str
    status: ScriptedStatus
    headers: tuple[tuple[str, str], ...] | None
    """None: a 429 gets the configured retry hint, worked out when it is answered."""
    code: str | None = None
    """The error body's ``code`` (a known one brings its real message and type)."""


@dataclass(frozen=True)
class FaultDecision:
    """What to do with one request. ``error`` is answered instead of the operation;
    ``ambiguous`` carries the operation out and then answers 500 or drops."""

    latency_s: float = 0.0
    drop: bool = False
    error: ApiError | None = None
    ambiguous: Literal["error", "drop"] | None = None


NO_FAULT = FaultDecision()


def retry_hint(header: RetryHeader, seconds: float) -> tuple[tuple[str, str], ...]:
    """The header a 429 carries to ask for a wait of ``seconds``."""
    millis = str(round(seconds * 1000))
    text = str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"
    hints: dict[RetryHeader, tuple[tuple[str, str], ...]] = {
        "retry-after-ms": (("retry-after-ms", millis),),
        "retry-after": (("retry-after", text),),
        "retry-after-date": (("retry-after", formatdate(time.time() + seconds, usegmt=True)),),
        "llm_provider-retry-after": (("llm_provider-retry-after", text),),
        "llm_provider-retry-after-ms": (("llm_provider-retry-after-ms", millis),),
        "none": (),
    }
    return hints[header]


def rate_limited(headers: tuple[tuple[str, str], ...]) -> ApiError:
    return ApiError(
        429,
        "Rate limit reached for requests. Please try again later.",
        error_type="requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


# Error codes an account can meet, as OpenAI answers them: (message, type). A 429 with
# ``insufficient_quota`` is the one that no waiting cures.
KNOWN_CODES: dict[str, tuple[str, str]] = {
    "insufficient_quota": (
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
    ),
    "billing_not_active": (
        "Your account is not active, please check your billing details on our website.",
        "billing_not_active",
    ),
    "billing_hard_limit_reached": (
        "Billing hard limit has been reached",
        "invalid_request_error",
    ),
}


def scripted_error(
    status: int, headers: tuple[tuple[str, str], ...], code: str | None = None
) -> ApiError:
    if code is not None:
        message, error_type = KNOWN_CODES.get(code, (f"Injected fault: HTTP {status}.", ""))
        return ApiError(status, message, code=code, error_type=error_type or None, headers=headers)
    if status >= 500:
        return server_error(status, headers)
    if status == 429:
        return rate_limited(headers)
    if status == 401:
        return ApiError(401, "Incorrect API key provided.", code="invalid_api_key", headers=headers)
    return ApiError(status, f"Injected fault: HTTP {status}.", headers=headers)


class FaultInjector:
    """Turns a ``FaultConfig`` and a script into per-request ``FaultDecision`` values."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._script: deque[ScriptedFault] = deque()
        self.configure(FaultConfig())

    @property
    def config(self) -> FaultConfig:
        return self._config

    def configure(self, config: FaultConfig) -> None:
        """Replace the whole configuration; the random sequence restarts from the seed."""
        self._config = config
        self._rng = random.Random(config.seed)
        self._ambiguous_count = 0
        self._tokens = max(1.0, config.rate_limit_per_s or 1.0)
        self._refilled_at = self._monotonic()

    def clear(self) -> None:
        self.configure(FaultConfig())
        self._script.clear()

    def fail_next(
        self,
        operation: str,
        status: ScriptedStatus,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        """Script the next ``count`` requests of ``operation`` (or ``*``) to fail;
        ``code``: the error body's code (``insufficient_quota``: OpenAI's answer to an
        account without quota)."""
        if operation != ANY_OPERATION and operation not in API_OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        if isinstance(status, int) and not 400 <= status <= 599:
            raise ValueError(f"status must be 400..599, got {status}")
        if not isinstance(status, int) and status not in ("drop", "ambiguous", "ambiguous_drop"):
            raise ValueError(f"unknown fault {status!r}")
        hint = None if headers is None else tuple(headers.items())
        for _ in range(count):
            self._script.append(ScriptedFault(operation, status, hint, code))

    def decide(self, operation: str) -> FaultDecision:
        """The fault, if any, for the next request of ``operation``."""
        config = self._config
        applies = config.applies_to(operation)
        latency = config.latency_ms / 1000 if applies else 0.0
        scripted = self._take_scripted(operation)
        if scripted is not None:
            return self._scripted_decision(scripted, latency)
        if not applies:
            return NO_FAULT
        limited = self._over_rate_limit()
        if limited is not None:
            return FaultDecision(latency_s=latency, error=limited)
        draw = self._rng.random() if self._random_faults_on() else 1.0
        if draw < config.drop_rate:
            return FaultDecision(latency_s=latency, drop=True)
        draw -= config.drop_rate
        if draw < config.error_rate:
            status = self._rng.choice(SERVER_ERRORS)
            return FaultDecision(latency_s=latency, error=server_error(status))
        draw -= config.error_rate
        if draw < config.rate_429:
            hint = retry_hint(config.retry_header, config.retry_value)
            return FaultDecision(latency_s=latency, error=rate_limited(hint))
        if (
            operation == "create_file"
            and config.ambiguous_upload_rate > 0
            and self._rng.random() < config.ambiguous_upload_rate
        ):
            return FaultDecision(latency_s=latency, ambiguous=self._ambiguous_kind())
        return FaultDecision(latency_s=latency)

    def _random_faults_on(self) -> bool:
        config = self._config
        return config.drop_rate + config.error_rate + config.rate_429 > 0

    def _take_scripted(self, operation: str) -> ScriptedFault | None:
        for index, fault in enumerate(self._script):
            if fault.operation in (operation, ANY_OPERATION):
                del self._script[index]
                return fault
        return None

    def _scripted_decision(self, fault: ScriptedFault, latency: float) -> FaultDecision:
        if fault.status == "drop":
            return FaultDecision(latency_s=latency, drop=True)
        if fault.status == "ambiguous":
            return FaultDecision(latency_s=latency, ambiguous="error")
        if fault.status == "ambiguous_drop":
            return FaultDecision(latency_s=latency, ambiguous="drop")
        headers = fault.headers
        if headers is None:
            config = self._config
            headers = (
                retry_hint(config.retry_header, config.retry_value) if fault.status == 429 else ()
            )
        return FaultDecision(
            latency_s=latency, error=scripted_error(fault.status, headers, fault.code)
        )

    def _ambiguous_kind(self) -> Literal["error", "drop"]:
        mode = self._config.ambiguous_mode
        if mode == "alternate":
            self._ambiguous_count += 1
            return "error" if self._ambiguous_count % 2 else "drop"
        if mode == "random":
            return "error" if self._rng.random() < 0.5 else "drop"
        return mode

    def _over_rate_limit(self) -> ApiError | None:
        rate = self._config.rate_limit_per_s
        if rate is None:
            return None
        now = self._monotonic()
        capacity = max(1.0, rate)
        self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        wait_ms = max(1, math.ceil((1.0 - self._tokens) / rate * 1000))
        return rate_limited((("retry-after-ms", str(wait_ms)),))
