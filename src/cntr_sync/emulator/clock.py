"""``ManualClock``: a wall clock for the emulator that moves only when a test moves it.

Owns nothing else. Pass it as ``Emulator(clock=...)`` to make ``created_at``,
``last_active_at`` and expiry exact; ``Emulator.advance_clock`` works with any clock.
"""

from __future__ import annotations


class ManualClock:
    """Returns ``now`` (seconds since the epoch) until ``advance`` or assignment changes it."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now
