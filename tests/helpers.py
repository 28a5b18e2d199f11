"""Small test helpers shared by several test modules (import as ``helpers``)."""

from __future__ import annotations


class NoSleep:
    """A sleep that records instead of waiting, so retries cost no time."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
