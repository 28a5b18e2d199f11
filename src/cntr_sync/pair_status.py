"""What one pair of the daemon reports: ``PairStatus`` (its /status entry and
the part of STATUS= it shows), ``pass_summary``, a finished pass as /status,
the log line and the events show it, and ``TransferLog``, its transfers as log
lines.

Must not: decide anything, or do I/O beyond TransferLog's log lines; its worker
writes it, the daemon reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from cntr_sync.logs import get_logger
from cntr_sync.result import PassResult, TransferEvent

log = get_logger("cntr_sync.worker")  # the worker's lines, as they were

__all__ = ["TRANSFER_LINES", "PairState", "PairStatus", "RemotePoll", "TransferLog", "pass_summary"]

PairState = Literal["starting", "syncing", "idle", "error", "stopped"]
# "paused": a push pair left its container alone for nearly its expiry, so that an
# unused container can expire; the next local change resumes the polls.
RemotePoll = Literal["on", "paused"]


@dataclass
class PairStatus:
    """What /status and STATUS= say about one pair. Written by its worker only."""

    name: str
    local: str
    container: str
    container_id: str | None = None
    state: PairState = "starting"
    watch: str = "off"
    remote_poll: RemotePoll = "on"
    first_sync_done: bool = False
    first_attempt_done: bool = False
    passes: int = 0
    last_sync_at: float | None = None
    last_success_at: float | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_summary: dict[str, Any] = field(default_factory=dict)
    pending_changes: int = 0
    observer_restarts: int = 0
    paused: bool = False
    # Conflict copies this tool made that are still in the tree (as of the last full pass).
    conflict_copies: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "local": self.local,
            "container": self.container,
            "container_id": self.container_id,
            "state": self.state,
            "watch": self.watch,
            "remote_poll": self.remote_poll,
            "first_sync_done": self.first_sync_done,
            "passes": self.passes,
            "last_sync_at": self.last_sync_at,
            "last_success_at": self.last_success_at,
            "last_result": self.last_result,
            "last_error": self.last_error,
            "last_pass": self.last_summary,
            "pending_changes": self.pending_changes,
            "paused": self.paused,
            "observer_restarts": self.observer_restarts,
            "conflict_copies": self.conflict_copies,
        }


def pass_summary(reason: str, result: PassResult) -> dict[str, Any]:
    """A finished pass's counts, as /status (``last_pass``) and its log line show them."""
    return {
        "reason": reason,
        "uploaded": result.uploaded,
        "replaced": result.replaced,
        "deleted": result.deleted,
        "adopted": result.adopted,
        "downloaded": result.downloaded,
        "deleted_locally": result.local_deleted,
        "conflicts": result.conflicts,
        "failed": len(result.failures),
        "deferred": len(result.deferred),
        "cancelled": result.cancelled,
        "bytes": result.bytes_uploaded,
        "requests": result.requests,
        "listed": result.listed,
        "seconds": round(result.seconds, 3),
    }


# Finished transfers a pass logs one line each; past these, one line counts the rest.
TRANSFER_LINES = 100


class TransferLog:
    """The daemon's ``Progress``: each finished transfer is one log line (the
    journal's record, as it happens), up to ``TRANSFER_LINES`` a pass."""

    def __init__(self, pair: str) -> None:
        self._pair = pair
        self.count = 0

    def start(self, files: int, total_bytes: int) -> None:
        self.count = 0

    def advance(self, event: TransferEvent) -> None:
        self.count += 1
        if self.count <= TRANSFER_LINES:
            log.info(
                "transfer", pair=self._pair, action=event.action, path=event.path, bytes=event.bytes
            )

    def unlisted(self) -> int:
        """Transfers of the pass that got no line of their own."""
        return max(0, self.count - TRANSFER_LINES)
