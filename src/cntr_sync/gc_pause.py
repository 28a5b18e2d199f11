"""Pausing Python's cyclic garbage collector while a whole-tree scan runs.

Owns: ``collector_paused``, one process-wide switch shared by every thread (the
daemon scans several pairs at once): the collector goes off when the first pause
begins and comes back, if it was on then, when the last one ends.

Must not: collect, or leave the collector off after the last pause (a caller that
had turned it off itself finds it off again).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0  # pauses running now
_enabled_before = False  # whether the first of them found the collector enabled


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off inside the block, as it was after the last one ends.

    Why a scan wants this: it makes an object or more a file (a ``LocalFile``, its
    cache rows, the snapshot's dict), none of them in a cycle; each one it allocates
    counts toward the next collection, and the older collections then traverse all
    of them again (callgrind, 100k files: 0.8k instructions a file of a warm scan's
    26k, 1.6k of a cold one's 48k). Reference counting still frees everything at
    once; a cycle some other thread makes meanwhile is collected after the last
    pause ends.
    """
    global _pauses, _enabled_before  # noqa: PLW0603 (one process-wide switch)
    with _lock:
        if _pauses == 0:
            _enabled_before = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _enabled_before:
                gc.enable()
