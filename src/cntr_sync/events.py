"""The daemon's event stream: what ``GET /events`` and ``cntr-sync log --follow`` show.

Owns ``EventBus`` (one per daemon) and its ``Subscription`` (one per reader).
Events are plain JSON-able dicts with a ``type``:

    pass-start   pair, reason, time
    pass-end     pair, reason, time, result, pass_id, changed, error, summary
    action       pair, time, pass_id, action, path, bytes, reason, outcome
                 (the journal's row, as it is written: journal.JournalEntry)
    pair         pair, change (added, changed, removed, refused), error
    lost         count: events this reader missed because it fell behind

A slow reader never holds up a pass: ``publish`` only appends to each reader's
bounded buffer; when a buffer is full, the events are dropped and counted, and
the reader gets one ``lost`` event before the next one it can take.

Must not: block the publisher, raise into it (a pass publishes from its own
threads), or hold a secret (events carry paths, counts and reasons only).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cntr_sync.errors import CntrSyncError
    from cntr_sync.journal import JournalEntry
    from cntr_sync.result import PassResult

__all__ = [
    "SUBSCRIBER_BUFFER",
    "EventBus",
    "Subscription",
    "action_event",
    "pass_end_event",
    "pass_start_event",
    "sse_frame",
]

# Events kept for a reader that has not taken them yet (about 300 bytes each).
SUBSCRIBER_BUFFER = 1000

Event = dict[str, Any]


class Subscription:
    """One reader's bounded buffer; ``get`` takes the next event."""

    def __init__(self, bus: EventBus, capacity: int) -> None:
        self._bus = bus
        self._capacity = max(1, capacity)
        self._cond = threading.Condition()
        self._queue: deque[Event] = deque()
        self._lost = 0
        self.closed = False

    def offer(self, event: Event) -> None:
        """Buffer ``event``, or count it lost when the buffer is full. Never blocks long."""
        with self._cond:
            if self.closed:
                return
            if len(self._queue) >= self._capacity:
                self._lost += 1
                return
            if self._lost:
                # Where the gap is: the reader learns of it before the next event.
                self._queue.append({"type": "lost", "count": self._lost})
                self._lost = 0
            self._queue.append(event)
            self._cond.notify_all()

    def get(self, timeout: float) -> Event | None:
        """The next event, or None after ``timeout`` seconds without one (or once closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._lost or self.closed, timeout)
            if self._queue:
                return self._queue.popleft()
            if self._lost:
                lost, self._lost = self._lost, 0
                return {"type": "lost", "count": lost}
            return None

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Fans each published event out to every subscriber's buffer."""

    def __init__(self, capacity: int = SUBSCRIBER_BUFFER) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    def subscribe(self, capacity: int | None = None) -> Subscription:
        subscription = Subscription(self, capacity or self._capacity)
        with self._lock:
            self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.offer(event)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def backlog(self) -> list[int]:
        """Events each reader has yet to take (each at most its buffer's size)."""
        with self._lock:
            subscribers = list(self._subscribers)
        return [subscription.buffered for subscription in subscribers]

    def close(self) -> None:
        """Ends every reader's stream (the daemon stops)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for subscription in subscribers:
            subscription.close()


def pass_start_event(pair: str, reason: str) -> Event:
    return {"type": "pass-start", "pair": pair, "reason": reason, "time": time.time()}


def pass_end_event(
    pair: str,
    reason: str,
    label: str | None,
    result: PassResult | None,
    error: CntrSyncError | None,
    summary: dict[str, Any],
) -> Event:
    """``label``: success, noop, partial, error, or stopped (cut short by a stop)."""
    return {
        "type": "pass-end",
        "pair": pair,
        "reason": reason,
        "time": time.time(),
        "result": label,
        "pass_id": result.pass_id if result is not None else None,
        "changed": result is not None and result.changed_anything,
        "error": error.message if error is not None else None,
        "summary": summary,
    }


def action_event(pair: str, entry: JournalEntry) -> Event:
    """The journal's row, as it is written, with its pair."""
    return {"type": "action", "pair": pair, **entry.to_json()}


def sse_frame(event: Event) -> bytes:
    """``event`` as one Server-Sent Events frame: its type, then its JSON."""
    data = json.dumps(event, default=str, sort_keys=True)
    return f"event: {event.get('type', 'message')}\ndata: {data}\n\n".encode()
