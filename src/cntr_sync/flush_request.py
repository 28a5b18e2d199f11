"""A full pass asked for now (``cntr-sync flush``), and everyone waiting for it.

Owns ``FlushRequest``: the worker hands out one request to every ask that
comes before a pass takes it; an ask during that pass gets the next request,
served by the next pass. Whoever runs the pass completes the request with the
pass's result or the error that ended it (no thread per pair is assumed).

Must not: run passes or decide when (``worker`` does), or wait without a bound
(``wait`` takes a timeout; the control routes check that the pair still runs).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cntr_sync.errors import CntrSyncError
    from cntr_sync.result import PassResult

__all__ = ["FlushRequest"]


class FlushRequest:
    """A full pass asked for now, and everyone waiting for it (``cntr-sync flush``).

    Asks that arrive before a pass takes the request share it; one that arrives
    during that pass gets the next request, served by the next pass. Whoever runs
    the pass completes it, with the pass's result or the error that ended it.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self.result: PassResult | None = None
        self.error: CntrSyncError | None = None

    def complete(self, result: PassResult | None, error: CntrSyncError | None = None) -> None:
        self.result, self.error = result, error
        self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once the pass ended (``result`` or ``error`` is set)."""
        return self._done.wait(max(0.0, timeout))

    @property
    def done(self) -> bool:
        return self._done.is_set()
